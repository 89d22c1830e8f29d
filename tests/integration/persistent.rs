//! Faults that persist are visible (issue 19): a passing fault (permission
//! denied, a checker that cannot start, a `..data` that cannot be read) is
//! retried with backoff, logged once, and once it outlasts the grace it is
//! an error event naming the version, the key and the cause; its recovery
//! is a change. Plain mode retries the same way, and reads a file written
//! in place only once it holds still.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use configmapwatch::{Error, EventKind, WatchOptions, Watcher, shutdown_channel};
use serde_json::json;

use crate::helper::{Vol, wait_until};

/// A passing fault, as a checker that cannot start reports one.
fn emfile() -> Error {
    Error::Io {
        path: "checker".into(),
        action: "cannot start the checker",
        source: std::io::Error::other("Too many open files"),
    }
}

/// A version whose checker keeps failing for a passing reason is not read
/// and checked again on every tick: the attempts back off (they were one a
/// tick, re-reading and re-parsing the whole version each time).
#[test]
fn a_version_failing_for_a_passing_reason_is_retried_with_backoff() {
    let vol = vol!();
    vol.publish(&[("config.json", r#"{"v":1}"#)]);
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let mut watcher = Watcher::new(
        WatchOptions::new(vol.path())
            .with_interval(Duration::from_millis(5))
            .with_fault_grace(Duration::from_secs(3600)),
    )
    .with_validator(Box::new(move |_, _| {
        counted.fetch_add(1, Ordering::SeqCst);
        Err(emfile())
    }));
    let heartbeat = watcher.heartbeat();
    let (shutdown, listener) = shutdown_channel();
    let looping = std::thread::spawn(move || {
        watcher.run(&listener, &mut |_| {});
        watcher
    });
    wait_until("200 ticks", || heartbeat.ticks() >= 200);
    shutdown.trigger();
    let watcher = looping.join().unwrap();
    let attempts = calls.load(Ordering::SeqCst);
    let ticks = heartbeat.ticks();
    println!("{attempts} attempts in {ticks} ticks");
    assert!(
        (3..=14).contains(&attempts),
        "{attempts} attempts in {ticks} ticks"
    );
    let fault = watcher.fault().expect("the fault is still there");
    assert_eq!(fault.version.as_deref(), Some(vol.target().as_str()));
}

/// In plain mode a checker that could not start is retried like a read,
/// until the version is judged (it used to be an error event, never
/// checked again until the content changed).
#[test]
fn plain_mode_retries_a_checker_that_could_not_start() {
    let vol = Vol::new();
    std::fs::create_dir_all(vol.path()).unwrap();
    std::fs::write(vol.path().join("config.json"), r#"{"v":1}"#).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let mut watcher = Watcher::new(
        WatchOptions::new(vol.path())
            .with_interval(Duration::from_millis(1))
            .with_fault_grace(Duration::from_secs(3600)),
    )
    .with_validator(Box::new(move |_, _| {
        match counted.fetch_add(1, Ordering::SeqCst) {
            0 | 1 => Err(emfile()),
            _ => Ok(()),
        }
    }));
    let mut events = Vec::new();
    wait_until("the version to be accepted", || {
        events.extend(watcher.check());
        events.iter().any(|e| e.kind == EventKind::Initial)
    });
    assert!(
        events.iter().all(|e| e.kind != EventKind::Error),
        "a passing fault is no verdict: {events:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

/// A file written in place, a chunk per tick, is read once it holds still:
/// never half-way (each tick used to read what was there, and act on it).
/// A file replaced by a rename is read on the tick that sees it.
#[test]
fn plain_mode_reads_a_file_written_in_place_once_it_holds_still() {
    use std::io::Write;
    let vol = Vol::new();
    std::fs::create_dir_all(vol.path()).unwrap();
    let path = vol.path().join("config.json");
    std::fs::write(&path, r#"{"server": {"listen": 8080}}"#).unwrap();
    let mut watcher = Watcher::new(WatchOptions::new(vol.path()));
    assert_eq!(watcher.check().map(|e| e.kind), Some(EventKind::Initial));

    let mut file = std::fs::File::create(&path).unwrap(); // truncates
    for chunk in [r#"{"server": "#, r#"{"listen": "#, "9090", "}"] {
        file.write_all(chunk.as_bytes()).unwrap();
        file.flush().unwrap();
        let seen = watcher.check();
        assert!(seen.is_none(), "acted on a half-written file: {seen:?}");
    }
    file.write_all(b"}").unwrap();
    drop(file);
    assert!(
        watcher.check().is_none(),
        "the last write, not held still yet"
    );
    let e = watcher.check().expect("read once it held still");
    assert_eq!(
        (e.kind, (*e.config.unwrap()).clone()),
        (EventKind::Change, json!({"server": {"listen": 9090}}))
    );

    // An editor's save: a new file renamed over the old one, read at once
    // where files have inode numbers (on Windows, where the fingerprint has
    // none, a save waits one more tick, like a write in place).
    #[cfg(unix)]
    {
        let tmp = vol.path().join(".config.json.swp");
        std::fs::write(&tmp, r#"{"server": {"listen": 7070}}"#).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        let e = watcher
            .check()
            .expect("a rename is read on the tick that sees it");
        assert_eq!(
            (*e.config.unwrap()).clone(),
            json!({"server": {"listen": 7070}})
        );
    }
}

/// Whether a watcher can run as another user here (as root only): else a
/// SKIPPED line (a failure under CI, which runs as root).
#[cfg(target_os = "linux")]
fn can_switch_user() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    crate::helper::skip(&test, "needs root to run the watcher as another user");
    false
}

/// The real binary, as an unprivileged user (root reads everything):
/// `setpriv` to uid 65534, watching `vol` with JSON events every 10 ms.
#[cfg(target_os = "linux")]
fn as_nobody(vol: &Vol, extra: &[&str]) -> crate::helper::Running {
    use std::os::unix::fs::PermissionsExt;
    let open = std::fs::Permissions::from_mode(0o755);
    std::fs::set_permissions(vol.tmp.path(), open).unwrap();
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_configmapwatch"))
        .args(["-o", "json", "-i", "10ms", "-d"])
        .arg(vol.path())
        .args(extra);
    crate::helper::Running::spawn(cmd)
}

/// A Secret key published 0600 while the sidecar runs as another user:
/// permission denied is retried, logged once, and after the grace an
/// error event names the version, the key and the cause; making it
/// readable again is a change. (It used to be retried silently forever,
/// with every probe and metric saying all was well.)
#[cfg(target_os = "linux")]
#[test]
fn a_key_we_may_not_read_is_an_error_event_after_the_grace_and_its_fix_a_change() {
    use std::os::unix::fs::PermissionsExt;
    if !can_switch_user() {
        return;
    }
    let vol = vol!();
    let v1 = vol.publish(&[("config.json", r#"{"v":1}"#)]);
    let run = as_nobody(&vol, &["--fault-grace", "300ms"]);
    run.event_for("initial", &v1);
    let mut secret = crate::helper::payload(&[("config.json", r#"{"v":2}"#)]);
    assert!(secret.set_mode("config.json", 0o600));
    let configmapwatch::Outcome::Written { version: v2, .. } = vol.write(&secret) else {
        panic!("not written");
    };
    let e = run.event_for("error", &v2);
    assert_eq!(e["key"], json!("config.json"), "{e}");
    let error = e["error"].as_str().unwrap();
    assert!(
        error.contains("Permission denied") && error.contains("passing fault"),
        "{error}"
    );
    assert_eq!(e["config"], json!({"v": 1}), "the last good config stays");

    let file = vol.data_dir().join("config.json");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = run.event_for("change", &v2);
    assert_eq!(e["config"], json!({"v": 2}));
    let log = run.stderr_so_far();
    let warned = log
        .lines()
        .filter(|l| l.contains("retrying (not a verdict"))
        .count();
    assert_eq!(warned, 1, "logged once, not per retry:\n{log}");
}

/// `readlink(..data)` failing (here: the volume directory loses its search
/// permission) is a fault like any other: logged once, an error event for
/// `..data` after the grace, and the recovery a change. (It used to be a
/// warning on every tick and nothing else.)
#[cfg(target_os = "linux")]
#[test]
fn a_data_link_we_may_not_read_is_reported_once_and_recovers() {
    use std::os::unix::fs::PermissionsExt;
    if !can_switch_user() {
        return;
    }
    let vol = vol!();
    let v1 = vol.publish(&[("config.json", r#"{"v":1}"#)]);
    let run = as_nobody(&vol, &["--fault-grace", "300ms"]);
    run.event_for("initial", &v1);
    let mode = |m| std::fs::set_permissions(vol.path(), std::fs::Permissions::from_mode(m));
    mode(0o700).unwrap();
    let e = run.event_for("error", "-");
    assert_eq!(e["key"], json!("..data"), "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("Permission denied"),
        "{e}"
    );
    mode(0o755).unwrap();
    let e = run.event_for("change", &v1);
    assert_eq!(e["config"], json!({"v": 1}));
    let log = run.stderr_so_far();
    let warned = log
        .lines()
        .filter(|l| l.contains("cannot read the link"))
        .count();
    assert!(
        warned <= 2,
        "logged once (and in the error event), not per tick:\n{log}"
    );
}

/// `--once` names the version a persistent fault keeps from being read,
/// with its key and cause (it said `-`).
#[cfg(target_os = "linux")]
#[test]
fn once_names_the_version_a_fault_keeps_from_being_read() {
    use std::os::unix::fs::PermissionsExt;
    if !can_switch_user() {
        return;
    }
    let vol = vol!();
    let mut secret = crate::helper::payload(&[("config.json", r#"{"v":1}"#)]);
    assert!(secret.set_mode("config.json", 0o600));
    vol.write(&secret);
    std::fs::set_permissions(vol.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_configmapwatch"))
        .args(["--once", "-o", "json", "-d"])
        .arg(vol.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&e["event"], &e["version"], &e["key"]),
        (&json!("error"), &json!(vol.target()), &json!("config.json")),
        "{e}"
    );
    assert!(
        e["error"].as_str().unwrap().contains("Permission denied"),
        "{e}"
    );
}

/// The fault being retried is published to the heartbeat for other threads
/// (the sidecar's /status): when it starts, with its attempts and next
/// attempt, and its end, in ConfigMap mode and for a directory that cannot
/// be looked at.
#[test]
fn the_fault_being_retried_is_published_to_the_heartbeat_until_it_ends() {
    use std::sync::atomic::AtomicBool;
    let vol = vol!();
    vol.publish(&[("config.json", r#"{"v":1}"#)]);
    let failing = Arc::new(AtomicBool::new(true));
    let fails = failing.clone();
    let mut watcher = Watcher::new(
        WatchOptions::new(vol.path())
            .with_interval(Duration::from_millis(1))
            .with_fault_grace(Duration::from_secs(3600)),
    )
    .with_validator(Box::new(move |_, _| {
        if fails.load(Ordering::SeqCst) {
            Err(emfile())
        } else {
            Ok(())
        }
    }));
    let heartbeat = watcher.heartbeat();
    assert_eq!(heartbeat.fault(), None);
    assert!(watcher.check().is_none());
    let published = heartbeat.fault().expect("the fault is published");
    assert_eq!(Some(&published.fault), watcher.fault());
    assert_eq!(
        published.fault.version.as_deref(),
        Some(vol.target().as_str())
    );
    assert_eq!((published.attempts, published.reported), (1, false));
    let next = published.next_attempt_at.expect("a retry is pending");
    assert!(next >= published.since, "{published:?}");
    wait_until("a second attempt", || {
        watcher.check();
        heartbeat.fault().is_some_and(|f| f.attempts >= 2)
    });
    assert_eq!(heartbeat.fault().unwrap().since, published.since);

    failing.store(false, Ordering::SeqCst);
    wait_until("the version to be accepted", || {
        watcher
            .check()
            .is_some_and(|e| e.kind == EventKind::Initial)
    });
    assert_eq!(heartbeat.fault(), None, "its end is published");

    // A path that is a file: a directory that cannot be looked at, checked
    // on every tick (no next attempt time), until it is one.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("vol");
    std::fs::write(&path, "").unwrap();
    let mut watcher = Watcher::new(WatchOptions::new(&path));
    let heartbeat = watcher.heartbeat();
    watcher.check();
    let blocked = heartbeat.fault().expect("published");
    assert!(
        blocked.fault.message.ends_with("not a directory"),
        "{blocked:?}"
    );
    assert_eq!((blocked.attempts, blocked.next_attempt_at), (0, None));
    watcher.check();
    assert_eq!(heartbeat.fault().unwrap().since, blocked.since);
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    watcher.check();
    assert_eq!(heartbeat.fault(), None);
}
