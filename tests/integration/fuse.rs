//! A volume seen through a FUSE mount (bindfs), where the kernel keeps the
//! attributes anyone's lookup fetched for a while (libfuse's default
//! attr_timeout is one second) and ends a read at the size it remembers.

use std::{
    fs,
    ops::ControlFlow,
    path::{Path, PathBuf},
    process::Command,
};

use configmapwatch::{EventKind, Step, Swap, WatchOptions, Watcher};
use serde_json::json;

use crate::helper::{Vol, skip, tool};

/// A bindfs mount of a volume, unmounted on drop.
struct Mount {
    point: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Mount {
    /// `None` (after a printed skip, which fails under Linux CI) where this
    /// machine cannot mount FUSE.
    fn of(source: &Path) -> Option<Mount> {
        let tmp = tempfile::tempdir().unwrap();
        let point = tmp.path().join("mnt");
        fs::create_dir(&point).unwrap();
        let out = tool("bindfs")
            .arg("--no-allow-other")
            .arg(source)
            .arg(&point)
            .output()
            .unwrap();
        if !out.status.success() {
            skip(
                "fuse",
                &format!(
                    "bindfs cannot mount here: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            );
            return None;
        }
        Some(Mount { point, _tmp: tmp })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let unmounted = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.point)
            .status();
        if !unmounted.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg(&self.point).status();
        }
    }
}

/// Found by the peer benchmark: another process walking the volume (a
/// polling peer, `ls -lR`) looked the new file up through the mount between
/// the kubelet's create+truncate and its write (step 4), so the kernel
/// remembered it empty. After the swap, our read of that version ended at
/// the remembered size 0 and reported an "invalid" version that was fine.
/// The reader now asks the filesystem for the opened file's attributes
/// (statx with AT_STATX_FORCE_SYNC) before reading it.
#[test]
fn a_file_looked_up_while_empty_is_read_whole_after_the_swap() {
    needs!("bindfs", "fusermount3");
    let vol = vol!();
    vol.publish(&[("config.json", r#"{"v":1}"#)]);
    let Some(mount) = Mount::of(vol.path()) else {
        return;
    };
    let mut w = Watcher::new(WatchOptions::new(&mount.point));
    let e = w.check().unwrap();
    assert_eq!(
        (e.kind, e.config.as_deref()),
        (EventKind::Initial, Some(&json!({"v": 1})))
    );

    let v2 = r#"{"v":2,"padding":"the kernel must not end the read at a size it remembers"}"#;
    let outcome = vol.publish_with_hook(&[("config.json", v2)], Swap::Rename, |step| {
        if step == Step::DataDirCreated {
            let version = fs::read_dir(vol.path())
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|n| n.starts_with("..2") && Some(n.as_str()) != vol_target(&vol).as_deref())
                .expect("the new timestamped directory");
            // The first half of the kubelet's write of this key: created
            // and truncated, not yet written. The writer's own open below
            // (create+truncate again, then write) keeps this inode.
            fs::File::create(vol.path().join(&version).join("config.json")).unwrap();
            // A walker's lookup through the mount, meanwhile.
            let seen = fs::metadata(mount.point.join(&version).join("config.json")).unwrap();
            assert_eq!(seen.len(), 0, "looked up while empty");
        }
        ControlFlow::Continue(())
    });
    let configmapwatch::Outcome::Written { version, .. } = outcome else {
        panic!("expected a swap, got {outcome:?}");
    };
    // Within the attribute timeout: the kernel still remembers size 0.
    let e = w.check().expect("the new version is detected");
    assert_eq!(e.version, version);
    assert_eq!(e.error, None, "the version was read short");
    assert_eq!(e.kind, EventKind::Change);
    assert_eq!(
        e.config.as_deref(),
        Some(&serde_json::from_str::<serde_json::Value>(v2).unwrap())
    );
}

fn vol_target(vol: &Vol) -> Option<String> {
    fs::read_link(vol.path().join("..data"))
        .ok()
        .map(|t| t.to_string_lossy().into_owned())
}
