//! The watcher driven tick by tick with `check()`: what fires, what does
//! not, and what bad volumes produce.

use std::{fs, sync::mpsc, thread, time::Duration};

use configmapwatch::{
    Event, EventKind, Lag, Layout, Selector, WatchOptions, Watcher, shutdown_channel,
};
use serde_json::json;

use crate::helper::{DEADLINE, Vol, allocations};

fn watcher(vol: &Vol) -> Watcher {
    Watcher::new(WatchOptions::new(vol.path()))
}

fn all_keys(vol: &Vol) -> Watcher {
    Watcher::new(WatchOptions::new(vol.path()).with_selector(Selector::all_keys()))
}

fn kind(e: Option<Event>) -> Option<EventKind> {
    e.map(|e| e.kind)
}

#[test]
fn initial_then_change_with_measured_lag() {
    let vol = vol!();
    let v1 = vol.publish(&[("config.json", r#"{"a":1}"#)]);
    let mut w = watcher(&vol);
    let e = w.check().unwrap();
    assert_eq!(
        (e.kind, e.version.as_str()),
        (EventKind::Initial, v1.as_str())
    );
    assert_eq!(*e.config.unwrap(), json!({"a": 1}));
    assert_eq!(w.check().map(|e| e.kind), None, "idle tick");

    let v2 = vol.publish(&[("config.json", r#"{"a":2}"#)]);
    let swapped_at = fs::symlink_metadata(vol.path().join("..data"))
        .unwrap()
        .modified()
        .unwrap();
    let e = w.check().unwrap();
    assert_eq!(
        (e.kind, e.version.as_str()),
        (EventKind::Change, v2.as_str())
    );
    assert_eq!(e.previous_version.as_deref(), Some(v1.as_str()));
    assert_eq!(e.lag, Some(Lag::between(swapped_at, e.detected_at)));
    assert!(e.lag.unwrap().seconds >= 0.0);
    assert_eq!(w.current().map(|c| (**c).clone()), Some(json!({"a": 2})));
}

#[test]
fn an_idle_tick_allocates_nothing() {
    let vol = vol!();
    vol.publish(&[("config.json", "{}")]);
    let mut w = watcher(&vol);
    assert!(w.check().is_some());
    let before = allocations();
    for _ in 0..1000 {
        assert!(w.check().is_none());
    }
    assert_eq!(allocations() - before, 0, "allocations in 1000 idle ticks");
}

#[test]
fn nested_keys_removed_keys_and_an_empty_volume() {
    let vol = vol!();
    vol.publish(&[("app/settings.json", r#"{"n":1}"#), ("motd", "hi")]);
    let mut nested = Watcher::new(
        WatchOptions::new(vol.path()).with_selector(Selector::key("app/settings.json")),
    );
    let mut all = all_keys(&vol);
    assert_eq!(*nested.check().unwrap().config.unwrap(), json!({"n": 1}));
    assert_eq!(
        *all.check().unwrap().config.unwrap(),
        json!({"app/settings.json": {"n": 1}, "motd": "hi"})
    );

    vol.publish(&[("app/settings.json", r#"{"n":1}"#)]);
    assert_eq!(kind(nested.check()), None, "its key did not change");
    assert_eq!(
        *all.check().unwrap().config.unwrap(),
        json!({"app/settings.json": {"n": 1}})
    );

    vol.publish(&[]);
    let e = nested.check().unwrap();
    assert_eq!(
        (e.kind, e.key.as_deref()),
        (EventKind::Error, Some("app/settings.json"))
    );
    assert!(e.error.unwrap().contains("not found"));
    assert_eq!(*e.config.unwrap(), json!({"n": 1}), "last good kept");
    let e = all.check().unwrap();
    assert_eq!(
        (e.kind, (*e.config.unwrap()).clone()),
        (EventKind::Change, json!({}))
    );
}

#[test]
fn an_unchanged_republish_fires_nothing() {
    let vol = vol!();
    vol.publish(&[("config.json", "{}")]);
    let mut w = watcher(&vol);
    w.check().unwrap();
    let outcome = vol
        .writer
        .write(&crate::helper::payload(&[("config.json", "{}")]))
        .unwrap();
    assert!(matches!(outcome, configmapwatch::Outcome::Unchanged { .. }));
    assert_eq!(kind(w.check()), None);
}

#[test]
fn invalid_json_keeps_the_last_good_config_and_recovers() {
    let vol = vol!();
    vol.publish(&[("config.json", r#"{"good":true}"#)]);
    let mut w = watcher(&vol);
    w.check().unwrap();
    let bad = vol.publish(&[("config.json", "{\n  \"good\": true,\n  oops\n}")]);
    let e = w.check().unwrap();
    assert_eq!(
        (e.kind, e.version.as_str()),
        (EventKind::Error, bad.as_str())
    );
    assert_eq!(e.key.as_deref(), Some("config.json"));
    let message = e.error.unwrap();
    assert!(message.contains(", at line 3 column 3: "), "{message}");
    assert_eq!(*e.config.unwrap(), json!({"good": true}));
    assert_eq!(kind(w.check()), None, "an error is reported once");
    assert_eq!(**w.current().unwrap(), json!({"good": true}));
    // The fix restores the very same config: still reported, as a change.
    vol.publish(&[("config.json", r#"{"good": true}"#)]);
    assert_eq!(kind(w.check()), Some(EventKind::Change));
}

#[test]
fn a_missing_key_is_an_error() {
    let vol = vol!();
    vol.publish(&[("other.json", "{}")]);
    let e = watcher(&vol).check().unwrap();
    assert_eq!(
        (e.kind, e.key.as_deref()),
        (EventKind::Error, Some("config.json"))
    );
    assert!(e.config.is_none());
}

#[test]
fn an_oversized_file_is_refused() {
    let vol = vol!();
    vol.publish(&[(
        "config.json",
        &format!("{{\"pad\":\"{}\"}}", "x".repeat(2000)),
    )]);
    let mut w = Watcher::new(WatchOptions::new(vol.path()).with_max_file_size(1000));
    let e = w.check().unwrap();
    assert_eq!(e.kind, EventKind::Error);
    assert!(e.error.unwrap().contains("over the 1000-byte limit"));
}

#[cfg(unix)]
mod hostile {
    use super::*;
    use std::os::unix::fs::symlink;

    /// `..data` pointing anywhere but a sibling data directory is refused,
    /// once, naming `..data`; the last good config stays; a real swap
    /// afterwards recovers.
    #[test]
    fn bad_data_targets_are_refused() {
        for target in ["/etc", "../x", "..a/b", "..data", "..missing"] {
            let vol = vol!();
            vol.publish(&[("config.json", "{}")]);
            let mut w = watcher(&vol);
            w.check().unwrap();
            vol.point_data_at(target);
            let e = w.check().unwrap();
            assert_eq!(
                (e.kind, e.key.as_deref()),
                (EventKind::Error, Some("..data")),
                "{target}"
            );
            let message = e.error.unwrap();
            assert!(
                message.contains(target) && message.contains("refusing"),
                "{message}"
            );
            assert_eq!(*e.config.unwrap(), json!({}));
            assert_eq!(kind(w.check()), None, "{target}: reported once");
            let good = vol.publish(&[("config.json", r#"{"ok":1}"#)]);
            let e = w.check().unwrap();
            assert_eq!((e.kind, e.version), (EventKind::Change, good));
        }
    }

    #[test]
    fn a_data_dir_that_is_a_symlink_is_refused() {
        let vol = vol!();
        vol.publish(&[("config.json", "{}")]);
        symlink("/etc", vol.path().join("..evil")).unwrap();
        vol.point_data_at("..evil");
        let e = watcher(&vol).check().unwrap();
        assert!(e.error.unwrap().contains("is a symlink"));
    }

    #[test]
    fn symlinks_inside_the_data_dir_are_not_followed() {
        let vol = vol!();
        vol.publish(&[("config.json", "{}")]);
        let outside = vol.tmp.path().join("secret.json");
        fs::write(&outside, r#"{"secret":1}"#).unwrap();
        let data = vol.data_dir();
        fs::remove_file(data.join("config.json")).unwrap();
        symlink(&outside, data.join("config.json")).unwrap();
        symlink("/dev/zero", data.join("zero")).unwrap();
        let e = watcher(&vol).check().unwrap();
        assert_eq!(
            (e.kind, e.key.as_deref()),
            (EventKind::Error, Some("config.json"))
        );
        assert!(e.error.unwrap().contains("is a symlink"));
        let e = all_keys(&vol).check().unwrap();
        assert_eq!(e.kind, EventKind::Error);
    }

    /// A FIFO would block a naive reader forever; the check runs on another
    /// thread so a hang fails the test instead of stalling it.
    #[test]
    fn a_fifo_key_is_refused_without_blocking() {
        let vol = vol!();
        vol.publish(&[("other", "x")]);
        crate::helper::mkfifo(&vol.data_dir().join("config.json"));
        let mut w = watcher(&vol);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || tx.send(w.check()).unwrap());
        let e = rx
            .recv_timeout(DEADLINE)
            .expect("check blocked on a FIFO")
            .unwrap();
        assert_eq!(
            (e.kind, e.key.as_deref()),
            (EventKind::Error, Some("config.json"))
        );
        assert!(e.error.unwrap().contains("FIFO"));
    }

    #[test]
    fn a_non_link_data_entry_is_refused_once() {
        let vol = vol!();
        fs::create_dir_all(vol.path()).unwrap();
        fs::write(vol.path().join("..data"), "not a link").unwrap();
        let mut w = watcher(&vol);
        let e = w.check().unwrap();
        assert!(e.error.unwrap().contains("not a symlink"));
        assert_eq!(kind(w.check()), None);
    }
}

#[test]
fn a_directory_created_later_is_picked_up() {
    let vol = vol!();
    let mut w = watcher(&vol);
    assert_eq!(kind(w.check()), None);
    assert_eq!(w.layout(), Layout::Missing);
    let v1 = vol.publish(&[("config.json", "{}")]);
    let e = w.check().unwrap();
    assert_eq!((e.kind, e.version), (EventKind::Initial, v1));
    assert_eq!(w.layout(), Layout::ConfigMap);
}

#[test]
fn a_volume_deleted_and_recreated_is_followed() {
    let vol = vol!();
    vol.publish(&[("config.json", r#"{"v":1}"#)]);
    let mut w = watcher(&vol);
    w.check().unwrap();
    fs::remove_dir_all(vol.path()).unwrap();
    assert_eq!(kind(w.check()), None);
    assert_eq!(w.layout(), Layout::Missing);
    assert_eq!(
        **w.current().unwrap(),
        json!({"v": 1}),
        "last good kept while gone"
    );
    let v2 = vol.publish(&[("config.json", r#"{"v":2}"#)]);
    let e = w.check().unwrap();
    assert_eq!((e.kind, e.version), (EventKind::Change, v2));
}

#[test]
fn plain_mode_compares_content_not_timestamps() {
    let vol = Vol::new();
    let dir = vol.path();
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("config.json"), r#"{"a":1}"#).unwrap();
    let mut w = watcher(&vol);
    let e = w.check().unwrap();
    assert_eq!((e.kind, e.lag), (EventKind::Initial, None));
    assert!(e.version.starts_with("plain-"));
    assert_eq!(w.layout(), Layout::Plain);

    // A touch: new mtime, same content.
    let file = fs::File::options()
        .write(true)
        .open(dir.join("config.json"))
        .unwrap();
    file.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    drop(file);
    assert_eq!(kind(w.check()), None);

    // Same size, new content.
    fs::write(dir.join("config.json"), r#"{"a":2}"#).unwrap();
    let file = fs::File::options()
        .write(true)
        .open(dir.join("config.json"))
        .unwrap();
    file.set_modified(std::time::SystemTime::now() + Duration::from_secs(10))
        .unwrap();
    drop(file);
    // Written in place: read once it has held still for one tick.
    assert_eq!(kind(w.check()), None);
    let e = w.check().unwrap();
    assert_eq!(
        (e.kind, (*e.config.unwrap()).clone()),
        (EventKind::Change, json!({"a": 2}))
    );
}

#[cfg(unix)]
#[test]
fn plain_mode_switches_when_data_appears() {
    let vol = vol!();
    fs::create_dir_all(vol.path()).unwrap();
    fs::write(vol.path().join("config.json"), r#"{"plain":1}"#).unwrap();
    let mut w = watcher(&vol);
    w.check().unwrap();
    fs::remove_file(vol.path().join("config.json")).unwrap();
    let v = vol.publish(&[("config.json", r#"{"cm":1}"#)]);
    let e = w.check().unwrap();
    assert_eq!((e.kind, e.version), (EventKind::Change, v));
    assert_eq!(w.layout(), Layout::ConfigMap);
}

#[test]
fn run_stops_on_shutdown_and_delivers_events_to_a_channel() {
    let vol = vol!();
    vol.publish(&[("config.json", r#"{"v":1}"#)]);
    let (events_tx, events) = mpsc::channel();
    let (shutdown, listener) = shutdown_channel();
    let mut w = Watcher::new(WatchOptions::new(vol.path()).with_interval(Duration::from_millis(5)));
    let handle = thread::spawn(move || {
        let mut tx = events_tx;
        w.run(&listener, &mut tx);
    });
    assert_eq!(
        events.recv_timeout(DEADLINE).unwrap().kind,
        EventKind::Initial
    );
    let v2 = vol.publish(&[("config.json", r#"{"v":2}"#)]);
    let e = events.recv_timeout(DEADLINE).unwrap();
    assert_eq!((e.kind, e.version), (EventKind::Change, v2));
    shutdown.trigger();
    let (done_tx, done) = mpsc::channel();
    thread::spawn(move || done_tx.send(handle.join().is_ok()).unwrap());
    assert!(done.recv_timeout(DEADLINE).unwrap());
}
