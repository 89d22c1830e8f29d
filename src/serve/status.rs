//! What the sidecar knows about itself: the metrics (Prometheus text
//! format, through the `prometheus` crate's registry and encoder), the
//! liveness verdict, the readiness verdict and the status page (JSON).
//!
//! What `/readyz` means, for a sidecar whose readiness gates its pod's
//! traffic: the pod can serve with a config that is known to be good. So
//! it fails while a directory has no valid config yet, and while a reload
//! failed or is unconfirmed (the target was asked to change and did not say
//! it did: what it serves is not known). A newer version the sidecar itself
//! refused (invalid, failed its check, or unreadable past the grace) never
//! reached the target, which still serves the last good config: that pod
//! stays in its Service, and the metrics and the status page say the
//! version is not applied. Users who want such a pod out of rotation ask
//! for it ([`Status::with_ready_requires_latest`]).
//!
//! Two metric families. The `reloader_*` series carry the names the
//! Prometheus/Thanos config reloader exports, so that the prometheus-operator
//! mixin's `ConfigReloaderSidecarErrors` alert (on
//! `reloader_last_reload_successful == 0`) works unchanged; the
//! `configmapwatch_*` series say what no peer can (detection lag, content
//! hash per directory, read retries).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::{
    event::{Event, EventKind},
    watcher::{Heartbeat, Watcher},
};

/// A liveness probe never fails sooner than this after the last tick,
/// whatever the interval: a scheduling hiccup is not a stuck loop.
const MIN_STALE: Duration = Duration::from_secs(2);

/// Detection lag buckets, in seconds: from a fast poll (ms) to a slow one
/// on a coarse-timestamp filesystem (a minute).
const LAG_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Action duration buckets, in seconds: a signal (µs) to a slow command.
const ACTION_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// One watched directory, as the probes and metrics see it.
#[derive(Debug)]
struct Dir {
    /// What the status page says about it, updated on events only.
    state: Mutex<DirState>,
    path: String,
    heartbeat: Arc<Heartbeat>,
    /// A good config has been accepted (it stays through later bad ones).
    has_config: AtomicBool,
    /// Heartbeat counts already added to the counters: counters only go
    /// up, so a scrape adds what the loop did since the last one.
    ticks_seen: AtomicU64,
    retries_seen: AtomicU64,
    /// The labels of this directory's `configmapwatch_config_info` series,
    /// removed when a new version replaces it.
    info: Mutex<Option<(String, String)>>,
    /// The key a config made of one key's text comes from (one `--file`).
    #[cfg(feature = "rustls")]
    single_key: Option<String>,
    /// The certificate expiry series of the version accepted last.
    #[cfg(feature = "rustls")]
    certs: Mutex<Vec<super::certs::Labels>>,
}

/// A directory's versions, as its events told them.
#[derive(Debug, Default)]
struct DirState {
    /// The newest version an event named, and when it was seen.
    on_disk: Option<(String, SystemTime)>,
    /// The version whose config is in use, its content hash, and since when.
    applied: Option<(String, String, SystemTime)>,
    /// Since when the volume holds a version that is not applied: from the
    /// first error event after the last good version (for a fault, from
    /// when the fault began, not when the grace ran out).
    not_applied_since: Option<SystemTime>,
    /// The labels of the `configmapwatch_refused_version_info` series.
    refused: Option<(String, String)>,
    /// The last error event, kept after a recovery.
    last_error: Option<LastError>,
}

#[derive(Debug)]
struct LastError {
    version: String,
    key: Option<String>,
    message: String,
    at: SystemTime,
}

/// The verdict of `/readyz` (see the module docs for what it means).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Readiness {
    /// 200 when true, 503 when false.
    pub ready: bool,
    /// One line saying why.
    pub reason: String,
}

/// The verdict of `/healthz`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Health {
    /// The loop ticked `since` ago.
    Alive {
        /// Time since the last tick.
        since: Duration,
    },
    /// The loop has not ticked for `since`, longer than `limit`.
    Stuck {
        /// Time since the last tick (or since start, if none ran).
        since: Duration,
        /// How long a tick may take to come.
        limit: Duration,
    },
}

