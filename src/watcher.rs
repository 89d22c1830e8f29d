//! The poll loop. [`Watcher::check`] is one tick: in ConfigMap mode an idle
//! tick is a single `readlink(..data)` compared in place with the target we
//! already have, with no heap allocation. Only when the target differs is
//! the volume read (consistently), parsed and reported.
//!
//! [`Watcher::run`] checks once, then waits on a shutdown channel with the
//! interval as timeout, so a shutdown ends it at once whatever the interval.
//!
//! Which mode a directory is watched in follows what `..data` is, looked at
//! again only when the idle check sees it change: a symlink is a ConfigMap
//! volume; a real directory is a filesystem that hides symlinks (SMB, some
//! FUSE mounts, Wine), read as plain files under `..data`; no `..data` is a
//! plain directory. [`LayoutMode`] can force either mode.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, Instant, SystemTime},
};

use log::{debug, info, warn};
use serde_json::Value;

use crate::{
    Error, ErrorKind,
    event::{Event, EventKind, Lag},
    format::Selector,
    volume::{
        self, DataEntry, Fingerprint, Layout, Limits, LinkRead, PlainRoot, Snapshot, Volume,
        WalkError,
    },
};

/// How often "still waiting for the directory" is repeated.
const WAITING_LOG_EVERY: Duration = Duration::from_secs(60);

/// What to watch and how; the validated form of the command line. Built
/// with [`WatchOptions::new`] and the `with_*` methods (fields may be
/// added).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WatchOptions {
    /// The volume directory.
    pub dir: PathBuf,
    /// Which key (or all keys) make up the config.
    pub selector: Selector,
    /// Time between checks.
    pub interval: Duration,
    /// Files larger than this are refused.
    pub max_file_size: u64,
    /// The keys read in one version add up to at most this.
    pub max_total_size: u64,
    /// Which layout the directory is watched in ([`LayoutMode::Auto`]: as
    /// it is).
    pub layout: LayoutMode,
}

/// Which layout a directory is watched in: as it is (the default), or
/// forced. Where the filesystem hides symlinks, or where reading plain
/// files must never happen, force one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LayoutMode {
    /// As the directory is: ConfigMap mode while `..data` is a symlink;
    /// plain mode over `<dir>/..data` while it is a real directory (a
    /// filesystem that hides symlinks: SMB, some FUSE mounts, Wine, where
    /// one warning says so); plain mode over the directory itself when it
    /// has no `..data`.
    #[default]
    Auto,
    /// ConfigMap mode only: a directory without `..data` waits for it, and
    /// a `..data` that is not a symlink is reported once as an error and
    /// waited on. Plain files are never read.
    ConfigMap,
    /// Plain mode only: `<dir>/..data` when it exists, as a directory or
    /// through the symlink (followed on each look, so on a kubelet volume
    /// each update is seen once, as a change of content), otherwise the
    /// directory itself. An update's keys may be read across two versions,
    /// and with no swap time there is no lag.
    Plain,
}

impl WatchOptions {
    /// Options for `dir` with the defaults: `config.json`, 1 s, 16 MiB.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        WatchOptions {
            dir: dir.into(),
            selector: Selector::default(),
            interval: Duration::from_secs(1),
            max_file_size: volume::DEFAULT_MAX_FILE_SIZE,
            max_total_size: volume::DEFAULT_MAX_TOTAL_SIZE,
            layout: LayoutMode::Auto,
        }
    }

    /// Which layout the directory is watched in: [`LayoutMode::Auto`] (the
    /// default) follows what `..data` is; the others force a mode.
    pub fn with_layout(mut self, layout: LayoutMode) -> Self {
        self.layout = layout;
        self
    }

    /// Which key(s) make up the config, and how they are parsed.
    pub fn with_selector(mut self, selector: Selector) -> Self {
        self.selector = selector;
        self
    }

    /// Time between checks.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Files larger than this are refused.
    pub fn with_max_file_size(mut self, bytes: u64) -> Self {
        self.max_file_size = bytes;
        self
    }

    /// The keys read in one version add up to at most this.
    pub fn with_max_total_size(mut self, bytes: u64) -> Self {
        self.max_total_size = bytes;
        self
    }

    /// The same options for another directory.
    pub fn with_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = dir.into();
        self
    }
}

