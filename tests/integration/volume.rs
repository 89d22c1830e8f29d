//! The reader against attacks and huge or awkward volumes: a symlink race
//! out of the volume, plain-mode changes that leave size and mtime alone,
//! and bounded memory and time.

// Most of these need Linux (renameat2, setpriv, loop mounts, /proc).
#![cfg_attr(not(target_os = "linux"), allow(unused_imports))]

use std::{fs, thread, time::Duration};

use configmapwatch::{EventKind, Selector, Volume, WatchOptions, Watcher};
use serde_json::json;

use crate::helper::{DEADLINE, Running, bin};

/// A writer inside the volume swaps a directory and a symlink to a
/// directory outside it (`renameat2(RENAME_EXCHANGE)`) as fast as it can,
/// while the reader reads. No snapshot may ever hold a byte from outside.
#[cfg(target_os = "linux")]
#[test]
fn a_symlink_swapped_in_mid_read_never_leaks_outside_files() {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };

    let vol = vol!();
    let marker = format!("OUTSIDE-{}", fastrand::u64(..));
    let outside = vol.tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), &marker).unwrap();
    vol.publish(&[("sub/secret", "inside"), ("config.json", "{}")]);
    let data = vol.data_dir();
    let (sub, link) = (data.join("sub"), data.join("swap"));
    std::os::unix::fs::symlink(&outside, &link).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                renameat_with(CWD, &sub, CWD, &link, RenameFlags::EXCHANGE).unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    let seconds = std::env::var("CONFIGMAPWATCH_RACE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let deadline = std::time::Instant::now() + Duration::from_secs_f64(seconds);
    let mut volume = Volume::new(vol.path(), 1 << 20);
    let (mut reads, mut leaks) = (0u64, 0u64);
    while std::time::Instant::now() < deadline {
        if let Ok(snapshot) = volume.read_configmap() {
            reads += 1;
            leaks += snapshot
                .entries
                .values()
                .filter(|c| c.as_ref().is_ok_and(|b| b == marker.as_bytes()))
                .count() as u64;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    println!("symlink race: {reads} snapshots, {swaps} swaps, {leaks} outside reads");
    assert!(reads > 100 && swaps > 100, "{reads} reads, {swaps} swaps");
    assert_eq!(
        leaks, 0,
        "{leaks} of {reads} snapshots held a file from outside the volume"
    );
}

/// Runs the real binary as an unprivileged user (root reads anything).
#[cfg(target_os = "linux")]
fn as_nobody() -> std::process::Command {
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_configmapwatch"));
    cmd
}

/// Plain mode: a key at mode 000 is "permission denied" (a passing fault,
/// retried); a `chmod 644` changes neither size nor mtime, only mode and
/// ctime, and must be noticed.
#[cfg(target_os = "linux")]
#[test]
fn a_permission_fix_in_a_plain_directory_is_noticed() {
    use std::os::unix::fs::PermissionsExt;

    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let file = tmp.path().join("config.json");
    fs::write(&file, r#"{"ok":true}"#).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o000)).unwrap();
    let mut cmd = as_nobody();
    cmd.args(["-o", "json", "-i", "10ms", "-d"]).arg(tmp.path());
    let run = Running::spawn(cmd);
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut stderr = String::new();
    while !stderr.contains("Permission denied") {
        assert!(std::time::Instant::now() < deadline, "{stderr}");
        if let Ok(line) = run.stderr.recv_timeout(Duration::from_millis(50)) {
            stderr.push_str(&line);
        }
    }
    assert!(stderr.contains("config.json"), "{stderr}");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let e = run.event();
    assert_eq!(
        (&e["event"], &e["config"]),
        (&json!("initial"), &json!({"ok": true})),
        "{e}"
    );
}

/// Mounts a fresh ext4 image made with 128-byte inodes: whole-second
/// timestamps. Unmounted on drop.
#[cfg(target_os = "linux")]
pub struct CoarseFs {
    pub mnt: std::path::PathBuf,
    _tmp: tempfile::TempDir,
}

#[cfg(target_os = "linux")]
impl CoarseFs {
    pub fn mount() -> Option<Self> {
        use std::process::Command;
        let tmp = tempfile::tempdir().unwrap();
        let image = tmp.path().join("coarse.img");
        let mnt = tmp.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        fs::File::create(&image).unwrap().set_len(16 << 20).unwrap();
        let mkfs = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-I", "128"])
            .arg(&image)
            .output()
            .expect("mkfs.ext4 (e2fsprogs) is needed for this test");
        assert!(mkfs.status.success(), "mkfs.ext4: {mkfs:?}");
        let mount = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mnt)
            .output()
            .unwrap();
        if !mount.status.success() {
            let why = String::from_utf8_lossy(&mount.stderr).trim().to_owned();
            crate::helper::skip(
                "coarse timestamps",
                &format!("cannot loop-mount ext4 here ({why})"),
            );
            return None;
        }
        Some(CoarseFs { mnt, _tmp: tmp })
    }
}

#[cfg(target_os = "linux")]
impl Drop for CoarseFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.mnt).status();
    }
}