/// What `/metrics`, `/healthz` and `/readyz` report, shared between the
/// watch loop (which records events) and the HTTP server (which reads).
#[derive(Debug)]
pub struct Status {
    dirs: Vec<Dir>,
    stale_after: Duration,
    started: SystemTime,
    /// With no action, a reload is accepting a valid version.
    has_actions: bool,
    registry: Registry,
    m: Metrics,
    /// Serializes scrapes, so that two cannot add the same ticks twice.
    scrape: Mutex<()>,
    /// Actions whose last run failed (target -> version): the config in
    /// the volume is not the one in effect until they succeed.
    failing: Mutex<std::collections::BTreeMap<String, String>>,
    /// A version refused while the last good config serves fails `/readyz`.
    ready_requires_latest: bool,
}

#[derive(Debug)]
// Without actions, their series are still exported (at 0), never updated.
#[cfg_attr(not(feature = "actions"), allow(dead_code))]
struct Metrics {
    /// The Prometheus/Thanos config reloader's names.
    reloader: ReloaderSeries,
    /// The actions' series.
    actions: ActionSeries,
    // Ours: per directory, then the loop's.
    checks: IntCounterVec,
    last_check_at: prometheus::GaugeVec,
    config_valid: IntGaugeVec,
    config_info: IntGaugeVec,
    not_applied: IntGaugeVec,
    not_applied_seconds: prometheus::GaugeVec,
    refused_info: IntGaugeVec,
    events: IntCounterVec,
    errors: IntCounterVec,
    retries: IntCounterVec,
    lag: Histogram,
    ours_last_reload_ok: IntGauge,
    ours_last_reload_ok_at: Gauge,
    #[cfg(feature = "rustls")]
    cert_expiry: super::certs::CertExpiry,
}

/// The series named as the Prometheus/Thanos config reloader names them,
/// so that its dashboards and alerts work unchanged.
#[derive(Debug)]
#[cfg_attr(not(feature = "actions"), allow(dead_code))]
struct ReloaderSeries {
    reloads: IntCounter,
    reloads_failed: IntCounter,
    last_reload_ok: IntGauge,
    last_reload_ok_at: Gauge,
    applies: IntCounter,
    applies_failed: IntCounter,
    watch_events: IntCounter,
    watch_errors: IntCounter,
}

/// The actions' series.
#[derive(Debug)]
#[cfg_attr(not(feature = "actions"), allow(dead_code))]
struct ActionSeries {
    actions_failing: IntGauge,
    action_runs: IntCounterVec,
    action_duration: HistogramVec,
    webhook_attempts: IntCounter,
}

impl Status {
    /// The status of `watchers`' loop (ticking every `interval`), with
    /// `has_actions` saying whether a reload means running actions or only
    /// accepting a version.
    pub fn new(watchers: &[Watcher], interval: Duration, has_actions: bool) -> Self {
        let registry = Registry::new();
        let m = Metrics::register(&registry, watchers.len());
        let dirs: Vec<Dir> = watchers
            .iter()
            .map(|w| Dir {
                state: Mutex::default(),
                path: w.dir().to_string_lossy().into_owned(),
                heartbeat: w.heartbeat(),
                has_config: AtomicBool::new(false),
                ticks_seen: AtomicU64::new(0),
                retries_seen: AtomicU64::new(0),
                info: Mutex::new(None),
                #[cfg(feature = "rustls")]
                single_key: w.single_key().map(str::to_owned),
                #[cfg(feature = "rustls")]
                certs: Mutex::default(),
            })
            .collect();
        for dir in &dirs {
            // Present from the first scrape, at 0, so that an alert on
            // them has a series to look at before anything happens.
            m.config_valid
                .with_label_values(&[dir.path.as_str()])
                .set(0);
            m.not_applied.with_label_values(&[dir.path.as_str()]).set(0);
            m.not_applied_seconds
                .with_label_values(&[dir.path.as_str()])
                .set(0.0);
            m.checks.with_label_values(&[dir.path.as_str()]);
            m.retries.with_label_values(&[dir.path.as_str()]);
        }
        Status {
            dirs,
            stale_after: (interval * 3).max(MIN_STALE),
            started: SystemTime::now(),
            has_actions,
            registry,
            m,
            scrape: Mutex::new(()),
            failing: Mutex::default(),
            ready_requires_latest: false,
        }
    }

    /// Makes `/readyz` fail also while a directory's newest version is not
    /// applied (refused as invalid, or unreadable past the grace), although
    /// the last good config still serves. Off by default: see the module
    /// docs.
    pub fn with_ready_requires_latest(mut self, yes: bool) -> Self {
        self.ready_requires_latest = yes;
        self
    }

