//! The volume reader against every intermediate state of a kubelet update.

use std::{collections::BTreeMap, fs, ops::ControlFlow};

use configmapwatch::{Error, EventKind, Outcome, Step, Swap, Volume, WatchOptions, Watcher};

use crate::helper::Vol;

const V1: &[(&str, &str)] = &[
    ("config.json", r#"{"v":1}"#),
    ("removed-key", "1"),
    ("nested/a.json", "1"),
];
const V2: &[(&str, &str)] = &[
    ("config.json", r#"{"v":2}"#),
    ("added-key", "2"),
    ("nested/a.json", "2"),
];

fn as_map(files: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    files
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect()
}

fn read(volume: &mut Volume) -> Result<(String, BTreeMap<String, Vec<u8>>), Error> {
    let snapshot = volume.read_configmap()?;
    let files = snapshot
        .entries
        .into_iter()
        .map(|(k, v)| (k, v.unwrap()))
        .collect();
    Ok((snapshot.version, files))
}

fn exists(vol: &Vol, name: &str) -> bool {
    fs::symlink_metadata(vol.path().join(name)).is_ok()
}

/// At each step the reader sees exactly the old version, exactly the new
/// one, or (Windows swap, `..data` gone) a retryable error; the watcher
/// reports the change once, at the first check after the swap.
#[test]
fn reader_is_consistent_at_every_writer_step() {
    for swap in [Swap::Rename, Swap::RemoveThenCreate] {
        let vol = vol!();
        let v1 = vol.publish(V1);
        let mut volume = Volume::new(vol.path(), 1 << 20);
        let mut watcher = Watcher::new(WatchOptions::new(vol.path()));
        assert_eq!(watcher.check().unwrap().kind, EventKind::Initial);
        let mut steps = Vec::new();
        let mut changes = 0;
        let outcome = vol.publish_with_hook(V2, swap, |step| {
            steps.push(step);
            let swapped = matches!(
                step,
                Step::Swapped | Step::LinksCreated | Step::LinksRemoved | Step::OldDirRemoved
            );
            match (step, read(&mut volume)) {
                (Step::DataLinkRemoved, Err(e)) => {
                    assert!(e.is_transient(), "{e}");
                    assert!(matches!(e, Error::DataLinkMissing { .. }));
                }
                (_, Ok((version, files))) if swapped => {
                    assert_ne!(version, v1, "{swap:?} {step:?}");
                    assert_eq!(files, as_map(V2), "{swap:?} {step:?}");
                }
                (_, Ok((version, files))) => {
                    assert_eq!(version, v1, "{swap:?} {step:?}");
                    assert_eq!(files, as_map(V1), "{swap:?} {step:?}");
                }
                (_, Err(e)) => panic!("{swap:?} {step:?}: {e}"),
            }
            if let Some(event) = watcher.check() {
                assert_eq!(step, Step::Swapped, "change reported before the swap");
                assert_eq!(event.kind, EventKind::Change);
                assert_eq!(event.config.unwrap()["v"], 2);
                changes += 1;
            }
            // What a user sees at the mount root in between: a new key only
            // through ..data until its link exists, a removed key's link
            // dangling until step 9.
            match step {
                Step::Swapped => {
                    assert!(!exists(&vol, "added-key"));
                    assert!(exists(&vol, "removed-key"));
                    assert!(
                        fs::metadata(vol.path().join("removed-key")).is_err(),
                        "link should dangle"
                    );
                }
                Step::LinksCreated => assert!(exists(&vol, "added-key")),
                Step::LinksRemoved => assert!(!exists(&vol, "removed-key")),
                Step::OldDirRemoved => assert!(!exists(&vol, &v1)),
                _ => {}
            }
            ControlFlow::Continue(())
        });
        assert!(matches!(outcome, Outcome::Written { previous: Some(ref p), .. } if *p == v1));
        assert_eq!(changes, 1, "{swap:?}");
        let mut expected = vec![
            Step::DataDirCreated,
            Step::FilesWritten,
            Step::TmpLinkCreated,
        ];
        if swap == Swap::RemoveThenCreate {
            expected.push(Step::DataLinkRemoved);
        }
        expected.extend([
            Step::Swapped,
            Step::LinksCreated,
            Step::LinksRemoved,
            Step::OldDirRemoved,
        ]);
        assert_eq!(steps, expected);
        assert!(!exists(&vol, "..data_tmp"));
        assert_eq!(watcher.check().map(|e| e.kind), None);
    }
}

/// A writer that dies after any step leaves a volume the reader still reads
/// consistently. A leftover `..data_tmp` blocks the next write, as it
/// blocks every kubelet write, until it is repaired; otherwise the next
/// write goes through.
#[test]
fn a_crashed_writer_leaves_a_readable_volume() {
    let stops = [
        Step::DataDirCreated,
        Step::FilesWritten,
        Step::TmpLinkCreated,
        Step::DataLinkRemoved,
        Step::Swapped,
        Step::LinksCreated,
        Step::LinksRemoved,
    ];
    for stop in stops {
        let vol = vol!();
        let v1 = vol.publish(V1);
        let outcome = vol.publish_with_hook(V2, Swap::RemoveThenCreate, |step| {
            if step == stop {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        assert!(matches!(outcome, Outcome::Interrupted { after, .. } if after == stop));
        let mut volume = Volume::new(vol.path(), 1 << 20);
        match stop {
            Step::DataLinkRemoved => {
                assert!(read(&mut volume).unwrap_err().is_transient());
                assert!(exists(&vol, "..data_tmp"), "a leftover ..data_tmp");
            }
            Step::DataDirCreated | Step::FilesWritten | Step::TmpLinkCreated => {
                assert_eq!(
                    read(&mut volume).unwrap(),
                    (v1.clone(), as_map(V1)),
                    "{stop:?}"
                );
            }
            _ => assert_eq!(read(&mut volume).unwrap().1, as_map(V2), "{stop:?}"),
        }
        if exists(&vol, "..data_tmp") {
            let before = read(&mut volume);
            let err = vol
                .writer
                .write(&crate::helper::payload(&[("config.json", r#"{"v":3}"#)]))
                .unwrap_err();
            assert!(err.to_string().contains("..data_tmp"), "{stop:?}: {err}");
            assert_eq!(
                read(&mut volume).map(|r| r.0).ok(),
                before.map(|r| r.0).ok(),
                "{stop:?}: the failed write changed the volume"
            );
            let removed = vol.writer.repair().unwrap();
            assert!(removed.contains(&"..data_tmp".to_owned()), "{removed:?}");
        }
        let v3 = vol.publish(&[("config.json", r#"{"v":3}"#)]);
        assert_eq!(
            read(&mut volume).unwrap(),
            (v3, as_map(&[("config.json", r#"{"v":3}"#)]))
        );
        assert!(
            !exists(&vol, "..data_tmp"),
            "{stop:?}: leftover ..data_tmp not cleaned up"
        );
    }
}

#[test]
fn first_write_creates_the_kubelet_layout() {
    let vol = vol!();
    let version = vol.publish(&[("config.json", "{}"), ("a/b/c", "x")]);
    // ..YYYY_MM_DD_HH_MM_SS.<1-10 digits>
    let (stamp, suffix) = version.trim_start_matches("..").split_once('.').unwrap();
    assert_eq!(stamp.len(), 19, "{version}");
    assert!(
        stamp
            .split('_')
            .all(|p| p.chars().all(|c| c.is_ascii_digit())),
        "{version}"
    );
    assert!((1..=10).contains(&suffix.len()) && suffix.chars().all(|c| c.is_ascii_digit()));
    assert_eq!(
        fs::read_link(vol.path().join("config.json")).unwrap(),
        std::path::Path::new("..data/config.json")
    );
    assert_eq!(
        fs::read_link(vol.path().join("a")).unwrap(),
        std::path::Path::new("..data/a")
    );
    assert_eq!(fs::read_to_string(vol.path().join("a/b/c")).unwrap(), "x");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&vol.data_dir()), 0o755);
        assert_eq!(mode(&vol.data_dir().join("config.json")), 0o644);
    }
}

#[test]
fn an_unchanged_payload_does_not_swap() {
    let vol = vol!();
    let v1 = vol.publish(V1);
    fs::remove_file(vol.path().join("config.json")).unwrap();
    let outcome = vol.write(&crate::helper::payload(V1));
    assert_eq!(
        outcome,
        Outcome::Unchanged {
            version: v1.clone()
        }
    );
    assert_eq!(vol.target(), v1);
    assert!(exists(&vol, "config.json"), "a missing link is re-created");
}

#[test]
fn an_empty_data_dir_is_a_valid_version() {
    let vol = vol!();
    vol.publish(V1);
    let v2 = vol.publish(&[]);
    let mut volume = Volume::new(vol.path(), 1 << 20);
    assert_eq!(read(&mut volume).unwrap(), (v2, BTreeMap::new()));
    assert!(!exists(&vol, "config.json") && !exists(&vol, "nested"));
}
