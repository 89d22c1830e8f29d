//! Protections a mutation run (cargo-mutants, issues 24 and 25) found no
//! test for: each test here is named after the protection it checks and
//! fails when that protection is taken out. The races between the walk's
//! look at a key and its open are tested beside the walk
//! (`src/volume/walk.rs`), the only place that point can be reached.

#![cfg(unix)]

use std::{fs, ops::ControlFlow, path::Path};

use configmapwatch::{
    Error, ErrorKind, EventKind, Layout, Outcome, ReadStep, Step, Swap, Volume, WatchOptions,
    Watcher, volume::Limits,
};

use crate::helper::{Vol, bin, payload};

fn limits(max_entries: usize) -> Limits {
    // Limits is non-exhaustive: from the defaults, as a user would.
    let mut limits = Limits::default();
    limits.max_entries = max_entries;
    limits
}

/// Exactly `max_entries` entries (files and directories) are read; one
/// more refuses the version.
#[test]
fn the_entries_cap_allows_exactly_max_entries() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("dir")).unwrap();
    fs::write(tmp.path().join("dir/a"), "1").unwrap();
    fs::write(tmp.path().join("b"), "2").unwrap();
    let snapshot = Volume::with_limits(tmp.path(), limits(3))
        .read_plain()
        .unwrap_or_else(|e| panic!("3 entries under a cap of 3: {e}"));
    assert_eq!(snapshot.names, ["b", "dir/a"]);
    let err = Volume::with_limits(tmp.path(), limits(2))
        .read_plain()
        .unwrap_err();
    assert!(err.to_string().contains("more than 2 entries"), "{err}");
    assert_eq!(err.kind(), ErrorKind::Content);
}

/// Directories nested exactly `MAX_DEPTH` deep are read; one level more is
/// refused.
#[test]
fn the_depth_cap_allows_exactly_max_depth_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let nest = |levels: usize| {
        let root = tmp.path().join(format!("n{levels}"));
        let mut dir = root.clone();
        for _ in 0..levels {
            dir.push("d");
        }
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("k"), "x").unwrap();
        root
    };
    let max = configmapwatch::volume::MAX_DEPTH;
    let snapshot = Volume::new(nest(max), 1 << 20)
        .read_plain()
        .unwrap_or_else(|e| panic!("{max} levels: {e}"));
    assert_eq!(snapshot.names, [format!("{}k", "d/".repeat(max))]);
    let err = Volume::new(nest(max + 1), 1 << 20)
        .read_plain()
        .unwrap_err();
    assert!(err.to_string().contains("directories deep"), "{err}");
}