/// "Racy clean": on whole-second timestamps, a same-size rewrite within
/// the second leaves size, mtime, ctime and inode as they were. A
/// fingerprint that young is unconfirmed, so the content is compared again.
#[cfg(target_os = "linux")]
#[test]
fn a_same_size_rewrite_within_one_timestamp_tick_is_caught() {
    let Some(coarse) = CoarseFs::mount() else {
        return;
    };
    // Both writes must share one second's timestamp; on a loaded machine
    // a try can straddle a second boundary, so a few tries are allowed.
    for attempt in 0..5 {
        let dir = coarse.mnt.join(format!("plain{attempt}"));
        fs::create_dir(&dir).unwrap();
        // Start early in a second.
        while std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_millis()
            > 200
        {
            thread::sleep(Duration::from_millis(5));
        }
        let file = dir.join("config.json");
        fs::write(&file, r#"{"v":1}"#).unwrap();
        let mut w = Watcher::new(WatchOptions::new(&dir));
        assert_eq!(w.check().unwrap().kind, EventKind::Initial);
        let before = fs::metadata(&file).unwrap();
        fs::write(&file, r#"{"v":2}"#).unwrap();
        let after = fs::metadata(&file).unwrap();
        if (before.len(), before.modified().unwrap()) != (after.len(), after.modified().unwrap()) {
            println!("racy-clean try {attempt} crossed a second boundary; trying again");
            continue;
        }
        let e = w
            .check()
            .expect("a same-size rewrite in the same second was missed");
        assert_eq!(
            (e.kind, e.config.as_deref().cloned()),
            (EventKind::Change, Some(json!({"v": 2})))
        );
        return;
    }
    panic!("could not write twice within one second in 5 tries");
}

/// 40 sparse 16 MiB files beside `config.json` in a plain directory: only
/// the selected key is read, so memory stays small.
#[cfg(target_os = "linux")]
#[test]
fn only_the_selected_key_is_read_so_memory_stays_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("config.json"), r#"{"v":1}"#).unwrap();
    for i in 0..40 {
        fs::File::create(tmp.path().join(format!("big{i}")))
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
    }
    let mut cmd = bin();
    cmd.args(["-o", "json", "-i", "10ms", "-d"]).arg(tmp.path());
    let run = Running::spawn(cmd);
    assert_eq!(run.event()["config"], json!({"v": 1}));
    let peak_kib = crate::helper::peak_rss_kib(run.child.id());
    assert!(peak_kib < 32 * 1024, "peak RSS {peak_kib} KiB");
}

/// A tree with more entries than the cap is refused with a clear error,
/// not walked on every tick.
#[test]
fn more_entries_than_the_cap_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    for i in 0..=configmapwatch::volume::DEFAULT_MAX_ENTRIES {
        fs::write(tmp.path().join(format!("k{i}")), "").unwrap();
    }
    let mut w = Watcher::new(WatchOptions::new(tmp.path()).with_selector(Selector::all_keys()));
    let e = w.check().unwrap();
    assert_eq!(e.kind, EventKind::Error);
    assert!(
        e.error
            .as_deref()
            .unwrap()
            .contains("more than 10000 entries"),
        "{e:?}"
    );
}

/// 1,000 nested directories, read on a thread with a 64 KiB stack: refused
/// as too deep, without a stack overflow.
#[test]
fn deep_nesting_is_refused_without_overflowing_a_small_stack() {
    let tmp = tempfile::tempdir().unwrap();
    let mut deep = tmp.path().to_owned();
    for _ in 0..1000 {
        deep.push("d");
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("k"), "x").unwrap();
    let dir = tmp.path().to_owned();
    let result = thread::Builder::new()
        .stack_size(64 * 1024)
        .spawn(move || {
            Volume::new(&dir, 1 << 20)
                .read_plain()
                .map(|s| s.entries.len())
        })
        .unwrap()
        .join()
        .expect("the reader overflowed its stack");
    let err = result.unwrap_err();
    assert!(err.to_string().contains("directories deep"), "{err}");
}

/// Files claim their length; a sparse file claiming 16 MiB under a 1 MiB
/// cap is refused without reading it, and the total cap bounds many files
/// under the per-file cap.
#[test]
fn the_total_size_is_capped() {
    let tmp = tempfile::tempdir().unwrap();
    for i in 0..5 {
        fs::write(tmp.path().join(format!("k{i}")), vec![b'x'; 1000]).unwrap();
    }
    // Limits is non-exhaustive: from the defaults, as a user would.
    let mut limits = configmapwatch::volume::Limits::default();
    limits.max_file_size = 2000;
    limits.max_total_size = 4500;
    limits.max_entries = 100;
    let mut volume = Volume::with_limits(tmp.path(), limits);
    let err = volume.read_plain().unwrap_err();
    assert!(err.to_string().contains("--max-total-size"), "{err}");
    assert!(!err.is_transient());
}
