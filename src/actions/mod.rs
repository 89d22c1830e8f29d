//! Acting on a change: run a command, call webhooks, signal a process
//! (given by pid, pid file, or name: [`process`]).
//!
//! Actions run on their own thread so polling never waits for them. At most
//! one round is in flight; changes that arrive meanwhile collapse into one
//! trailing round for the latest config, so a burst never becomes a storm
//! and the final state is never lost. Only good configs trigger actions.

mod confirm;
mod exec;
pub mod process;
mod secrets;
mod signal;
mod validate;
mod webhook;

use std::{
    path::PathBuf,
    sync::{Arc, Condvar, Mutex, MutexGuard, mpsc},
    thread,
    time::{Duration, Instant, SystemTime},
};

use serde_json::{Value, json};

pub use confirm::Confirm;
pub use exec::{Exec, ExecError};
pub use secrets::{SECRET_SETTINGS, SecretKind, SecretSetting, Secrets, is_secret_var, redact};
pub use signal::{PidSource, SignalAction, SignalError};
pub use validate::ValidateExec;
pub use webhook::{TlsVerify, Webhook, WebhookError, WebhookOptions, parse_header, redact_url};

use crate::event::{Event, EventKind, OutputFormat, rfc3339};

/// One action to run on each good change.
#[derive(Debug, Clone)]
pub enum Action {
    /// Run a command with the config on stdin.
    Exec(Exec),
    /// Send the event to a URL.
    Webhook(Webhook),
    /// Send a signal to a process (Unix).
    Signal(SignalAction),
    /// Check that the round took effect (last in the list; skipped when an
    /// earlier action of the round failed).
    Confirm(Confirm),
}

impl Action {
    fn kind(&self) -> &'static str {
        match self {
            Action::Exec(_) => "exec",
            Action::Webhook(_) => "webhook",
            Action::Signal(_) => "signal",
            Action::Confirm(_) => "confirm",
        }
    }

    /// What the action acts on, safe to print (credentials redacted).
    pub fn target(&self) -> String {
        match self {
            Action::Exec(e) => e.program.clone(),
            Action::Webhook(w) => w.display_url().to_owned(),
            Action::Signal(s) => s.describe(),
            Action::Confirm(c) => c.target(),
        }
    }
}

/// The actions and when to run them.
#[derive(Debug, Clone)]
pub struct Actions {
    /// Run in this order, one round per change.
    pub list: Vec<Action>,
    /// Also run them for the initial config.
    pub on_start: bool,
    /// On shutdown, how long to wait for a running round.
    pub shutdown_timeout: Duration,
    /// The volume directory (passed to commands as `CONFIGMAPWATCH_DIR`).
    pub dir: PathBuf,
    /// A delay before each round, so that a fleet of replicas does not
    /// reload at once. A newer version arriving during the delay replaces
    /// the waiting one.
    pub jitter: crate::jitter::Jitter,
    /// Retry a failed round (an action or the confirmation failed), the
    /// config unchanged, with backoff up to this, until it succeeds or a
    /// newer version supersedes it; `None`: wait for the next version.
    pub retry: Option<Duration>,
}

impl Actions {
    /// Whether `event` should run the actions.
    pub fn triggered_by(&self, event: &Event) -> bool {
        !self.list.is_empty()
            && match event.kind {
                EventKind::Change => true,
                EventKind::Initial => self.on_start,
                EventKind::Error => false,
            }
    }
}

/// The result of one action for one version.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ActionReport {
    /// `exec`, `webhook`, `signal` or `confirm`.
    pub action: &'static str,
    /// What it acted on (redacted).
    pub target: String,
    /// Whether it succeeded (after retries).
    pub ok: bool,
    /// How many attempts were made.
    pub attempts: u32,
    /// From the first attempt to the result.
    pub duration: Duration,
    /// The version it acted for.
    pub version: String,
    /// When it finished.
    pub finished_at: SystemTime,
    /// Why it failed.
    pub error: Option<String>,
    /// Which run of its round this was: 0 the first, then 1, 2, ... for
    /// the retries of a failed round. A failing retry repeats a failure
    /// already reported: count it (metrics), do not print it again.
    pub retry: u32,
}

impl ActionReport {
    /// A failure that repeats one already reported for the same round.
    pub fn is_repeat(&self) -> bool {
        self.retry > 0 && !self.ok
    }
}