/// The wait from now to one interval after `tick` began: ticks keep their
/// period however long a tick takes (500 directories, a slow handler), so
/// a version is seen within one interval of its swap. A tick that took
/// longer than the interval is followed at once, never by a burst.
fn until_next_tick(tick: Instant, interval: Duration) -> Duration {
    interval.saturating_sub(tick.elapsed())
}

/// Receives the watcher's events: a closure, or an `mpsc::Sender<Event>`.
pub trait EventHandler {
    /// Called for each event, on the watcher's thread.
    fn handle(&mut self, event: Event);
}

impl<F: FnMut(Event)> EventHandler for F {
    fn handle(&mut self, event: Event) {
        self(event)
    }
}

impl EventHandler for mpsc::Sender<Event> {
    fn handle(&mut self, event: Event) {
        // A receiver that hung up no longer wants events; watching goes on
        // until shutdown.
        let _ = self.send(event);
    }
}

/// Ends a running [`Watcher::run`]. Cheap to clone; usable from a signal
/// handler's thread.
#[derive(Debug, Clone)]
pub struct Shutdown(mpsc::Sender<()>);

impl Shutdown {
    /// Asks the loop to stop; it returns within one check.
    pub fn trigger(&self) {
        let _ = self.0.send(());
    }
}

/// The loop's end of the shutdown channel.
///
/// Only [`Shutdown::trigger`] ends a loop. Dropping every [`Shutdown`]
/// handle does not (the listener keeps a sender of its own), so
/// `let (_, listener) = shutdown_channel();` gives a loop that runs until
/// the process ends, never one that stops after its first check.
#[derive(Debug)]
pub struct ShutdownListener {
    rx: mpsc::Receiver<()>,
    _keep_open: mpsc::Sender<()>,
}

impl ShutdownListener {
    /// Waits up to `timeout`; true when shutdown was asked for.
    pub fn wait(&self, timeout: Duration) -> bool {
        self.rx.recv_timeout(timeout).is_ok()
    }
}

/// What [`Watcher::run`] and [`Watcher::run_many`] wait on between ticks:
/// a timed wait that says whether to stop.
///
/// [`ShutdownListener`] is the usual one. A program can bring its own: the
/// command-line tool, on Linux, waits for its termination signals with
/// `sigtimedwait`, so that an idle tick is one `readlink` and that one
/// wait, with no signal-handling thread.
pub trait Wait {
    /// Waits up to `timeout`; true when the loop should end.
    fn wait(&self, timeout: Duration) -> bool;
}

impl Wait for ShutdownListener {
    fn wait(&self, timeout: Duration) -> bool {
        ShutdownListener::wait(self, timeout)
    }
}

/// A connected [`Shutdown`] handle and listener. Keep the handle (or a
/// clone) wherever the loop should be stopped from, e.g. a signal handler.
pub fn shutdown_channel() -> (Shutdown, ShutdownListener) {
    let (tx, rx) = mpsc::channel();
    let listener = ShutdownListener {
        rx,
        _keep_open: tx.clone(),
    };
    (Shutdown(tx), listener)
}

