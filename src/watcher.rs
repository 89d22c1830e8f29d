//! The poll loop. [`Watcher::check`] is one tick: in ConfigMap mode an idle
//! tick is a single `readlink(..data)` compared in place with the target we
//! already have, with no heap allocation. Only when the target differs is
//! the volume read (consistently), parsed and reported.
//!
//! [`Watcher::run`] checks once, then waits on a shutdown channel with the
//! interval as timeout, so a shutdown ends it at once whatever the interval.

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
    Error,
    event::{Event, EventKind},
    format::Selector,
    volume::{self, Fingerprint, Layout, LinkRead, Snapshot, Volume, WalkError, fingerprints},
};

/// Marks in `Watcher::target` for link states that have no target. Real
/// targets come from `readlink` and cannot contain NUL.
const NOT_A_LINK: &[u8] = b"\0not-a-link";
const TOO_LONG: &[u8] = b"\0too-long";

/// How often "still waiting for the directory" is repeated.
const WAITING_LOG_EVERY: Duration = Duration::from_secs(60);

/// What to watch and how; the validated form of the command line.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The volume directory.
    pub dir: PathBuf,
    /// Which key (or all keys) make up the config.
    pub selector: Selector,
    /// Time between checks.
    pub interval: Duration,
    /// Files larger than this are refused.
    pub max_file_size: u64,
}

impl WatchOptions {
    /// Options for `dir` with the defaults: `config.json`, 1 s, 16 MiB.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        WatchOptions {
            dir: dir.into(),
            selector: Selector::default(),
            interval: Duration::from_secs(1),
            max_file_size: volume::DEFAULT_MAX_FILE_SIZE,
        }
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
#[derive(Debug)]
pub struct ShutdownListener(mpsc::Receiver<()>);

impl ShutdownListener {
    /// Waits up to `timeout`; true when shutdown was asked for (or every
    /// [`Shutdown`] handle was dropped, so nobody could ask any more).
    pub fn wait(&self, timeout: Duration) -> bool {
        !matches!(
            self.0.recv_timeout(timeout),
            Err(mpsc::RecvTimeoutError::Timeout)
        )
    }
}

/// A connected [`Shutdown`] handle and listener.
pub fn shutdown_channel() -> (Shutdown, ShutdownListener) {
    let (tx, rx) = mpsc::channel();
    (Shutdown(tx), ShutdownListener(rx))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The directory is missing, or not looked at yet.
    Waiting,
    ConfigMap,
    Plain,
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
}

impl Heartbeat {
    /// How many ticks have run.
    pub fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
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
    validator: ValidatorSlot,
    heartbeat: Arc<Heartbeat>,
    volume: Volume,
    selector: Selector,
    interval: Duration,
    mode: Mode,
    /// The `..data` target of the last read (or a mark); capacity is kept so
    /// replacing it never allocates.
    target: Vec<u8>,
    /// Plain mode: what the directory looked like at the last read.
    fingerprints: Vec<Fingerprint>,
    plain_version: Option<String>,
    plain_error: bool,
    current: Option<Arc<Value>>,
    current_version: Option<String>,
    /// The last evaluated version was bad: the next good one is reported
    /// even if equal to the last good one.
    failing: bool,
    waiting_logged: Option<Instant>,
    warned_plain: bool,
}