impl ActionReport {
    /// The report as the JSON object of `--output json`.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "event": "action",
            "action": self.action,
            "ok": self.ok,
            "attempts": self.attempts,
            "duration_ms": (self.duration.as_secs_f64() * 1e6).round() / 1e3,
            "version": self.version,
            "target": self.target,
            "finished_at": rfc3339(self.finished_at),
        });
        if let Some(error) = &self.error {
            v["error"] = json!(error);
        }
        if self.retry > 0 {
            v["round_retry"] = json!(self.retry);
        }
        v
    }

    /// The report as one human-readable line.
    pub fn to_text(&self) -> String {
        let mut line = format!(
            "{} action  version={} {} {} attempts={} duration={:.1}ms target={}",
            rfc3339(self.finished_at),
            self.version,
            self.action,
            if self.ok { "ok" } else { "FAILED" },
            self.attempts,
            self.duration.as_secs_f64() * 1e3,
            self.target
        );
        if let Some(error) = &self.error {
            line.push_str(&format!(" error={error:?}"));
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

#[derive(Debug, Default)]
struct State {
    pending: Option<Event>,
    closing: bool,
}

/// What the worker and the watcher share.
#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// The running command's tree (process group, job), to stop it if
    /// shutdown times out.
    child: Mutex<Option<exec::Tree>>,
    /// The action running now and its version, to report it interrupted
    /// if shutdown has to leave it (an HTTP request in flight).
    running: Mutex<Option<(&'static str, String, String, Instant)>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What an action can ask of the runner while it works.
pub(crate) struct Round<'a> {
    shared: &'a Shared,
    dir: &'a std::path::Path,
    /// When this attempt of the round began: a confirmation wants a
    /// reload no older than this.
    began: SystemTime,
}

impl Round<'_> {
    /// True once shutdown began: a running command is stopped.
    pub(crate) fn closing(&self) -> bool {
        self.shared.lock().closing
    }

    /// True once a newer config is waiting or shutdown began: retrying for
    /// this one is pointless.
    pub(crate) fn superseded(&self) -> bool {
        let s = self.shared.lock();
        s.pending.is_some() || s.closing
    }

    /// Waits `d` unless superseded first; false if superseded.
    pub(crate) fn pause(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut s = self.shared.lock();
        loop {
            if s.pending.is_some() || s.closing {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            s = self
                .shared
                .wake
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Runs rounds of actions on a worker thread.
#[derive(Debug)]
pub struct ActionRunner {
    shared: Arc<Shared>,
    done: mpsc::Receiver<()>,
    /// The worker was found dead (reported once).
    dead: std::sync::atomic::AtomicBool,
}

impl ActionRunner {
    /// Starts the worker; `report` receives each action's result.
    pub fn start(actions: Actions, report: impl FnMut(ActionReport) + Send + 'static) -> Self {
        Self::start_with(actions, report, run_action)
    }

    /// [`ActionRunner::start`] with `run` in place of running an action:
    /// the tests' way to make one panic.
    fn start_with(
        actions: Actions,
        mut report: impl FnMut(ActionReport) + Send + 'static,
        run: RunAction,
    ) -> Self {
        let shared = Arc::new(Shared::default());
        let (done_tx, done) = mpsc::channel();
        let worker = shared.clone();
        thread::spawn(move || {
            let _done = done_tx; // dropped when the worker ends, however it ends
            while let Some(event) = next_round(&worker) {
                let Some(event) = delay(&worker, &actions.jitter, event) else {
                    break;
                };
                run_round(&worker, &actions, &event, &mut report, run);
            }
        });
        ActionRunner {
            shared,
            done,
            dead: Default::default(),
        }
    }

    /// Whether the worker is still there to run rounds.
    pub fn is_alive(&self) -> bool {
        !matches!(self.done.try_recv(), Err(mpsc::TryRecvError::Disconnected))
    }

    /// Queues a round for `event`, replacing any round not yet started.
    /// A worker that died is reported (once) instead of silently dropping
    /// every later round.
    pub fn submit(&self, event: Event) {
        if !self.is_alive() {
            if !self.dead.swap(true, std::sync::atomic::Ordering::Relaxed) {
                log::error!(
                    "the action worker has stopped: no action will run for {} or later versions",
                    event.version
                );
            }
            return;
        }
        let mut s = self.shared.lock();
        if let Some(old) = s.pending.replace(event) {
            log::debug!("actions for {} superseded before they started", old.version);
        }
        self.shared.wake.notify_all();
    }

    /// Stops: drops rounds not started, and stops a running one at once
    /// (a command's process group gets SIGTERM, retries and confirmation
    /// polls end; each is reported as interrupted). An action that cannot
    /// be stopped (an HTTP request in flight) is waited for up to
    /// `timeout`, then left, and returned, reported as interrupted, for the
    /// caller to record: its worker cannot report it any more.
    pub fn shutdown(self, timeout: Duration) -> Option<ActionReport> {
        {
            let mut s = self.shared.lock();
            s.closing = true;
            s.pending = None;
            self.shared.wake.notify_all();
        }
        match self.done.recv_timeout(timeout) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let child = self
                    .shared
                    .child
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                if let Some(tree) = child {
                    exec::stop(&tree);
                }
                let running = self
                    .shared
                    .running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                let (action, target, version, started) = running?;
                let error = format!(
                    "interrupted: still running {} after shutdown began (--shutdown-timeout); left unfinished",
                    humantime::format_duration(timeout)
                );
                log::warn!("{action} {target}: {error}");
                Some(ActionReport {
                    action,
                    target,
                    ok: false,
                    attempts: 1,
                    duration: started.elapsed(),
                    version,
                    finished_at: SystemTime::now(),
                    error: Some(error),
                    retry: 0,
                })
            }
            _ => None,
        }
    }
}

/// Runs one round for `event` on the calling thread, without retrying it,
/// and returns its reports (`--once`: an init container's retry is the
/// kubelet restarting it). A confirmation after a failed action is
/// skipped, so there may be fewer reports than actions.
pub fn run_round_once(actions: &Actions, event: Event) -> Vec<ActionReport> {
    let shared = Shared::default();
    let once = Actions {
        retry: None,
        ..actions.clone()
    };
    let mut reports = Vec::new();
    if let Some(event) = delay(&shared, &once.jitter, event) {
        run_round(&shared, &once, &event, &mut |r| reports.push(r), run_action);
    }
    reports
}

/// Waits out the jitter before a round; a newer version submitted
/// meanwhile takes the waiting one's place (on the same deadline, so that a
/// stream of changes cannot put the round off forever). `None` on shutdown.
fn delay(shared: &Shared, jitter: &crate::jitter::Jitter, mut event: Event) -> Option<Event> {
    let wait = jitter.delay();
    if wait.is_zero() {
        return Some(event);
    }
    log::info!(
        "acting on {} in {} (--jitter)",
        event.version,
        humantime::format_duration(Duration::from_millis(wait.as_millis() as u64))
    );
    let deadline = Instant::now() + wait;
    let mut s = shared.lock();
    loop {
        if s.closing {
            return None;
        }
        if let Some(newer) = s.pending.take() {
            log::debug!(
                "{} replaces {} during the jitter delay",
                newer.version,
                event.version
            );
            event = newer;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Some(event);
        }
        s = shared
            .wake
            .wait_timeout(s, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

fn next_round(shared: &Shared) -> Option<Event> {
    let mut s = shared.lock();
    loop {
        if s.closing {
            return None;
        }
        if let Some(event) = s.pending.take() {
            return Some(event);
        }
        s = shared.wake.wait(s).unwrap_or_else(|e| e.into_inner());
    }
}

/// Runs the round for `event` until it holds: a failed round (an action
/// or the confirmation) is retried with backoff, the config unchanged,
/// until it succeeds or a newer version (or shutdown) supersedes it. A
/// failure is reported once, when it first happens; then the success.
fn run_round(
    shared: &Shared,
    actions: &Actions,
    event: &Event,
    report: &mut impl FnMut(ActionReport),
    run: RunAction,
) {
    let mut failures = 0u32;
    loop {
        let round = Round {
            shared,
            dir: &actions.dir,
            began: SystemTime::now(),
        };
        let mut ok = true;
        let mut reports = Vec::new();
        for action in &actions.list {
            // Confirming a round that already failed would only wait.
            if matches!(action, Action::Confirm(_)) && !ok {
                continue;
            }
            *shared.running.lock().unwrap_or_else(|e| e.into_inner()) = Some((
                action.kind(),
                action.target(),
                event.version.clone(),
                Instant::now(),
            ));
            let result = run_guarded(action, event, &round, run);
            *shared.running.lock().unwrap_or_else(|e| e.into_inner()) = None;
            ok &= result.ok;
            reports.push(result);
        }
        for mut result in reports {
            result.retry = failures;
            report(result);
        }
        let Some(cap) = actions.retry.filter(|_| !ok) else {
            if ok && failures > 0 {
                log::info!(
                    "the round for {} succeeded after {failures} retries",
                    event.version
                );
            }
            return;
        };
        failures += 1;
        let wait = ROUND_RETRY_BASE
            .saturating_mul(1 << (failures - 1).min(16))
            .min(cap);
        if failures == 1 {
            log::warn!(
                "the round for {} failed; retrying it (backoff up to {}) until it succeeds or a newer version arrives",
                event.version,
                humantime::format_duration(cap)
            );
        }
        if !round.pause(wait) {
            return;
        }
    }
}

/// The first retry of a failed round; doubled each time, up to
/// [`Actions::retry`].
const ROUND_RETRY_BASE: Duration = Duration::from_millis(500);

/// How an action is run: [`run_action`], or a test's stand-in.
type RunAction = fn(&Action, &Event, &Round<'_>) -> ActionReport;

/// Runs one action; a panicking action is reported as failed, and the
/// worker and the next rounds go on. This needs panics to unwind, which is
/// why the release profile keeps `panic = "unwind"` (Cargo.toml).
fn run_guarded(action: &Action, event: &Event, round: &Round<'_>, run: RunAction) -> ActionReport {
    let started = Instant::now();
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(action, event, round)));
    result.unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".into());
        log::error!("{} {}: panicked: {why}", action.kind(), action.target());
        ActionReport {
            action: action.kind(),
            target: action.target(),
            ok: false,
            attempts: 1,
            duration: started.elapsed(),
            version: event.version.clone(),
            finished_at: SystemTime::now(),
            error: Some(format!("panicked: {why}")),
            retry: 0,
        }
    })
}

fn run_action(action: &Action, event: &Event, round: &Round<'_>) -> ActionReport {
    let started = Instant::now();
    let (attempts, result) = match action {
        Action::Exec(exec) => (
            1,
            exec.run(event, round.dir, &round.shared.child, &|| round.closing())
                .map_err(|e| e.to_string()),
        ),
        Action::Webhook(hook) => {
            let (attempts, result) = hook.run(event, round);
            (attempts, result.map_err(|e| e.to_string()))
        }
        Action::Signal(signal) => (1, signal.send()),
        Action::Confirm(confirm) => confirm.run(event, round.began, round),
    };
    let report = ActionReport {
        action: action.kind(),
        target: action.target(),
        ok: result.is_ok(),
        attempts,
        duration: started.elapsed(),
        version: event.version.clone(),
        finished_at: SystemTime::now(),
        error: result.err(),
        retry: 0,
    };
    match &report.error {
        None => log::info!(
            "{} {}: ok for {} after {}",
            report.action,
            report.target,
            report.version,
            self::attempts(attempts)
        ),
        Some(e) => log::warn!(
            "{} {}: FAILED for {}: {e}",
            report.action,
            report.target,
            report.version
        ),
    }
    report
}

/// "1 attempt", "3 attempts".
pub(crate) fn attempts(n: u32) -> String {
    match n {
        1 => "1 attempt".to_owned(),
        n => format!("{n} attempts"),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// Panics for version "v1" (a bug in an action), runs the action
    /// otherwise.
    fn panics_on_v1(action: &Action, event: &Event, round: &Round<'_>) -> ActionReport {
        assert_ne!(event.version, "v1", "a bug in the action");
        run_action(action, event, round)
    }

    fn change(version: &str) -> Event {
        Event::new(
            EventKind::Change,
            std::path::Path::new("."),
            version,
            SystemTime::now(),
        )
    }

    #[cfg(unix)]
    #[test]
    fn a_panicking_action_is_reported_once_as_failed_and_the_next_round_runs() {
        let actions = Actions {
            list: vec![Action::Exec(Exec::new("true", Vec::new()))],
            on_start: false,
            shutdown_timeout: Duration::from_secs(5),
            dir: ".".into(),
            jitter: crate::jitter::Jitter::None,
            retry: None,
        };
        let (tx, reports) = mpsc::channel();
        let runner = ActionRunner::start_with(
            actions,
            move |r| {
                let _ = tx.send(r);
            },
            panics_on_v1,
        );
        let wait = Duration::from_secs(10);
        runner.submit(change("v1"));
        let failed = reports.recv_timeout(wait).expect("a report for v1");
        assert_eq!(failed.version, "v1");
        assert!(!failed.ok);
        let error = failed.error.as_deref().unwrap_or_default();
        assert!(error.starts_with("panicked: "), "{error}");
        assert!(error.contains("a bug in the action"), "{error}");
        assert!(runner.is_alive(), "the worker survives the panic");
        runner.submit(change("v2"));
        let next = reports.recv_timeout(wait).expect("a report for v2");
        assert_eq!((next.version.as_str(), next.ok), ("v2", true), "{next:?}");
        assert!(
            reports.try_recv().is_err(),
            "one report per action and round"
        );
        assert!(runner.shutdown(wait).is_none(), "the round ended in time");
    }
}
