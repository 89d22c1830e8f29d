//! Spreading a fleet's reactions to one change over a window, so that
//! replicas that all see a new ConfigMap within a second do not all reload
//! (or restart) at once.
//!
//! - [`Jitter::random`]: a fresh uniform delay in `[0, max)` per change.
//! - [`Jitter::from_pod_name`]: a stable delay per replica, from a
//!   StatefulSet pod's ordinal (`web-3` is 3). Ordinal `n` waits
//!   `frac(n × 0.618…) × max` (the golden ratio's fractional part): the
//!   ordinals `0..n` land spread over the window for any `n`, without
//!   knowing `n`: with `n` replicas no two are closer than 0.44 of
//!   `max / n`, and no gap is wider than 1.9 of it (checked for every `n`
//!   from 2 to 1000; evenly spaced would be 1). Ordinal 0 does not wait.
//!
//! ```
//! use std::time::Duration;
//! use configmapwatch::jitter::Jitter;
//!
//! let jitter = Jitter::from_pod_name("web-3", Duration::from_secs(10))?;
//! assert_eq!(jitter.delay(), jitter.delay()); // stable per replica
//! assert!(jitter.delay() < Duration::from_secs(10));
//! # Ok::<(), configmapwatch::jitter::OrdinalError>(())
//! ```

use std::{fmt, time::Duration};

/// How long to wait before acting on a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// No delay.
    #[default]
    None,
    /// A fresh random delay in `[0, max)` for each change.
    Random {
        /// The window.
        max: Duration,
    },
    /// The same delay every time: this replica's place in the window.
    Ordinal {
        /// The StatefulSet ordinal.
        ordinal: u32,
        /// The window.
        max: Duration,
    },
}

impl Jitter {
    /// A random delay in `[0, max)` for each change (none if `max` is
    /// zero).
    pub fn random(max: Duration) -> Self {
        Jitter::Random { max }
    }

    /// The stable delay of the StatefulSet pod `pod_name` (`web-3`) in a
    /// window of `max`: see [`ordinal_offset`]. A name without an ordinal
    /// is an error.
    pub fn from_pod_name(pod_name: &str, max: Duration) -> Result<Self, OrdinalError> {
        Ok(Jitter::Ordinal {
            ordinal: pod_ordinal(pod_name)?,
            max,
        })
    }

    /// [`from_pod_name`](Self::from_pod_name) with the pod name taken
    /// from the environment variable `var` (conventionally `POD_NAME`, set
    /// from the downward API's `metadata.name`). Unset is an error saying
    /// how to set it.
    pub fn from_env(var: &str, max: Duration) -> Result<Self, OrdinalError> {
        match std::env::var(var) {
            Ok(name) => Self::from_pod_name(&name, max),
            Err(e) => Err(OrdinalError {
                pod_name: None,
                reason: format!(
                    "environment variable {var} is {} (set it from the pod's metadata.name \
                     with the downward API: env: [{{name: {var}, valueFrom: {{fieldRef: \
                     {{fieldPath: metadata.name}}}}}}])",
                    match e {
                        std::env::VarError::NotPresent => "not set",
                        std::env::VarError::NotUnicode(_) => "not valid UTF-8",
                    }
                ),
            }),
        }
    }

    /// The window: every delay is below it.
    pub fn max(&self) -> Duration {
        match *self {
            Jitter::None => Duration::ZERO,
            Jitter::Random { max } | Jitter::Ordinal { max, .. } => max,
        }
    }

    /// The delay before acting on a change: random each time, or this
    /// replica's fixed offset.
    pub fn delay(&self) -> Duration {
        match *self {
            Jitter::None => Duration::ZERO,
            Jitter::Random { max } => random_delay(max),
            Jitter::Ordinal { ordinal, max } => ordinal_offset(ordinal, max),
        }
    }
}

/// A uniformly random delay in `[0, max)`; zero if `max` is zero.
pub fn random_delay(max: Duration) -> Duration {
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(fastrand::u64(0..nanos))
}

/// `2^64 / φ`, rounded to odd: one step of the golden-ratio sequence in
/// 64-bit fixed point (the constant of Fibonacci hashing).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// Ordinal `n`'s place in a window of `max`: `frac(n / φ) × max`, always
/// below `max` (and zero for ordinal 0). Computed in integers, so every
/// platform and version agrees.
pub fn ordinal_offset(ordinal: u32, max: Duration) -> Duration {
    let fraction = u128::from(u64::from(ordinal).wrapping_mul(GOLDEN));
    // max × fraction / 2^64, exactly, in two halves: max's nanoseconds
    // take up to 94 bits, too many to multiply by 64 bits at once.
    let max = max.as_nanos();
    let nanos = (max >> 64) * fraction + (((max & u128::from(u64::MAX)) * fraction) >> 64);
    // Below max, which is a Duration: fits.
    Duration::new(
        (nanos / 1_000_000_000) as u64,
        (nanos % 1_000_000_000) as u32,
    )
}

/// The ordinal of a StatefulSet pod: the decimal number after the name's
/// last `-` (`web-3` is 3, `db-west-12` is 12).
pub fn pod_ordinal(pod_name: &str) -> Result<u32, OrdinalError> {
    let refuse = |reason: &str| {
        Err(OrdinalError {
            pod_name: Some(pod_name.to_owned()),
            reason: reason.to_owned(),
        })
    };
    let Some((set, ordinal)) = pod_name.rsplit_once('-') else {
        return refuse("has no '-'");
    };
    if set.is_empty() {
        return refuse("has no StatefulSet name before the ordinal");
    }
    if ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
        return refuse("does not end in a number");
    }
    match ordinal.parse() {
        Ok(n) => Ok(n),
        Err(_) => refuse("ends in a number too large for an ordinal"),
    }
}

