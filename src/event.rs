//! What the watcher reports, and its two renderings: a human line (text)
//! and one JSON object per line (a stable interface for scripts).

use std::{
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

/// One report from the watcher.
#[derive(Debug, Clone)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The version (the `..data` target, or a content hash in plain mode).
    pub version: String,
    /// The version of the previous good config, if any.
    pub previous_version: Option<String>,
    /// When the watcher noticed the change.
    pub detected_at: SystemTime,
    /// How long after the kubelet's swap it was noticed (ConfigMap mode).
    pub lag: Option<Duration>,
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
    /// The event as the JSON object of `--output json`.
    pub fn to_json(&self) -> Value {
        let mut object = json!({
            "event": self.kind.as_str(),
            "version": self.version,
            "detected_at": rfc3339(self.detected_at),
            "lag_ms": self.lag.map(duration_ms),
            "config": self.config.as_deref(),
        });
        if let Some(key) = &self.key {
            object["key"] = json!(key);
        }
        if let Some(error) = &self.error {
            object["error"] = json!(error);
        }
        object
    }

    /// The event as one human-readable line.
    pub fn to_text(&self) -> String {
        let lag = match self.lag {
            Some(lag) => format!("{:.1}ms", duration_ms(lag)),
            None => "-".into(),
        };
        let config = self
            .config
            .as_deref()
            .map_or_else(|| "null".into(), Value::to_string);
        let mut line = format!(
            "{} {:<7} version={} lag={}",
            rfc3339(self.detected_at),
            self.kind.as_str(),
            self.version,
            lag
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
        line
    }

    /// Renders in `format`.
    pub fn render(&self, format: OutputFormat) -> String {
        match format {
            OutputFormat::Text => self.to_text(),
            OutputFormat::Json => self.to_json().to_string(),
        }
    }
}

/// RFC 3339 UTC with nanoseconds.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

fn duration_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind) -> Event {
        Event {
            kind,
            version: "..v2".into(),
            previous_version: Some("..v1".into()),
            // 500 ns: Windows clocks count in 100 ns steps.
            detected_at: SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 500),
            lag: Some(Duration::from_micros(12_345)),
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
            json!({"event": "change", "version": "..v2",
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
    }

    #[test]
    fn text_line_has_time_event_version_lag_config() {
        assert_eq!(
            event(EventKind::Initial).to_text(),
            r#"2023-11-14T22:13:20.000000500Z initial version=..v2 lag=12.3ms config={"a":1}"#
        );
    }
}