    /// Records an event of the loop: a version accepted, or refused.
    pub fn observe(&self, event: &Event) {
        let Some(dir) = self
            .dirs
            .iter()
            .find(|d| *d.path == *event.dir.to_string_lossy())
        else {
            return;
        };
        let m = &self.m;
        m.events
            .with_label_values(&[dir.path.as_str(), event.kind.as_str()])
            .inc();
        m.reloader.watch_events.inc();
        let mut state = dir.state.lock().unwrap_or_else(|e| e.into_inner());
        state.on_disk = Some((event.version.clone(), event.detected_at));
        match event.kind {
            EventKind::Initial | EventKind::Change => self.accepted(dir, &mut state, event),
            EventKind::Error => self.refused(dir, &mut state, event),
        }
    }

    /// A version accepted: the directory's config is valid and applied,
    /// any refusal it had is over.
    fn accepted(&self, dir: &Dir, state: &mut DirState, event: &Event) {
        let m = &self.m;
        dir.has_config.store(true, Ordering::Relaxed);
        m.config_valid
            .with_label_values(&[dir.path.as_str()])
            .set(1);
        m.not_applied.with_label_values(&[dir.path.as_str()]).set(0);
        state.not_applied_since = None;
        if let Some((version, key)) = state.refused.take() {
            let _ = m
                .refused_info
                .remove_label_values(&[&dir.path, &version, &key]);
        }
        m.reloader.applies.inc();
        if let Some(config) = &event.config {
            self.config_applied(dir, state, event, config);
        }
        // The initial event's "lag" is the volume's age, not a
        // detection delay; a negative one is clock skew.
        if let (EventKind::Change, Some(lag)) = (event.kind, &event.lag)
            && lag.seconds >= 0.0
        {
            m.lag.observe(lag.seconds);
        }
        if !self.has_actions {
            self.reloaded(true, event.detected_at);
        }
    }

    /// The accepted config's hash, as `config_info` (replacing the last
    /// one's series) and on the status page; with `rustls`, its
    /// certificate's expiry.
    fn config_applied(
        &self,
        dir: &Dir,
        state: &mut DirState,
        event: &Event,
        config: &serde_json::Value,
    ) {
        let m = &self.m;
        let hash = format!("{:016x}", config_hash(config));
        state.applied = Some((event.version.clone(), hash.clone(), event.detected_at));
        let mut info = dir.info.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((version, hash)) = info.take() {
            let _ = m
                .config_info
                .remove_label_values(&[&dir.path, &version, &hash]);
        }
        m.config_info
            .with_label_values(&[dir.path.as_str(), event.version.as_str(), hash.as_str()])
            .set(1);
        *info = Some((event.version.clone(), hash));
        #[cfg(feature = "rustls")]
        m.cert_expiry
            .update(&dir.path, dir.single_key.as_deref(), config, &dir.certs);
    }

    /// A version refused (or a fault past its grace): the latest version
    /// is not applied, since when, and why.
    fn refused(&self, dir: &Dir, state: &mut DirState, event: &Event) {
        let m = &self.m;
        m.config_valid
            .with_label_values(&[dir.path.as_str()])
            .set(0);
        m.not_applied.with_label_values(&[dir.path.as_str()]).set(1);
        // A fault reported after its grace began before its event:
        // the heartbeat, published before the event was handed
        // on, says when.
        let since = dir
            .heartbeat
            .fault()
            .filter(|f| f.reported && f.fault.version.as_deref() == Some(&event.version))
            .map_or(event.detected_at, |f| f.since);
        state.not_applied_since.get_or_insert(since);
        let key = event.key.clone().unwrap_or_default();
        if let Some((version, key)) = state.refused.take() {
            let _ = m
                .refused_info
                .remove_label_values(&[&dir.path, &version, &key]);
        }
        m.refused_info
            .with_label_values(&[dir.path.as_str(), event.version.as_str(), key.as_str()])
            .set(1);
        state.refused = Some((event.version.clone(), key));
        state.last_error = Some(LastError {
            version: event.version.clone(),
            key: event.key.clone(),
            message: event.error.clone().unwrap_or_default(),
            at: event.detected_at,
        });
        m.reloader.applies_failed.inc();
        m.reloader.watch_errors.inc();
        m.errors
            .with_label_values(&[dir.path.as_str(), event.key.as_deref().unwrap_or("")])
            .inc();
        // The latest version is not in effect: that is what the
        // reloader alert is for.
        self.reloaded(false, event.detected_at);
    }