/// A walk that failed on a version `..data` no longer points to (the
/// writer swapped meanwhile, and has not yet deleted the old directory)
/// says nothing about the volume: the read starts over on the new version.
/// The same failure with `..data` unmoved is the version's own error.
#[test]
fn a_read_that_failed_because_the_writer_swapped_mid_walk_is_retried() {
    let vol = vol!();
    // Three entries: over a cap of two.
    let v1 = vol.publish(&[("a", "1"), ("b", "2"), ("c", "3")]);
    let mut volume = Volume::with_limits(vol.path(), limits(2));
    let err = volume.read_configmap().unwrap_err();
    assert!(
        matches!(err, Error::VolumeRefused { .. }) && err.to_string().contains("more than 2"),
        "with ..data unmoved the refusal is the version's: {err}"
    );

    let mut v2 = None;
    let snapshot = volume
        .read_configmap_with_hook(&mut |step| {
            if step == ReadStep::TargetRead && v2.is_none() {
                // The kubelet between its swap (step 7) and removing the
                // old directory (step 10).
                let outcome = vol.publish_with_hook(&[("a", "new")], Swap::Rename, |step| {
                    if step == Step::Swapped {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                });
                let Outcome::Interrupted { version, .. } = outcome else {
                    panic!("{outcome:?}")
                };
                v2 = Some(version);
            }
        })
        .unwrap_or_else(|e| panic!("the old version's refusal was reported: {e}"));
    assert!(
        vol.path().join(&v1).is_dir(),
        "the old directory was still there"
    );
    assert_eq!(Some(&snapshot.version), v2.as_ref());
    assert_eq!(snapshot.get("a").unwrap().unwrap(), b"new");
}

/// A volume path this long leaves room for `<dir>/..data` but not for
/// `<dir>/<a 200-byte target>`: an `lstat` of the data directory fails with
/// ENAMETOOLONG. That stands for the error EIO on FUSE or NFS gives, which
/// no test can make on demand: any error but "not found".
fn volume_whose_data_dir_cannot_be_looked_at(tmp: &Path) -> (std::path::PathBuf, String) {
    let mut dir = tmp.to_owned();
    while dir.as_os_str().len() < 3850 {
        dir.push("x".repeat(200));
    }
    fs::create_dir_all(&dir).unwrap();
    let target = format!("..{}", "t".repeat(198));
    assert!(dir.as_os_str().len() + "/..data".len() < 4095);
    assert!(dir.as_os_str().len() + 1 + target.len() >= 4096);
    // The data directory exists (made through a handle, which no path
    // length limits): only looking at it by path fails.
    let handle = fs::File::open(&dir).unwrap();
    rustix::fs::mkdirat(&handle, target.as_str(), 0o755.into()).unwrap();
    rustix::fs::symlinkat(target.as_str(), &handle, "..data").unwrap();
    (dir, target)
}

/// An error other than "not found" on the data directory is a passing
/// fault naming its cause, retried on each tick: never the content error
/// "points to a missing directory", which would settle on that target and
/// lose the version until `..data` moves again.
#[test]
fn an_lstat_error_on_the_data_dir_is_a_passing_fault_not_a_missing_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _) = volume_whose_data_dir_cannot_be_looked_at(tmp.path());
    let err = Volume::new(&dir, 1 << 20).read_configmap().unwrap_err();
    assert!(err.is_transient(), "{err}");
    let chain = err.chain();
    assert!(!chain.contains("missing"), "{chain}");
    assert!(chain.contains("too long"), "the real cause: {chain}");

    // Retried (with backoff from one interval) while it lasts, never
    // settled on; quiet until the grace.
    let mut w = Watcher::new(
        WatchOptions::new(&dir)
            .with_interval(std::time::Duration::from_millis(1))
            .with_fault_grace(std::time::Duration::from_secs(3600)),
    );
    crate::helper::wait_until("three attempts at the version", || {
        let event = w.check();
        assert!(event.is_none(), "{event:?}");
        let fault = w.fault().expect("retried as a passing fault");
        assert!(fault.message.contains("too long"), "{fault:?}");
        w.heartbeat().retries() >= 3
    });
}

/// The writer reads `..data` to find the previous version. Anything but
/// "there is none" (here `..data` is a regular file) is refused: renaming
/// over it would destroy what is there and never clean up the version it
/// stood for.
#[test]
fn the_writer_refuses_a_data_entry_that_is_not_a_link() {
    for make in [
        (|p: &Path| fs::write(p, "not a link").unwrap()) as fn(&Path),
        |p: &Path| fs::create_dir(p).unwrap(),
    ] {
        let vol = Vol::new();
        fs::create_dir(vol.path()).unwrap();
        let data = vol.path().join("..data");
        make(&data);
        let before: Vec<_> = fs::read_dir(vol.path()).unwrap().flatten().collect();
        let err = vol
            .writer
            .write(&payload(&[("config.json", "{}")]))
            .unwrap_err();
        assert!(err.to_string().contains("..data"), "{err}");
        assert!(
            !fs::symlink_metadata(&data).unwrap().is_symlink(),
            "..data was replaced"
        );
        let after: Vec<_> = fs::read_dir(vol.path()).unwrap().flatten().collect();
        assert_eq!(after.len(), before.len(), "the refused write left entries");
    }
}

