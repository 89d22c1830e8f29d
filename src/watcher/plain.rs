//! Plain mode: a directory without a `..data` link (or one whose symlinks
//! the filesystem hides), compared by content fingerprints on each tick.

use std::time::SystemTime;

use log::{debug, info, warn};

use super::{LayoutMode, Watcher, state::*};
use crate::{
    Error,
    event::Event,
    volume::{DataEntry, LinkRead, PlainRoot, WalkError},
};

impl Watcher {
    /// Switches to plain mode over `walk`, saying once what is lost when
    /// that is `..data` (`entry`: a directory, or a link followed).
    pub(super) fn set_plain(&mut self, walk: Walk, entry: DataEntry) {
        let dir = self.volume.dir().display();
        match (walk, entry) {
            (Walk::Data, DataEntry::Dir) if !self.warned_hidden => {
                warn!(
                    "{dir}: ..data is a directory, not a symlink: this filesystem hides symlinks \
                     (SMB, some FUSE mounts, Wine). Watching {dir}/..data as a plain directory \
                     (content compared on each tick): an update's keys may be read across two \
                     versions, and with no swap time there is no lag."
                );
                self.warned_hidden = true;
            }
            (Walk::Data, DataEntry::Dir) => {
                info!("{dir}: ..data is a directory again; watching it as a plain directory");
            }
            (Walk::Data, _) => info!(
                "{dir}: the layout is forced to plain (--layout plain): watching {dir}/..data \
                 through its symlink as a plain directory; an update's keys may be read across \
                 two versions, and with no swap time there is no lag"
            ),
            (Walk::Dir(_), _) => {}
        }
        self.mode = Mode::Plain(PlainState::new(walk));
    }

    /// One tick in plain mode, in three stages: has `..data` changed kind
    /// (then another mode's tick), has anything changed (fingerprints, the
    /// settle and racy rules), then the read and its evaluation.
    pub(super) fn check_plain(&mut self) -> Option<Event> {
        let Mode::Plain(state) = &self.mode else {
            unreachable!("check_plain outside plain mode")
        };
        let walk = state.walk;
        if let Some(other_mode) = self.plain_layout_moved(walk) {
            return other_mode;
        }
        // Before the walk: a fingerprint's racy window is measured from a
        // time no later than it was taken.
        let detected_at = self.clock.wall();
        match self.plain_changed(walk, detected_at) {
            Ok(None) => None,
            Ok(Some(root)) => self.plain_read(root, detected_at),
            Err(e) if e.is_transient() => self.plain_fault(&e, None),
            Err(e) => {
                // The directory itself cannot be walked: reported once.
                let Mode::Plain(state) = &mut self.mode else {
                    unreachable!()
                };
                if state.failed {
                    return None;
                }
                state.failed = true;
                state.fingerprints.clear();
                Some(self.error_event("-".into(), detected_at, None, &e))
            }
        }
    }

    /// Whether `..data` changed kind since the walk was chosen: `Some` with
    /// the tick's result when it did (another mode, or waiting), `None` to
    /// go on walking `walk`. One readlink, as in ConfigMap mode.
    fn plain_layout_moved(&mut self, walk: Walk) -> Option<Option<Event>> {
        // One readlink, as in ConfigMap mode: has `..data` changed kind?
        let (present, link) = match self.volume.data_link().read() {
            Ok(LinkRead::Missing) | Err(_) => (false, false),
            Ok(LinkRead::NotALink) => (true, false),
            Ok(LinkRead::Target(_) | LinkRead::TooLong) => (true, true),
        };
        let forced_plain = self.layout_mode == LayoutMode::Plain;
        match (walk, present, link) {
            // Still what is walked.
            (Walk::Dir(_), false, _) | (Walk::Data, true, false) => None,
            (Walk::Data, true, true) if forced_plain => None,
            (Walk::Data, true, true) => {
                info!(
                    "{}: ..data is a symlink now; watching it as a ConfigMap volume",
                    self.volume.dir().display()
                );
                self.mode = Mode::ConfigMap(Link::Unread);
                Some(self.check_configmap())
            }
            // Missing for a moment (a writer replacing it, the Windows
            // swap), as in ConfigMap mode: look again next tick.
            (Walk::Data, false, _) => {
                if !self.volume.dir().is_dir() {
                    self.enter_waiting();
                } else {
                    debug!(
                        "{}: ..data is missing; retrying next tick",
                        self.volume.dir().display()
                    );
                }
                Some(None)
            }
            (Walk::Dir(_), true, _) => match (self.layout_mode, self.volume.data_entry()) {
                (_, entry @ DataEntry::Dir) | (LayoutMode::Plain, entry @ DataEntry::Link) => {
                    self.set_plain(Walk::Data, entry);
                    Some(self.check_plain())
                }
                // Gone again, or a file under forced plain: the directory
                // itself is still what is walked.
                (_, DataEntry::Missing) | (LayoutMode::Plain, DataEntry::Other) => None,
                (LayoutMode::Auto | LayoutMode::ConfigMap, DataEntry::Link | DataEntry::Other) => {
                    info!(
                        "{}: ..data appeared; watching it as a ConfigMap volume",
                        self.volume.dir().display()
                    );
                    self.mode = Mode::ConfigMap(Link::Unread);
                    Some(self.check_configmap())
                }
            },
        }
    }