/// A pod name that carries no StatefulSet ordinal.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OrdinalError {
    /// The name as given; `None` when there was none to read.
    pub pod_name: Option<String>,
    /// Why it has no ordinal.
    pub reason: String,
}

impl fmt::Display for OrdinalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pod_name {
            None => write!(f, "no pod name: {}", self.reason),
            Some(name) => write!(
                f,
                "pod name {name:?} {}: a StatefulSet pod is named NAME-ORDINAL (e.g. web-3); \
                 for a Deployment's pods use a random jitter instead",
                self.reason
            ),
        }
    }
}

impl std::error::Error for OrdinalError {}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(2);

    #[test]
    fn ordinals_are_parsed_from_statefulset_names() {
        for (name, ordinal) in [
            ("web-3", 3),
            ("web-0", 0),
            ("db-west-12", 12),
            ("a-4294967295", u32::MAX),
        ] {
            assert_eq!(pod_ordinal(name), Ok(ordinal), "{name}");
        }
    }

    #[test]
    fn names_without_an_ordinal_are_errors_naming_the_name() {
        for (name, why) in [
            ("web", "has no '-'"),
            ("web-", "does not end in a number"),
            ("-3", "no StatefulSet name"),
            ("web-7d9f8c6b5-x2k4p", "does not end in a number"),
            ("web-+3", "does not end in a number"),
            ("web-4294967296", "too large"),
            ("", "has no '-'"),
        ] {
            let err = pod_ordinal(name).unwrap_err();
            let text = err.to_string();
            assert!(text.starts_with(&format!("pod name {name:?} ")), "{text}");
            assert!(text.contains(why), "{name}: {text}");
            assert!(Jitter::from_pod_name(name, WINDOW).is_err());
        }
    }

    #[test]
    fn an_unset_pod_name_variable_says_how_to_set_it() {
        let err = Jitter::from_env("CONFIGMAPWATCH_TEST_SURELY_UNSET_VAR", WINDOW).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(
                "no pod name: environment variable CONFIGMAPWATCH_TEST_SURELY_UNSET_VAR is not set"
            ),
            "{text}"
        );
        assert!(text.contains("fieldPath: metadata.name"), "{text}");
    }

    #[test]
    fn ordinal_offsets_are_stable_in_range_and_start_at_zero() {
        assert_eq!(ordinal_offset(0, WINDOW), Duration::ZERO);
        // frac(1/φ) = 0.6180339887...
        let one = ordinal_offset(1, WINDOW).as_secs_f64();
        assert!((one - 2.0 * 0.618_033_988_7).abs() < 1e-6, "{one}");
        let jitter = Jitter::from_pod_name("web-7", WINDOW).unwrap();
        assert_eq!(jitter.delay(), ordinal_offset(7, WINDOW));
        assert_eq!(jitter.delay(), jitter.delay());
        assert_eq!(jitter.max(), WINDOW);
        for n in [1, 2, 1000, u32::MAX] {
            assert!(ordinal_offset(n, WINDOW) < WINDOW, "{n}");
            assert_eq!(ordinal_offset(n, Duration::ZERO), Duration::ZERO);
        }
        // Huge windows do not overflow.
        assert!(ordinal_offset(u32::MAX, Duration::MAX) < Duration::MAX);
    }

    /// The gaps between consecutive offsets of ordinals `0..n` on the
    /// window seen as a circle, as fractions of `n` even slots.
    fn gaps(n: u32) -> (f64, f64) {
        let mut offsets: Vec<f64> = (0..n)
            .map(|i| ordinal_offset(i, WINDOW).as_secs_f64() / WINDOW.as_secs_f64())
            .collect();
        offsets.sort_by(f64::total_cmp);
        let mut gaps: Vec<f64> = offsets.windows(2).map(|w| w[1] - w[0]).collect();
        gaps.push(1.0 - offsets[n as usize - 1] + offsets[0]);
        let slot = 1.0 / f64::from(n);
        let min = gaps.iter().copied().fold(f64::MAX, f64::min) / slot;
        let max = gaps.iter().copied().fold(0.0, f64::max) / slot;
        (min, max)
    }

    #[test]
    fn any_number_of_replicas_is_spread_evenly() {
        // By the three-gap theorem the gaps of the golden sequence take at
        // most three sizes, within a factor of φ² of each other. In slots
        // of window/n: evenly spaced would be exactly 1; measured, 0.447
        // to 1.893 over these n. Random offsets would leave some replicas
        // almost together (smallest gap ~1/n of a slot) and a largest gap
        // of ~ln n slots.
        for n in 2..=1000 {
            let (min, max) = gaps(n);
            assert!(min > 0.44, "{n} replicas: smallest gap {min:.3} of a slot");
            assert!(max < 1.9, "{n} replicas: largest gap {max:.3} of a slot");
        }
    }

    #[test]
    fn random_delays_cover_the_window_and_stay_below_it() {
        let jitter = Jitter::random(WINDOW);
        let delays: Vec<Duration> = (0..2000).map(|_| jitter.delay()).collect();
        assert!(delays.iter().all(|d| *d < WINDOW));
        let (min, max) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
        assert!(
            *min < WINDOW / 20 && *max > WINDOW * 19 / 20,
            "{min:?}..{max:?}"
        );
        let mean = delays.iter().sum::<Duration>() / 2000;
        assert!(mean > WINDOW * 4 / 10 && mean < WINDOW * 6 / 10, "{mean:?}");
        assert_eq!(random_delay(Duration::ZERO), Duration::ZERO);
        assert_eq!(Jitter::None.delay(), Duration::ZERO);
        assert_eq!(Jitter::default(), Jitter::None);
        assert!(random_delay(Duration::MAX) < Duration::MAX);
    }
}
