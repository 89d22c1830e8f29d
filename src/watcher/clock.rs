//! Time, read in one place: the [`Clock`] a watcher reads once per tick
//! (the instant is then passed down the tick), and the [`Schedule`] that
//! keeps the loops' period with that one read.
//!
//! The seam is for the state machine's unit tests: a [`ManualClock`]
//! (tests only) is advanced by hand, so that the settle time, the fault
//! grace, the retry backoff, the waiting log's rate limit, the subPath
//! warning's wait and the racy-timestamp window are tested without
//! sleeping. It is crate-private: the stable API does not change.

use std::time::{Duration, Instant, SystemTime};

/// Where a watcher reads the time: the system's clocks, or (in unit tests)
/// a manual one. An enum, not a trait object: the idle tick pays one
/// branch, no indirect call.
#[derive(Debug, Clone, Default)]
pub(crate) enum Clock {
    /// `Instant::now` and `SystemTime::now`.
    #[default]
    System,
    /// Advanced by the test that holds it.
    #[cfg(test)]
    Manual(std::sync::Arc<ManualClock>),
}

impl Clock {
    /// The monotonic time: what ticks, retries and waits are measured in.
    pub(crate) fn now(&self) -> Instant {
        match self {
            Clock::System => Instant::now(),
            #[cfg(test)]
            Clock::Manual(clock) => clock.now(),
        }
    }

    /// The wall-clock time: what events and file timestamps are compared
    /// with. Read only where a wall time is needed (plain mode's look, a
    /// fault's report), never on ConfigMap mode's idle tick.
    pub(crate) fn wall(&self) -> SystemTime {
        match self {
            Clock::System => SystemTime::now(),
            #[cfg(test)]
            Clock::Manual(clock) => clock.wall(),
        }
    }
}

/// A clock that moves only when told to, counting how often it is read.
/// Its instants are real `Instant`s (a base taken at creation plus the
/// time advanced), so they mix with the watcher's state as the system's
/// do; its wall time is a base the test sets, plus the same advance.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct ManualClock {
    base: Instant,
    state: std::sync::Mutex<(Duration, SystemTime)>,
    reads: std::sync::atomic::AtomicU64,
}

#[cfg(test)]
impl ManualClock {
    /// A clock at `wall`, shared with the watcher it is given to.
    pub(crate) fn at(wall: SystemTime) -> std::sync::Arc<Self> {
        std::sync::Arc::new(ManualClock {
            base: Instant::now(),
            state: std::sync::Mutex::new((Duration::ZERO, wall)),
            reads: Default::default(),
        })
    }

    /// Moves both clocks forward by `by`.
    pub(crate) fn advance(&self, by: Duration) {
        let mut state = self.state.lock().unwrap();
        state.0 += by;
        state.1 += by;
    }

    /// How often either clock has been read.
    pub(crate) fn reads(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn now(&self) -> Instant {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.base + self.state.lock().unwrap().0
    }

    fn wall(&self) -> SystemTime {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.state.lock().unwrap().1
    }
}

/// When a loop's ticks run: one interval apart, however long a tick takes
/// (500 directories, a slow handler), so that a version is seen within one
/// interval of its swap; a tick that took longer than the interval is
/// followed at once, never by a burst.
///
/// One clock read per tick: the read after a tick gives both the wait and
/// the next tick's instant (when that wait ends), so the idle tick itself
/// reads no clock. The instant is the tick's scheduled time: a wait that
/// oversleeps makes it a little early, a wait cut short (EINTR) a little
/// late, never by more than one interval.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    interval: Duration,
    next: Instant,
}

impl Schedule {
    /// A schedule whose first tick is at `first`.
    pub(crate) fn new(first: Instant, interval: Duration) -> Self {
        Schedule {
            interval,
            next: first,
        }
    }

    /// The instant of the tick due (the one to run now).
    pub(crate) fn tick(&self) -> Instant {
        self.next
    }

    /// After the tick, given `end`, the clock read once it (and its
    /// handler) finished: the wait until the next tick, whose instant
    /// [`tick`](Self::tick) then gives.
    pub(crate) fn wait_after(&mut self, end: Instant) -> Duration {
        let wait = if end < self.next {
            // The last wait was cut short: start again from the clock.
            self.interval
        } else {
            self.interval.saturating_sub(end - self.next)
        };
        self.next = end.checked_add(wait).unwrap_or(end);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_tick_shortens_the_wait_and_an_overlong_one_skips_it() {
        let second = Duration::from_secs(1);
        let start = Instant::now();
        let mut schedule = Schedule::new(start, second);
        // A tick of 300 ms: the next begins one second after this one did.
        assert_eq!(
            schedule.wait_after(start + Duration::from_millis(300)),
            Duration::from_millis(700)
        );
        assert_eq!(schedule.tick(), start + second);
        // A tick of 1.5 s: the next at once, then the period again from it.
        let late = start + second + Duration::from_millis(1500);
        assert_eq!(schedule.wait_after(late), Duration::ZERO);
        assert_eq!(schedule.tick(), late);
        assert_eq!(schedule.wait_after(late), second);
        assert_eq!(schedule.tick(), late + second);
    }

    #[test]
    fn a_wait_cut_short_takes_the_schedule_back_to_the_clock() {
        let second = Duration::from_secs(1);
        let start = Instant::now();
        let mut schedule = Schedule::new(start + second, second);
        // The wait for the tick at start+1s ended at start+0.2s (EINTR), and
        // the tick ran then: the next is a whole interval after the read.
        let end = start + Duration::from_millis(200);
        assert_eq!(schedule.wait_after(end), second);
        assert_eq!(schedule.tick(), end + second);
    }
}
