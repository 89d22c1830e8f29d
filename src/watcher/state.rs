//! What the watcher knows between ticks, as types: one state per mode
//! ([`Mode`]), each holding only what that mode needs, so that nothing seen
//! in one mode can leak into another and impossible combinations cannot be
//! written.

use std::time::{Duration, Instant, SystemTime};

use std::sync::Arc;

use serde_json::Value;

use crate::{
    Error,
    volume::{Fingerprint, PlainRoot},
};

/// How often "still waiting for the directory" is repeated.
pub(super) const WAITING_LOG_EVERY: Duration = Duration::from_secs(60);

/// What the watcher is doing with its directory: one state per mode, each
/// holding only what that mode needs, so nothing seen in one mode (a target,
/// fingerprints, a reported error) can leak into another.
#[derive(Debug)]
pub(super) enum Mode {
    /// The directory is missing (or not looked at yet).
    Waiting {
        /// When "waiting for it" was last logged.
        logged_at: Option<Instant>,
        /// Why the directory cannot even be looked at (permission denied on
        /// it or a parent), if that is why it seems missing.
        blocked: Option<Fault>,
    },
    /// The directory exists without `..data` but holds the kubelet's own
    /// entries (`..data_tmp`, timestamped directories): a Windows swap is
    /// under way, or a first write. `..data` is given [`SETTLE`] to appear
    /// before the directory is taken as plain.
    Settling { since: Instant },
    /// A ConfigMap volume: what `..data` held at the last look.
    ConfigMap(Link),
    /// A plain directory.
    Plain(PlainState),
}

/// ConfigMap mode: the last `..data` seen, and what became of it.
#[derive(Debug)]
pub(super) enum Link {
    /// Nothing read yet in this mode.
    Unread,
    /// This target was read (to a good config or a content error): idle
    /// until `..data` moves. Its buffer is compared in place on each tick.
    Settled(Vec<u8>),
    /// Reading this target failed with a passing fault: read it again on
    /// the next tick. The fault is logged once, not on every retry.
    Retrying { target: Vec<u8>, fault: Fault },
    /// `..data` is not a symlink and is not watched as a directory
    /// (reported once).
    NotSymlink,
    /// `..data`'s target is longer than any kubelet name (reported once).
    TooLong,
}

/// Plain mode: which directory is walked, and what it looked like at the
/// last read.
#[derive(Debug)]
pub(super) struct PlainState {
    pub(super) walk: Walk,
    pub(super) fingerprints: Vec<Fingerprint>,
    /// When `fingerprints` were taken.
    pub(super) taken_at: Option<SystemTime>,
    /// The content hash of the last snapshot evaluated.
    pub(super) version: Option<String>,
    /// The directory itself cannot be walked (reported once).
    pub(super) failed: bool,
    /// The passing fault being retried, logged once.
    pub(super) fault: Option<Fault>,
}

impl PlainState {
    pub(super) fn new(walk: Walk) -> Self {
        PlainState {
            walk,
            fingerprints: Vec::new(),
            taken_at: None,
            version: None,
            failed: false,
            fault: None,
        }
    }
}

/// Which directory plain mode walks, with what only that one needs.
#[derive(Debug, Clone, Copy)]
pub(super) enum Walk {
    /// The directory itself: it has no `..data`. A subPath mount looks like
    /// this, and is warned about.
    Dir(SubpathWarning),
    /// `<dir>/..data`: a real directory where the filesystem hides
    /// symlinks, or the symlink followed under [`LayoutMode::Plain`].
    Data,
}

impl Walk {
    pub(super) fn root(self) -> PlainRoot {
        match self {
            Walk::Dir(_) => PlainRoot::Dir,
            Walk::Data => PlainRoot::Data,
        }
    }
}

/// When the subPath warning is due. Files found by the very first look at
/// a directory without kubelet entries are a plain directory: warned at
/// once. A directory that was empty, or held the kubelet's own entries,
/// may be a volume being written: its files must stay [`SETTLE`] without
/// `..data` first.
#[derive(Debug, Clone, Copy)]
pub(super) enum SubpathWarning {
    /// Nothing walked yet, and the first look found no kubelet entries.
    FirstLook,
    /// Since when files have been seen, once they have.
    Settle(Option<Instant>),
}

/// A passing fault the watcher keeps retrying: not a verdict on the
/// version, which is read again on every tick until it succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Fault {
    /// The message with its causes.
    pub message: String,
    /// The key concerned, if one is.
    pub key: Option<String>,
}

impl Fault {
    pub(super) fn of(e: &Error) -> Self {
        Fault {
            message: e.chain(),
            key: e.key().map(str::to_owned),
        }
    }
}

/// How long `..data` may take to appear in a directory that looks like a
/// volume being written, before the directory is taken for what it is.
pub(super) const SETTLE: Duration = Duration::from_secs(2);

/// The last good config and its version.
#[derive(Debug)]
pub(super) struct Current {
    pub(super) config: Arc<Value>,
    pub(super) version: String,
}
