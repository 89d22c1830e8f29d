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
//!
//! The loop's parts, one file each: [`options`](WatchOptions), the
//! shutdown and wait between ticks, the clock and the loops' schedule, the
//! per-mode state types, and the ConfigMap, plain and waiting paths of one
//! tick.
//!
//! Time is read once per tick: [`Watcher::check`] reads the clock and runs
//! the tick at that instant (every part of the tick goes by it), and
//! [`Watcher::run`] reads it once after each tick, for the wait and the next
//! tick's instant together. Wall-clock time is read only where one is
//! needed, off ConfigMap mode's idle path.

pub(crate) mod clock;
mod configmap;
mod options;
mod plain;
mod shutdown;
mod state;
mod waiting;

pub use options::{DEFAULT_FAULT_GRACE, LayoutMode, WatchOptions};
pub use shutdown::{Shutdown, ShutdownListener, Wait, shutdown_channel};
pub use state::{Fault, FaultState};

use clock::{Clock, Schedule};
use state::*;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, Instant, SystemTime},
};

use log::{debug, info, warn};
use serde_json::Value;

use crate::{
    Error,
    event::{Event, EventKind, Lag},
    format::Selector,
    volume::{Layout, Limits, Snapshot, Volume},
};

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

/// Accepts or refuses a parsed config: given the snapshot it came from and
/// the config. The contract:
/// - it runs on the loop's thread, before anything is committed or acted
///   on, and must have no side effects: it may be called again for the
///   same version (after a passing fault, or a read that restarted);
/// - an `Err` of [`ErrorKind::Transient`](crate::ErrorKind::Transient)
///   (a checker that could not start) says nothing about the version: it
///   is judged again when the retry is due, in every mode alike, and
///   reported only if it outlasts the fault grace;
/// - any other `Err` refuses the version: an error event, and the last
///   good config stays.
///
/// Typed handles deserialize here.
pub type Validator = Box<dyn FnMut(&Snapshot, &Value) -> Result<(), Error> + Send>;

/// Commits an accepted version: side effects (writing rendered files,
/// publishing a typed value) belong here, not in the [`Validator`]. Called
/// once per accepted version whose config is new (the first included),
/// after the validator passed and before the event. A passing fault
/// ([`ErrorKind::Transient`](crate::ErrorKind::Transient): EMFILE, a disk
/// briefly full) is retried like a read, the version validated again
/// first; any other error refuses the version (an error event, the last
/// good config stays). Actions follow the event, so they run only after a
/// commit succeeded.
pub type Commit = Box<dyn FnMut(&Snapshot, &Value) -> Result<(), Error> + Send>;

/// Proof of life of a watcher's loop, readable from any thread (for
/// liveness probes and metrics): updated with atomics on every tick, so
/// the idle path takes no lock and allocates nothing. The fault being
/// retried, if any, is published here too, only when it changes.
#[derive(Debug)]
pub struct Heartbeat {
    ticks: AtomicU64,
    /// The last tick's instant, as nanoseconds after `anchor`, plus one (0:
    /// none yet). Monotonic, so that the tick reads no wall clock, and a
    /// step of the wall clock does not make a live loop look stuck.
    last_tick: AtomicU64,
    anchor: Instant,
    retries: AtomicU64,
    /// Written by the loop only when a fault starts, is retried or ends.
    fault: Mutex<Option<FaultState>>,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            ticks: AtomicU64::new(0),
            last_tick: AtomicU64::new(0),
            anchor: Instant::now(),
            retries: AtomicU64::new(0),
            fault: Mutex::new(None),
        }
    }
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

    /// When the last tick ran, if one has: its age on the monotonic clock,
    /// before the wall-clock time now (the clocks are read here, by the
    /// reader, not by the tick).
    pub fn last_tick(&self) -> Option<SystemTime> {
        let at = match self.last_tick.load(Ordering::Relaxed) {
            0 => return None,
            n => self.anchor + Duration::from_nanos(n - 1),
        };
        let age = Instant::now().saturating_duration_since(at);
        let now = SystemTime::now();
        Some(now.checked_sub(age).unwrap_or(now))
    }

    /// The passing fault the loop is retrying, as of its last attempt (see
    /// [`Watcher::fault`]; this one can be read from any thread).
    pub fn fault(&self) -> Option<FaultState> {
        self.fault.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn beat(&self, now: Instant) {
        self.ticks.fetch_add(1, Ordering::Relaxed);
        let after = now.saturating_duration_since(self.anchor).as_nanos();
        self.last_tick.store(
            u64::try_from(after).unwrap_or(u64::MAX - 1) + 1,
            Ordering::Relaxed,
        );
    }
}