/// What the watcher is doing with its directory: one state per mode, each
/// holding only what that mode needs, so nothing seen in one mode (a target,
/// fingerprints, a reported error) can leak into another.
#[derive(Debug)]
enum Mode {
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
enum Link {
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
struct PlainState {
    walk: Walk,
    fingerprints: Vec<Fingerprint>,
    /// When `fingerprints` were taken.
    taken_at: Option<SystemTime>,
    /// The content hash of the last snapshot evaluated.
    version: Option<String>,
    /// The directory itself cannot be walked (reported once).
    failed: bool,
    /// The passing fault being retried, logged once.
    fault: Option<Fault>,
}

impl PlainState {
    fn new(walk: Walk) -> Self {
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
enum Walk {
    /// The directory itself: it has no `..data`. A subPath mount looks like
    /// this, and is warned about.
    Dir(SubpathWarning),
    /// `<dir>/..data`: a real directory where the filesystem hides
    /// symlinks, or the symlink followed under [`LayoutMode::Plain`].
    Data,
}

impl Walk {
    fn root(self) -> PlainRoot {
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
enum SubpathWarning {
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
    fn of(e: &Error) -> Self {
        Fault {
            message: e.chain(),
            key: e.key().map(str::to_owned),
        }
    }
}

/// How long `..data` may take to appear in a directory that looks like a
/// volume being written, before the directory is taken for what it is.
const SETTLE: Duration = Duration::from_secs(2);

/// The last good config and its version.
#[derive(Debug)]
struct Current {
    config: Arc<Value>,
    version: String,
}

/// Checks a parsed config before it is accepted: given the snapshot it came
/// from and the config, an `Err` makes the version an error event (the last
/// good config stays). Typed handles deserialize here.
pub type Validator = Box<dyn FnMut(&Snapshot, &Value) -> Result<(), Error> + Send>;

/// Proof of life of a watcher's loop, readable from any thread (for
/// liveness probes and metrics): updated with atomics on every tick, so
/// the idle path takes no lock and allocates nothing.
#[derive(Debug, Default)]
pub struct Heartbeat {
    ticks: AtomicU64,
    last_tick_unix_ms: AtomicU64,
    retries: AtomicU64,
}

impl Heartbeat {
    /// How many ticks have run.
    pub fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    /// How many reads were retried after a passing fault (EMFILE, EIO, a
    /// swap under way).
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// When the last tick ran, if one has.
    pub fn last_tick(&self) -> Option<SystemTime> {
        match self.last_tick_unix_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(SystemTime::UNIX_EPOCH + Duration::from_millis(ms)),
        }
    }

    fn beat(&self) {
        self.ticks.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        self.last_tick_unix_ms.store(now, Ordering::Relaxed);
    }
}

struct ValidatorSlot(Option<Validator>);

impl std::fmt::Debug for ValidatorSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}

/// Keeps a config in step with a volume.
#[derive(Debug)]
pub struct Watcher {
    /// The volume directory, shared with every event (no copy per event).
    dir: Arc<std::path::Path>,
    validator: ValidatorSlot,
    heartbeat: Arc<Heartbeat>,
    volume: Volume,
    selector: Selector,
    interval: Duration,
    mode: Mode,
    current: Option<Current>,
    /// The last evaluated version was bad: the next good one is reported
    /// even if equal to the last good one.
    failing: bool,
    /// The subPath warning has been given.
    warned_plain: bool,
    /// The "this filesystem hides symlinks" warning has been given.
    warned_hidden: bool,
    /// Which layouts may be watched.
    layout_mode: LayoutMode,
}

impl Watcher {
    /// A watcher; nothing is read until the first [`check`](Self::check).
    ///
    /// A directory named `..data` is a volume's data directory (seen as a
    /// directory where symlinks are hidden, or given by hand): its parent
    /// is watched, through `..data` while that is a symlink and as plain
    /// files under it while it is a directory. Events still name the
    /// directory as given.
    pub fn new(options: WatchOptions) -> Self {
        let volume_dir = match (options.dir.file_name(), options.dir.parent()) {
            (Some(name), Some(parent)) if name == "..data" => {
                let parent = if parent.as_os_str().is_empty() {
                    std::path::Path::new(".")
                } else {
                    parent
                };
                info!(
                    "{}: named ..data, a volume's data directory: watching the volume {} \
                     (through ..data while it is a symlink, its files while it is a directory)",
                    options.dir.display(),
                    parent.display()
                );
                parent.to_owned()
            }
            _ => options.dir.clone(),
        };
        Watcher {
            dir: options.dir.as_path().into(),
            validator: ValidatorSlot(None),
            heartbeat: Arc::default(),
            volume: {
                let mut volume = Volume::with_limits(
                    volume_dir,
                    Limits {
                        max_file_size: options.max_file_size,
                        max_total_size: options.max_total_size,
                        ..Limits::default()
                    },
                );
                // Only the selected key is read; the others are listed.
                if let Some(keys) = options.selector.needed_keys() {
                    volume.select_keys(keys);
                }
                volume
            },
            selector: options.selector,
            interval: options.interval,
            mode: Mode::Waiting {
                logged_at: None,
                blocked: None,
            },
            current: None,
            failing: false,
            warned_plain: false,
            warned_hidden: false,
            layout_mode: options.layout,
        }
    }

    /// Runs `validator` on every parsed config before accepting it.
    pub fn with_validator(mut self, validator: Validator) -> Self {
        self.validator = ValidatorSlot(Some(validator));
        self
    }

    /// The loop's heartbeat, shared: updated on every [`check`](Self::check).
    pub fn heartbeat(&self) -> Arc<Heartbeat> {
        self.heartbeat.clone()
    }

    /// The last good config, if there has been one.
    pub fn current(&self) -> Option<&Arc<Value>> {
        self.current.as_ref().map(|c| &c.config)
    }

    /// The version the last good config was read from (the newest version
    /// holding it, when a new version brought the same config).
    pub fn current_version(&self) -> Option<&str> {
        self.current.as_ref().map(|c| c.version.as_str())
    }

    /// The passing fault the watcher is retrying, if reading the current
    /// version keeps failing for a reason that is not its content.
    pub fn fault(&self) -> Option<&Fault> {
        match &self.mode {
            Mode::ConfigMap(Link::Retrying { fault, .. }) => Some(fault),
            Mode::Waiting {
                blocked: Some(why), ..
            } => Some(why),
            Mode::Plain(PlainState {
                fault: Some(fault), ..
            }) => Some(fault),
            _ => None,
        }
    }

    /// The layout the watcher is working in (`Missing` until the directory
    /// has been seen, and while it settles).
    pub fn layout(&self) -> Layout {
        match self.mode {
            Mode::Waiting { .. } | Mode::Settling { .. } => Layout::Missing,
            Mode::ConfigMap(_) => Layout::ConfigMap,
            Mode::Plain(_) => Layout::Plain,
        }
    }

    /// The time between checks in [`run`](Self::run).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// One tick: looks at the volume and returns what changed, if anything.
    pub fn check(&mut self) -> Option<Event> {
        self.heartbeat.beat();
        match self.mode {
            Mode::ConfigMap(_) => self.check_configmap(),
            Mode::Plain(_) => self.check_plain(),
            Mode::Waiting { .. } | Mode::Settling { .. } => self.check_waiting(),
        }
    }

    /// Checks once, then every interval, handing events to `handler`, until
    /// `shutdown` fires. Only [`Shutdown::trigger`] stops it: dropping the
    /// [`Shutdown`] handles does not.
    pub fn run(&mut self, shutdown: &(impl Wait + ?Sized), handler: &mut impl EventHandler) {
        loop {
            let tick = Instant::now();
            if let Some(event) = self.check() {
                handler.handle(event);
            }
            if shutdown.wait(until_next_tick(tick, self.interval)) {
                return;
            }
        }
    }

    /// Checks several watchers on one tick, then every interval (the
    /// shortest of theirs), until `shutdown` fires. `handler` gets the
    /// events of each tick that had any, together (so that changes found in
    /// several directories on one tick can run one round of actions), with
    /// every watcher to read the others' current configs. An idle tick is
    /// each watcher's idle check and nothing else.
    pub fn run_many(
        watchers: &mut [Watcher],
        shutdown: &(impl Wait + ?Sized),
        handler: &mut dyn FnMut(&[Watcher], Vec<Event>),
    ) {
        let interval = watchers
            .iter()
            .map(|w| w.interval)
            .min()
            .unwrap_or(Duration::from_secs(1));
        loop {
            let tick = Instant::now();
            // No allocation unless an event arrives.
            let mut events = Vec::new();
            for watcher in watchers.iter_mut() {
                events.extend(watcher.check());
            }
            if !events.is_empty() {
                handler(watchers, events);
            }
            if shutdown.wait(until_next_tick(tick, interval)) {
                return;
            }
        }
    }

    /// The volume directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    fn check_configmap(&mut self) -> Option<Event> {
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
    fn reload(&mut self, seen: Link) -> Option<Event> {
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
    fn retry_later(&mut self, e: &Error) {
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
    fn take_link_buffer(&mut self) -> Vec<u8> {
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
    fn not_a_link(&mut self) -> Option<Event> {
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

    /// Switches to plain mode over `walk`, saying once what is lost when
    /// that is `..data` (`entry`: a directory, or a link followed).
    fn set_plain(&mut self, walk: Walk, entry: DataEntry) {
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

    fn check_plain(&mut self) -> Option<Event> {
        let Mode::Plain(state) = &self.mode else {
            unreachable!("check_plain outside plain mode")
        };
        let walk = state.walk;
        // One readlink, as in ConfigMap mode: has `..data` changed kind?
        let (present, link) = match self.volume.data_link().read() {
            Ok(LinkRead::Missing) | Err(_) => (false, false),
            Ok(LinkRead::NotALink) => (true, false),
            Ok(LinkRead::Target(_) | LinkRead::TooLong) => (true, true),
        };
        let forced_plain = self.layout_mode == LayoutMode::Plain;
        match (walk, present, link) {
            // Still what is walked.
            (Walk::Dir(_), false, _) | (Walk::Data, true, false) => {}
            (Walk::Data, true, true) if forced_plain => {}
            (Walk::Data, true, true) => {
                info!(
                    "{}: ..data is a symlink now; watching it as a ConfigMap volume",
                    self.volume.dir().display()
                );
                self.mode = Mode::ConfigMap(Link::Unread);
                return self.check_configmap();
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
                return None;
            }
            (Walk::Dir(_), true, _) => match (self.layout_mode, self.volume.data_entry()) {
                (_, entry @ DataEntry::Dir) | (LayoutMode::Plain, entry @ DataEntry::Link) => {
                    self.set_plain(Walk::Data, entry);
                    return self.check_plain();
                }
                // Gone again, or a file under forced plain: the directory
                // itself is still what is walked.
                (_, DataEntry::Missing) | (LayoutMode::Plain, DataEntry::Other) => {}
                (LayoutMode::Auto | LayoutMode::ConfigMap, DataEntry::Link | DataEntry::Other) => {
                    info!(
                        "{}: ..data appeared; watching it as a ConfigMap volume",
                        self.volume.dir().display()
                    );
                    self.mode = Mode::ConfigMap(Link::Unread);
                    return self.check_configmap();
                }
            },
        }
        let root = walk.root();
        let detected_at = SystemTime::now();
        let fps = match self.volume.fingerprints(root) {
            Ok(fps) => fps,
            Err(WalkError::Vanished) => {
                if !self.volume.dir().is_dir() {
                    self.enter_waiting();
                }
                return None;
            }
            Err(WalkError::Fatal(e)) if e.is_transient() => {
                self.plain_fault(&e);
                return None;
            }
            Err(WalkError::Fatal(e)) => {
                let Mode::Plain(state) = &mut self.mode else {
                    unreachable!()
                };
                if state.failed {
                    return None;
                }
                state.failed = true;
                state.fingerprints.clear();
                return Some(self.error_event("-".into(), detected_at, None, &e));
            }
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
            return None;
        }
        state.fingerprints = fps;
        state.taken_at = Some(detected_at);
        match self.volume.read_plain_in(root) {
            Ok(snapshot) if state.version.as_deref() == Some(snapshot.version.as_str()) => {
                state.fault = None;
                debug!(
                    "{}: metadata changed, content did not",
                    self.volume.dir().display()
                );
                None
            }
            Ok(snapshot) => {
                state.fault = None;
                state.version = Some(snapshot.version.clone());
                self.evaluate(snapshot, detected_at)
            }
            Err(e) if e.is_transient() => {
                self.plain_fault(&e);
                None
            }
            Err(e) => {
                state.fault = None;
                Some(self.error_event("-".into(), detected_at, None, &e))
            }
        }
    }

    /// A passing fault in plain mode: look again on the next tick, logging
    /// the fault once.
    fn plain_fault(&mut self, e: &Error) {
        let Mode::Plain(state) = &mut self.mode else {
            return;
        };
        let fault = Fault::of(e);
        if state.fault.as_ref() != Some(&fault) {
            warn!("{}; retrying on each tick", fault.message);
        }
        state.fingerprints.clear();
        state.taken_at = None;
        state.fault = Some(fault);
    }

    /// The subPath warning, for the directory itself: given at once when
    /// the first look finds files (and found no kubelet entries), else once
    /// the directory has had files for [`SETTLE`] without `..data`
    /// appearing: a writer filling an empty directory a moment after we
    /// start is not a subPath mount.
    fn warn_subpath(&mut self, has_files: bool) {
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
        let now = match due {
            SubpathWarning::FirstLook if has_files => true,
            SubpathWarning::FirstLook => {
                *due = SubpathWarning::Settle(None);
                false
            }
            SubpathWarning::Settle(_) if !has_files => false,
            SubpathWarning::Settle(since) => {
                since.get_or_insert_with(Instant::now).elapsed() >= SETTLE
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

    fn check_waiting(&mut self) -> Option<Event> {
        let dir = self.volume.dir().display().to_string();
        let entry = self.volume.data_entry();
        if entry == DataEntry::Missing && !self.volume.dir().is_dir() {
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
                }),
                Ok(meta) if !meta.is_dir() => Some(Fault {
                    message: format!("{dir}: not a directory"),
                    key: None,
                }),
                _ => None,
            };
            let due = logged_at.is_none_or(|at| at.elapsed() >= WAITING_LOG_EVERY)
                || blocked != was_blocked;
            let logged_at = if due {
                match &blocked {
                    Some(why) => warn!("{}; waiting for it to become readable", why.message),
                    None => info!("{dir}: directory does not exist yet; waiting for it"),
                }
                Some(Instant::now())
            } else {
                logged_at
            };
            self.mode = Mode::Waiting { logged_at, blocked };
            return None;
        }
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
                    let since = since.unwrap_or_else(Instant::now);
                    if since.elapsed() < SETTLE {
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

    fn enter_waiting(&mut self) {
        if !matches!(self.mode, Mode::Waiting { .. }) {
            warn!(
                "{}: directory disappeared; waiting for it to come back",
                self.volume.dir().display()
            );
        }
        self.mode = Mode::Waiting {
            logged_at: Some(Instant::now()),
            blocked: None,
        };
    }

    /// Decides what a freshly read snapshot means for the config.
    fn evaluate(&mut self, snapshot: Snapshot, detected_at: SystemTime) -> Option<Event> {
        let lag = snapshot
            .swapped_at
            .map(|swapped| Lag::between(swapped, detected_at));
        let validated =
            self.selector
                .extract(&snapshot)
                .and_then(|config| match &mut self.validator.0 {
                    Some(validate) => validate(&snapshot, &config).map(|()| config),
                    None => Ok(config),
                });
        let config = match validated {
            Ok(config) => config,
            // A checker that could not start (EMFILE, EAGAIN) said nothing
            // about the version: read and check it again next tick.
            Err(e)
                if e.kind() == crate::ErrorKind::Transient
                    && matches!(self.mode, Mode::ConfigMap(_)) =>
            {
                self.retry_later(&e);
                return None;
            }
            Err(e) => return Some(self.error_event(snapshot.version, detected_at, lag, &e)),
        };
        let kind = match &mut self.current {
            None => EventKind::Initial,
            Some(current) if !self.failing && *current.config == config => {
                debug!("{}: config unchanged", snapshot.version);
                // The newest version holding this config is the current
                // one: a later change names it as the previous version.
                current.version = snapshot.version;
                return None;
            }
            Some(_) => EventKind::Change,
        };
        self.failing = false;
        let config = Arc::new(config);
        let previous = self.current.replace(Current {
            config: config.clone(),
            version: snapshot.version.clone(),
        });
        if let Some(lag) = lag.filter(|l| l.seconds < 0.0) {
            warn!(
                "{}: detected {:.1} ms before its swap time: this node's clock and the \
                 volume's timestamps disagree (clock skew)",
                snapshot.version,
                -lag.seconds * 1e3
            );
        }
        Some(Event {
            kind,
            dir: self.dir.clone(),
            version: snapshot.version,
            previous_version: previous.map(|p| p.version),
            detected_at,
            lag,
            config: Some(config),
            key: None,
            error: None,
        })
    }

    fn error_event(
        &mut self,
        version: String,
        detected_at: SystemTime,
        lag: Option<Lag>,
        e: &Error,
    ) -> Event {
        self.failing = true;
        match &self.current {
            Some(current) => warn!(
                "{}; keeping the last good config ({})",
                e.chain(),
                current.version
            ),
            None => warn!("{}; there is no good config yet", e.chain()),
        }
        Event {
            kind: EventKind::Error,
            dir: self.dir.clone(),
            version,
            previous_version: self.current_version().map(str::to_owned),
            detected_at,
            lag,
            config: self.current().cloned(),
            key: e.key().map(str::to_owned),
            error: Some(e.chain()),
        }
    }
}

/// Whether `dir` holds the kubelet's own entries (`..data_tmp`, a
/// timestamped `..` directory): a volume being written, not a plain one.
fn has_kubelet_entries(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".."))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_tick_shortens_the_wait_and_an_overlong_one_skips_it() {
        let second = Duration::from_secs(1);
        let slow = Instant::now() - Duration::from_millis(300);
        let wait = until_next_tick(slow, second);
        assert!(wait <= Duration::from_millis(700), "{wait:?}");
        assert!(wait > Duration::from_millis(600), "{wait:?}");
        let overlong = Instant::now() - Duration::from_millis(1500);
        assert_eq!(until_next_tick(overlong, second), Duration::ZERO);
    }
}
