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
    /// Reading this target failed with a passing fault: read it again
    /// when the retry is due (idle ticks in between are the readlink and a
    /// comparison with the clock).
    Retrying { target: Vec<u8>, retry: Retry },
    /// `readlink(..data)` itself fails (EIO, ESTALE on NFS, EACCES): tried
    /// again on each tick, which costs no more than an idle one.
    Unreadable(Retry),
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
    /// The passing fault being retried, if any.
    pub(super) retry: Option<Retry>,
    /// Fingerprints of a file being written in place, seen on the last
    /// tick: read once the next tick finds them unchanged.
    pub(super) unsettled: Option<Vec<Fingerprint>>,
}

impl PlainState {
    pub(super) fn new(walk: Walk) -> Self {
        PlainState {
            walk,
            fingerprints: Vec::new(),
            taken_at: None,
            version: None,
            failed: false,
            retry: None,
            unsettled: None,
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
/// version, which is read again until it succeeds. One that lasts past the
/// grace ([`WatchOptions::with_fault_grace`](super::WatchOptions::with_fault_grace))
/// is also reported as an error event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Fault {
    /// The message with its causes.
    pub message: String,
    /// The key concerned, if one is.
    pub key: Option<String>,
    /// The version it keeps from being read, when one is known (the
    /// `..data` target; in plain mode, the last content seen).
    pub version: Option<String>,
}

impl Fault {
    pub(super) fn of(e: &Error, version: Option<&str>) -> Self {
        Fault {
            message: e.chain(),
            key: e.key().map(str::to_owned),
            version: version.map(str::to_owned),
        }
    }
}

/// A passing fault as the watcher's thread publishes it to other threads
/// (the sidecar's `/status`): what it is, since when, how often it was
/// tried and when it is tried next, in wall-clock time. Published through
/// [`Heartbeat::fault`](super::Heartbeat::fault) when it starts, on each
/// attempt, and when it ends: never on an idle tick.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FaultState {
    /// The fault.
    pub fault: Fault,
    /// When it first happened.
    pub since: SystemTime,
    /// Failed attempts so far; 0 for a directory that cannot be looked at,
    /// which is looked at again on every tick and not counted.
    pub attempts: u32,
    /// When the next attempt is made; `None` when it is on every tick.
    pub next_attempt_at: Option<SystemTime>,
    /// It outlasted the grace and was reported as an error event.
    pub reported: bool,
}

/// A passing fault being retried: the one place that says what it is,
/// since when, how often it was tried, when it is tried next, and whether
/// it has been reported as an error event. Every path of a tick keeps its
/// faults in one of these.
#[derive(Debug)]
pub(super) struct Retry {
    pub(super) fault: Fault,
    /// When it first happened (a change of message keeps this).
    pub(super) since: Instant,
    /// Failed attempts so far.
    pub(super) attempts: u32,
    /// The next attempt is not made before this.
    pub(super) next_at: Instant,
    /// It outlasted the grace and was reported as an error event (once).
    pub(super) reported: bool,
}

/// The longest wait between two attempts at a version that keeps failing
/// for a passing reason (or the interval, if that is longer).
pub(super) const RETRY_MAX: Duration = Duration::from_secs(10);

impl Retry {
    /// The wait after `attempts` failures: one interval, doubling, up to
    /// [`RETRY_MAX`]. A swap under way is over by the next tick; EMFILE or
    /// EIO that lasts is not worth a re-read and re-parse on every tick.
    pub(super) fn backoff(interval: Duration, attempts: u32) -> Duration {
        interval
            .saturating_mul(1 << attempts.saturating_sub(1).min(20))
            .min(RETRY_MAX.max(interval))
    }

    /// Whether the next attempt is due at `now`.
    pub(super) fn due(&self, now: Instant) -> bool {
        now >= self.next_at
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