    /// Records the result of one action of a round.
    #[cfg(feature = "actions")]
    pub fn observe_action(&self, report: &crate::actions::ActionReport) {
        let m = &self.m;
        let result = if report.ok { "success" } else { "failure" };
        m.actions
            .action_runs
            .with_label_values(&[report.action, result])
            .inc();
        m.actions
            .action_duration
            .with_label_values(&[report.action])
            .observe(report.duration.as_secs_f64());
        if report.action == "webhook" {
            m.actions
                .webhook_attempts
                .inc_by(u64::from(report.attempts));
        }
        // The Prometheus reloader's meaning: a reload is a request to the
        // target (a command, a webhook, a signal). A confirmation checks
        // that one took effect; it is not a second reload.
        if report.action != "confirm" {
            m.reloader.reloads.inc();
            if !report.ok {
                m.reloader.reloads_failed.inc();
            }
        }
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        let key = format!("{} {}", report.action, report.target);
        match report.ok {
            true => failing.remove(&key),
            false => failing.insert(key, report.version.clone()),
        };
        m.actions.actions_failing.set(failing.len() as i64);
        drop(failing);
        self.reloaded(report.ok, report.finished_at);
    }

    fn reloaded(&self, ok: bool, at: SystemTime) {
        let m = &self.m;
        m.reloader.last_reload_ok.set(i64::from(ok));
        m.ours_last_reload_ok.set(i64::from(ok));
        if ok {
            let at = unix_seconds(at);
            m.reloader.last_reload_ok_at.set(at);
            m.ours_last_reload_ok_at.set(at);
        }
    }

    /// `/healthz`: alive while the loop has ticked within three intervals
    /// (at least two seconds).
    pub fn health(&self) -> Health {
        let now = SystemTime::now();
        let since = self
            .dirs
            .iter()
            .map(|d| d.heartbeat.last_tick().unwrap_or(self.started))
            .min()
            .map_or(Duration::ZERO, |t| {
                now.duration_since(t).unwrap_or_default()
            });
        if since <= self.stale_after {
            Health::Alive { since }
        } else {
            Health::Stuck {
                since,
                limit: self.stale_after,
            }
        }
    }

    /// `/readyz`: the directories that have no valid config yet (ready
    /// when empty).
    pub fn not_ready(&self) -> Vec<&str> {
        self.dirs
            .iter()
            .filter(|d| !d.has_config.load(Ordering::Relaxed))
            .map(|d| d.path.as_str())
            .collect()
    }

