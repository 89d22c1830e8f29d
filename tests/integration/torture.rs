//! Torture: a writer swaps versions as fast as it can while the reader
//! checks every snapshot it hands out. Every key of version `n` holds `n`,
//! and key sets vary with `n` (keys added, removed, nested, none at all), so
//! a torn read shows up as two stamps or a key set that matches none.
//!
//! CI runs each variant for `CONFIGMAPWATCH_TORTURE_SECS` (default 3 s); a
//! soak sets `CONFIGMAPWATCH_TORTURE_SWAPS` (see the README).

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use configmapwatch::{
    AtomicWriter, EventKind, Payload, Selector, Swap, Volume, WatchOptions, Watcher,
};
use serde_json::{Map, Value};

use crate::helper::bin;

/// The keys of version `n`.
pub fn keys_for(n: u64) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    if n % 7 == 3 {
        return keys; // an empty ConfigMap
    }
    keys.insert("a".to_owned());
    if n.is_multiple_of(2) {
        keys.insert("b.json".to_owned());
    }
    if n.is_multiple_of(3) {
        keys.insert("nested/c/d".to_owned());
    }
    keys.insert(format!("k{}", n % 5));
    keys
}

/// Version `n`'s payload.
pub fn stamped(n: u64) -> Payload {
    let mut p = Payload::new();
    for key in keys_for(n) {
        p.insert(&key, n.to_string()).unwrap();
    }
    p
}

/// The stamp of a consistent snapshot (`None` for an empty one), or why it
/// is torn.
pub fn stamp_of<'a>(
    entries: impl IntoIterator<Item = (&'a str, String)>,
) -> Result<Option<u64>, String> {
    let mut keys = BTreeSet::new();
    let mut stamps = BTreeSet::new();
    for (key, value) in entries {
        keys.insert(key.to_owned());
        stamps.insert(
            value
                .parse::<u64>()
                .map_err(|_| format!("{key}: not a stamp: {value:?}"))?,
        );
    }
    match stamps.len() {
        0 => Ok(None),
        1 => {
            let n = *stamps.first().unwrap();
            if keys == keys_for(n) {
                Ok(Some(n))
            } else {
                Err(format!(
                    "torn: stamp {n} with keys {keys:?}, expected {:?}",
                    keys_for(n)
                ))
            }
        }
        _ => Err(format!("torn: stamps {stamps:?} in one snapshot")),
    }
}

fn config_stamp(config: &Value) -> Result<Option<u64>, String> {
    let object: &Map<String, Value> = config.as_object().ok_or("config is not an object")?;
    stamp_of(object.iter().map(|(k, v)| {
        (
            k.as_str(),
            match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            },
        )
    }))
}

fn expected_config(n: u64) -> Value {
    Value::Object(
        keys_for(n)
            .into_iter()
            .map(|k| {
                let v = if k.ends_with(".json") {
                    Value::from(n)
                } else {
                    Value::from(n.to_string())
                };
                (k, v)
            })
            .collect(),
    )
}

#[derive(Debug, Clone, Copy)]
enum Writer {
    Thread(Swap),
    /// The real binary's `publish`, one process per swap.
    Process,
}

