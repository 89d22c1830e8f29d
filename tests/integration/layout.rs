//! Which layout a directory is watched in (issue 22): a `..data` that is a
//! real directory (a filesystem that hides symlinks: SMB, some FUSE mounts,
//! Wine) is read as plain files under it, with one warning; `--layout`
//! forces ConfigMap or plain mode; a `--dir` named `..data` watches its
//! volume; the subPath warning comes at once when the first look already
//! finds files.

use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

use configmapwatch::{EventKind, Layout, LayoutMode, WatchOptions, Watcher};
use serde_json::{Value, json};

use crate::helper::{DEADLINE, Running, Vol, bin, wait_until};

/// A volume as a filesystem that hides symlinks shows it: `..data` a real
/// directory holding the keys, each key also a plain file at the top.
fn hidden_symlink_volume(config: &str) -> Vol {
    let vol = Vol::new();
    fs::create_dir_all(vol.path().join("..data")).unwrap();
    fs::write(vol.path().join("..data/config.json"), config).unwrap();
    fs::write(vol.path().join("config.json"), config).unwrap();
    vol
}

/// `op` on a path the watcher may hold open: Windows (and Wine) refuse to
/// rename over, or remove, what another process has open at that moment,
/// so the writer tries again until the reader lets go. Elsewhere the first
/// try succeeds.
fn when_free(what: &str, mut op: impl FnMut() -> std::io::Result<()>) {
    wait_until(what, || match op() {
        // Access denied, or ERROR_SHARING_VIOLATION (32).
        Err(e)
            if cfg!(windows)
                && (e.kind() == std::io::ErrorKind::PermissionDenied
                    || e.raw_os_error() == Some(32)) =>
        {
            false
        }
        other => {
            other.unwrap();
            true
        }
    });
}

/// Writes `config` to `dir/config.json` whole: a new file renamed over
/// the old one, so that a read never sees it half written.
fn replace_file(dir: &Path, config: &str) {
    let tmp = dir.join("config.json.tmp");
    fs::write(&tmp, config).unwrap();
    when_free("config.json to be replaced", || {
        fs::rename(&tmp, dir.join("config.json"))
    });
}

/// A whole new `..data` directory holding `config`, put in place of the
/// old one. On Linux atomically (`renameat2(RENAME_EXCHANGE)`: a rename
/// cannot replace a directory that is not empty), elsewhere by moving the
/// old one aside first, so that `..data` is missing for a moment, as in
/// the Windows kubelet's swap.
fn replace_data_dir(vol: &Path, config: &str, exchange: bool) {
    let new = vol.join("..new");
    let old = vol.join("..old");
    fs::create_dir(&new).unwrap();
    fs::write(new.join("config.json"), config).unwrap();
    let data = vol.join("..data");
    #[cfg(target_os = "linux")]
    if exchange {
        use rustix::fs::{CWD, RenameFlags, renameat_with};
        renameat_with(CWD, &new, CWD, &data, RenameFlags::EXCHANGE).unwrap();
        fs::remove_dir_all(&new).unwrap();
        return;
    }
    let _ = exchange;
    when_free("..data to be moved aside", || fs::rename(&data, &old));
    fs::rename(&new, &data).unwrap();
    when_free("the old ..data to be removed", || fs::remove_dir_all(&old));
}

/// The real binary watching `dirs` with JSON events every 10 ms.
fn watch(dirs: &[&Path], extra: &[&str]) -> Running {
    let mut cmd = bin();
    cmd.args(["-o", "json", "-i", "10ms"]);
    for dir in dirs {
        cmd.arg("-d").arg(dir);
    }
    cmd.args(extra);
    Running::spawn(cmd)
}

/// Stops `run` and returns everything it wrote on stderr.
fn stderr_at_exit(mut run: Running) -> String {
    let _ = run.child.kill();
    let _ = run.child.wait();
    // The pipe is closed: the reader thread ends, and so does the channel.
    run.stderr.iter().collect::<Vec<_>>().join("\n")
}

/// The next event, which must be a change to `config`.
fn change_to(run: &Running, config: Value) -> Value {
    let e = run.event();
    assert_eq!(
        (&e["event"], &e["config"]),
        (&json!("change"), &config),
        "{e}"
    );
    e
}

/// The next stderr line containing `what`, within the deadline.
fn stderr_line(run: &Running, what: &str) -> String {
    loop {
        let line = run
            .stderr
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("no stderr line with {what:?} within the deadline"));
        if line.contains(what) {
            return line;
        }
    }
}

