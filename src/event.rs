//! What the watcher reports, and its two renderings: a human line (text)
//! and one JSON object per line (a stable interface for scripts).

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime},
};

use serde_json::{Value, json};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The first good config.
    Initial,
    /// A new good config (different from the last, or the first good one
    /// after an error).
    Change,
    /// The volume holds a config that cannot be used; the last good one
    /// stays in force.
    Error,
}

impl EventKind {
    /// `initial`, `change` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Initial => "initial",
            EventKind::Change => "change",
            EventKind::Error => "error",
        }
    }
}

/// How long after the kubelet's swap a version was detected: detection time
/// minus the `..data` symlink's mtime (set microseconds before the rename
/// that swaps it in).
///
/// For the `initial` event this is the volume's age, not a detection lag:
/// the version was swapped in before the watcher started.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Lag {
    /// Detection minus swap, in seconds. Negative when this node's clock
    /// and the volume's timestamps disagree (clock skew): reported as it
    /// is, never clamped to zero.
    pub seconds: f64,
    /// How precise the swap time is: `None` for sub-second timestamps;
    /// `Some(1 s)` on a filesystem that keeps whole seconds (ext4 with
    /// 128-byte inodes, some FUSE and NFS setups), where the mtime is the
    /// swap time rounded down, so the true lag lies in
    /// (`seconds` − 1 s, `seconds`]: `seconds` is an upper bound.
    pub resolution: Option<Duration>,
}

impl Lag {
    /// The lag of a version swapped in at `swapped` and detected at
    /// `detected`.
    pub fn between(swapped: SystemTime, detected: SystemTime) -> Self {
        let seconds = match detected.duration_since(swapped) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        };
        // A timestamp with no sub-second part is, with overwhelming
        // likelihood (1 in 10^9 otherwise), from a filesystem that keeps
        // whole seconds.
        let coarse = swapped
            .duration_since(SystemTime::UNIX_EPOCH)
            .is_ok_and(|d| d.subsec_nanos() == 0);
        Lag {
            seconds,
            resolution: coarse.then_some(Duration::from_secs(1)),
        }
    }

    /// The lag in milliseconds when it is precise; `None` when only an
    /// upper bound is known.
    pub fn precise_ms(&self) -> Option<f64> {
        self.resolution.is_none().then(|| round_ms(self.seconds))
    }

    /// The largest the lag can be, in milliseconds.
    pub fn max_ms(&self) -> f64 {
        round_ms(self.seconds)
    }
}

/// One report from the watcher. Fields may be added: code outside the
/// crate makes one with [`Event::new`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The volume directory it happened in.
    pub dir: Arc<Path>,
    /// The version (the `..data` target, or a content hash in plain mode).
    pub version: String,
    /// The version of the previous good config, if any.
    pub previous_version: Option<String>,
    /// When the watcher noticed the change.
    pub detected_at: SystemTime,
    /// How long after the kubelet's swap it was noticed (ConfigMap mode);
    /// for the initial event, the volume's age.
    pub lag: Option<Lag>,
    /// The config in force after this event: the new one, or on an error
    /// the last good one (`None` if there never was one).
    pub config: Option<Arc<Value>>,
    /// On an error, the key concerned.
    pub key: Option<String>,
    /// On an error, the message with its causes.
    pub error: Option<String>,
}

/// How events are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Event {
    /// An event of `kind` in `dir` for `version`, noticed at `detected_at`,
    /// with nothing else set: for custom loops and tests, which set the
    /// other (public) fields after. Fields may be added to `Event`, so this
    /// is how code outside the crate makes one.
    pub fn new(
        kind: EventKind,
        dir: impl Into<Arc<Path>>,
        version: impl Into<String>,
        detected_at: SystemTime,
    ) -> Self {
        Event {
            kind,
            dir: dir.into(),
            version: version.into(),
            previous_version: None,
            detected_at,
            lag: None,
            config: None,
            key: None,
            error: None,
        }
    }

    /// The event as the JSON object of `--output json`.
    ///
    /// The time since the swap is `age_ms` on the initial event (the
    /// volume's age) and `lag_ms` otherwise. On a filesystem with
    /// whole-second timestamps `lag_ms` is null and `lag_max_ms` with
    /// `lag_resolution_ms` bound it instead.
    pub fn to_json(&self) -> Value {
        let mut object = self.fields();
        object["config"] = json!(self.config.as_deref());
        object
    }

    /// The line `--output json` prints and a webhook sends: [`to_json`]
    /// written out, with the config serialized where it lies instead of
    /// copied into a new value first (a copy that doubled the peak of a
    /// large config, issue 20).
    ///
    /// [`to_json`]: Self::to_json
    pub fn to_json_string(&self) -> String {
        serde_json::to_string(&WithConfig {
            fields: &self.fields(),
            config: self.config.as_deref(),
        })
        .unwrap_or_default()
    }

    /// Every field of [`to_json`](Self::to_json) but the config's value
    /// (`"config": null` holds its place).
    fn fields(&self) -> Value {
        let mut object = json!({
            "event": self.kind.as_str(),
            "dir": self.dir.to_string_lossy(),
            "version": self.version,
            "previous_version": self.previous_version,
            "detected_at": rfc3339(self.detected_at),
            "config": null,
        });
        let since = if self.kind == EventKind::Initial {
            "age_ms"
        } else {
            "lag_ms"
        };
        object[since] = json!(self.lag.and_then(|l| l.precise_ms()));
        if let Some(lag) = self.lag.filter(|l| l.resolution.is_some()) {
            object[format!("{}_max_ms", &since[..since.len() - 3])] = json!(lag.max_ms());
            object[format!("{}_resolution_ms", &since[..since.len() - 3])] =
                json!(lag.resolution.map(|r| r.as_millis() as u64));
        }
        if let Some(key) = &self.key {
            object["key"] = json!(key);
        }
        if let Some(error) = &self.error {
            object["error"] = json!(error);
        }
        object
    }

    /// The event as one human-readable line. The time since the swap reads
    /// `age=` on the initial event, `lag=` otherwise, and `lag<=` where the
    /// filesystem's timestamps only bound it.
    pub fn to_text(&self) -> String {
        let name = if self.kind == EventKind::Initial {
            "age"
        } else {
            "lag"
        };
        let since = match self.lag {
            Some(lag) if lag.resolution.is_some() => format!("{name}<={:.1}ms", lag.max_ms()),
            Some(lag) => format!("{name}={:.1}ms", lag.max_ms()),
            None => format!("{name}=-"),
        };
        let config = self
            .config
            .as_deref()
            .map_or_else(|| "null".into(), Value::to_string);
        let mut line = format!(
            "{} {:<7} version={} {} dir={}",
            rfc3339(self.detected_at),
            self.kind.as_str(),
            self.version,
            since,
            self.dir.display()
        );
        if let Some(error) = &self.error {
            line.push_str(&format!(
                " key={} error={:?} keeping={}",
                self.key.as_deref().unwrap_or("-"),
                error,
                config
            ));
        } else {
            line.push_str(" config=");
            line.push_str(&config);
        }
        escape_controls(line)
    }

    /// Renders in `format`.
    pub fn render(&self, format: OutputFormat) -> String {
        match format {
            OutputFormat::Text => self.to_text(),
            OutputFormat::Json => self.to_json_string(),
        }
    }
}

