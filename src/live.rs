//! [`Live<T>`]: the config as a typed value, kept current by a watching
//! thread, readable from any number of threads without a lock.
//!
//! Deserializing into `T` (and the optional validator) is part of accepting
//! a version: a version that does not fit `T` is an error event naming the
//! key, the field path and, where the format gives it, the line and column,
//! and the last good `T` stays current.
//!
//! The watching thread waits on a channel whose only senders live in the
//! handles: when the last [`Live`] is dropped the channel disconnects and
//! the thread ends within no time, so there is no shutdown handle to keep
//! (or to lose).

use std::{
    sync::{Arc, Condvar, Mutex, PoisonError, mpsc},
    thread,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use serde_core::de::DeserializeOwned;

use crate::{
    Error, Event, EventKind, Format, Result, Selector, WatchOptions, Watcher, YamlSchema,
    watcher::{Validator, clock::Schedule},
};

type Check<T> = Box<dyn Fn(&T) -> Result<(), String> + Send>;
type OnChange<T> = Box<dyn FnMut(&Arc<T>, &Event) + Send>;
type OnError = Box<dyn FnMut(&Event) + Send>;

/// The current config and the version it came from, swapped as one.
struct Current<T> {
    value: Arc<T>,
    version: String,
}

struct Shared<T> {
    current: ArcSwap<Current<T>>,
    /// Held only to order "store, then notify" against "check, then wait"
    /// in [`Live::wait_for_change`]; readers of `current` never take it.
    changed: Mutex<()>,
    signal: Condvar,
    #[cfg(feature = "tokio")]
    sender: tokio::sync::watch::Sender<Arc<T>>,
}

/// A typed config kept in step with a volume. Cheap to clone; every clone
/// reads the same config. The watching thread stops when the last clone is
/// dropped.
///
/// ```no_run
/// # #[derive(serde::Deserialize)] struct Config { port: u16 }
/// use std::time::Duration;
/// use configmapwatch::Live;
///
/// let config = Live::<Config>::watch("/etc/app")
///     .key("config.yaml")
///     .start(Duration::from_secs(30))?;
/// println!("port {}", config.get().port);
/// # Ok::<(), configmapwatch::Error>(())
/// ```
pub struct Live<T> {
    shared: Arc<Shared<T>>,
    /// Never sent on: its disconnection when the last handle drops is what
    /// stops the watching thread.
    _alive: Arc<mpsc::SyncSender<()>>,
}

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Live {
            shared: self.shared.clone(),
            _alive: self._alive.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Live<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("version", &self.shared.current.load().version)
            .finish_non_exhaustive()
    }
}

impl<T: DeserializeOwned + Send + Sync + 'static> Live<T> {
    /// A builder watching `dir` (defaults as [`WatchOptions::new`]:
    /// `config.json`, every second).
    pub fn watch(dir: impl Into<std::path::PathBuf>) -> LiveBuilder<T> {
        LiveBuilder::new(WatchOptions::new(dir))
    }

    /// A builder over complete watch options.
    pub fn builder(options: WatchOptions) -> LiveBuilder<T> {
        LiveBuilder::new(options)
    }
}

impl<T> Live<T> {
    /// The current config. Lock-free: no lock, and never waiting for the
    /// watching thread, whatever it does. Not wait-free: cloning the `Arc`
    /// is an atomic increment on a count every reader shares, so readers
    /// on many threads slow each other down (BENCHMARKS.md, "Live::get").
    pub fn get(&self) -> Arc<T> {
        self.shared.current.load().value.clone()
    }

    /// The version (`..data` target, or content hash in plain mode) of the
    /// current config.
    pub fn version(&self) -> String {
        self.shared.current.load().version.clone()
    }

    /// The current config and its version, read together.
    pub fn get_with_version(&self) -> (Arc<T>, String) {
        let current = self.shared.current.load();
        (current.value.clone(), current.version.clone())
    }