/// A volume path that becomes a regular file (ENOTDIR on `readlink`) is a
/// directory gone: the watcher goes back to waiting and says why, rather
/// than failing to read `..data` on every tick; a directory written there
/// again is followed.
#[test]
fn a_volume_path_turned_into_a_file_sends_the_watcher_back_to_waiting() {
    let vol = vol!();
    vol.publish(&[("config.json", r#"{"v":1}"#)]);
    let mut w = Watcher::new(WatchOptions::new(vol.path()));
    assert_eq!(w.check().unwrap().kind, EventKind::Initial);
    assert_eq!(w.layout(), Layout::ConfigMap);

    fs::remove_dir_all(vol.path()).unwrap();
    fs::write(vol.path(), "a file now").unwrap();
    assert!(w.check().is_none());
    assert_eq!(w.layout(), Layout::Missing, "back to waiting");
    assert!(w.check().is_none());
    let why = w.fault().expect("waiting, saying why");
    assert!(why.message.contains("not a directory"), "{why:?}");

    fs::remove_file(vol.path()).unwrap();
    let v2 = vol.publish(&[("config.json", r#"{"v":2}"#)]);
    let e = w.check().expect("the directory is followed again");
    assert_eq!(
        (e.kind, e.version.as_str()),
        (EventKind::Change, v2.as_str())
    );
}

/// `readlink(..data)` under a volume path that is a regular file fails
/// with ENOTDIR: there is no `..data` there, as for a path with none
/// (DataLinkMissing, which the reader retries), not a link it cannot read.
#[test]
fn a_data_link_under_a_volume_path_that_is_a_file_is_missing_not_unreadable() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("vol");
    fs::write(&file, "a file").unwrap();
    let err = Volume::new(&file, 1 << 20).read_configmap().unwrap_err();
    assert!(matches!(err, Error::DataLinkMissing { .. }), "{err:?}");
}

/// The tool, as a user that root's permission bypass does not cover: as
/// root, nobody (`setpriv`); `None` (the test skipped, saying why) when
/// setpriv is missing.
fn bin_without_root(test: &str) -> Option<std::process::Command> {
    if !rustix::process::geteuid().is_root() {
        return Some(bin());
    }
    if std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .is_err()
    {
        crate::helper::skip(
            test,
            "running as root and setpriv (util-linux) is not installed",
        );
        return None;
    }
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_configmapwatch"));
    Some(cmd)
}

/// `--once` in plain mode with a key it may not read (a passing fault):
/// the error names the cause and the key, not a generic "kept changing".
/// Root reads anything, so as root this runs as nobody (`setpriv`).
#[test]
fn once_reports_a_plain_mode_fault_by_its_cause() {
    use std::os::unix::fs::PermissionsExt;

    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let file = tmp.path().join("config.json");
    fs::write(&file, "{}").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o000)).unwrap();
    let Some(mut cmd) = bin_without_root("once_reports_a_plain_mode_fault_by_its_cause") else {
        return;
    };
    let out = cmd
        .args(["--once", "-o", "json", "-d"])
        .arg(tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let e: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}{stderr}", String::from_utf8_lossy(&out.stdout)));
    let error = e["error"].as_str().unwrap();
    assert!(error.contains("Permission denied"), "{error}");
    assert_eq!(e["key"], "config.json", "{e}");
}

/// The old data directory that cannot be removed at the last step (here
/// its files may not be unlinked) fails the write, as it fails the
/// kubelet's: the new version is live, and the leftover is said, not
/// hidden. As root this runs `publish` as nobody (`setpriv`).
#[test]
fn an_old_data_directory_that_cannot_be_removed_fails_the_write() {
    use std::os::unix::fs::PermissionsExt;

    let vol = vol!();
    let v1 = vol.publish(&[("config.json", "1")]);
    let parent = vol.path().parent().unwrap();
    fs::set_permissions(parent, fs::Permissions::from_mode(0o755)).unwrap();
    let old = vol.path().join(&v1);
    fs::set_permissions(&old, fs::Permissions::from_mode(0o555)).unwrap();
    if rustix::process::geteuid().is_root() {
        // nobody may write the volume, not the old version in it.
        std::os::unix::fs::chown(vol.path(), Some(65534), Some(65534)).unwrap();
    }
    let Some(mut cmd) =
        bin_without_root("an_old_data_directory_that_cannot_be_removed_fails_the_write")
    else {
        return;
    };
    let out = cmd
        .args(["publish", "--from-literal", "config.json=2", "--dir"])
        .arg(vol.path())
        .output()
        .unwrap();
    fs::set_permissions(&old, fs::Permissions::from_mode(0o755)).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot remove old data directory") && stderr.contains(&v1),
        "{stderr}"
    );
    assert_ne!(vol.target(), v1, "the new version is live");
    assert_eq!(
        fs::read_to_string(vol.path().join("config.json")).unwrap(),
        "2"
    );
}

/// A nested directory of a ConfigMap volume that cannot be opened
/// (here: permission denied) is a passing fault naming its cause and the
/// key, not a directory that vanished mid-read: taking every failed open
/// for the writer at work would retry it until "kept changing".
#[test]
fn a_nested_directory_that_cannot_be_opened_is_a_fault_naming_its_cause() {
    use std::os::unix::fs::PermissionsExt;

    let vol = vol!();
    vol.publish(&[("conf/config.json", "{}")]);
    let parent = vol.path().parent().unwrap();
    fs::set_permissions(parent, fs::Permissions::from_mode(0o755)).unwrap();
    let nested = vol.data_dir().join("conf");
    fs::set_permissions(&nested, fs::Permissions::from_mode(0o000)).unwrap();
    let Some(mut cmd) =
        bin_without_root("a_nested_directory_that_cannot_be_opened_is_a_fault_naming_its_cause")
    else {
        return;
    };
    let out = cmd
        .args(["--once", "-o", "json", "-f", "conf/config.json", "-d"])
        .arg(vol.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let e: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}{stderr}", String::from_utf8_lossy(&out.stdout)));
    let error = e["error"].as_str().unwrap();
    assert!(error.contains("Permission denied"), "{error}");
    assert_eq!(e["key"], "conf", "{e}");
}

/// `publish` on Linux switches `..data` with one rename of `..data_tmp`
/// over it, as the kubelet does: seen by inotify as a move, with `..data`
/// never deleted or created (the Windows way, remove then create, leaves a
/// moment with no `..data`).
#[cfg(target_os = "linux")]
#[test]
fn publish_on_linux_swaps_data_with_one_atomic_rename() {
    use inotify::{EventMask, Inotify, WatchMask};

    let vol = vol!();
    vol.publish(&[("config.json", "1")]);
    let mut inotify = Inotify::init().unwrap();
    inotify
        .watches()
        .add(
            vol.path(),
            WatchMask::CREATE | WatchMask::DELETE | WatchMask::MOVED_FROM | WatchMask::MOVED_TO,
        )
        .unwrap();
    let out = bin()
        .args(["publish", "--dir"])
        .arg(vol.path())
        .args(["--from-literal", "config.json=2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let mut buffer = [0u8; 64 * 1024];
    let mut seen = Vec::new();
    loop {
        match inotify.read_events(&mut buffer) {
            Ok(events) => seen.extend(events.map(|e| {
                let name = e.name.map(|n| n.to_string_lossy().into_owned());
                (e.mask, name.unwrap_or_default(), e.cookie)
            })),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    let on = |mask: EventMask, name: &str| {
        seen.iter()
            .filter(|(m, n, _)| m.contains(mask) && n == name)
            .map(|(_, _, cookie)| *cookie)
            .collect::<Vec<_>>()
    };
    let (from, to) = (
        on(EventMask::MOVED_FROM, "..data_tmp"),
        on(EventMask::MOVED_TO, "..data"),
    );
    assert_eq!(from.len(), 1, "{seen:?}");
    assert_eq!(from, to, "one rename of ..data_tmp to ..data: {seen:?}");
    assert!(on(EventMask::DELETE, "..data").is_empty(), "{seen:?}");
    assert!(on(EventMask::CREATE, "..data").is_empty(), "{seen:?}");
}

/// The keys read may add up to exactly `max_total_size`; one byte more
/// refuses the version.
#[test]
fn the_total_size_cap_allows_exactly_max_total_size() {
    let tmp = tempfile::tempdir().unwrap();
    for i in 0..5 {
        fs::write(tmp.path().join(format!("k{i}")), vec![b'x'; 1000]).unwrap();
    }
    let mut limits = Limits::default();
    limits.max_total_size = 5000;
    let snapshot = Volume::with_limits(tmp.path(), limits)
        .read_plain()
        .unwrap_or_else(|e| panic!("5000 bytes under a cap of 5000: {e}"));
    assert_eq!(snapshot.entries.len(), 5);
    limits.max_total_size = 4999;
    let err = Volume::with_limits(tmp.path(), limits)
        .read_plain()
        .unwrap_err();
    assert!(err.to_string().contains("--max-total-size"), "{err}");
}

/// `..data` pointing at a regular file (named like a data directory) is a
/// bad target, a content error saying so, not a failure to list it.
#[test]
fn a_data_target_that_is_a_file_is_refused_as_not_a_directory() {
    let vol = vol!();
    vol.publish(&[("config.json", "{}")]);
    fs::write(vol.path().join("..2020_01_01_00_00_00.1"), "{}").unwrap();
    vol.point_data_at("..2020_01_01_00_00_00.1");
    let err = Volume::new(vol.path(), 1 << 20)
        .read_configmap()
        .unwrap_err();
    assert!(
        matches!(&err, Error::BadTarget { reason, .. } if *reason == "is not a directory"),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::Content);
}

/// A plain directory that is not there is "directory does not exist", not
/// a volume that kept changing.
#[test]
fn reading_a_missing_plain_directory_says_it_does_not_exist() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Volume::new(tmp.path().join("absent"), 1 << 20)
        .read_plain()
        .unwrap_err();
    assert!(matches!(err, Error::DirMissing { .. }), "{err}");
    assert!(err.is_transient());
}

/// A volume path so long that `<dir>/..data` is over PATH_MAX while the
/// directory itself is not: `readlink(..data)` fails with ENAMETOOLONG,
/// standing for the errors (EIO, EACCES) that cannot be made on demand.
fn volume_whose_data_link_cannot_be_read(tmp: &Path) -> std::path::PathBuf {
    let mut dir = tmp.to_owned();
    while dir.as_os_str().len() < 3800 {
        dir.push("x".repeat(200));
    }
    let last = 4090 - dir.as_os_str().len() - 1;
    dir.push("y".repeat(last));
    assert_eq!(dir.as_os_str().len(), 4090);
    fs::create_dir_all(&dir).unwrap();
    let handle = fs::File::open(&dir).unwrap();
    rustix::fs::mkdirat(&handle, "..2020_01_01_00_00_00.1", 0o755.into()).unwrap();
    rustix::fs::symlinkat("..2020_01_01_00_00_00.1", &handle, "..data").unwrap();
    dir
}

/// `readlink(..data)` failing for any reason but "no such file", "not a
/// directory" or "not a link" is a passing fault naming its cause: never
/// "..data is not a symlink" (a content error) nor "..data is missing".
#[test]
fn a_data_link_that_cannot_be_read_is_a_passing_fault_not_a_non_link() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = volume_whose_data_link_cannot_be_read(tmp.path());
    let err = Volume::new(&dir, 1 << 20).read_configmap().unwrap_err();
    assert!(err.is_transient(), "{err}");
    let chain = err.chain();
    assert!(chain.contains("too long"), "the real cause: {chain}");
    assert!(!chain.contains("not a symlink"), "{chain}");
}

/// After `select_keys`, `select_all` reads every key again.
#[test]
fn select_all_reads_every_key_again() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("a"), "1").unwrap();
    fs::write(tmp.path().join("b"), "2").unwrap();
    let mut volume = Volume::new(tmp.path(), 1 << 20);
    volume.select_keys(vec!["a".into()]);
    let snapshot = volume.read_plain().unwrap();
    assert_eq!(snapshot.entries.keys().collect::<Vec<_>>(), ["a"]);
    assert_eq!(snapshot.names, ["a", "b"], "every key is listed");
    volume.select_all();
    let snapshot = volume.read_plain().unwrap();
    assert_eq!(snapshot.entries.keys().collect::<Vec<_>>(), ["a", "b"]);
}

/// `repair` removes only the kubelet's leftovers: a directory that is not
/// a data directory, a file named like one, and the live version stay.
#[test]
fn repair_removes_only_orphaned_data_directories() {
    let vol = vol!();
    vol.publish(&[("config.json", "{}")]);
    let outcome = vol.publish_with_hook(&[("config.json", "[]")], Swap::Rename, |step| {
        if step == Step::FilesWritten {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    let Outcome::Interrupted { version, .. } = outcome else {
        panic!("{outcome:?}")
    };
    fs::create_dir(vol.path().join("not-ours")).unwrap();
    fs::write(vol.path().join("..2020_01_01_00_00_00.1"), "a file").unwrap();
    let live = vol.target();
    assert_eq!(vol.writer.repair().unwrap(), [version]);
    for kept in [
        "not-ours",
        "..2020_01_01_00_00_00.1",
        "..data",
        live.as_str(),
    ] {
        assert!(
            fs::symlink_metadata(vol.path().join(kept)).is_ok(),
            "{kept} was removed"
        );
    }
}

/// A `..data_tmp` that is a directory is not a link the kubelet left:
/// `repair` refuses it, saying so, rather than removing it or claiming it
/// did.
#[test]
fn repair_refuses_a_data_tmp_that_is_a_directory() {
    let vol = vol!();
    vol.publish(&[("config.json", "{}")]);
    let tmp_link = vol.path().join("..data_tmp");
    fs::create_dir(&tmp_link).unwrap();
    let err = vol.writer.repair().unwrap_err();
    assert!(err.to_string().contains("..data_tmp"), "{err}");
    assert!(tmp_link.is_dir(), "removed");
}

/// The old data directory already gone at step 10 (removed by someone
/// else meanwhile) is not an error: the write is done.
#[test]
fn an_old_data_directory_already_gone_at_the_last_step_is_not_an_error() {
    let vol = vol!();
    let v1 = vol.publish(&[("config.json", "1")]);
    let old = vol.path().join(&v1);
    let payload = payload(&[("config.json", "2")]);
    let outcome = vol
        .writer
        .write_with_hook(&payload, |step| {
            if step == Step::LinksRemoved {
                fs::remove_dir_all(&old).unwrap();
            }
            ControlFlow::Continue(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(outcome, Outcome::Written { .. }), "{outcome:?}");
}

/// A data directory that cannot be made (here its path is over PATH_MAX)
/// is an error at once, not a name to retry forever.
#[test]
fn a_data_directory_that_cannot_be_made_is_an_error_not_a_retry() {
    let tmp = tempfile::tempdir().unwrap();
    let mut dir = tmp.path().to_owned();
    while dir.as_os_str().len() < 3800 {
        dir.push("x".repeat(200));
    }
    let last = 4080 - dir.as_os_str().len() - 1;
    dir.push("y".repeat(last));
    fs::create_dir_all(&dir).unwrap();
    let writer = configmapwatch::AtomicWriter::new(&dir);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(writer.write(&payload(&[("k", "v")])).map(|_| ()));
    });
    let result = rx
        .recv_timeout(crate::helper::DEADLINE)
        .expect("the writer kept retrying");
    let err = result.unwrap_err();
    assert!(err.chain().contains("too long"), "{}", err.chain());
}

/// Files get their mode and the data directory 0755 whatever the umask
/// (the kubelet chmods after creating, as the writer does).
#[test]
fn modes_are_set_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;

    let vol = vol!();
    let mut p = payload(&[("open", "x")]);
    p.set_mode("open", 0o666);
    vol.write(&p);
    let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&vol.data_dir()), 0o755);
    assert_eq!(mode(&vol.data_dir().join("open")), 0o666);
}

/// A volume path that is a regular file is refused as "not a directory",
/// before anything is read or written.
#[test]
fn the_writer_refuses_a_volume_path_that_is_a_file() {
    let vol = Vol::new();
    fs::write(vol.path(), "a file").unwrap();
    let err = vol
        .writer
        .write(&payload(&[("config.json", "{}")]))
        .unwrap_err();
    assert!(err.to_string().contains("is not a directory"), "{err}");
    assert_eq!(fs::read_to_string(vol.path()).unwrap(), "a file");
}

/// The Windows swap's first write: there is no `..data` to remove yet,
/// which is not an error.
#[test]
fn a_first_write_with_the_windows_swap_succeeds() {
    let vol = vol!();
    let outcome = vol.publish_with_hook(&[("config.json", "1")], Swap::RemoveThenCreate, |_| {
        ControlFlow::Continue(())
    });
    assert!(
        matches!(&outcome, Outcome::Written { previous: None, .. }),
        "{outcome:?}"
    );
    assert_eq!(
        fs::read_to_string(vol.path().join("config.json")).unwrap(),
        "1"
    );
}

/// A plain directory's file deleted in the middle of a read (listed, then
/// gone) sends the read round again; the directory is still there, so it
/// is never "directory does not exist".
#[test]
fn a_plain_file_deleted_mid_read_is_read_again_not_a_missing_directory() {
    let tmp = tempfile::tempdir().unwrap();
    for key in ["a", "b", "c"] {
        fs::write(tmp.path().join(key), key).unwrap();
    }
    let mut deleted = false;
    let snapshot = Volume::new(tmp.path(), 1 << 20)
        .read_plain_with_hook(&mut |step| {
            if step == ReadStep::KeyRead && !deleted {
                fs::remove_file(tmp.path().join("c")).unwrap();
                deleted = true;
            }
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(deleted);
    assert_eq!(snapshot.names, ["a", "b"]);
}
