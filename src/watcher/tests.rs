//! The tick's state machine driven by a [`ManualClock`]: retry backoff,
//! the fault grace, recovery, the waiting log's rate limit, the subPath
//! warning's wait, the settle time, the racy-timestamp window and the
//! loop's schedule, each at exact instants and without sleeping. The
//! volumes are real temporary directories; only time is simulated.

use std::{
    cell::{Cell, RefCell},
    fs,
    path::Path,
    sync::{Arc, Once},
    time::UNIX_EPOCH,
};

use super::{clock::ManualClock, *};

const INTERVAL: Duration = Duration::from_secs(1);
const GRACE: Duration = Duration::from_secs(3);
const MS: Duration = Duration::from_millis(1);

/// A log that keeps each line, per thread, while the test that asked for
/// it runs (tests run on threads of their own).
struct Capture;

thread_local! {
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
    static LINES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        CAPTURING.with(Cell::get)
    }

    fn log(&self, record: &log::Record<'_>) {
        if CAPTURING.with(Cell::get) {
            LINES.with(|l| l.borrow_mut().push(record.args().to_string()));
        }
    }

    fn flush(&self) {}
}

/// Captures this thread's log lines from now on.
fn capture_logs() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&Capture).expect("no other logger in unit tests");
        log::set_max_level(log::LevelFilter::Trace);
    });
    CAPTURING.with(|c| c.set(true));
    LINES.with(|l| l.borrow_mut().clear());
}

/// How many lines logged so far contain `text`.
fn logged(text: &str) -> usize {
    LINES.with(|l| l.borrow().iter().filter(|l| l.contains(text)).count())
}

fn clock() -> Arc<ManualClock> {
    ManualClock::at(UNIX_EPOCH + Duration::from_secs(1_800_000_000))
}

fn watcher(dir: &Path, clock: &Arc<ManualClock>) -> Watcher {
    Watcher::new(
        WatchOptions::new(dir)
            .with_interval(INTERVAL)
            .with_fault_grace(GRACE),
    )
    .with_clock(Clock::Manual(clock.clone()))
}

#[test]
fn retries_back_off_doubling_up_to_the_cap() {
    assert_eq!(
        (1..=7)
            .map(|n| Retry::backoff(INTERVAL, n).as_secs())
            .collect::<Vec<_>>(),
        [1, 2, 4, 8, 10, 10, 10]
    );
    // An interval above the cap is the wait.
    let long = Duration::from_secs(30);
    assert_eq!(Retry::backoff(long, 5), long);
}

#[test]
fn the_waiting_log_is_repeated_once_a_minute() {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut w = watcher(&dir.path().join("missing"), &clock);
    let waiting = "directory does not exist yet; waiting for it";
    let mut seen = Vec::new();
    for _ in 0..=130 {
        assert!(w.check().is_none());
        seen.push(logged(waiting));
        clock.advance(INTERVAL);
    }
    // Logged at 0 s, then at 60 and 120 s: not on the ticks between.
    let at: Vec<_> = (0..seen.len())
        .filter(|&s| seen[s] > if s == 0 { 0 } else { seen[s - 1] })
        .collect();
    assert_eq!(at, [0, 60, 120]);
}

const SUBPATH: &str = "If this is a Kubernetes subPath mount";

#[test]
fn files_at_the_first_look_warn_of_a_subpath_mount_at_once_and_once() {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("config.json"), r#"{"a":1}"#).unwrap();
    let clock = clock();
    let mut w = watcher(dir.path(), &clock);
    assert_eq!(w.check().map(|e| e.kind), Some(EventKind::Initial));
    assert_eq!(logged(SUBPATH), 1);
    for _ in 0..10 {
        clock.advance(INTERVAL);
        w.check();
    }
    assert_eq!(logged(SUBPATH), 1);
}