    /// Blocks until the config is no longer `seen` (as returned by
    /// [`get`](Self::get)), up to `timeout`; the new config, or `None` on
    /// timeout. Passing what you last read means no change is missed
    /// between reading and waiting.
    pub fn wait_for_change(&self, seen: &Arc<T>, timeout: Duration) -> Option<Arc<T>> {
        let deadline = Instant::now() + timeout;
        let mut guard = self
            .shared
            .changed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            let now = self.get();
            if !Arc::ptr_eq(&now, seen) {
                return Some(now);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            guard = self
                .shared
                .signal
                .wait_timeout(guard, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// An awaitable stream of configs (feature `tokio`): `changed().await`
    /// then `borrow_and_update()`. The receiver does not keep watching
    /// alive: once every `Live` handle is dropped, `changed()` returns an
    /// error.
    #[cfg(feature = "tokio")]
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<T>> {
        self.shared.sender.subscribe()
    }

    /// Waits (async, feature `tokio`) until the config is no longer `seen`
    /// and returns the new one; `None` if watching has stopped.
    #[cfg(feature = "tokio")]
    pub async fn changed(&self, seen: &Arc<T>) -> Option<Arc<T>> {
        let mut rx = self.shared.sender.subscribe();
        rx.wait_for(|now| !Arc::ptr_eq(now, seen))
            .await
            .ok()
            .map(|now| now.clone())
    }
}

/// Configures and starts a [`Live`].
#[must_use = "a LiveBuilder does nothing until start()"]
pub struct LiveBuilder<T> {
    options: WatchOptions,
    format: Option<Format>,
    yaml_schema: Option<YamlSchema>,
    /// Refuse a version with fields `T` does not have.
    deny_unknown: bool,
    validate: Option<Check<T>>,
    on_change: Option<OnChange<T>>,
    on_error: Option<OnError>,
}

impl<T: DeserializeOwned + Send + Sync + 'static> LiveBuilder<T> {
    fn new(options: WatchOptions) -> Self {
        LiveBuilder {
            options,
            format: None,
            yaml_schema: None,
            deny_unknown: false,
            validate: None,
            on_change: None,
            on_error: None,
        }
    }

    /// The key holding the config, parsed by its extension.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.options.selector = Selector::key(key);
        self
    }

    /// Several keys: `T` is deserialized from an object keyed by key name.
    pub fn keys<I: IntoIterator<Item = S>, S: Into<String>>(mut self, keys: I) -> Self {
        self.options.selector = Selector::keys(keys);
        self
    }

    /// Parses the keys as `format`, whatever their extension.
    pub fn format(mut self, format: Format) -> Self {
        self.format = Some(format);
        self
    }

    /// Resolves plain YAML scalars by `schema` (default YAML 1.2's core
    /// schema; [`YamlSchema::Yaml11`] makes `no` a boolean and `0755`
    /// octal), for `T` and for the events' JSON alike.
    pub fn yaml_schema(mut self, schema: YamlSchema) -> Self {
        self.yaml_schema = Some(schema);
        self
    }

    /// Refuses a version holding a field `T` does not have (a typo such as
    /// `prot: 8080` for `port`), naming its path and where it is. Off by
    /// default, as in serde, where unknown fields are ignored.
    pub fn deny_unknown_fields(mut self) -> Self {
        self.deny_unknown = true;
        self
    }

    /// Time between checks.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.options.interval = interval;
        self
    }

    /// Checks each deserialized config before it is accepted; an `Err`
    /// makes the version an error event and the last good config stays.
    pub fn validate(mut self, check: impl Fn(&T) -> Result<(), String> + Send + 'static) -> Self {
        self.validate = Some(Box::new(check));
        self
    }

    /// Called on the watching thread after each accepted config (the first
    /// included), with the new config and its event. Keep it short: the
    /// next check waits for it; a panic in it ends watching (the last
    /// config stays readable).
    pub fn on_change(mut self, f: impl FnMut(&Arc<T>, &Event) + Send + 'static) -> Self {
        self.on_change = Some(Box::new(f));
        self
    }

    /// Called on the watching thread for each refused version (the event
    /// carries the key and the message).
    pub fn on_error(mut self, f: impl FnMut(&Event) + Send + 'static) -> Self {
        self.on_error = Some(Box::new(f));
        self
    }

    /// Reads the volume until the first good config (checking every
    /// interval, up to `first_within`), then keeps it current on a thread
    /// of its own. Fails with [`Error::NoConfig`] (naming the last error)
    /// if none came in time.
    pub fn start(self, first_within: Duration) -> Result<Live<T>> {
        let dir = self.options.dir.clone();
        let (live, mut driver) = self.build(first_within)?;
        let (alive, stopped) = mpsc::sync_channel::<()>(0);
        let live = Live {
            shared: live,
            _alive: Arc::new(alive),
        };
        thread::Builder::new()
            .name("configmapwatch-live".into())
            .spawn(move || {
                let interval = driver.watcher.interval();
                every_interval(interval, &stopped, |now| {
                    driver.tick_at(now);
                });
            })
            .map_err(|e| Error::io(dir, "cannot start the watching thread", e))?;
        Ok(live)
    }