impl Watcher {
    /// A watcher; nothing is read until the first [`check`](Self::check).
    pub fn new(options: WatchOptions) -> Self {
        Watcher {
            validator: ValidatorSlot(None),
            heartbeat: Arc::default(),
            volume: Volume::new(options.dir, options.max_file_size),
            selector: options.selector,
            interval: options.interval,
            mode: Mode::Waiting,
            target: Vec::with_capacity(256),
            fingerprints: Vec::new(),
            plain_version: None,
            plain_error: false,
            current: None,
            current_version: None,
            failing: false,
            waiting_logged: None,
            warned_plain: false,
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
        self.current.as_ref()
    }

    /// The version of the last good config.
    pub fn current_version(&self) -> Option<&str> {
        self.current_version.as_deref()
    }

    /// The layout the watcher is working in (`Missing` until the directory
    /// has been seen).
    pub fn layout(&self) -> Layout {
        match self.mode {
            Mode::Waiting => Layout::Missing,
            Mode::ConfigMap => Layout::ConfigMap,
            Mode::Plain => Layout::Plain,
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
            Mode::ConfigMap => self.check_configmap(),
            Mode::Plain => self.check_plain(),
            Mode::Waiting => self.check_waiting(),
        }
    }

    /// Checks once, then every interval, handing events to `handler`, until
    /// `shutdown` fires.
    ///
    /// Keep the [`Shutdown`] handle alive: once every handle is dropped the
    /// listener counts as shut down and `run` returns after its first check
    /// (`let (_, listener) = shutdown_channel()` stops at once). For a
    /// config that stops with its users, see [`Live`](crate::Live).
    pub fn run(&mut self, shutdown: &ShutdownListener, handler: &mut impl EventHandler) {
        loop {
            if let Some(event) = self.check() {
                handler.handle(event);
            }
            if shutdown.wait(self.interval) {
                return;
            }
        }
    }

    fn check_configmap(&mut self) -> Option<Event> {
        let seen = match self.volume.data_link().read() {
            // The idle path: one readlink, one comparison, nothing else.
            Ok(LinkRead::Target(t)) if t == self.target.as_slice() => return None,
            Ok(LinkRead::Target(t)) => t,
            Ok(LinkRead::NotALink) if self.target == NOT_A_LINK => return None,
            Ok(LinkRead::NotALink) => NOT_A_LINK,
            Ok(LinkRead::TooLong) if self.target == TOO_LONG => return None,
            Ok(LinkRead::TooLong) => TOO_LONG,
            Ok(LinkRead::Missing) => {
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
            Err(e) => {
                warn!("{}: cannot read ..data: {e}", self.volume.dir().display());
                return None;
            }
        };
        self.target.clear();
        self.target.extend_from_slice(seen);
        self.reload()
    }

    /// The target moved: read the new version and report it.
    fn reload(&mut self) -> Option<Event> {
        let detected_at = SystemTime::now();
        match self.volume.read_configmap() {
            Ok(snapshot) => {
                self.target.clear();
                self.target.extend_from_slice(snapshot.version.as_bytes());
                self.evaluate(snapshot, detected_at)
            }
            Err(e) if e.is_transient() => {
                debug!("{}; retrying next tick", e.chain());
                self.target.clear();
                None
            }
            Err(e) => {
                let version = String::from_utf8_lossy(&self.target).replace('\0', "");
                Some(self.error_event(version, detected_at, None, &e))
            }
        }
    }

    fn check_plain(&mut self) -> Option<Event> {
        if !matches!(
            self.volume.data_link().read(),
            Ok(LinkRead::Missing) | Err(_)
        ) {
            info!(
                "{}: ..data appeared; watching it as a ConfigMap volume",
                self.volume.dir().display()
            );
            self.enter(Mode::ConfigMap);
            return self.check_configmap();
        }
        let detected_at = SystemTime::now();
        let fps = match fingerprints(self.volume.dir()) {
            Ok(fps) => fps,
            Err(WalkError::Vanished) => {
                if !self.volume.dir().is_dir() {
                    self.enter_waiting();
                }
                return None;
            }
            Err(WalkError::Fatal(e)) => {
                if self.plain_error {
                    return None;
                }
                self.plain_error = true;
                self.fingerprints.clear();
                return Some(self.error_event("-".into(), detected_at, None, &e));
            }
        };
        self.plain_error = false;
        if fps == self.fingerprints {
            return None;
        }
        self.fingerprints = fps;
        match self.volume.read_plain() {
            Ok(snapshot) if self.plain_version.as_deref() == Some(snapshot.version.as_str()) => {
                debug!(
                    "{}: metadata changed, content did not",
                    self.volume.dir().display()
                );
                None
            }
            Ok(snapshot) => {
                self.plain_version = Some(snapshot.version.clone());
                self.evaluate(snapshot, detected_at)
            }
            Err(e) if e.is_transient() => {
                self.fingerprints.clear();
                None
            }
            Err(e) => Some(self.error_event("-".into(), detected_at, None, &e)),
        }
    }

    fn check_waiting(&mut self) -> Option<Event> {
        let dir = self.volume.dir().display().to_string();
        match self.volume.layout() {
            Layout::Missing => {
                let due = self
                    .waiting_logged
                    .is_none_or(|at| at.elapsed() >= WAITING_LOG_EVERY);
                if due {
                    info!("{dir}: directory does not exist yet; waiting for it");
                    self.waiting_logged = Some(Instant::now());
                }
                None
            }
            Layout::ConfigMap => {
                info!("{dir}: watching a ConfigMap volume (..data)");
                self.enter(Mode::ConfigMap);
                self.check_configmap()
            }
            Layout::Plain => {
                if !self.warned_plain {
                    warn!(
                        "{dir}: no ..data link, so watching it as a plain directory (content is \
                         compared on each tick). If this is a Kubernetes subPath mount, it will \
                         never receive updates: mount the whole volume instead."
                    );
                    self.warned_plain = true;
                }
                self.enter(Mode::Plain);
                self.check_plain()
            }
        }
    }

    fn enter_waiting(&mut self) {
        if self.mode != Mode::Waiting {
            warn!(
                "{}: directory disappeared; waiting for it to come back",
                self.volume.dir().display()
            );
            self.waiting_logged = Some(Instant::now());
        }
        self.enter(Mode::Waiting);
    }

    /// Switches mode with fresh per-mode state, so that nothing seen in one
    /// mode (a target, fingerprints, a reported error) leaks into the next.
    fn enter(&mut self, mode: Mode) {
        self.mode = mode;
        self.target.clear();
        self.fingerprints.clear();
        self.plain_version = None;
        self.plain_error = false;
    }

    /// Decides what a freshly read snapshot means for the config.
    fn evaluate(&mut self, snapshot: Snapshot, detected_at: SystemTime) -> Option<Event> {
        let lag = snapshot
            .swapped_at
            .map(|swapped| detected_at.duration_since(swapped).unwrap_or_default());
        let validated =
            self.selector
                .extract(&snapshot)
                .and_then(|config| match &mut self.validator.0 {
                    Some(validate) => validate(&snapshot, &config).map(|()| config),
                    None => Ok(config),
                });
        match validated {
            Ok(config) => {
                let kind = match &self.current {
                    None => EventKind::Initial,
                    Some(current) if !self.failing && **current == config => {
                        debug!("{}: config unchanged", snapshot.version);
                        return None;
                    }
                    Some(_) => EventKind::Change,
                };
                self.failing = false;
                let config = Arc::new(config);
                self.current = Some(config.clone());
                let previous_version = self.current_version.replace(snapshot.version.clone());
                Some(Event {
                    kind,
                    version: snapshot.version,
                    previous_version,
                    detected_at,
                    lag,
                    config: Some(config),
                    key: None,
                    error: None,
                })
            }
            Err(e) => Some(self.error_event(snapshot.version, detected_at, lag, &e)),
        }
    }

    fn error_event(
        &mut self,
        version: String,
        detected_at: SystemTime,
        lag: Option<Duration>,
        e: &Error,
    ) -> Event {
        self.failing = true;
        warn!("{}; keeping the last good config", e.chain());
        Event {
            kind: EventKind::Error,
            version,
            previous_version: self.current_version.clone(),
            detected_at,
            lag,
            config: self.current.clone(),
            key: e.key().map(str::to_owned),
            error: Some(e.chain()),
        }
    }
}