    /// `/readyz` too: the actions whose last run failed, each with the
    /// version it failed for (the round is being retried).
    pub fn unconfirmed(&self) -> Vec<String> {
        self.failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(action, version)| format!("{action} failed for {version}"))
            .collect()
    }

    /// The directories whose newest version is not applied, each with the
    /// version refused and why.
    fn not_applied(&self) -> Vec<String> {
        self.dirs
            .iter()
            .filter_map(|d| {
                let state = d.state.lock().unwrap_or_else(|e| e.into_inner());
                state.not_applied_since?;
                let e = state.last_error.as_ref()?;
                Some(format!("{} ({}: {})", d.path, e.version, e.message))
            })
            .collect()
    }

    /// `/readyz`: whether the pod can serve with a known good config (see
    /// the module docs), and why.
    pub fn readiness(&self) -> Readiness {
        let (missing, failing) = (self.not_ready(), self.unconfirmed());
        let stale = self.not_applied();
        let (ready, reason) = if !missing.is_empty() {
            (
                false,
                format!("no valid config yet: {}", missing.join(", ")),
            )
        } else if !failing.is_empty() {
            (
                false,
                format!("reload not confirmed (retrying): {}", failing.join("; ")),
            )
        } else if stale.is_empty() {
            (true, "ready: every directory has a valid config".to_owned())
        } else if self.ready_requires_latest {
            (
                false,
                format!(
                    "a newer version is not applied (--ready-requires-latest): {}",
                    stale.join("; ")
                ),
            )
        } else {
            (
                true,
                format!(
                    "ready: every directory has a valid config; the last good one serves where a newer version is not applied: {}",
                    stale.join("; ")
                ),
            )
        };
        Readiness { ready, reason }
    }

    /// `/status`: per directory, the version on disk, the version applied
    /// and since when, whether the newest is not applied and since when,
    /// the last error, and the fault being retried with its next attempt;
    /// with the readiness verdict and the reloads' state. The same sources
    /// as `/readyz` and the metrics, so that they agree.
    pub fn status(&self) -> serde_json::Value {
        use serde_json::json;
        let time = |t: SystemTime| crate::event::rfc3339(t);
        let readiness = self.readiness();
        let dirs: Vec<serde_json::Value> = self
            .dirs
            .iter()
            .map(|d| {
                let fault = d.heartbeat.fault();
                let state = d.state.lock().unwrap_or_else(|e| e.into_inner());
                // A fault on a version no event named yet (in its grace) is
                // about the newest version on disk.
                let on_disk = match (&fault, &state.on_disk) {
                    (Some(f), seen) if f.fault.version.as_ref().is_some_and(|v| {
                        seen.as_ref().is_none_or(|(s, _)| s != v)
                    }) =>
                    {
                        Some((f.fault.version.clone().unwrap_or_default(), f.since))
                    }
                    (_, seen) => seen.clone(),
                };
                json!({
                    "dir": d.path,
                    "on_disk": on_disk.map(|(version, seen)| json!({
                        "version": version,
                        "seen_at": time(seen),
                    })),
                    "applied": state.applied.as_ref().map(|(version, hash, since)| json!({
                        "version": version,
                        "hash": hash,
                        "since": time(*since),
                    })),
                    "config_valid": self.m.config_valid.with_label_values(&[d.path.as_str()]).get() == 1,
                    "not_applied_since": state.not_applied_since.map(time),
                    "last_error": state.last_error.as_ref().map(|e| json!({
                        "version": e.version,
                        "key": e.key,
                        "message": e.message,
                        "at": time(e.at),
                    })),
                    "retry": fault.map(|f| json!({
                        "message": f.fault.message,
                        "key": f.fault.key,
                        "version": f.fault.version,
                        "since": time(f.since),
                        "attempts": f.attempts,
                        "next_attempt_at": f.next_attempt_at.map(time),
                        "reported": f.reported,
                    })),
                    "last_check_at": d.heartbeat.last_tick().map(time),
                })
            })
            .collect();
        let failing: Vec<serde_json::Value> = self
            .failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(action, version)| json!({"action": action, "version": version}))
            .collect();
        json!({
            "ready": readiness.ready,
            "readiness": readiness.reason,
            "ready_requires_latest": self.ready_requires_latest,
            "reload": {
                "last_successful": self.m.ours_last_reload_ok.get() == 1,
                "failing": failing,
            },
            "dirs": dirs,
        })
    }

    /// `/metrics`: every series, in the Prometheus text format.
    pub fn metrics(&self) -> String {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        let m = &self.m;
        for dir in &self.dirs {
            let ticks = dir.heartbeat.ticks();
            let before = dir.ticks_seen.swap(ticks, Ordering::Relaxed);
            m.checks
                .with_label_values(&[dir.path.as_str()])
                .inc_by(ticks.saturating_sub(before));
            let retries = dir.heartbeat.retries();
            let before = dir.retries_seen.swap(retries, Ordering::Relaxed);
            m.retries
                .with_label_values(&[dir.path.as_str()])
                .inc_by(retries.saturating_sub(before));
            if let Some(at) = dir.heartbeat.last_tick() {
                m.last_check_at
                    .with_label_values(&[dir.path.as_str()])
                    .set(unix_seconds(at));
            }
            let since = dir
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .not_applied_since;
            let age = since.map_or(0.0, |t| {
                SystemTime::now()
                    .duration_since(t)
                    .unwrap_or_default()
                    .as_secs_f64()
            });
            m.not_applied_seconds
                .with_label_values(&[dir.path.as_str()])
                .set(age);
        }
        let mut out = Vec::new();
        // Encoding into memory cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Creates series in a registry: each one registered as it is made.
struct Registrar<'a>(&'a Registry);

impl Registrar<'_> {
    fn add<M: prometheus::core::Collector + Clone + 'static>(&self, metric: M) -> M {
        self.0
            .register(Box::new(metric.clone()))
            .expect("unique metric");
        metric
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(IntCounter::new(name, help).expect("valid metric"))
    }

    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn gauge(&self, name: &str, help: &str) -> Gauge {
        self.add(Gauge::new(name, help).expect("valid metric"))
    }

    fn int_gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help).expect("valid metric"))
    }

    fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> prometheus::GaugeVec {
        self.add(prometheus::GaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn int_gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }
}