    /// The watcher and the first good config, without a thread: for
    /// callers that drive the ticks themselves ([`LiveDriver::tick`]).
    pub fn start_driven(self, first_within: Duration) -> Result<(Live<T>, LiveDriver<T>)> {
        let (shared, driver) = self.build(first_within)?;
        // A driven Live has no thread to stop: the channel is never read.
        let (alive, _) = mpsc::sync_channel::<()>(0);
        Ok((
            Live {
                shared,
                _alive: Arc::new(alive),
            },
            driver,
        ))
    }

    fn build(self, first_within: Duration) -> Result<(Arc<Shared<T>>, LiveDriver<T>)> {
        let mut options = self.options;
        if let Some(format) = self.format {
            options.selector = options.selector.with_format(format);
        }
        if let Some(schema) = self.yaml_schema {
            options.selector = options.selector.with_yaml_schema(schema);
        }
        // The JSON value is a step towards T, whose float fields take an
        // infinity the value cannot hold.
        options.selector = options.selector.with_non_finite_as_text();
        let dir = options.dir.clone();
        let accepted: Arc<Mutex<Option<T>>> = Arc::default();
        let validator = typed_validator(
            options.selector.clone(),
            self.validate,
            self.deny_unknown,
            &accepted,
        );
        let mut watcher = Watcher::new(options).with_validator(validator);
        let mut on_error = self.on_error;
        let (value, event) = first_good(&mut watcher, &accepted, &mut on_error, dir, first_within)?;
        let shared = Arc::new(Shared {
            current: ArcSwap::from_pointee(Current {
                value: value.clone(),
                version: event.version.clone(),
            }),
            changed: Mutex::new(()),
            signal: Condvar::new(),
            #[cfg(feature = "tokio")]
            sender: tokio::sync::watch::Sender::new(value.clone()),
        });
        let mut on_change = self.on_change;
        if let Some(f) = &mut on_change {
            f(&value, &event);
        }
        Ok((
            shared.clone(),
            LiveDriver {
                watcher,
                accepted,
                shared,
                on_change,
                on_error,
            },
        ))
    }
}

/// The watching side of a [`Live`] started with
/// [`LiveBuilder::start_driven`]: call [`tick`](Self::tick) every interval
/// from your own loop.
pub struct LiveDriver<T> {
    watcher: Watcher,
    /// What the typed validator accepted in this tick.
    accepted: Arc<Mutex<Option<T>>>,
    shared: Arc<Shared<T>>,
    on_change: Option<OnChange<T>>,
    on_error: Option<OnError>,
}

impl<T> std::fmt::Debug for LiveDriver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveDriver")
            .field("watcher", &self.watcher)
            .finish_non_exhaustive()
    }
}

impl<T> LiveDriver<T> {
    /// One check: an idle tick is the watcher's (one `readlink`, no
    /// allocation); a new good version becomes current at once. Returns
    /// the event, if any, after the callbacks have seen it.
    pub fn tick(&mut self) -> Option<Event> {
        let event = self.watcher.check()?;
        self.apply(event)
    }

    /// [`tick`](Self::tick) at `now`, read by the thread's loop.
    fn tick_at(&mut self, now: Instant) -> Option<Event> {
        let event = self.watcher.check_at(now)?;
        self.apply(event)
    }

    /// What an event of the watcher's means for the typed value and the
    /// callbacks.
    fn apply(&mut self, event: Event) -> Option<Event> {
        let accepted = self
            .accepted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match (event.kind, accepted) {
            (EventKind::Error, _) => {
                if let Some(f) = &mut self.on_error {
                    f(&event);
                }
            }
            (_, Some(value)) => {
                let value = Arc::new(value);
                self.shared.current.store(Arc::new(Current {
                    value: value.clone(),
                    version: event.version.clone(),
                }));
                {
                    let _ordered = self
                        .shared
                        .changed
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    self.shared.signal.notify_all();
                }
                #[cfg(feature = "tokio")]
                self.shared.sender.send_replace(value.clone());
                if let Some(f) = &mut self.on_change {
                    f(&value, &event);
                }
            }
            // Not reachable: every good event passed the typed validator.
            (_, None) => {}
        }
        Some(event)
    }

    /// The time between checks the options asked for.
    pub fn interval(&self) -> Duration {
        self.watcher.interval()
    }
}