/// RFC 3339 UTC with nanoseconds.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

/// Seconds to milliseconds, rounded to the microsecond.
fn round_ms(seconds: f64) -> f64 {
    (seconds * 1e6).round() / 1e3
}

/// One line stays one line: a name from the volume (a plain directory's key
/// holding a newline, say) can never forge a second event line or move the
/// terminal's cursor. Control characters are written as `\u{..}` escapes.
fn escape_controls(line: String) -> String {
    if !line.chars().any(char::is_control) {
        return line;
    }
    line.chars()
        .map(|c| match c {
            c if c.is_control() => c.escape_unicode().to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// An event's fields, serialized with the config borrowed into its place
/// (the fields are an object, so in the same order as [`Event::to_json`]).
struct WithConfig<'a> {
    fields: &'a Value,
    config: Option<&'a Value>,
}

impl serde_core::Serialize for WithConfig<'_> {
    fn serialize<S: serde_core::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde_core::ser::SerializeMap;
        let Value::Object(fields) = self.fields else {
            return self.fields.serialize(serializer);
        };
        let mut map = serializer.serialize_map(Some(fields.len()))?;
        for (name, value) in fields {
            if name == "config" {
                map.serialize_entry(name, &self.config)?;
            } else {
                map.serialize_entry(name, value)?;
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind) -> Event {
        Event {
            kind,
            dir: Path::new("/opt/config").into(),
            version: "..v2".into(),
            previous_version: Some("..v1".into()),
            // 500 ns: Windows clocks count in 100 ns steps.
            detected_at: SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 500),
            lag: Some(Lag {
                seconds: 0.012_345,
                resolution: None,
            }),
            config: Some(Arc::new(json!({"a": 1}))),
            key: None,
            error: None,
        }
    }

    #[test]
    fn json_shape_is_stable() {
        let v = event(EventKind::Change).to_json();
        assert_eq!(
            v,
            json!({"event": "change", "dir": "/opt/config", "version": "..v2", "previous_version": "..v1",
                   "detected_at": "2023-11-14T22:13:20.000000500Z",
                   "lag_ms": 12.345, "config": {"a": 1}})
        );
        let mut e = event(EventKind::Error);
        e.key = Some("config.json".into());
        e.error = Some("bad".into());
        e.lag = None;
        let v = e.to_json();
        assert_eq!(v["key"], "config.json");
        assert_eq!(v["error"], "bad");
        assert_eq!(v["lag_ms"], Value::Null);
        // The printed line is that object, byte for byte, config or none.
        for e in [event(EventKind::Change), event(EventKind::Initial), e] {
            assert_eq!(e.to_json_string(), e.to_json().to_string());
            let none = Event { config: None, ..e };
            assert_eq!(none.to_json_string(), none.to_json().to_string());
        }
    }

    #[test]
    fn text_line_has_time_event_version_lag_config() {
        assert_eq!(
            event(EventKind::Initial).to_text(),
            r#"2023-11-14T22:13:20.000000500Z initial version=..v2 age=12.3ms dir=/opt/config config={"a":1}"#
        );
    }

    #[test]
    fn initial_reports_age_and_coarse_timestamps_bound_the_lag() {
        let initial = event(EventKind::Initial).to_json();
        assert_eq!(
            (initial.get("lag_ms"), &initial["age_ms"]),
            (None, &json!(12.345))
        );

        let swapped = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut e = event(EventKind::Change);
        e.lag = Some(Lag::between(swapped, swapped + Duration::from_millis(987)));
        let v = e.to_json();
        assert_eq!(
            (&v["lag_ms"], &v["lag_max_ms"], &v["lag_resolution_ms"]),
            (&Value::Null, &json!(987.0), &json!(1000))
        );
        assert!(e.to_text().contains(" lag<=987.0ms "), "{}", e.to_text());
    }

    #[test]
    fn clock_skew_gives_a_negative_lag_not_zero() {
        // 500 ns: Windows clocks count in 100 ns steps.
        let swapped = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 500);
        let lag = Lag::between(swapped, swapped - Duration::from_millis(3));
        assert_eq!((lag.precise_ms(), lag.resolution), (Some(-3.0), None));
    }
}