impl Metrics {
    fn register(registry: &Registry, watches: usize) -> Self {
        let r = Registrar(registry);
        Self::register_constants(&r, watches);
        Metrics {
            reloader: ReloaderSeries::register(&r),
            actions: ActionSeries::register(&r),
            checks: r.counter_vec(
                "configmapwatch_checks_total",
                "Checks of the directory by the poll loop.",
                &["dir"],
            ),
            last_check_at: r.gauge_vec(
                "configmapwatch_last_check_timestamp_seconds",
                "When the poll loop last checked the directory (Unix time).",
                &["dir"],
            ),
            config_valid: r.int_gauge_vec(
                "configmapwatch_config_valid",
                "Whether the directory's latest version is valid (the last good config stays in use when it is not).",
                &["dir"],
            ),
            config_info: r.int_gauge_vec(
                "configmapwatch_config_info",
                "The config in use per directory: its version and a hash of its content (replicas with different configs show different hashes).",
                &["dir", "version", "hash"],
            ),
            not_applied: r.int_gauge_vec(
                "configmapwatch_version_not_applied",
                "1 while the directory holds a version that is not applied (refused as invalid, or unreadable past the fault grace) and the last good config stays in use; 0 once a good version is applied.",
                &["dir"],
            ),
            not_applied_seconds: r.gauge_vec(
                "configmapwatch_version_not_applied_seconds",
                "How long the directory has held a version that is not applied, at scrape time (0 when the newest is applied).",
                &["dir"],
            ),
            refused_info: r.int_gauge_vec(
                "configmapwatch_refused_version_info",
                "1 for the newest refused version while it is not applied: its version and the key at fault (empty when none); gone once a good version is applied.",
                &["dir", "version", "key"],
            ),
            events: r.counter_vec(
                "configmapwatch_events_total",
                "Events per directory and kind (initial, change, error).",
                &["dir", "kind"],
            ),
            errors: r.counter_vec(
                "configmapwatch_errors_total",
                "Invalid versions per directory and key (empty when no key is concerned).",
                &["dir", "key"],
            ),
            retries: r.counter_vec(
                "configmapwatch_read_retries_total",
                "Reads retried after a passing fault (EMFILE, EIO, a swap under way).",
                &["dir"],
            ),
            lag: r.add(
                Histogram::with_opts(
                    HistogramOpts::new(
                        "configmapwatch_detection_lag_seconds",
                        "Time from a version's swap (the ..data link's mtime) to its detection; an upper bound on filesystems with whole-second timestamps.",
                    )
                    .buckets(LAG_BUCKETS.to_vec()),
                )
                .expect("valid metric"),
            ),
            ours_last_reload_ok: r.int_gauge(
                "configmapwatch_last_reload_successful",
                "Whether the latest version is valid and its actions succeeded.",
            ),
            ours_last_reload_ok_at: r.gauge(
                "configmapwatch_last_reload_success_timestamp_seconds",
                "When a version was last accepted and its actions succeeded (Unix time).",
            ),
            #[cfg(feature = "rustls")]
            cert_expiry: super::certs::CertExpiry::register(registry),
        }
    }

    /// The series set once: how many directories, which build.
    fn register_constants(r: &Registrar<'_>, watches: usize) {
        r.int_gauge(
            "reloader_watches",
            "Number of resources watched by the reloader.",
        )
        .set(watches as i64);
        r.int_gauge_vec(
            "configmapwatch_build_info",
            "A metric with a constant '1' value labelled by the version of configmapwatch.",
            &["version"],
        )
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    }
}

impl ReloaderSeries {
    fn register(r: &Registrar<'_>) -> Self {
        ReloaderSeries {
            reloads: r.counter(
                "reloader_reloads_total",
                "Total number of reload requests (runs of exec, webhook and signal actions; confirmations are not reloads).",
            ),
            reloads_failed: r.counter(
                "reloader_reloads_failed_total",
                "Total number of reload requests that failed.",
            ),
            last_reload_ok: r.int_gauge(
                "reloader_last_reload_successful",
                "Whether the last reload attempt was successful (0 also while the latest version is invalid).",
            ),
            last_reload_ok_at: r.gauge(
                "reloader_last_reload_success_timestamp_seconds",
                "Timestamp of the last successful reload.",
            ),
            applies: r.counter(
                "reloader_config_apply_operations_total",
                "Total number of config versions accepted.",
            ),
            applies_failed: r.counter(
                "reloader_config_apply_operations_failed_total",
                "Total number of config versions refused as invalid.",
            ),
            watch_events: r.counter(
                "reloader_watch_events_total",
                "Total number of versions seen.",
            ),
            watch_errors: r.counter(
                "reloader_watch_errors_total",
                "Total number of versions that could not be used.",
            ),
        }
    }
}