/// The validator of a typed handle: the config deserialized into `T`
/// (refused with fields `T` does not have when `deny_unknown`), then the
/// user's check; the accepted `T` is left in `slot` for the tick to take.
fn typed_validator<T: DeserializeOwned + Send + 'static>(
    selector: Selector,
    check: Option<Check<T>>,
    deny_unknown: bool,
    slot: &Arc<Mutex<Option<T>>>,
) -> Validator {
    let slot = slot.clone();
    Box::new(move |snapshot, config| {
        let typed: T = selector.deserialize(snapshot, config)?;
        if deny_unknown {
            refuse_unknown_fields::<T>(&selector, snapshot, config)?;
        }
        if let Some(check) = &check {
            check(&typed).map_err(|reason| Error::Invalid {
                key: selector.single_key().map(str::to_owned),
                version: snapshot.version.clone(),
                reason: format!("refused by the validator: {reason}"),
            })?;
        }
        *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(typed);
        Ok(())
    })
}

/// Checks every interval until the first good config, up to
/// `first_within`: that config and its event, or [`Error::NoConfig`]
/// naming the last error (or the passing fault still within its grace).
fn first_good<T>(
    watcher: &mut Watcher,
    accepted: &Mutex<Option<T>>,
    on_error: &mut Option<OnError>,
    dir: std::path::PathBuf,
    first_within: Duration,
) -> Result<(Arc<T>, Event)> {
    let deadline = Instant::now() + first_within;
    let mut last_error = None;
    loop {
        match watcher.check() {
            Some(event) if event.kind != EventKind::Error => {
                let value = accepted
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take()
                    .expect("an accepted version passed the typed validator");
                return Ok((Arc::new(value), event));
            }
            Some(event) => {
                last_error = event.error.clone();
                if let Some(f) = on_error {
                    f(&event);
                }
            }
            None => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            // No error event yet: a passing fault still within its
            // grace (permission denied, EIO) is the cause to name.
            let last_error = last_error.or_else(|| watcher.fault().map(|f| f.message.clone()));
            return Err(Error::NoConfig {
                path: dir,
                waited: first_within,
                last_error,
            });
        }
        thread::sleep(left.min(watcher.interval()));
    }
}

/// Runs `tick` every `interval` until `stopped` disconnects (every handle
/// dropped; nothing is ever sent on it), giving it the tick's instant.
/// Ticks begin one interval apart, as [`Watcher::run`]'s do, however long
/// one takes (a slow validator or `on_change`), with one clock read per
/// tick (see [`Schedule`]).
fn every_interval(interval: Duration, stopped: &mpsc::Receiver<()>, mut tick: impl FnMut(Instant)) {
    // The first check was `build`'s: the next is one interval after it.
    let start = Instant::now();
    let mut schedule = Schedule::new(start.checked_add(interval).unwrap_or(start), interval);
    let mut wait = interval;
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(wait) {
        tick(schedule.tick());
        wait = schedule.wait_after(Instant::now());
    }
}

/// A version with a field `T` does not have, refused: the first such
/// field's path, and the line and column of its name in the key where it
/// can be found.
fn refuse_unknown_fields<T: DeserializeOwned>(
    selector: &Selector,
    snapshot: &crate::Snapshot,
    config: &serde_json::Value,
) -> Result<()> {
    let mut unknown = Vec::new();
    // Already known to fit: this pass only collects what T ignored.
    let _: std::result::Result<T, _> =
        serde_ignored::deserialize(config, |path| unknown.push(path.to_string()));
    let Some(path) = unknown.into_iter().next() else {
        return Ok(());
    };
    let key = selector.single_key().map(str::to_owned);
    let field = path.rsplit('.').next().unwrap_or(&path).to_owned();
    let at = key
        .as_deref()
        .and_then(|k| snapshot.get(k)?.ok())
        .and_then(|bytes| position_of_name(bytes, &field))
        .map(|(line, column)| format!(", at line {line} column {column}"))
        .unwrap_or_default();
    Err(Error::Invalid {
        key,
        version: snapshot.version.clone(),
        reason: format!("unknown field `{path}`{at} (the config's type has no such field)"),
    })
}

