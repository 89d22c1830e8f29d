//! ConfigMap mode: the idle check of `..data` (one `readlink` compared in
//! place), and reading the version it names when it moves.

use std::{sync::atomic::Ordering, time::SystemTime};

use log::{debug, warn};

use super::{LayoutMode, Watcher, state::*};
use crate::{
    Error, ErrorKind,
    event::Event,
    volume::{DataEntry, LinkRead},
};

impl Watcher {
    pub(super) fn check_configmap(&mut self) -> Option<Event> {
        let Mode::ConfigMap(link) = &mut self.mode else {
            unreachable!("check_configmap outside ConfigMap mode")
        };
        match (self.volume.data_link().read(), &*link) {
            // The idle path: one readlink, one comparison, nothing else.
            (Ok(LinkRead::Target(t)), Link::Settled(seen)) if t == seen.as_slice() => None,
            (Ok(LinkRead::Target(_)), _) => self.reload(Link::Unread),
            (Ok(LinkRead::NotALink), Link::NotSymlink) | (Ok(LinkRead::TooLong), Link::TooLong) => {
                None
            }
            (Ok(LinkRead::NotALink), _) => self.not_a_link(),
            (Ok(LinkRead::TooLong), _) => self.reload(Link::TooLong),
            (Ok(LinkRead::Missing), _) => {
                if !self.volume.dir().is_dir() {
                    self.enter_waiting();
                } else {
                    debug!(
                        "{}: ..data is missing; retrying next tick",
                        self.volume.dir().display()
                    );
                }
                None
            }
            (Err(e), _) => {
                warn!("{}: cannot read ..data: {e}", self.volume.dir().display());
                None
            }
        }
    }

    /// The target moved (or the last read of it failed): read the version
    /// `..data` points to now and report it. `seen` is the link state to
    /// settle in if `..data` itself is refused without a target to name.
    pub(super) fn reload(&mut self, seen: Link) -> Option<Event> {
        let detected_at = SystemTime::now();
        match self.volume.read_configmap() {
            Ok(snapshot) => {
                let mut seen = self.take_link_buffer();
                seen.extend_from_slice(snapshot.version.as_bytes());
                self.mode = Mode::ConfigMap(Link::Settled(seen));
                // Detected when the version actually read was first seen,
                // not when an older target sent us reading.
                let detected_at = snapshot.seen_at;
                self.evaluate(snapshot, detected_at)
            }
            Err(e) => match e.kind() {
                ErrorKind::Transient => {
                    self.retry_later(&e);
                    None
                }
                ErrorKind::Content | ErrorKind::Usage => {
                    let (link, version) = match (&e, seen) {
                        (Error::BadTarget { .. }, seen @ (Link::NotSymlink | Link::TooLong)) => {
                            (seen, "-".to_owned())
                        }
                        (Error::BadTarget { target, .. }, _) => {
                            let mut seen = self.take_link_buffer();
                            seen.extend_from_slice(target.as_bytes());
                            (Link::Settled(seen), target.clone())
                        }
                        _ => (Link::Unread, "-".to_owned()),
                    };
                    self.mode = Mode::ConfigMap(link);
                    Some(self.error_event(version, detected_at, None, &e))
                }
            },
        }
    }

    /// A passing fault: the version is read again on the next tick. It is
    /// logged when it first happens (or changes), not on every retry.
    pub(super) fn retry_later(&mut self, e: &Error) {
        self.heartbeat.retries.fetch_add(1, Ordering::Relaxed);
        let fault = Fault::of(e);
        let target = match self.volume.data_link().read() {
            Ok(LinkRead::Target(t)) => t.to_vec(),
            _ => Vec::new(),
        };
        let repeated =
            matches!(&self.mode, Mode::ConfigMap(Link::Retrying { fault: f, .. }) if *f == fault);
        let message = &fault.message;
        if repeated {
            debug!("{message}; retrying next tick");
        } else if matches!(e, Error::DataLinkMissing { .. } | Error::Unstable { .. }) {
            // A swap under way: expected, and over by the next tick.
            debug!("{message}; retrying next tick");
        } else {
            warn!("{message}; retrying on each tick (this is not a verdict on the version)");
        }
        self.mode = Mode::ConfigMap(Link::Retrying { target, fault });
    }

    /// The buffer of the current link state, emptied, so that a new target
    /// reuses its capacity.
    pub(super) fn take_link_buffer(&mut self) -> Vec<u8> {
        let mut buf = match &mut self.mode {
            Mode::ConfigMap(Link::Settled(b))
            | Mode::ConfigMap(Link::Retrying { target: b, .. }) => std::mem::take(b),
            _ => Vec::with_capacity(64),
        };
        buf.clear();
        buf
    }

    /// `..data` exists and is not a symlink. A directory is a filesystem
    /// that hides symlinks: watched as plain files under it, unless the
    /// layout is forced to ConfigMap. Anything else is refused once.
    pub(super) fn not_a_link(&mut self) -> Option<Event> {
        let entry = self.volume.data_entry();
        if entry == DataEntry::Dir {
            if self.layout_mode != LayoutMode::ConfigMap {
                self.set_plain(Walk::Data, entry);
                return self.check_plain();
            }
            warn!(
                "{}: ..data is a directory, not a symlink (this filesystem hides symlinks), \
                 and the layout is forced to ConfigMap (--layout configmap): it is not read as \
                 plain files; waiting for a symlink",
                self.volume.dir().display()
            );
        }
        self.reload(Link::NotSymlink)
    }
}