/// A [`Validator`] or a [`Commit`], printable.
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
    commit: ValidatorSlot,
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
    /// How long a passing fault is retried quietly before it is reported.
    fault_grace: Duration,
    /// The fault changed since it was last published to the heartbeat (a
    /// new one, an attempt, a directory that cannot be looked at).
    fault_changed: bool,
    /// A fault is published: its end must be published too.
    fault_published: bool,
    /// Where time is read (the system's clocks but in unit tests).
    clock: Clock,
    /// The instant of the tick being run: read once per tick, and what
    /// every part of the tick goes by (retries due, settle times, the
    /// waiting log's rate limit).
    now: Instant,
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
            commit: ValidatorSlot(None),
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
            fault_grace: options.fault_grace,
            fault_changed: false,
            fault_published: false,
            clock: Clock::System,
            now: Instant::now(),
        }
    }

    /// The watcher reading `clock` instead of the system's (unit tests).
    #[cfg(test)]
    pub(crate) fn with_clock(mut self, clock: Clock) -> Self {
        self.now = clock.now();
        self.clock = clock;
        self
    }

    /// Runs `validator` on every parsed config before accepting it (see
    /// [`Validator`] for its contract).
    pub fn with_validator(mut self, validator: Validator) -> Self {
        self.validator = ValidatorSlot(Some(validator));
        self
    }

    /// Runs `commit` once per accepted version whose config is new, before
    /// its event (see [`Commit`] for its contract).
    pub fn with_commit(mut self, commit: Commit) -> Self {
        self.commit = ValidatorSlot(Some(commit));
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
            Mode::ConfigMap(Link::Retrying { retry, .. } | Link::Unreadable(retry))
            | Mode::Plain(PlainState {
                retry: Some(retry), ..
            }) => Some(&retry.fault),
            Mode::Waiting {
                blocked: Some(why), ..
            } => Some(why),
            Mode::ConfigMap(Link::Unread | Link::Settled(_) | Link::NotSymlink | Link::TooLong)
            | Mode::Plain(PlainState { retry: None, .. })
            | Mode::Waiting { blocked: None, .. }
            | Mode::Settling { .. } => None,
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
    /// Reads the clock once, for the whole tick.
    pub fn check(&mut self) -> Option<Event> {
        let now = self.clock.now();
        self.check_at(now)
    }

    /// One tick at `now`, read by the caller's loop (see [`Schedule`]): the
    /// tick reads no clock of its own on its idle path.
    pub(crate) fn check_at(&mut self, now: Instant) -> Option<Event> {
        self.now = now;
        self.heartbeat.beat(now);
        let event = match self.mode {
            Mode::ConfigMap(_) => self.check_configmap(),
            Mode::Plain(_) => self.check_plain(),
            Mode::Waiting { .. } | Mode::Settling { .. } => self.check_waiting(),
        };
        // Two flags on an idle tick: the heartbeat's lock is taken only
        // when a fault starts, is retried or ends.
        if self.fault_changed || (self.fault_published && self.fault().is_none()) {
            self.publish_fault();
        }
        event
    }

    /// Copies the fault being retried (or its absence) to the heartbeat,
    /// for other threads, with its instants as wall-clock times.
    fn publish_fault(&mut self) {
        self.fault_changed = false;
        // Read together, to convert instants to wall-clock times (only when
        // a fault starts, is retried or ends).
        let (now, wall) = (self.clock.now(), self.clock.wall());
        let mut published = self
            .heartbeat
            .fault
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let state = match &self.mode {
            Mode::ConfigMap(Link::Retrying { retry, .. } | Link::Unreadable(retry))
            | Mode::Plain(PlainState {
                retry: Some(retry), ..
            }) => Some(FaultState {
                fault: retry.fault.clone(),
                // Kept from the first attempt: converting the instant
                // again would move it by the clocks' jitter.
                since: published
                    .as_ref()
                    .filter(|_| retry.attempts > 1)
                    .map_or_else(
                        || {
                            wall.checked_sub(now.saturating_duration_since(retry.since))
                                .unwrap_or(wall)
                        },
                        |p| p.since,
                    ),
                attempts: retry.attempts,
                next_attempt_at: Some(wall + retry.next_at.saturating_duration_since(now)),
                reported: retry.reported,
            }),
            Mode::Waiting {
                blocked: Some(why), ..
            } => Some(FaultState {
                fault: why.clone(),
                // The same fault as published before keeps its start.
                since: published
                    .as_ref()
                    .filter(|p| p.fault == *why)
                    .map_or(wall, |p| p.since),
                attempts: 0,
                next_attempt_at: None,
                reported: false,
            }),
            _ => None,
        };
        self.fault_published = state.is_some();
        *published = state;
    }

    /// Checks once, then every interval, handing events to `handler`, until
    /// `shutdown` fires. Only [`Shutdown::trigger`] stops it: dropping the
    /// [`Shutdown`] handles does not.
    ///
    /// Ticks begin one interval apart, however long one takes (a tick that
    /// took longer than the interval is followed at once, never by a
    /// burst), and the clock is read once per tick, after it: an idle tick
    /// is the `readlink`, that read and the wait.
    pub fn run(&mut self, shutdown: &(impl Wait + ?Sized), handler: &mut impl EventHandler) {
        let mut schedule = Schedule::new(self.clock.now(), self.interval);
        loop {
            if let Some(event) = self.check_at(schedule.tick()) {
                handler.handle(event);
            }
            if shutdown.wait(schedule.wait_after(self.clock.now())) {
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
        // One clock for the tick they share: the first's.
        let clock = watchers
            .first()
            .map(|w| w.clock.clone())
            .unwrap_or_default();
        let mut schedule = Schedule::new(clock.now(), interval);
        loop {
            let tick = schedule.tick();
            // No allocation unless an event arrives.
            let mut events = Vec::new();
            for watcher in watchers.iter_mut() {
                events.extend(watcher.check_at(tick));
            }
            if !events.is_empty() {
                handler(watchers, events);
            }
            if shutdown.wait(schedule.wait_after(clock.now())) {
                return;
            }
        }
    }

    /// The volume directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The one key selected, if one is: the config is then that key's
    /// content alone (the metrics name a certificate's key by it).
    #[cfg_attr(not(all(feature = "serve", feature = "rustls")), allow(dead_code))]
    pub(crate) fn single_key(&self) -> Option<&str> {
        self.selector.single_key()
    }

    /// Decides what a freshly read snapshot means for the config: an event,
    /// or nothing new; `Err` is a passing fault (a checker that could not
    /// start) that says nothing about the version, for the caller to retry
    /// the way its mode retries reads.
    fn evaluate(
        &mut self,
        snapshot: Snapshot,
        detected_at: SystemTime,
    ) -> Result<Option<Event>, Error> {
        let lag = snapshot
            .swapped_at
            .map(|swapped| Lag::between(swapped, detected_at));
        let config = match self.accept(&snapshot) {
            Ok(config) => config,
            // A checker or a render that could not start (EMFILE, EAGAIN)
            // said nothing about the version: the caller retries it, in
            // either mode alike.
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => {
                return Ok(Some(self.error_event(
                    snapshot.version,
                    detected_at,
                    lag,
                    &e,
                )));
            }
        };
        let kind = match &mut self.current {
            None => EventKind::Initial,
            Some(current) if !self.failing && *current.config == config => {
                debug!("{}: config unchanged", snapshot.version);
                // The newest version holding this config is the current
                // one: a later change names it as the previous version.
                current.version = snapshot.version;
                return Ok(None);
            }
            Some(_) => EventKind::Change,
        };
        // Accepted: commit it (render), then report it (actions follow).
        if let Some(commit) = &mut self.commit.0
            && let Err(e) = commit(&snapshot, &config)
        {
            if e.is_transient() {
                return Err(e);
            }
            return Ok(Some(self.error_event(
                snapshot.version,
                detected_at,
                lag,
                &e,
            )));
        }
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
        Ok(Some(Event {
            kind,
            dir: self.dir.clone(),
            version: snapshot.version,
            previous_version: previous.map(|p| p.version),
            detected_at,
            lag,
            config: Some(config),
            key: None,
            error: None,
        }))
    }

    /// The accept stage: the selected keys parsed into the config, and the
    /// validator's verdict on it. Nothing is written or published here.
    fn accept(&mut self, snapshot: &Snapshot) -> Result<Value, Error> {
        let config = self.selector.extract(snapshot)?;
        match &mut self.validator.0 {
            Some(validate) => validate(snapshot, &config).map(|()| config),
            None => Ok(config),
        }
    }

    /// A passing fault on `version`: retried with backoff, logged when it
    /// first happens (or its message changes), never on every retry, and,
    /// once it has lasted past the grace, reported as an error event for
    /// that version (once). `previous` is the fault being retried on the
    /// same version, if any. The one place every path of a tick records a
    /// passing fault in.
    fn note_fault(
        &mut self,
        previous: Option<Retry>,
        mut fault: Fault,
        quiet: bool,
    ) -> (Retry, Option<Event>) {
        self.heartbeat.retries.fetch_add(1, Ordering::Relaxed);
        self.fault_changed = true;
        let now = self.now;
        let grace = humantime::format_duration(self.fault_grace);
        let mut retry = match previous {
            Some(mut retry) => {
                if retry.fault != fault && !quiet {
                    warn!("{}; retrying (not a verdict on the version)", fault.message);
                }
                // The version it concerns stays the one first seen failing
                // when a later attempt knows less.
                fault.version = fault.version.or(retry.fault.version.take());
                retry.fault = fault;
                retry.attempts += 1;
                retry
            }
            None => {
                if quiet {
                    debug!("{}; retrying", fault.message);
                } else {
                    warn!(
                        "{}; retrying (not a verdict on the version; an error event follows \
                         if it lasts {grace})",
                        fault.message
                    );
                }
                Retry {
                    fault,
                    since: now,
                    attempts: 1,
                    next_at: now,
                    reported: false,
                }
            }
        };
        retry.next_at = now + Retry::backoff(self.interval, retry.attempts);
        let lasting = now.saturating_duration_since(retry.since);
        let event = (!retry.reported && lasting >= self.fault_grace).then(|| {
            retry.reported = true;
            self.fault_event(&retry.fault, lasting)
        });
        (retry, event)
    }

    /// The error event for a passing fault that outlasted the grace: the
    /// version is not applied, and monitoring must be able to see it.
    fn fault_event(&mut self, fault: &Fault, lasting: Duration) -> Event {
        self.failing = true;
        let error = format!(
            "{} (a passing fault, lasting {:.1}s; retrying, and a recovery is reported as a change)",
            fault.message,
            lasting.as_secs_f64()
        );
        match &self.current {
            Some(current) => warn!(
                "{error}; keeping the last good config ({})",
                current.version
            ),
            None => warn!("{error}; there is no good config yet"),
        }
        Event {
            kind: EventKind::Error,
            dir: self.dir.clone(),
            version: fault.version.clone().unwrap_or_else(|| "-".to_owned()),
            previous_version: self.current_version().map(str::to_owned),
            detected_at: self.clock.wall(),
            lag: None,
            config: self.current().cloned(),
            key: fault.key.clone(),
            error: Some(error),
        }
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

#[cfg(test)]
mod tests;