fn limits() -> (Duration, Option<u64>) {
    let secs = std::env::var("CONFIGMAPWATCH_TORTURE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let swaps = std::env::var("CONFIGMAPWATCH_TORTURE_SWAPS")
        .ok()
        .and_then(|s| s.parse().ok());
    (Duration::from_secs(secs), swaps)
}

/// Writes versions 2, 3, ... until told to stop (or the swap budget is
/// spent); returns the last version written.
fn write_until(
    writer: Writer,
    dir: &std::path::Path,
    stop: &AtomicBool,
    max_swaps: Option<u64>,
) -> u64 {
    let mut n = 1;
    while !stop.load(Ordering::Relaxed) && max_swaps.is_none_or(|m| n <= m) {
        n += 1;
        match writer {
            Writer::Thread(swap) => {
                AtomicWriter::new(dir)
                    .with_swap(swap)
                    .write(&stamped(n))
                    .unwrap();
            }
            Writer::Process => {
                let mut cmd = bin();
                cmd.arg("publish").arg("--dir").arg(dir);
                for key in keys_for(n) {
                    cmd.arg("--from-literal").arg(format!("{key}={n}"));
                }
                let out = cmd.output().unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    n
}

fn torture(writer: Writer) {
    let (duration, max_swaps) = limits();
    let vol = vol!();
    vol.write(&stamped(1));
    let stop = Arc::new(AtomicBool::new(false));
    let dir = vol.path().to_owned();
    let handle = {
        let stop = stop.clone();
        thread::spawn(move || write_until(writer, &dir, &stop, max_swaps))
    };

    let mut watcher =
        Watcher::new(WatchOptions::new(vol.path()).with_selector(Selector::all_keys()));
    let mut volume = Volume::new(vol.path(), 1 << 20);
    let (mut snapshots, mut events, mut retries) = (0u64, 0u64, 0u64);
    let mut last_stamp = 0;
    let mut last_config = None;
    let started = Instant::now();
    let mut check_order = |stamp: Option<u64>, what: &str| {
        if let Some(n) = stamp {
            assert!(
                n >= last_stamp,
                "{writer:?}: {what} went backwards: {n} after {last_stamp}"
            );
            last_stamp = n;
        }
    };
    while !handle.is_finished() {
        if max_swaps.is_none() && started.elapsed() >= duration {
            stop.store(true, Ordering::Relaxed);
        }
        if let Some(event) = watcher.check() {
            assert_ne!(
                event.kind,
                EventKind::Error,
                "{writer:?}: {:?}",
                event.error
            );
            let config = event.config.unwrap();
            let stamp = config_stamp(&config).unwrap_or_else(|e| panic!("{writer:?}: event: {e}"));
            check_order(stamp, "events");
            last_config = Some(config);
            events += 1;
        }
        match volume.read_configmap() {
            Ok(snapshot) => {
                let entries = snapshot.entries.iter().map(|(k, v)| {
                    (
                        k.as_str(),
                        String::from_utf8(v.as_ref().unwrap().clone()).unwrap(),
                    )
                });
                let stamp =
                    stamp_of(entries).unwrap_or_else(|e| panic!("{writer:?}: snapshot: {e}"));
                check_order(stamp, "snapshots");
                snapshots += 1;
            }
            Err(e) if e.is_transient() => retries += 1,
            Err(e) => panic!("{writer:?}: {e}"),
        }
    }
    let last = handle.join().unwrap();
    // The final version is reported within one more tick.
    if let Some(event) = watcher.check() {
        last_config = event.config;
    }
    assert_eq!(
        last_config.as_deref(),
        Some(&expected_config(last)),
        "{writer:?}: final version not reported"
    );
    let swaps = last - 1;
    println!(
        "torture {writer:?}: {swaps} swaps in {:.1?}, {snapshots} snapshots and {events} events checked, \
         {retries} retried reads, 0 torn",
        started.elapsed()
    );
    assert!(swaps > 0 && snapshots > 0 && events > 0);
}

#[test]
fn torture_with_the_linux_rename() {
    torture(Writer::Thread(Swap::Rename));
}

#[test]
fn torture_with_the_windows_swap() {
    torture(Writer::Thread(Swap::RemoveThenCreate));
}

#[test]
fn torture_with_the_writer_in_another_process() {
    torture(Writer::Process);
}

#[test]
fn the_stamp_check_catches_torn_snapshots() {
    let s =
        |pairs: &[(&'static str, &str)]| stamp_of(pairs.iter().map(|(k, v)| (*k, v.to_string())));
    assert_eq!(s(&[("a", "1"), ("k1", "1")]), Ok(Some(1)));
    assert_eq!(s(&[]), Ok(None));
    assert!(s(&[("a", "2"), ("k2", "1")]).is_err(), "two stamps");
    assert!(
        s(&[("a", "2"), ("k2", "2")]).is_err(),
        "b.json missing from version 2"
    );
}
