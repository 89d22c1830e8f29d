//! Before a mode is chosen: waiting for the directory, and letting a
//! volume being written settle before it is taken for a plain directory.

use log::{debug, info, warn};

use super::{LayoutMode, Watcher, state::*};
use crate::{event::Event, volume::DataEntry};

impl Watcher {
    /// One tick before a mode is chosen: still waiting for the directory,
    /// or the mode its `..data` (or its absence) calls for.
    pub(super) fn check_waiting(&mut self) -> Option<Event> {
        let entry = self.volume.data_entry();
        if entry == DataEntry::Missing && !self.volume.dir().is_dir() {
            self.still_waiting();
            return None;
        }
        self.choose_mode(entry)
    }

    /// The directory is not there (or cannot be looked at): say why, at
    /// once when that changes and otherwise once every
    /// [`WAITING_LOG_EVERY`].
    fn still_waiting(&mut self) {
        let dir = self.volume.dir().display().to_string();
        let (logged_at, was_blocked) = match &mut self.mode {
            Mode::Waiting { logged_at, blocked } => (*logged_at, blocked.take()),
            _ => (None, None),
        };
        // "Missing" may be a directory we may not look at: say so,
        // with the path, rather than "does not exist".
        let blocked = match std::fs::metadata(self.volume.dir()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Some(Fault {
                message: format!("{dir}: cannot look at the directory: {e}"),
                key: None,
                version: None,
            }),
            Ok(meta) if !meta.is_dir() => Some(Fault {
                message: format!("{dir}: not a directory"),
                key: None,
                version: None,
            }),
            _ => None,
        };
        self.fault_changed |= blocked != was_blocked;
        let due = logged_at
            .is_none_or(|at| self.now.saturating_duration_since(at) >= WAITING_LOG_EVERY)
            || blocked != was_blocked;
        let logged_at = if due {
            match &blocked {
                Some(why) => warn!("{}; waiting for it to become readable", why.message),
                None => info!("{dir}: directory does not exist yet; waiting for it"),
            }
            Some(self.now)
        } else {
            logged_at
        };
        self.mode = Mode::Waiting { logged_at, blocked };
    }

    /// The directory is there: the mode `entry` calls for under the layout
    /// mode, and that mode's first tick (none yet while a volume being
    /// written settles).
    fn choose_mode(&mut self, entry: DataEntry) -> Option<Event> {
        let dir = self.volume.dir().display().to_string();
        match (self.layout_mode, entry) {
            (LayoutMode::Auto | LayoutMode::Plain, DataEntry::Dir)
            | (LayoutMode::Plain, DataEntry::Link) => {
                self.set_plain(Walk::Data, entry);
                self.check_plain()
            }
            (LayoutMode::ConfigMap, DataEntry::Missing) => {
                info!(
                    "{dir}: no ..data yet; waiting for it (the layout is forced to ConfigMap: \
                     never watched as a plain directory)"
                );
                self.mode = Mode::ConfigMap(Link::Unread);
                self.check_configmap()
            }
            (LayoutMode::ConfigMap, _) | (LayoutMode::Auto, DataEntry::Link | DataEntry::Other) => {
                info!("{dir}: watching a ConfigMap volume (..data)");
                self.mode = Mode::ConfigMap(Link::Unread);
                self.check_configmap()
            }
            (LayoutMode::Auto | LayoutMode::Plain, DataEntry::Missing)
            | (LayoutMode::Plain, DataEntry::Other) => {
                let since = match self.mode {
                    Mode::Settling { since } => Some(since),
                    _ => None,
                };
                let kubelet = has_kubelet_entries(self.volume.dir());
                if kubelet {
                    let since = since.unwrap_or(self.now);
                    if self.now.saturating_duration_since(since) < SETTLE {
                        debug!("{dir}: kubelet entries but no ..data yet; waiting for the swap");
                        self.mode = Mode::Settling { since };
                        return None;
                    }
                }
                // Only a first look free of kubelet entries warns at once.
                let due = if since.is_none() && !kubelet {
                    SubpathWarning::FirstLook
                } else {
                    SubpathWarning::Settle(None)
                };
                self.set_plain(Walk::Dir(due), entry);
                self.check_plain()
            }
        }
    }

    pub(super) fn enter_waiting(&mut self) {
        if !matches!(self.mode, Mode::Waiting { .. }) {
            warn!(
                "{}: directory disappeared; waiting for it to come back",
                self.volume.dir().display()
            );
        }
        self.mode = Mode::Waiting {
            logged_at: Some(self.now),
            blocked: None,
        };
    }
}

/// Whether `dir` holds the kubelet's own entries (`..data_tmp`, a
/// timestamped `..` directory): a volume being written, not a plain one.
pub(super) fn has_kubelet_entries(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".."))
    })
}