/// The issue's case: `..data` is a real directory. Four updates, two
/// written in place and two replacing the whole directory, are each seen
/// once, with one warning saying why and what is lost.
#[test]
fn a_data_directory_is_watched_as_plain_files_and_sees_every_update() {
    let vol = hidden_symlink_volume(r#"{"v":0}"#);
    let run = watch(&[vol.path()], &[]);
    let e = run.event();
    assert_eq!(
        (&e["event"], &e["config"]),
        (&json!("initial"), &json!({"v": 0})),
        "{e}"
    );
    assert!(e["version"].as_str().unwrap().starts_with("plain-"), "{e}");
    assert_eq!(e["lag_ms"], Value::Null, "no swap time, so no lag: {e}");

    let data = vol.path().join("..data");
    replace_file(&data, r#"{"v":1}"#);
    change_to(&run, json!({"v": 1}));
    replace_data_dir(vol.path(), r#"{"v":2}"#, true);
    change_to(&run, json!({"v": 2}));
    replace_file(&data, r#"{"v":3}"#);
    change_to(&run, json!({"v": 3}));
    replace_data_dir(vol.path(), r#"{"v":4}"#, false);
    change_to(&run, json!({"v": 4}));

    let stderr = stderr_at_exit(run);
    let warnings = stderr.matches("this filesystem hides symlinks").count();
    assert_eq!(warnings, 1, "{stderr}");
    for lost in ["read across two versions", "no lag"] {
        assert!(
            stderr.contains(lost),
            "the warning says what is lost: {stderr}"
        );
    }
    assert!(!stderr.contains("subPath"), "{stderr}");
}

/// `..data` turning from a directory into a symlink (the volume read
/// where symlinks work again) is a ConfigMap volume; back to a directory,
/// plain files again. The warning is given once.
#[cfg(unix)]
#[test]
fn a_data_directory_that_becomes_a_symlink_and_back_switches_modes() {
    let vol = hidden_symlink_volume(r#"{"v":0}"#);
    fs::remove_file(vol.path().join("config.json")).unwrap();
    let mut w = Watcher::new(WatchOptions::new(vol.path()));
    let e = w.check().expect("no event for a ..data directory");
    assert_eq!(e.kind, EventKind::Initial, "{e:?}");
    assert_eq!(w.layout(), Layout::Plain);
    assert!(w.check().is_none(), "idle");

    fs::remove_dir_all(vol.path().join("..data")).unwrap();
    let v1 = vol.publish(&[("config.json", r#"{"v":1}"#)]);
    let e = w.check().expect("no event once ..data is a symlink");
    assert_eq!((e.kind, e.version), (EventKind::Change, v1));
    assert_eq!(w.layout(), Layout::ConfigMap);

    // The data directory put where the link was, as SMB would show it.
    let target = vol.data_dir();
    fs::remove_file(vol.path().join("..data")).unwrap();
    fs::rename(&target, vol.path().join("..data")).unwrap();
    replace_file(&vol.path().join("..data"), r#"{"v":2}"#);
    let e = w
        .check()
        .expect("no event once ..data is a directory again");
    assert_eq!(e.kind, EventKind::Change);
    assert_eq!(*e.config.unwrap(), json!({"v": 2}));
    assert_eq!(w.layout(), Layout::Plain);
}

/// `--layout configmap` never reads plain files: a `..data` directory is
/// one error and is waited on; a directory without `..data` waits for it.
/// Both are picked up once the kubelet's symlink is there.
#[test]
fn layout_configmap_refuses_plain_files_and_waits_for_the_symlink() {
    let hidden = hidden_symlink_volume(r#"{"v":0}"#);
    fs::remove_file(hidden.path().join("config.json")).unwrap();
    let plain = Vol::new();
    fs::create_dir_all(plain.path()).unwrap();
    fs::write(plain.path().join("notes.txt"), "not a volume").unwrap();
    let run = watch(&[hidden.path(), plain.path()], &["--layout", "configmap"]);
    let e = run.event();
    assert_eq!(
        (&e["event"], &e["dir"]),
        (&json!("error"), &json!(hidden.path().to_string_lossy())),
        "{e}"
    );
    let error = e["error"].as_str().unwrap();
    assert!(error.contains("is a directory, not a symlink"), "{error}");
    stderr_line(&run, "forced to ConfigMap");

    if !crate::helper::symlinks_work() {
        crate::helper::no_symlinks(file!(), line!());
        return;
    }
    // The next event is the kubelet's version: the plain directory gave
    // none, and the refused one was reported once.
    let v1 = plain.publish(&[("config.json", r#"{"p":1}"#)]);
    let e = run.event();
    assert_eq!(
        (&e["event"], &e["version"]),
        (&json!("initial"), &json!(v1)),
        "{e}"
    );
    fs::remove_dir_all(hidden.path().join("..data")).unwrap();
    let v2 = hidden.publish(&[("config.json", r#"{"h":1}"#)]);
    let e = run.event();
    assert_eq!(
        (&e["event"], &e["version"]),
        (&json!("initial"), &json!(v2)),
        "{e}"
    );
    let stderr = stderr_at_exit(run);
    assert!(
        !stderr.contains("watching it as a plain directory"),
        "{stderr}"
    );
}

/// `--layout plain` on a real kubelet volume: `..data` is followed and
/// read as plain files; each update is reported once, as a content change.
#[test]
fn layout_plain_on_a_kubelet_volume_reports_each_update_once() {
    let vol = vol!();
    vol.publish(&[("config.json", r#"{"n":0}"#)]);
    let run = watch(&[vol.path()], &["--layout", "plain"]);
    let e = run.event();
    assert_eq!(
        (&e["event"], &e["config"]),
        (&json!("initial"), &json!({"n": 0})),
        "{e}"
    );
    assert!(e["version"].as_str().unwrap().starts_with("plain-"), "{e}");
    for n in 1..=5 {
        vol.publish(&[("config.json", &format!(r#"{{"n":{n}}}"#))]);
        // The very next event: no repeat of the last update, no error.
        change_to(&run, json!({ "n": n }));
    }
    let stderr = stderr_at_exit(run);
    assert!(stderr.contains("forced to plain"), "{stderr}");
    assert!(!stderr.contains("subPath"), "{stderr}");
}

/// `--dir vol/..data` on a kubelet volume watches the volume through its
/// symlink: consistent versions named by the kubelet, no subPath warning.
#[test]
fn a_dir_named_data_on_a_kubelet_volume_watches_the_volume() {
    let vol = vol!();
    let v1 = vol.publish(&[("config.json", r#"{"v":1}"#)]);
    let given = vol.path().join("..data");
    let run = watch(&[&given], &[]);
    let e = run.event();
    assert_eq!(
        (&e["event"], &e["version"]),
        (&json!("initial"), &json!(v1)),
        "{e}"
    );
    assert_eq!(
        e["dir"],
        json!(given.to_string_lossy()),
        "events name the dir as given"
    );
    let v2 = vol.publish(&[("config.json", r#"{"v":2}"#)]);
    let e = run.event();
    assert_eq!(
        (&e["event"], &e["version"]),
        (&json!("change"), &json!(v2)),
        "{e}"
    );
    let stderr = stderr_at_exit(run);
    assert!(!stderr.contains("subPath"), "{stderr}");
}

/// `--dir vol/..data` where `..data` is a directory (symlinks hidden) is
/// the hidden-symlink watch: its warning, not the subPath one.
#[test]
fn a_dir_named_data_that_is_a_directory_is_the_hidden_symlink_watch() {
    let vol = hidden_symlink_volume(r#"{"v":1}"#);
    let given = vol.path().join("..data");
    let run = watch(&[&given], &[]);
    let e = run.event();
    assert_eq!(
        (&e["event"], &e["config"]),
        (&json!("initial"), &json!({"v": 1})),
        "{e}"
    );
    replace_file(&given, r#"{"v":2}"#);
    change_to(&run, json!({"v": 2}));
    let stderr = stderr_at_exit(run);
    assert_eq!(
        stderr.matches("this filesystem hides symlinks").count(),
        1,
        "{stderr}"
    );
    assert!(!stderr.contains("subPath"), "{stderr}");
}

/// A directory whose first look already finds files and no kubelet
/// entries is warned about at once: with an hour between ticks, the
/// warning can only come from the first one.
#[test]
fn the_subpath_warning_comes_at_once_when_the_first_look_finds_files() {
    let vol = Vol::new();
    fs::create_dir_all(vol.path()).unwrap();
    fs::write(vol.path().join("config.json"), r#"{"a":1}"#).unwrap();
    let mut cmd = bin();
    cmd.args(["-o", "json", "-i", "1h", "-d"]).arg(vol.path());
    let run = Running::spawn(cmd);
    assert_eq!(run.event()["event"], "initial");
    stderr_line(&run, "subPath");
}

/// A directory that was empty at the first look may be a volume about to
/// be written: its files must stay 2 s without `..data` before the subPath
/// warning (kept as it was; this guards it against "at once").
#[test]
fn the_subpath_warning_waits_for_files_in_a_directory_first_seen_empty() {
    let vol = Vol::new();
    fs::create_dir_all(vol.path()).unwrap();
    let run = watch(&[vol.path()], &[]);
    // The first look has happened once it reports the missing key.
    assert_eq!(run.event()["event"], "error");
    let written = Instant::now();
    fs::write(vol.tmp.path().join("config.json"), r#"{"a":1}"#).unwrap();
    fs::rename(
        vol.tmp.path().join("config.json"),
        vol.path().join("config.json"),
    )
    .unwrap();
    assert_eq!(run.event()["event"], "initial");
    stderr_line(&run, "subPath");
    let waited = written.elapsed();
    assert!(waited >= Duration::from_secs(2), "warned after {waited:?}");
}

/// The library's option: forced plain mode on a `..data` directory, and
/// forced ConfigMap mode refusing it, tick by tick.
#[test]
fn the_layout_option_forces_a_mode_in_the_library() {
    let vol = hidden_symlink_volume(r#"{"v":1}"#);
    let mut plain = Watcher::new(WatchOptions::new(vol.path()).with_layout(LayoutMode::Plain));
    let e = plain.check().unwrap();
    assert_eq!(
        (e.kind, plain.layout()),
        (EventKind::Initial, Layout::Plain)
    );
    assert_eq!(*e.config.unwrap(), json!({"v": 1}));

    let mut cm = Watcher::new(WatchOptions::new(vol.path()).with_layout(LayoutMode::ConfigMap));
    let e = cm.check().unwrap();
    assert_eq!((e.kind, cm.layout()), (EventKind::Error, Layout::ConfigMap));
    assert!(cm.check().is_none(), "reported once");
}