#[test]
fn files_in_a_directory_that_was_empty_warn_of_a_subpath_mount_after_two_seconds() {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut w = watcher(dir.path(), &clock);
    // Empty: the key is missing (an error event), and nothing is warned.
    assert_eq!(w.check().map(|e| e.kind), Some(EventKind::Error));
    clock.advance(INTERVAL);
    fs::write(dir.path().join("config.json"), r#"{"a":1}"#).unwrap();
    // Read at once, but a writer filling the directory may yet add ..data.
    assert_eq!(w.check().map(|e| e.kind), Some(EventKind::Initial));
    clock.advance(SETTLE - MS);
    w.check();
    assert_eq!(logged(SUBPATH), 0, "not before two seconds");
    clock.advance(MS);
    w.check();
    assert_eq!(logged(SUBPATH), 1, "at two seconds");
    clock.advance(SETTLE);
    w.check();
    assert_eq!(logged(SUBPATH), 1, "once");
}

/// A directory with the kubelet's own entries and no `..data` yet.
fn kubelet_entries(dir: &Path) {
    fs::create_dir(dir.join("..2026_11_30_09_00_00.000000001")).unwrap();
}

#[test]
fn a_volume_being_written_settles_for_two_seconds_before_it_is_taken_as_plain() {
    let dir = tempfile::tempdir().unwrap();
    kubelet_entries(dir.path());
    fs::write(dir.path().join("config.json"), r#"{"a":1}"#).unwrap();
    let clock = clock();
    let mut w = watcher(dir.path(), &clock);
    assert!(w.check().is_none());
    assert_eq!(w.layout(), Layout::Missing);
    clock.advance(SETTLE - MS);
    assert!(w.check().is_none());
    assert_eq!(w.layout(), Layout::Missing, "settling");
    clock.advance(MS);
    assert_eq!(w.check().map(|e| e.kind), Some(EventKind::Initial));
    assert_eq!(w.layout(), Layout::Plain);
}

/// A [`Wait`] that waits on the manual clock: it records each timeout,
/// moves the clock by it, and ends the loop after `ticks` waits.
struct ManualWait {
    clock: Arc<ManualClock>,
    waits: RefCell<Vec<Duration>>,
    ticks: usize,
}

impl Wait for ManualWait {
    fn wait(&self, timeout: Duration) -> bool {
        self.clock.advance(timeout);
        let mut waits = self.waits.borrow_mut();
        waits.push(timeout);
        waits.len() >= self.ticks
    }
}

#[test]
fn a_tick_of_run_waiting_for_the_directory_reads_the_clock_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut w = watcher(&dir.path().join("missing"), &clock);
    let wait = ManualWait {
        clock: clock.clone(),
        waits: RefCell::default(),
        ticks: 100,
    };
    let before = clock.reads();
    w.run(&wait, &mut |e: Event| panic!("no event expected: {e:?}"));
    assert_eq!(w.heartbeat().ticks(), 100);
    // The schedule's start, then one read after each tick.
    assert_eq!(clock.reads() - before, 1 + 100);
    assert!(wait.waits.borrow().iter().all(|&w| w == INTERVAL));
}

/// On ConfigMap volumes, written the kubelet's way: with symlinks, so Unix
/// only (Wine makes none); and the racy window, read from Unix metadata.
#[cfg(unix)]
mod configmap {
    use std::{
        os::unix::fs::MetadataExt,
        sync::atomic::{AtomicBool, AtomicU32},
    };

    use super::*;
    use crate::writer::{AtomicWriter, Payload};

    fn publish(dir: &Path, config: &str) -> String {
        let mut payload = Payload::new();
        payload.insert("config.json", config).unwrap();
        AtomicWriter::new(dir).write(&payload).unwrap();
        let target = fs::read_link(dir.join("..data")).unwrap();
        target.to_string_lossy().into_owned()
    }

    /// A checker that cannot start while `failing` is set (a passing fault,
    /// as EMFILE is), counting its calls.
    fn flaky_checker(failing: &Arc<AtomicBool>, calls: &Arc<AtomicU32>) -> Validator {
        let (failing, calls) = (failing.clone(), calls.clone());
        Box::new(move |_, _| {
            calls.fetch_add(1, Ordering::Relaxed);
            if failing.load(Ordering::Relaxed) {
                Err(Error::io(
                    "checker",
                    "cannot start the checker",
                    std::io::Error::other("too many open files"),
                ))
            } else {
                Ok(())
            }
        })
    }

    /// What a watcher did over `ticks` ticks 100 ms apart: the milliseconds
    /// (after the first) at which the checker ran, and the events with theirs.
    struct Run {
        checks: Vec<u64>,
        events: Vec<(u64, Event)>,
    }

    fn run_ticks(
        w: &mut Watcher,
        clock: &ManualClock,
        calls: &AtomicU32,
        ticks: u64,
        from_ms: u64,
    ) -> Run {
        let mut run = Run {
            checks: Vec::new(),
            events: Vec::new(),
        };
        for n in 0..ticks {
            let at = from_ms + n * 100;
            let before = calls.load(Ordering::Relaxed);
            if let Some(event) = w.check() {
                run.events.push((at, event));
            }
            if calls.load(Ordering::Relaxed) != before {
                run.checks.push(at);
            }
            clock.advance(100 * MS);
        }
        run
    }

    #[test]
    fn a_passing_fault_is_retried_when_due_and_not_before() {
        let dir = tempfile::tempdir().unwrap();
        publish(dir.path(), r#"{"a":1}"#);
        let clock = clock();
        let (failing, calls) = (Arc::new(AtomicBool::new(true)), Arc::default());
        let mut w = watcher(dir.path(), &clock).with_validator(flaky_checker(&failing, &calls));
        let run = run_ticks(&mut w, &clock, &calls, 600, 0);
        // Waits of 1, 2, 4 and 8 s, then 10 s each: the checker is not run on
        // the idle ticks between.
        assert_eq!(
            run.checks,
            [0, 1000, 3000, 7000, 15000, 25000, 35000, 45000, 55000]
        );
        let published = w.heartbeat().fault().expect("published");
        assert_eq!(published.attempts, 9);
        assert!(published.fault.message.contains("cannot start the checker"));
    }

    #[test]
    fn a_passing_fault_is_reported_once_when_it_outlasts_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let version = publish(dir.path(), r#"{"a":1}"#);
        let clock = clock();
        let (failing, calls) = (Arc::new(AtomicBool::new(true)), Arc::default());
        let mut w = watcher(dir.path(), &clock).with_validator(flaky_checker(&failing, &calls));
        let run = run_ticks(&mut w, &clock, &calls, 600, 0);
        // Attempts at 0, 1 and 3 s: the one at 3 s has lasted the grace.
        let errors: Vec<_> = run
            .events
            .iter()
            .map(|(at, e)| (*at, e.kind, e.version.as_str()))
            .collect();
        assert_eq!(errors, [(3000, EventKind::Error, version.as_str())]);
        let message = run.events[0].1.error.as_deref().unwrap();
        assert!(
            message.contains("a passing fault, lasting 3.0s"),
            "{message}"
        );
        assert!(w.heartbeat().fault().unwrap().reported);
        assert!(w.fault().is_some());
    }

    #[test]
    fn a_fault_that_passes_is_a_change_and_ends_the_retries() {
        let dir = tempfile::tempdir().unwrap();
        publish(dir.path(), r#"{"a":1}"#);
        let clock = clock();
        let (failing, calls) = (Arc::new(AtomicBool::new(false)), Arc::default());
        let mut w = watcher(dir.path(), &clock).with_validator(flaky_checker(&failing, &calls));
        assert_eq!(w.check().map(|e| e.kind), Some(EventKind::Initial));
        let v2 = publish(dir.path(), r#"{"a":2}"#);
        failing.store(true, Ordering::Relaxed);
        // Attempts at 0, 1, 3 (reported: past the grace) and 7 s.
        let run = run_ticks(&mut w, &clock, &calls, 100, 0);
        assert_eq!(run.checks, [0, 1000, 3000, 7000]);
        assert_eq!(run.events.len(), 1);
        failing.store(false, Ordering::Relaxed);
        // The next attempt is due at 15 s: the version is accepted then.
        let run = run_ticks(&mut w, &clock, &calls, 100, 10_000);
        assert_eq!(run.checks, [15_000]);
        let changes: Vec<_> = run
            .events
            .iter()
            .map(|(at, e)| (*at, e.kind, e.version.as_str()))
            .collect();
        assert_eq!(changes, [(15_000, EventKind::Change, v2.as_str())]);
        assert_eq!(w.fault(), None);
        assert_eq!(w.heartbeat().fault(), None, "its end is published");
        assert_eq!(w.current_version(), Some(v2.as_str()));
        // Idle again: nothing more is checked.
        let run = run_ticks(&mut w, &clock, &calls, 300, 20_000);
        assert_eq!((run.checks.len(), run.events.len()), (0, 0));
    }

    #[test]
    fn data_appearing_within_the_settle_time_is_a_configmap_volume() {
        let dir = tempfile::tempdir().unwrap();
        kubelet_entries(dir.path());
        let clock = clock();
        let mut w = watcher(dir.path(), &clock);
        assert!(w.check().is_none());
        clock.advance(SETTLE - MS);
        let version = publish(dir.path(), r#"{"a":2}"#);
        let event = w.check().expect("read");
        assert_eq!((event.kind, event.version), (EventKind::Initial, version));
        assert_eq!(w.layout(), Layout::ConfigMap);
    }

    /// When plain mode's fingerprints were last taken (a read).
    fn taken_at(w: &Watcher) -> Option<SystemTime> {
        match &w.mode {
            Mode::Plain(state) => state.taken_at,
            _ => None,
        }
    }

    #[test]
    fn a_fingerprint_is_read_again_while_it_is_within_its_timestamp_window() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("config.json"), r#"{"a":1}"#).unwrap();
        let meta = fs::metadata(dir.path().join("config.json")).unwrap();
        let (secs, nanos) =
            (meta.mtime(), meta.mtime_nsec()).max((meta.ctime(), meta.ctime_nsec()));
        let stamp = UNIX_EPOCH + Duration::new(secs as u64, nanos as u32);
        // Whole-second stamps get 2 s, finer ones 100 ms (Fingerprint::is_racy).
        let window = if nanos == 0 {
            Duration::from_secs(2)
        } else {
            Duration::from_millis(100)
        };
        let clock = ManualClock::at(stamp + window / 2);
        let mut w = watcher(dir.path(), &clock);
        assert_eq!(w.check().map(|e| e.kind), Some(EventKind::Initial));
        let first = taken_at(&w).unwrap();
        assert_eq!(first, stamp + window / 2);
        // Unchanged, but taken within the window: read again (nothing new).
        clock.advance(window / 10);
        assert!(w.check().is_none());
        let second = taken_at(&w).unwrap();
        assert_eq!(second, first + window / 10, "read again");
        // Taken at 0.6 of the window: read again, now well past it.
        clock.advance(window * 2);
        assert!(w.check().is_none());
        let third = taken_at(&w).unwrap();
        assert_eq!(third, second + window * 2, "read again");
        // Taken past the window: the fingerprint is trusted, nothing read.
        clock.advance(window / 10);
        assert!(w.check().is_none());
        assert_eq!(taken_at(&w), Some(third), "not read");
    }

    #[test]
    fn an_idle_tick_of_run_reads_the_clock_once() {
        let dir = tempfile::tempdir().unwrap();
        publish(dir.path(), r#"{"a":1}"#);
        let clock = clock();
        let mut w = watcher(dir.path(), &clock);
        let wait = ManualWait {
            clock: clock.clone(),
            waits: RefCell::default(),
            ticks: 101,
        };
        let reads = Cell::new(0);
        // The first tick's event, then 100 idle ticks.
        w.run(&wait, &mut |_: Event| reads.set(clock.reads()));
        assert_eq!(w.heartbeat().ticks(), 101);
        // The first tick's read after its handler, then one per idle tick.
        assert_eq!(clock.reads() - reads.get(), 1 + 100, "one read per tick");
        // And the idle check itself reads none.
        let before = clock.reads();
        assert!(w.check_at(w.now + INTERVAL).is_none());
        assert_eq!(clock.reads(), before);
    }

    /// The heartbeat keeps the tick's monotonic instant: read, it is a wall
    /// time between the wall times around the tick.
    #[test]
    fn the_heartbeat_gives_the_last_tick_as_a_wall_time() {
        let dir = tempfile::tempdir().unwrap();
        publish(dir.path(), r#"{"a":1}"#);
        let mut w = Watcher::new(WatchOptions::new(dir.path()));
        assert_eq!(w.heartbeat().last_tick(), None);
        let before = SystemTime::now();
        w.check();
        let after = SystemTime::now();
        let at = w.heartbeat().last_tick().expect("a tick ran");
        // The two clocks are read separately: allow their jitter.
        let slack = Duration::from_millis(5);
        assert!(
            at + slack >= before && at <= after + slack,
            "{before:?} {at:?} {after:?}"
        );
    }

    #[test]
    fn run_keeps_its_period_however_long_a_tick_takes() {
        let dir = tempfile::tempdir().unwrap();
        publish(dir.path(), r#"{"a":1}"#);
        let clock = clock();
        let mut w = watcher(dir.path(), &clock);
        let wait = ManualWait {
            clock: clock.clone(),
            waits: RefCell::default(),
            ticks: 3,
        };
        // The first tick's handler takes 300 ms, the second's (a change) 1.5 s.
        let handled = Cell::new(0);
        w.run(&wait, &mut |_: Event| {
            handled.set(handled.get() + 1);
            if handled.get() == 1 {
                clock.advance(300 * MS);
                publish(dir.path(), r#"{"a":2}"#);
            } else {
                clock.advance(1500 * MS);
            }
        });
        assert_eq!(handled.get(), 2);
        assert_eq!(*wait.waits.borrow(), [700 * MS, Duration::ZERO, INTERVAL]);
    }
}
