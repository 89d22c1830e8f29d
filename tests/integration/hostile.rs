//! Hostile and broken volumes against the real binary: each must give a
//! clear error naming the key or path, keep the last good config, and leave
//! the process alive to pick up the next good version.

#![cfg(unix)]

use std::{
    fs,
    ops::ControlFlow,
    os::unix::{ffi::OsStrExt, fs::symlink},
    path::{Path, PathBuf},
    process::Command,
};

use configmapwatch::{Step, Swap};
use serde_json::{Value, json};

use crate::helper::{Running, Vol, bin, watch_json};

const GOOD: &str = r#"{"good":1}"#;

/// The data directory being written (not yet swapped in).
fn new_data_dir(vol: &Vol) -> PathBuf {
    let current = vol.target();
    fs::read_dir(vol.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("..2") && *n != current)
        .map(|n| vol.path().join(n))
        .expect("a new data directory")
}

/// Publishes `files`, letting `tamper` change the new data directory before
/// the swap, so the hostile version appears atomically.
fn publish_tampered(vol: &Vol, files: &[(&str, &str)], tamper: impl FnOnce(&Path)) -> String {
    let mut tamper = Some(tamper);
    vol.publish_with_hook(files, Swap::Rename, |step| {
        if step == Step::FilesWritten {
            (tamper.take().unwrap())(&new_data_dir(vol));
        }
        ControlFlow::Continue(())
    });
    vol.target()
}