impl ActionSeries {
    fn register(r: &Registrar<'_>) -> Self {
        ActionSeries {
            actions_failing: r.int_gauge(
                "configmapwatch_actions_failing",
                "Actions whose last run failed (their round is being retried): the config in use may not be the target's.",
            ),
            action_runs: r.counter_vec(
                "configmapwatch_action_runs_total",
                "Action runs by action (exec, webhook, signal) and result (success, failure).",
                &["action", "result"],
            ),
            action_duration: r.add(
                HistogramVec::new(
                    HistogramOpts::new(
                        "configmapwatch_action_duration_seconds",
                        "Time one action took for one version, retries included.",
                    )
                    .buckets(ACTION_BUCKETS.to_vec()),
                    &["action"],
                )
                .expect("valid metric"),
            ),
            webhook_attempts: r.counter(
                "configmapwatch_webhook_attempts_total",
                "HTTP requests made by webhooks, retries included.",
            ),
        }
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The xxh3 hash of the config's compact JSON text, streamed into the
/// hasher as it is written rather than built as one string first (as
/// large again as a large config's text, issue 20).
fn config_hash(config: &serde_json::Value) -> u64 {
    struct Hashing(xxhash_rust::xxh3::Xxh3Default);
    impl std::io::Write for Hashing {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.update(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut hashing = Hashing(xxhash_rust::xxh3::Xxh3Default::new());
    // Writing into a hasher cannot fail, nor can serializing a Value.
    let _ = serde_json::to_writer(&mut hashing, config);
    hashing.0.digest()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watcher::WatchOptions;

    #[test]
    fn config_hash_is_the_hash_of_the_configs_text() {
        let config = serde_json::json!({"b": [1, 2.5, "x\u{1}"], "a": {"c": null}});
        assert_eq!(
            config_hash(&config),
            xxhash_rust::xxh3::xxh3_64(config.to_string().as_bytes())
        );
    }

    fn event(kind: EventKind, dir: &std::path::Path, version: &str) -> Event {
        Event {
            kind,
            dir: dir.into(),
            version: version.into(),
            previous_version: None,
            detected_at: SystemTime::now(),
            lag: None,
            config: (kind != EventKind::Error).then(|| Arc::new(serde_json::json!({"v": version}))),
            key: (kind == EventKind::Error).then(|| "config.json".into()),
            error: (kind == EventKind::Error).then(|| "bad".into()),
        }
    }

    #[test]
    fn a_new_version_replaces_the_info_series_and_an_error_clears_the_reload_gauges() {
        let dir = tempfile::tempdir().unwrap();
        let watchers = [Watcher::new(WatchOptions::new(dir.path()))];
        let status = Status::new(&watchers, Duration::from_secs(1), false);
        assert_eq!(status.not_ready(), [dir.path().to_string_lossy()]);
        status.observe(&event(EventKind::Initial, dir.path(), "v1"));
        status.observe(&event(EventKind::Change, dir.path(), "v2"));
        let text = status.metrics();
        assert!(!text.contains("version=\"v1\""), "{text}");
        assert!(text.contains("version=\"v2\""), "{text}");
        assert!(text.contains("reloader_last_reload_successful 1"), "{text}");
        assert!(status.not_ready().is_empty());

        status.observe(&event(EventKind::Error, dir.path(), "v3"));
        let text = status.metrics();
        assert!(text.contains("reloader_last_reload_successful 0"), "{text}");
        assert!(
            text.contains(&format!(
                "configmapwatch_errors_total{{dir=\"{}\",key=\"config.json\"}} 1",
                // Label values escape backslashes (Windows paths).
                dir.path().display().to_string().replace('\\', "\\\\")
            )),
            "{text}"
        );
        // The last good config stays: still ready.
        assert!(status.not_ready().is_empty());
    }
}
