//! Our one remaining imitation, kept because no peer shows the case: the
//! naive single-file inotify watch on `config.json` itself, as
//! viper/fsnotify users often write it; the watch dies with the first swap.
//! (The directory watch configmap-reload does is measured with the real
//! `inotifywait -m -r` and watchdog's Observer instead.)

use std::{path::Path, thread, time::SystemTime};

use inotify::{Inotify, WatchMask};

use crate::Detections;

/// The naive strategy: a watch on the file, reloading on any event.
pub fn file_watch(dir: &Path, detections: Detections) {
    let mask = WatchMask::MODIFY
        | WatchMask::CLOSE_WRITE
        | WatchMask::ATTRIB
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF;
    watch(dir, &dir.join("config.json"), mask, detections, |_| true);
}

/// Watches `path` and records a detection for each batch of events that
/// has one `relevant` says a reload would follow.
fn watch(
    dir: &Path,
    path: &Path,
    mask: WatchMask,
    detections: Detections,
    relevant: fn(Option<&std::ffi::OsStr>) -> bool,
) {
    let mut inotify = Inotify::init().expect("inotify");
    inotify.watches().add(path, mask).expect("inotify watch");
    let dir = dir.to_owned();
    thread::spawn(move || {
        let mut buffer = [0; 4096];
        while let Ok(events) = inotify.read_events_blocking(&mut buffer) {
            if events.into_iter().any(|e| relevant(e.name)) {
                record(&dir, &detections);
            }
        }
    });
}

/// What a reload triggered now would read: the version `..data` names.
fn record(dir: &Path, detections: &Detections) {
    let now = SystemTime::now();
    if let Ok(target) = std::fs::read_link(dir.join("..data")) {
        detections
            .lock()
            .unwrap()
            .push((target.to_string_lossy().into_owned(), now));
    }
}
