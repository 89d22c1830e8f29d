//! The kubelet-style writer and `publish`, where they must behave as the
//! real kubelet does (pkg/volume/util/atomic_writer.go): a stale
//! `..data_tmp` blocks writes, files get their final modes, keys are
//! cleaned, old entries go whatever their type, the mount point is not
//! the writer's to create; and writer and reader agree on hidden names.

use std::{fs, ops::ControlFlow};

use configmapwatch::{AtomicWriter, Outcome, Step, Swap};

use crate::helper::{bin, payload};

fn publish(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    bin()
        .arg("publish")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_stale_data_tmp_blocks_publish_until_repair_removes_it() {
    let vol = vol!();
    let v1 = vol.publish(&[("config.json", r#"{"v":1}"#)]);
    // A writer that died between steps 6 and 7.
    let outcome = vol.publish_with_hook(&[("config.json", r#"{"v":2}"#)], Swap::Rename, |step| {
        if step == Step::TmpLinkCreated {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    assert!(matches!(outcome, Outcome::Interrupted { .. }));
    let dirs_before = fs::read_dir(vol.path()).unwrap().count();
    let out = publish(vol.path(), &["--from-literal", "config.json={\"v\":3}"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("..data_tmp") && stderr.contains("--repair"),
        "{stderr}"
    );
    assert_eq!(vol.target(), v1, "the volume stays on its version");
    assert_eq!(
        fs::read_dir(vol.path()).unwrap().count(),
        dirs_before,
        "the failed write left a directory behind"
    );
    let out = publish(
        vol.path(),
        &["--repair", "--from-literal", "config.json={\"v\":3}"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("removed ..data_tmp"), "{stderr}");
    assert_ne!(vol.target(), v1);
}

#[test]
fn repair_removes_orphaned_data_directories() {
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
    assert!(vol.path().join(&version).is_dir());
    let removed = vol.writer.repair().unwrap();
    assert_eq!(removed, std::slice::from_ref(&version));
    assert!(!vol.path().join(&version).exists());
    assert!(vol.data_dir().is_dir(), "the live version was kept");
}

#[cfg(unix)]
#[test]
fn files_are_written_with_their_modes_and_a_0600_key_is_permission_denied_to_others() {
    use std::os::unix::fs::PermissionsExt;

    let vol = vol!();
    fs::create_dir_all(vol.path()).unwrap();
    let out = publish(
        vol.path(),
        &[
            "--from-literal",
            "config.json={\"v\":1}",
            "--from-literal",
            "secret.json={\"token\":\"t\"}",
            "--default-mode",
            "0640",
            "--mode",
            "secret.json=0600",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let mode = |key: &str| {
        fs::metadata(vol.data_dir().join(key))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!((mode("config.json"), mode("secret.json")), (0o640, 0o600));

    // Its owner (root here) reads it.
    let out = bin()
        .args(["--once", "-o", "json", "-f", "secret.json", "-d"])
        .arg(vol.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    // Anyone else is told "permission denied", not "not found".
    if !rustix::process::geteuid().is_root() {
        return;
    }
    fs::set_permissions(vol.tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_configmapwatch"))
        .args(["--once", "-o", "json", "-f", "secret.json", "-d"])
        .arg(vol.path())
        .output()
        .expect("setpriv (util-linux) is needed for this test");
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let error = e["error"].as_str().unwrap();
    assert!(error.contains("Permission denied"), "{error}");
    assert!(!error.contains("not found"), "{error}");
    assert_eq!(e["key"], "secret.json");
}

#[test]
fn keys_are_cleaned_and_hidden_names_refused_both_ways() {
    let vol = vol!();
    let mut p = payload(&[]);
    p.insert("a//b.json", "1").unwrap();
    p.insert("./c.json", "2").unwrap();
    assert_eq!(p.keys().collect::<Vec<_>>(), ["a/b.json", "c.json"]);
    // The writer refuses what the reader would hide...
    let err = p.insert("a/..b.json", "3").unwrap_err();
    assert!(err.to_string().contains("'..'"), "{err}");
    // ...and the reader hides such a name made by hand.
    vol.write(&p);
    fs::write(vol.data_dir().join("a/..b.json"), "3").unwrap();
    let mut volume = configmapwatch::Volume::new(vol.path(), 1 << 20);
    let snapshot = volume.read_configmap().unwrap();
    assert_eq!(snapshot.names, ["a/b.json", "c.json"]);
}

#[test]
fn the_library_writer_does_not_create_the_mount_point_but_publish_does() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vol");
    let err = AtomicWriter::new(&dir)
        .write(&payload(&[("k", "v")]))
        .unwrap_err();
    assert!(err.to_string().contains("not there"), "{err}");
    assert!(!dir.exists());
    if !crate::helper::symlinks_work() {
        crate::helper::no_symlinks(file!(), line!());
        return;
    }
    let out = publish(&dir, &["--from-literal", "k=v"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("created"));
}

#[test]
fn old_top_level_entries_go_whatever_their_type() {
    let vol = vol!();
    vol.publish(&[("config.json", "{}"), ("old", "x"), ("dir", "y")]);
    // Something replaced the link of `old` with a plain file, and that of
    // `dir` with a directory holding one.
    fs::remove_file(vol.path().join("old")).unwrap();
    fs::write(vol.path().join("old"), "stray").unwrap();
    fs::remove_file(vol.path().join("dir")).unwrap();
    fs::create_dir(vol.path().join("dir")).unwrap();
    fs::write(vol.path().join("dir/file"), "stray").unwrap();
    vol.publish(&[("config.json", "{}")]);
    for gone in ["old", "dir"] {
        assert!(
            fs::symlink_metadata(vol.path().join(gone)).is_err(),
            "{gone} is left"
        );
    }
}

#[test]
fn publish_honours_max_file_size() {
    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("big.json");
    fs::write(&big, vec![b' '; 2048]).unwrap();
    let out = publish(
        &tmp.path().join("vol"),
        &[
            "--from-file",
            big.to_str().unwrap(),
            "--max-file-size",
            "1KiB",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A usage error: the file the command line names is refused.
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--max-file-size"), "{stderr}");
    assert!(!tmp.path().join("vol").join("..data").exists());
}
