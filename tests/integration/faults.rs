//! The watcher under faults and at awkward moments: a passing I/O error is
//! retried (never taken for a bad version), a dropped shutdown handle does
//! not end the loop, an empty plain directory is a version, a watcher
//! started inside the Windows swap gap waits for `..data`, and the newest
//! version holding the same config becomes the current one.

use std::{ops::ControlFlow, sync::mpsc, thread, time::Duration};

use configmapwatch::{
    EventKind, Layout, Selector, Step, Swap, WatchOptions, Watcher, shutdown_channel,
};
use serde_json::json;

use crate::helper::{DEADLINE, Vol, bin};

/// With file descriptors exhausted while a new version arrives, the watcher
/// cannot open the data directory (EMFILE). That is a passing fault: once
/// descriptors are free again, the new version must be read and reported,
/// not stuck as "seen" forever.
#[cfg(target_os = "linux")]
#[test]
fn a_new_version_read_during_emfile_is_retried_until_it_succeeds() {
    use crate::helper::Running;
    use rustix::process::{Pid, Resource, Rlimit, prlimit};

    let vol = vol!();
    vol.publish(&[("config.json", r#"{"v":1}"#)]);
    let mut cmd = bin();
    cmd.args(["-o", "json", "-i", "10ms", "-d"]).arg(vol.path());
    let run = Running::spawn(cmd);
    run.event_for("initial", &vol.target());

    let pid = Pid::from_child(&run.child);
    // The child's own limits, as /proc shows them (a harness may have
    // changed the test process's).
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", run.child.id())).unwrap();
    let nofile: Vec<u64> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let old = Rlimit {
        current: Some(nofile[0]),
        maximum: Some(nofile[1]),
    };
    // No new descriptor at all: every open fails with EMFILE, while the
    // ones it holds (stdout, stderr) keep working.
    prlimit(
        Some(pid),
        Resource::Nofile,
        Rlimit {
            current: Some(0),
            maximum: old.maximum,
        },
    )
    .unwrap();
    let v2 = vol.publish(&[("config.json", r#"{"v":2}"#)]);
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut stderr = String::new();
    while !stderr.contains("retrying") {
        assert!(
            std::time::Instant::now() < deadline,
            "no retry logged: {stderr}"
        );
        if let Ok(line) = run.stderr.recv_timeout(Duration::from_millis(50)) {
            stderr.push_str(&line);
            stderr.push('\n');
        }
    }
    assert!(stderr.contains("Too many open files"), "{stderr}");
    prlimit(Some(pid), Resource::Nofile, old).unwrap();

    let e = run.event();
    assert_eq!(
        (&e["event"], &e["version"], &e["config"]),
        (&json!("change"), &json!(v2), &json!({"v": 2})),
        "the fault was taken for a verdict on the version: {e}"
    );
    // Logged once, not on every retry.
    let retries = stderr.matches("Too many open files").count()
        + run.stderr_so_far().matches("Too many open files").count();
    assert_eq!(retries, 1, "{stderr}");
}

/// `let (_, listener) = shutdown_channel();` drops the only handle at once:
/// the loop must keep running (it used to stop after its first check).
#[test]
fn dropping_every_shutdown_handle_does_not_end_the_loop() {
    let vol = vol!();
    vol.publish(&[("config.json", r#"{"v":1}"#)]);
    let (events_tx, events) = mpsc::channel();
    let (_, listener) = shutdown_channel();
    let mut w = Watcher::new(WatchOptions::new(vol.path()).with_interval(Duration::from_millis(5)));
    thread::spawn(move || {
        let mut tx = events_tx;
        w.run(&listener, &mut tx);
    });
    let first = events.recv_timeout(DEADLINE).unwrap();
    assert_eq!(first.kind, EventKind::Initial);
    let v2 = vol.publish(&[("config.json", r#"{"v":2}"#)]);
    let e = events
        .recv_timeout(DEADLINE)
        .expect("the loop ended when the Shutdown handle was dropped");
    assert_eq!((e.kind, e.version), (EventKind::Change, v2));
}

/// "Not read yet" and "read, and empty" are different states: an empty
/// plain directory is a version with no keys.
#[test]
fn an_empty_plain_directory_is_a_version() {
    let vol = Vol::new();
    std::fs::create_dir_all(vol.path()).unwrap();
    let mut w = Watcher::new(WatchOptions::new(vol.path()).with_selector(Selector::all_keys()));
    let e = w.check().expect("an empty directory gave no event");
    assert_eq!(
        (e.kind, e.config.as_deref().cloned()),
        (EventKind::Initial, Some(json!({})))
    );
    assert_eq!(w.layout(), Layout::Plain);
    assert!(w.check().is_none(), "idle");

    let out = bin()
        .args(["--once", "--all-keys", "-o", "json", "-d"])
        .arg(vol.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains(r#""config":{}"#), "{stdout}");
}

/// A watcher that starts while the Windows kubelet has removed `..data` and
/// not yet re-created it must not take the volume for a plain directory
/// (and refuse its top-level symlinks): it waits for `..data`.
#[test]
fn a_watcher_started_inside_the_windows_swap_gap_waits_for_data() {
    let vol = vol!();
    vol.publish(&[("config.json", r#"{"v":1}"#)]);
    let mut w = Watcher::new(WatchOptions::new(vol.path()));
    let mut in_gap = None;
    let outcome = vol.publish_with_hook(
        &[("config.json", r#"{"v":2}"#)],
        Swap::RemoveThenCreate,
        |step| {
            if step == Step::DataLinkRemoved {
                in_gap = Some((w.check(), w.layout()));
            }
            ControlFlow::Continue(())
        },
    );
    let (event, layout) = in_gap.expect("the writer never reached the gap");
    assert!(event.is_none(), "reported inside the gap: {event:?}");
    assert_eq!(layout, Layout::Missing, "taken for a plain directory");
    let e = w.check().expect("nothing once ..data was back");
    assert_eq!(e.kind, EventKind::Initial);
    assert_eq!(w.layout(), Layout::ConfigMap);
    assert!(
        matches!(outcome, configmapwatch::Outcome::Written { ref version, .. } if *version == e.version)
    );
}

/// A new version whose config is the same fires nothing, but it becomes the
/// current version: the next change names it as the previous one.
#[test]
fn the_newest_version_with_the_same_config_is_the_current_one() {
    let vol = vol!();
    vol.publish(&[("config.json", r#"{"v":1}"#)]);
    let mut w = Watcher::new(WatchOptions::new(vol.path()));
    w.check().unwrap();
    let v2 = vol.publish(&[("config.json", r#"{"v":1}"#), ("other", "x")]);
    assert!(w.check().is_none(), "same config fired");
    assert_eq!(w.current_version(), Some(v2.as_str()));
    vol.publish(&[("config.json", r#"{"v":3}"#)]);
    let e = w.check().unwrap();
    assert_eq!(e.previous_version.as_deref(), Some(v2.as_str()));
}

/// An empty directory that a writer fills a moment later is not a subPath
/// mount: no plain-directory warning before `..data` appears.
#[test]
fn no_subpath_warning_for_an_empty_directory_a_writer_fills_next() {
    use crate::helper::Running;

    let vol = vol!();
    std::fs::create_dir_all(vol.path()).unwrap();
    let mut cmd = bin();
    cmd.args(["-o", "json", "-i", "10ms", "-d"]).arg(vol.path());
    let run = Running::spawn(cmd);
    // The watcher has looked at the empty directory once it reports it.
    let first = run.event();
    assert_eq!(first["event"], "error", "{first}");
    let v1 = vol.publish(&[("config.json", r#"{"v":1}"#)]);
    run.event_for("initial", &v1);
    let stderr = run.stderr_so_far();
    assert!(!stderr.contains("subPath"), "{stderr}");
}

/// On a filesystem that keeps whole seconds (ext4 with 128-byte inodes, in
/// a loop-mounted image), the `..data` mtime is the swap time rounded down:
/// the lag is reported as bounded (`lag_ms` null, an upper bound and the
/// resolution), never as a wrong precise number.
#[cfg(target_os = "linux")]
#[test]
fn on_whole_second_timestamps_the_lag_is_a_bound() {
    use configmapwatch::{AtomicWriter, Outcome};
    use std::time::SystemTime;

    let Some(coarse) = crate::volume::CoarseFs::mount() else {
        return;
    };
    let mnt = coarse.mnt.clone();
    let dir = mnt.join("vol");
    std::fs::create_dir(&dir).unwrap();
    let writer = AtomicWriter::new(&dir);
    writer
        .write(&crate::helper::payload(&[("config.json", r#"{"v":1}"#)]))
        .unwrap();
    let mut w = Watcher::new(WatchOptions::new(&dir));
    assert_eq!(w.check().unwrap().kind, EventKind::Initial);

    let (mut before_link, mut after_swap) = (None, None);
    let outcome = writer
        .write_with_hook(
            &crate::helper::payload(&[("config.json", r#"{"v":2}"#)]),
            |step| {
                match step {
                    Step::FilesWritten => before_link = Some(SystemTime::now()),
                    Step::Swapped => after_swap = Some(SystemTime::now()),
                    _ => {}
                }
                ControlFlow::Continue(())
            },
        )
        .unwrap();
    assert!(matches!(outcome, Outcome::Written { .. }));
    let e = w.check().unwrap();
    let lag = e.lag.expect("no lag in ConfigMap mode");
    assert_eq!(lag.resolution, Some(Duration::from_secs(1)), "{lag:?}");
    assert_eq!(lag.precise_ms(), None);
    // The true lag lies between these two; the bound must contain it.
    let shortest = e.detected_at.duration_since(after_swap.unwrap()).unwrap();
    let longest = e.detected_at.duration_since(before_link.unwrap()).unwrap();
    assert!(
        lag.seconds >= shortest.as_secs_f64(),
        "{lag:?} < {shortest:?}"
    );
    assert!(
        lag.seconds - 1.0 <= longest.as_secs_f64(),
        "{lag:?} vs {longest:?}"
    );
    let json = e.to_json();
    assert_eq!(json["lag_ms"], serde_json::Value::Null, "{json}");
    assert_eq!(json["lag_resolution_ms"], 1000, "{json}");
}

/// Several directories on one loop: each is its own consistent snapshot on
/// the same tick, and the handler gets a tick's events together. An idle
/// tick over three ConfigMap volumes allocates nothing.
#[test]
fn several_directories_are_checked_on_one_tick() {
    let vols = [vol!(), vol!(), vol!()];
    for (i, vol) in vols.iter().enumerate() {
        vol.publish(&[("config.json", &format!(r#"{{"dir":{i}}}"#))]);
    }
    let mut watchers: Vec<Watcher> = vols
        .iter()
        .map(|v| Watcher::new(WatchOptions::new(v.path())))
        .collect();
    let (shutdown, listener) = shutdown_channel();
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        Watcher::run_many(&mut watchers, &listener, &mut |all, events| {
            let currents: Vec<_> = all.iter().map(|w| w.current().cloned()).collect();
            tx.send((events, currents)).unwrap();
        });
        watchers
    });
    let (events, _) = rx.recv_timeout(DEADLINE).unwrap();
    assert_eq!(events.len(), 3, "the first tick reads every directory");
    for (e, vol) in events.iter().zip(&vols) {
        assert_eq!((e.kind, &*e.dir), (EventKind::Initial, vol.path()));
    }
    let v = vols[1].publish(&[("config.json", r#"{"dir":"changed"}"#)]);
    let (events, currents) = rx.recv_timeout(DEADLINE).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!((&events[0].version, &*events[0].dir), (&v, vols[1].path()));
    assert_eq!(
        currents
            .iter()
            .map(|c| (**c.as_ref().unwrap()).clone())
            .collect::<Vec<_>>(),
        [
            json!({"dir": 0}),
            json!({"dir": "changed"}),
            json!({"dir": 2})
        ]
    );
    shutdown.trigger();
    let mut watchers = handle.join().unwrap();
    let before = crate::helper::allocations();
    for _ in 0..100 {
        for w in watchers.iter_mut() {
            assert!(w.check().is_none());
        }
    }
    assert_eq!(
        crate::helper::allocations() - before,
        0,
        "idle ticks allocated"
    );
}

/// A regular file given as `--dir` is a usage error at once (exit 2), not a
/// directory to wait for forever.
#[test]
fn a_file_as_dir_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("config.json");
    std::fs::write(&file, "{}").unwrap();
    let mut cmd = bin();
    cmd.arg("-d").arg(&file);
    let mut run = crate::helper::Running::spawn(cmd);
    let deadline = std::time::Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = run.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running: it waits for a file to become a directory"
        );
        thread::sleep(Duration::from_millis(5));
    };
    let stderr: String = run.stderr.iter().collect::<Vec<_>>().join("\n");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a directory"), "{stderr}");
}

/// A directory behind a parent we may not traverse is "permission denied"
/// with its path, not "does not exist". Run as another user (setpriv), since
/// root may traverse anything.
#[cfg(target_os = "linux")]
#[test]
fn a_directory_we_may_not_reach_is_permission_denied_not_missing() {
    use std::os::unix::fs::PermissionsExt;

    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let locked = tmp.path().join("locked");
    let dir = locked.join("vol");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), "{}").unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_configmapwatch"))
        .args(["--once", "-o", "json", "-d"])
        .arg(&dir)
        .output()
        .expect("setpriv (util-linux) is needed for this test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let e: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let error = e["error"].as_str().unwrap();
    assert!(error.contains("Permission denied"), "{error}");
    assert!(error.contains(&*dir.to_string_lossy()), "{error}");
    assert!(!error.contains("does not exist"), "{error}");
    assert!(!stderr.contains("subPath"), "{stderr}");
}

/// Under a writer that swaps faster than the reader reads, the read that
/// restarts lands on a newer version than the one first noticed: its
/// detection time (and so its lag) must be the newer version's, never
/// earlier than that version's swap.
#[test]
fn detection_time_belongs_to_the_version_actually_read() {
    use configmapwatch::{ReadStep, Volume};

    let vol = vol!();
    vol.publish(&[("config.json", r#"{"v":1}"#)]);
    let mut volume = Volume::new(vol.path(), 1 << 20);
    let mut newer = None;
    let snapshot = volume
        .read_configmap_with_hook(&mut |step| {
            if step == ReadStep::TargetRead && newer.is_none() {
                // Two versions swapped in while the first one is being read.
                vol.publish(&[("config.json", r#"{"v":2}"#)]);
                newer = Some(vol.publish(&[("config.json", r#"{"v":3}"#)]));
            }
        })
        .unwrap();
    assert_eq!(
        Some(&snapshot.version),
        newer.as_ref(),
        "the read restarted"
    );
    let swapped_at = snapshot.swapped_at.unwrap();
    assert!(
        snapshot.seen_at >= swapped_at,
        "seen {:?} before its swap {:?}",
        snapshot.seen_at,
        swapped_at
    );
}