    /// Whether the walked directory changed since the last read: the root
    /// to read when it did (its new fingerprints kept), `None` when there
    /// is nothing to read this tick (unchanged, a file still being written
    /// in place, a retry not due), `Err` when it cannot be walked.
    fn plain_changed(
        &mut self,
        walk: Walk,
        detected_at: SystemTime,
    ) -> Result<Option<PlainRoot>, Error> {
        // A passing fault not due for another attempt yet: no walk.
        if let Mode::Plain(PlainState {
            retry: Some(retry), ..
        }) = &self.mode
            && !retry.due(self.now)
        {
            return Ok(None);
        }
        let root = walk.root();
        let fps = match self.volume.fingerprints(root) {
            Ok(fps) => fps,
            Err(WalkError::Vanished) => {
                if !self.volume.dir().is_dir() {
                    self.enter_waiting();
                }
                return Ok(None);
            }
            Err(WalkError::Fatal(e)) => return Err(e),
        };
        self.warn_subpath(!fps.is_empty());
        let Mode::Plain(state) = &mut self.mode else {
            unreachable!()
        };
        state.failed = false;
        // The first look always reads, even an empty directory: "not read
        // yet" is `version: None`, never an empty fingerprint list. A
        // fingerprint taken within the timestamp granularity of a file's
        // mtime is unconfirmed ("racy clean", as git calls it): a same-size
        // rewrite in the same timestamp tick leaves it unchanged, so the
        // content is compared again until the fingerprint is old enough.
        let racy = state
            .taken_at
            .is_some_and(|taken| state.fingerprints.iter().any(|fp| fp.is_racy(taken)));
        if state.version.is_some() && fps == state.fingerprints && !racy {
            state.unsettled = None;
            return Ok(None);
        }
        // A file written in place (same inode, new size or time) may have
        // been caught half-way: it is read once it has held still for one
        // tick. A file replaced by a rename (a new inode, as editors save)
        // or a new one is whole: read at once.
        let in_place = state.version.is_some()
            && fps.iter().any(|fp| {
                state.fingerprints.iter().any(|old| {
                    old.key == fp.key
                        && old.inode == fp.inode
                        && (old.len != fp.len || old.modified != fp.modified)
                })
            });
        if in_place && state.unsettled.as_ref() != Some(&fps) {
            debug!(
                "{}: a file is being written in place; reading it once it holds still",
                self.volume.dir().display()
            );
            state.unsettled = Some(fps);
            return Ok(None);
        }
        state.unsettled = None;
        state.fingerprints = fps;
        state.taken_at = Some(detected_at);
        Ok(Some(root))
    }

    /// Reads what changed and evaluates it: a new version is an event, the
    /// same content after a metadata change is nothing, a passing fault is
    /// retried.
    fn plain_read(&mut self, root: PlainRoot, detected_at: SystemTime) -> Option<Event> {
        let read = self.volume.read_plain_in(root);
        let Mode::Plain(state) = &mut self.mode else {
            unreachable!("plain_read outside plain mode")
        };
        match read {
            Ok(snapshot) if state.version.as_deref() == Some(snapshot.version.as_str()) => {
                state.retry = None;
                debug!(
                    "{}: metadata changed, content did not",
                    self.volume.dir().display()
                );
                None
            }
            Ok(snapshot) => {
                let version = snapshot.version.clone();
                let previous = state.version.replace(version.clone());
                match self.evaluate(snapshot, detected_at) {
                    Ok(event) => {
                        if let Mode::Plain(state) = &mut self.mode {
                            state.retry = None;
                        }
                        event
                    }
                    // Checked again when the retry is due, as a read is:
                    // the content stays unjudged until then.
                    Err(e) => {
                        if let Mode::Plain(state) = &mut self.mode {
                            state.version = previous;
                        }
                        self.plain_fault(&e, Some(&version))
                    }
                }
            }
            Err(e) if e.is_transient() => self.plain_fault(&e, None),
            Err(e) => {
                state.retry = None;
                Some(self.error_event("-".into(), detected_at, None, &e))
            }
        }
    }

    /// A passing fault in plain mode (walking, reading, or a checker that
    /// could not start on `version`): walked and read again when the retry
    /// is due, as ConfigMap mode retries (see [`Watcher::note_fault`]).
    pub(super) fn plain_fault(&mut self, e: &Error, version: Option<&str>) -> Option<Event> {
        let Mode::Plain(state) = &mut self.mode else {
            return None;
        };
        let previous = state.retry.take();
        // Forget what was seen: the next due attempt reads whatever is there.
        state.fingerprints.clear();
        state.taken_at = None;
        state.unsettled = None;
        let (retry, event) = self.note_fault(previous, Fault::of(e, version), false);
        if let Mode::Plain(state) = &mut self.mode {
            state.retry = Some(retry);
        }
        event
    }

    /// The subPath warning, for the directory itself: given at once when
    /// the first look finds files (and found no kubelet entries), else once
    /// the directory has had files for [`SETTLE`] without `..data`
    /// appearing: a writer filling an empty directory a moment after we
    /// start is not a subPath mount.
    pub(super) fn warn_subpath(&mut self, has_files: bool) {
        let Mode::Plain(PlainState {
            walk: Walk::Dir(due),
            ..
        }) = &mut self.mode
        else {
            return;
        };
        if self.warned_plain {
            return;
        }
        let tick = self.now;
        let now = match due {
            SubpathWarning::FirstLook if has_files => true,
            SubpathWarning::FirstLook => {
                *due = SubpathWarning::Settle(None);
                false
            }
            SubpathWarning::Settle(_) if !has_files => false,
            SubpathWarning::Settle(since) => {
                tick.saturating_duration_since(*since.get_or_insert(tick)) >= SETTLE
            }
        };
        if now {
            warn!(
                "{}: no ..data link, so watching it as a plain directory (content is \
                 compared on each tick). If this is a Kubernetes subPath mount, it will \
                 never receive updates: mount the whole volume instead.",
                self.volume.dir().display()
            );
            self.warned_plain = true;
        }
    }
}