/// Where `name` first stands as a field name (followed by `:`, `=` or a
/// closing quote then `:`), 1-based.
fn position_of_name(bytes: &[u8], name: &str) -> Option<(usize, usize)> {
    let text = std::str::from_utf8(bytes).ok()?;
    for (n, line) in text.lines().enumerate() {
        let mut from = 0;
        while let Some(i) = line[from..].find(name) {
            let at = from + i;
            let rest = line[at + name.len()..].trim_start_matches('"').trim_start();
            let before = line[..at].trim_end_matches('"').trim_end();
            let starts_field = before.is_empty()
                || before.ends_with(['{', ',', '-', '.', '['])
                || before.chars().all(char::is_whitespace);
            if starts_field && (rest.starts_with(':') || rest.starts_with('=')) {
                return Some((n + 1, line[..at].chars().count() + 1));
            }
            from = at + name.len();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(unix)]
    use crate::{AtomicWriter, Payload};

    #[cfg(unix)]
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Port {
        port: u16,
    }

    /// What wakes a waiter, as the crate docs state it ("What counts as a
    /// change"): a bad version, then a good one whose config equals the
    /// last good one, is a change (the watcher was failing), so waiters
    /// wake with an equal value in a new `Arc`; an equal config with no
    /// refusal between is not, and neither is the refusal itself.
    // A kubelet-style volume needs symlinks (not under Wine).
    #[cfg(unix)]
    #[test]
    fn a_good_version_after_a_refused_one_wakes_waiters_even_if_equal() {
        let tmp = tempfile::tempdir().unwrap();
        let writer = AtomicWriter::new(tmp.path());
        let publish = |text: &str| {
            let mut payload = Payload::new();
            payload.insert("config.json", text).unwrap();
            writer.write(&payload).unwrap();
        };
        publish(r#"{"port": 1}"#);
        let (live, mut driver) = Live::<Port>::watch(tmp.path())
            .start_driven(Duration::from_secs(10))
            .unwrap();
        #[cfg(feature = "tokio")]
        let changes = {
            let mut rx = live.subscribe();
            rx.borrow_and_update();
            rx
        };
        let seen = live.get();
        let first_version = live.version();
        let wakes = || live.wait_for_change(&seen, Duration::ZERO);

        // A new version, the same config, nothing refused between.
        publish(r#"{ "port": 1 }"#);
        assert!(driver.tick().is_none());
        assert!(wakes().is_none());
        assert_eq!(live.version(), first_version);
        #[cfg(feature = "tokio")]
        assert!(!changes.has_changed().unwrap());

        // A refused version wakes nothing.
        publish(r#"{"port": "eighty"}"#);
        assert_eq!(driver.tick().unwrap().kind, EventKind::Error);
        assert!(wakes().is_none());
        #[cfg(feature = "tokio")]
        assert!(!changes.has_changed().unwrap());

        // The first config again: a change, because the last was refused.
        publish(r#"{"port": 1}"#);
        assert_eq!(driver.tick().unwrap().kind, EventKind::Change);
        let woke = wakes().expect("a waiter wakes");
        assert_eq!(*woke, *seen);
        assert!(!Arc::ptr_eq(&woke, &seen));
        assert_ne!(live.version(), first_version);
        #[cfg(feature = "tokio")]
        assert!(changes.has_changed().unwrap());
    }

    /// A tick that takes 60% of the interval does not stretch the period:
    /// the next tick begins one interval after the last one began, not a
    /// whole interval after it ended. Measured per tick (the wait after a
    /// tick's own work), its median, so that one slow wake-up on a loaded
    /// machine does not decide it: about 40 ms here, where waiting a whole
    /// interval after each tick gives 100 ms and more.
    #[test]
    fn ticks_keep_their_period_however_long_a_tick_takes() {
        let interval = Duration::from_millis(100);
        let (alive, stopped) = mpsc::sync_channel::<()>(0);
        let (tx, rx) = mpsc::channel::<(Instant, Instant)>();
        let ticker = thread::spawn(move || {
            every_interval(interval, &stopped, |_| {
                let began = Instant::now();
                thread::sleep(interval * 6 / 10);
                let _ = tx.send((began, Instant::now()));
            });
        });
        let ticks: Vec<(Instant, Instant)> = (0..15)
            .map(|_| rx.recv_timeout(Duration::from_secs(30)).expect("a tick"))
            .collect();
        drop(alive);
        ticker.join().unwrap();
        // From one tick's end to the next one's start.
        let mut waits: Vec<Duration> = ticks.windows(2).map(|w| w[1].0 - w[0].1).collect();
        waits.sort();
        let median = waits[waits.len() / 2];
        assert!(
            median < interval * 8 / 10,
            "median wait after a tick {median:?}: {waits:?}"
        );
    }
}