/// The error event for `version`, which must keep the good config, then
/// proof that the process still follows the volume.
fn assert_rejected(run: &Running, vol: &Vol, version: &str, key: &str, needle: &str, kept: &Value) {
    let e = run.event_for("error", version);
    assert_eq!(e["key"], key, "{e}");
    let message = e["error"].as_str().unwrap();
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    assert_eq!(&e["config"], kept, "last good config kept");
    let next = vol.publish(&[("config.json", r#"{"good":2}"#)]);
    assert_eq!(run.event_for("change", &next)["config"], json!({"good": 2}));
}

#[test]
fn hostile_keys_are_refused_and_the_watcher_goes_on() {
    type Tamper = fn(&Path);
    let cases: &[(&str, Tamper, &str)] = &[
        (
            "a FIFO",
            |d| crate::helper::mkfifo(&d.join("config.json")),
            "FIFO",
        ),
        (
            "a symlink to /dev/zero",
            |d| symlink("/dev/zero", d.join("config.json")).unwrap(),
            "symlink",
        ),
        (
            "a symlink outside",
            |d| symlink("/etc/hostname", d.join("config.json")).unwrap(),
            "symlink",
        ),
        (
            "a directory where the file was",
            |d| {
                fs::create_dir(d.join("config.json")).unwrap();
                fs::write(d.join("config.json/x"), "{}").unwrap();
            },
            "not found",
        ),
        (
            "invalid UTF-8 in JSON",
            |d| fs::write(d.join("config.json"), b"{\"a\": \"\xff\xfe\"}").unwrap(),
            "line 1",
        ),
        (
            "JSON nested 10,000 deep",
            |d| fs::write(d.join("config.json"), "[".repeat(10_000)).unwrap(),
            "recursion limit",
        ),
        (
            "a 2 GiB sparse file",
            |d| {
                fs::File::create(d.join("config.json"))
                    .unwrap()
                    .set_len(2 << 30)
                    .unwrap()
            },
            "over the 16777216-byte limit",
        ),
    ];
    for (what, tamper, needle) in cases {
        let vol = vol!();
        vol.publish(&[("config.json", GOOD)]);
        let run = watch_json(&vol, &[]);
        let version = publish_tampered(&vol, &[("other", "x")], tamper);
        println!("hostile: {what}");
        assert_rejected(
            &run,
            &vol,
            &version,
            "config.json",
            needle,
            &json!({"good": 1}),
        );
    }
}

#[test]
fn a_non_utf8_key_name_is_refused_by_name() {
    let vol = vol!();
    vol.publish(&[("a.json", "1")]);
    let run = watch_json(&vol, &["--all-keys"]);
    let version = publish_tampered(&vol, &[("a.json", "2")], |d| {
        fs::write(d.join(std::ffi::OsStr::from_bytes(b"bad\xffname")), "x").unwrap();
    });
    let e = run.event_for("error", &version);
    assert_eq!(e["key"], "bad\u{fffd}name");
    assert!(e["error"].as_str().unwrap().contains("not valid UTF-8"));
    assert_eq!(e["config"], json!({"a.json": 1}));
}

#[test]
fn bad_data_targets_are_refused_and_the_watcher_goes_on() {
    for target in ["/etc", "../outside", "..with/slash", "..data", "..missing"] {
        let vol = vol!();
        vol.publish(&[("config.json", GOOD)]);
        let run = watch_json(&vol, &[]);
        vol.point_data_at(target);
        let e = run.event();
        assert_eq!(
            (&e["event"], &e["key"]),
            (&json!("error"), &json!("..data")),
            "{target}: {e}"
        );
        let message = e["error"].as_str().unwrap();
        assert!(
            message.contains(target) && message.contains("..data"),
            "{message}"
        );
        assert_eq!(e["config"], json!({"good": 1}));
        let next = vol.publish(&[("config.json", r#"{"good":2}"#)]);
        assert_eq!(
            run.event_for("change", &next)["config"],
            json!({"good": 2}),
            "{target}"
        );
    }
}

/// Root reads everything, so an unreadable key is tested as an
/// unprivileged user (`setpriv`), or skipped with the reason printed.
#[test]
fn an_unreadable_key_is_an_error_naming_it() {
    let vol = vol!();
    vol.publish(&[("config.json", GOOD)]);
    let data_file = vol.data_dir().join("config.json");
    fs::set_permissions(
        &data_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o000),
    )
    .unwrap();
    let mut cmd = if rustix::process::geteuid().is_root() {
        if Command::new("setpriv").arg("--version").output().is_err() {
            crate::helper::skip(
                "an_unreadable_key",
                "running as root and setpriv is not installed",
            );
            return;
        }
        // The temporary directory is 0700: let the unprivileged user in.
        fs::set_permissions(
            vol.tmp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_configmapwatch"),
        ]);
        cmd
    } else {
        bin()
    };
    let out = cmd
        .args(["--once", "-o", "json", "-d"])
        .arg(vol.path())
        .output()
        .unwrap();
    let e: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(e["key"], "config.json");
    assert!(
        e["error"].as_str().unwrap().contains("Permission denied"),
        "{e}"
    );
}

fn is_mount_of(fstype: &str, path: &str) -> bool {
    fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            l.split_whitespace().nth(1) == Some(path) && l.split_whitespace().nth(2) == Some(fstype)
        })
}

#[test]
fn a_volume_on_tmpfs_is_followed() {
    if !is_mount_of("tmpfs", "/dev/shm") {
        crate::helper::skip("a_volume_on_tmpfs", "/dev/shm is not a tmpfs here");
        return;
    }
    let tmp = tempfile::tempdir_in("/dev/shm").unwrap();
    let vol = Vol {
        writer: configmapwatch::AtomicWriter::new(tmp.path().join("vol")),
        tmp,
    };
    vol.publish(&[("config.json", GOOD)]);
    let run = watch_json(&vol, &[]);
    let next = vol.publish(&[("config.json", r#"{"good":2}"#)]);
    let e = run.event_for("change", &next);
    assert_eq!(e["config"], json!({"good": 2}));
    assert!(e["lag_ms"].is_f64());
}

/// A read-only bind mount of the volume (as a pod sees a `readOnly` mount)
/// follows updates made to the source. Needs mount privileges; skipped
/// with the reason printed where there are none.
#[test]
fn a_read_only_bind_mount_is_followed() {
    let vol = vol!();
    vol.publish(&[("config.json", GOOD)]);
    let mnt = vol.tmp.path().join("ro");
    fs::create_dir(&mnt).unwrap();
    let mount = |args: &[&str]| Command::new("mount").args(args).output();
    let bind = mount(&[
        "--bind",
        vol.path().to_str().unwrap(),
        mnt.to_str().unwrap(),
    ]);
    if !bind.as_ref().is_ok_and(|o| o.status.success()) {
        crate::helper::skip(
            "a_read_only_bind_mount",
            &format!("cannot bind-mount here: {bind:?}"),
        );
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let ro = mount(&["-o", "remount,bind,ro", mnt.to_str().unwrap()]).unwrap();
    assert!(ro.status.success(), "{ro:?}");
    assert!(
        fs::write(mnt.join("probe"), "x").is_err(),
        "the mount is read-only"
    );

    let mut cmd = bin();
    cmd.args(["-o", "json", "-i", "10ms", "-d"]).arg(&mnt);
    let run = Running::spawn(cmd);
    run.event_for("initial", &vol.target());
    let next = vol.publish(&[("config.json", r#"{"good":2}"#)]);
    assert_eq!(run.event_for("change", &next)["config"], json!({"good": 2}));
}
