//! ConfigMap mode: the idle check of `..data` (one `readlink` compared in
//! place), and reading the version it names when it moves.

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
            // A version failing for a passing reason, not due again yet:
            // the readlink and one look at the clock.
            (Ok(LinkRead::Target(t)), Link::Retrying { target, retry })
                if t == target.as_slice() && !retry.due(self.now) =>
            {
                None
            }
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
            // The volume path is a file now: not a volume any more.
            (Err(e), _) if e.kind() == std::io::ErrorKind::NotADirectory => {
                self.enter_waiting();
                None
            }
            (Err(e), _) => self.unreadable_link(e),
        }
    }

    /// The target moved (or the last read of it failed): read the version
    /// `..data` points to now and report it. `seen` is the link state to
    /// settle in if `..data` itself is refused without a target to name.
    pub(super) fn reload(&mut self, seen: Link) -> Option<Event> {
        // For an error event; a version read is detected when its target
        // was read (`Snapshot::seen_at`, after the readlink).
        let detected_at = self.clock.wall();
        match self.volume.read_configmap() {
            Ok(snapshot) => {
                // A version read again after a passing fault keeps its
                // fault's history (since when, attempts, reported).
                let (mut seen, previous) =
                    match std::mem::replace(&mut self.mode, Mode::ConfigMap(Link::Unread)) {
                        Mode::ConfigMap(Link::Retrying { target, retry })
                            if target == snapshot.version.as_bytes() =>
                        {
                            (target, Some(retry))
                        }
                        other => {
                            self.mode = other;
                            (self.take_link_buffer(), None)
                        }
                    };
                seen.clear();
                seen.extend_from_slice(snapshot.version.as_bytes());
                // Detected when the version actually read was first seen,
                // not when an older target sent us reading.
                let detected_at = snapshot.seen_at;
                let version = snapshot.version.clone();
                match self.evaluate(snapshot, detected_at) {
                    Ok(event) => {
                        self.mode = Mode::ConfigMap(Link::Settled(seen));
                        event
                    }
                    Err(e) => {
                        let fault = Fault::of(&e, Some(&version));
                        let (retry, event) = self.note_fault(previous, fault, false);
                        self.mode = Mode::ConfigMap(Link::Retrying {
                            target: seen,
                            retry,
                        });
                        event
                    }
                }
            }
            Err(e) => match e.kind() {
                ErrorKind::Transient => self.retry_later(&e),
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

    /// A passing fault reading the version `..data` names: read again when
    /// the retry is due (see [`Watcher::note_fault`]); an error event once
    /// it outlasts the grace.
    pub(super) fn retry_later(&mut self, e: &Error) -> Option<Event> {
        let target = match self.volume.data_link().read() {
            Ok(LinkRead::Target(t)) => t.to_vec(),
            _ => Vec::new(),
        };
        let version = (!target.is_empty()).then(|| String::from_utf8_lossy(&target).into_owned());
        let previous = match std::mem::replace(&mut self.mode, Mode::ConfigMap(Link::Unread)) {
            Mode::ConfigMap(Link::Retrying { target: t, retry }) if t == target => Some(retry),
            _ => None,
        };
        // A swap under way is expected, and over by the next tick: not
        // worth a warning unless it lasts.
        let quiet = matches!(e, Error::DataLinkMissing { .. } | Error::Unstable { .. });
        let (retry, event) = self.note_fault(previous, Fault::of(e, version.as_deref()), quiet);
        self.mode = Mode::ConfigMap(Link::Retrying { target, retry });
        event
    }

    /// `readlink(..data)` itself fails with something other than "missing"
    /// (EIO, ESTALE, EACCES): looked at again on each tick (that is the
    /// idle tick's cost anyway), logged once, and an error event naming
    /// `..data` once it outlasts the grace.
    fn unreadable_link(&mut self, e: std::io::Error) -> Option<Event> {
        let path = self.volume.dir().join("..data");
        let error = Error::Io {
            path,
            action: "cannot read the link",
            source: e,
        };
        let mut fault = Fault::of(&error, None);
        fault.key = Some("..data".to_owned());
        let previous = match std::mem::replace(&mut self.mode, Mode::ConfigMap(Link::Unread)) {
            Mode::ConfigMap(Link::Unreadable(retry)) => Some(retry),
            _ => None,
        };
        let (retry, event) = self.note_fault(previous, fault, false);
        self.mode = Mode::ConfigMap(Link::Unreadable(retry));
        event
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
