//! The watch command: the validated settings, the loop printing one
//! line per event to an output and handing good changes to the actions, and
//! `--once`.

use std::{
    io::Write,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use configmapwatch::{
    Selector,
    actions::{ActionReport, ActionRunner, Actions, ValidateExec},
    event::{Event, EventKind, OutputFormat},
    render::{EnvAllow, EnvMode, Renderer, source_mode, substitute_allowed},
    serve::{Server, ServerOptions, Status},
    volume::Layout,
    volume::Snapshot,
    watcher::{Wait, WatchOptions, Watcher},
};

/// How long `--once` waits for a volume in the middle of a swap to settle.
const ONCE_SETTLE: Duration = Duration::from_secs(2);

/// Everything the watch command needs, already validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// What to watch: one entry per directory, in the order given.
    pub watches: Vec<WatchOptions>,
    /// What is printed on stdout.
    pub output: Print,
    /// What to do on a change.
    pub actions: Actions,
    /// Where to serve /metrics, /healthz, /readyz and /status, if anywhere.
    pub listen: Option<String>,
    /// `--ready-requires-latest`.
    pub ready_requires_latest: bool,
    /// What a version must pass, and where it is rendered, before actions.
    pub checks: Checks,
}

/// Checks and rendering run on each new version before it is accepted.
#[derive(Debug, Clone, Default)]
pub struct Checks {
    /// The target's own checker.
    pub validate: Option<ValidateExec>,
    /// Where the version is written for programs that read plain files.
    pub render: Option<Render>,
}

/// `--render-to` / `--render-dir`.
#[derive(Debug, Clone)]
pub struct Render {
    /// Where.
    pub target: RenderTarget,
    /// `$(VAR)` substitution of the variables allowed, if asked.
    pub env: Option<(EnvMode, EnvAllow)>,
    /// `--render-mode`; by default each file gets its key's mode.
    pub mode: Option<u32>,
}

/// One file (the selected key) or a directory (every selected key).
#[derive(Debug, Clone)]
pub enum RenderTarget {
    /// `--render-to`.
    File(PathBuf),
    /// `--render-dir`.
    Dir(PathBuf),
}

impl Settings {
    /// A watcher for `options`, with the checks as its validator.
    fn watcher(&self, options: &WatchOptions) -> Watcher {
        let watcher = Watcher::new(options.clone());
        if self.checks.validate.is_none() && self.checks.render.is_none() {
            return watcher;
        }
        let (checks, dir, selector) = (
            self.checks.clone(),
            options.dir.clone(),
            options.selector.clone(),
        );
        // Accept: nothing written. Substitution first: an unset variable
        // refuses the version before the checker runs.
        let accept = {
            let (checks, selector) = (checks.clone(), selector.clone());
            move |snapshot: &Snapshot, config: &serde_json::Value| {
                if let Some(render) = &checks.render {
                    render.prepare(&selector, snapshot)?;
                }
                if let Some(validate) = &checks.validate {
                    validate.check(&dir, snapshot, config)?;
                }
                Ok(())
            }
        };
        let watcher = watcher.with_validator(Box::new(accept));
        // Commit: the files, once the version is accepted.
        match checks.render {
            Some(render) => watcher.with_commit(Box::new(move |snapshot, _| {
                render.write(render.prepare(&selector, snapshot)?)
            })),
            None => watcher,
        }
    }
}

impl Render {
    /// The files to write for `snapshot`: each selected key's content
    /// (gzip undone), with the environment substituted if asked, and its
    /// mode.
    fn prepare(
        &self,
        selector: &Selector,
        snapshot: &Snapshot,
    ) -> configmapwatch::Result<Vec<(String, Vec<u8>, u32)>> {
        let keys: Vec<&str> = match (&self.target, selector.single_key()) {
            (RenderTarget::File(_), Some(key)) => vec![key],
            _ => snapshot
                .entries
                .iter()
                .filter(|(_, v)| v.is_ok())
                .map(|(k, _)| k.as_str())
                .collect(),
        };
        let mut files = Vec::new();
        for key in keys {
            let Some(Ok(bytes)) = snapshot.get(key) else {
                continue;
            };
            let content = selector.content(key, bytes)?;
            let bytes = match &self.env {
                None => content.into_owned(),
                Some((mode, allow)) => {
                    let out = substitute_allowed(key, &content, *mode, allow)?;
                    if out.unresolved > 0 {
                        log::warn!(
                            "{}: key {key}: {} unset variable reference(s) left as they are (--render-env-tolerant)",
                            snapshot.version,
                            out.unresolved
                        );
                    }
                    out.bytes
                }
            };
            // As private as its source: a Secret's 0400 key must not
            // become a file every uid in the container can read. Taken
            // from the version's own directory, which a swap never changes
            // (only removes: then a passing fault, read again).
            let mode = match self.mode {
                Some(mode) => mode,
                None => source_mode(snapshot.data_dir.join(key))?,
            };
            // The rendered name drops .gz: the file holds the text.
            let name = key.strip_suffix(".gz").unwrap_or(key).to_owned();
            files.push((name, bytes, mode));
        }
        Ok(files)
    }

    fn write(&self, files: Vec<(String, Vec<u8>, u32)>) -> configmapwatch::Result<()> {
        match &self.target {
            RenderTarget::File(path) => {
                if let Some((_, bytes, mode)) = files.first() {
                    Renderer::new().with_mode(*mode).render_file(path, bytes)?;
                }
            }
            RenderTarget::Dir(dir) => {
                Renderer::new().render_dir_with_modes(dir, files)?;
            }
        }
        Ok(())
    }
}

/// What stdout carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Print {
    /// One line per event and per action result.
    Events(OutputFormat),
    /// The config alone: each good config as one compact JSON line (pretty
    /// with `--once`); nothing for errors and action results, which are
    /// logged on stderr.
    Config,
}

impl Print {
    fn event(self, event: &Event) -> Option<String> {
        match (self, &event.config) {
            (Print::Events(format), _) => Some(event.render(format)),
            (Print::Config, Some(config)) if event.kind != EventKind::Error => {
                Some(config.to_string())
            }
            (Print::Config, _) => None,
        }
    }

    fn report(self, report: &ActionReport) -> Option<String> {
        match self {
            Print::Events(format) => Some(report.render(format)),
            Print::Config => None,
        }
    }
}

/// Watches until `shutdown` fires, printing each event (and each action's
/// result) as one line, then waits for a running round of actions for at
/// most the shutdown timeout. An error is a listener that cannot start.
pub fn watch(
    settings: &Settings,
    shutdown: &impl Wait,
    out: impl Write + Send + 'static,
) -> Result<(), String> {
    let print = settings.output;
    let out = Arc::new(Output {
        out: Mutex::new(out),
        order: Mutex::new(()),
        closed: AtomicBool::new(false),
        ends_watch: settings.actions.list.is_empty(),
    });
    let mut watchers: Vec<Watcher> = settings
        .watches
        .iter()
        .map(|o| settings.watcher(o))
        .collect();
    let status = settings.listen.as_ref().map(|_| {
        let interval = watchers
            .iter()
            .map(Watcher::interval)
            .min()
            .unwrap_or_default();
        Arc::new(
            Status::new(&watchers, interval, !settings.actions.list.is_empty())
                .with_ready_requires_latest(settings.ready_requires_latest),
        )
    });
    // Bound before the first check, so that a taken port is a startup
    // error, not a silent sidecar without probes.
    let _server = match (&settings.listen, &status) {
        (Some(address), Some(status)) => {
            let server = Server::start(address, status.clone(), ServerOptions::default())
                .map_err(|e| format!("--listen-address {address}: {e}"))?;
            log::info!(
                "serving /metrics, /healthz, /readyz and /status on http://{}",
                server.local_addr()
            );
            Some(server)
        }
        _ => None,
    };
    let runner = (!settings.actions.list.is_empty()).then(|| {
        let out = out.clone();
        let status = status.clone();
        ActionRunner::start(settings.actions.clone(), move |report| {
            if let Some(status) = &status {
                status.observe_action(&report);
            }
            // A failed round's retries are counted, and only their success
            // is printed: one failure, one event.
            if report.is_repeat() {
                return;
            }
            if let Some(text) = print.report(&report) {
                // After the tick that queued this round has printed its
                // events (it holds `order` until then).
                let _order = out.order.lock().unwrap_or_else(|e| e.into_inner());
                out.line(&text);
            }
        })
    });
    let until = UntilClosed {
        shutdown,
        out: &out,
    };
    Watcher::run_many(&mut watchers, &until, &mut |all, events| {
        // One round of actions per tick, however many directories changed:
        // for the last triggering event, carrying every directory's config.
        // Submitted before the events are printed: a slow or blocked
        // stdout never delays a reload, and once a change is printed its
        // round is queued. But the events come first on stdout and in
        // /status: they are observed before the round can start, and
        // `order` is held until they are printed, so a fast round's report
        // line (printed from the runner's thread) never precedes the
        // change it acts on.
        if let Some(status) = &status {
            for event in &events {
                status.observe(event);
            }
        }
        let _order = out.order.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(runner), Some(event)) = (
            &runner,
            events
                .iter()
                .rev()
                .find(|e| settings.actions.triggered_by(e)),
        ) {
            runner.submit(with_every_config(event.clone(), all));
        }
        for event in events {
            if let Some(text) = print.event(&event) {
                out.line(&text);
            }
        }
    });
    if let Some(runner) = runner
        && let Some(report) = runner.shutdown(settings.actions.shutdown_timeout)
    {
        if let Some(status) = &status {
            status.observe_action(&report);
        }
        if let Some(text) = print.report(&report) {
            out.line(&text);
        }
    }
    Ok(())
}

/// stdout, shared by the loop and the actions' callback: the one place a
/// closed stdout (the reader gone, as with `| head -n1`) is noticed.
struct Output<W> {
    out: Mutex<W>,
    /// Held by a tick from queuing its round until its events are
    /// printed, and by the round's report: a report line never comes
    /// before the change it is for.
    order: Mutex<()>,
    closed: AtomicBool,
    /// No actions: a closed stdout leaves nothing to do and ends the watch
    /// (see [`UntilClosed`]). With actions, they go on.
    ends_watch: bool,
}

impl<W: Write> Output<W> {
    /// Writes one line; once a write has failed, nothing more is tried.
    fn line(&self, text: &str) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if writeln!(out, "{text}").and_then(|()| out.flush()).is_err()
            && !self.closed.swap(true, Ordering::Relaxed)
            && !self.ends_watch
        {
            log::warn!("stdout is closed: events are no longer printed; actions go on");
        }
    }
}

/// The loop's wait: `shutdown`, or a closed stdout when there are no
/// actions (the reader has seen enough). The loop then returns as on
/// shutdown, and the tool exits 0 with everything dropped in order.
struct UntilClosed<'a, S, W> {
    shutdown: &'a S,
    out: &'a Output<W>,
}

impl<S: Wait, W> Wait for UntilClosed<'_, S, W> {
    fn wait(&self, timeout: Duration) -> bool {
        (self.out.ends_watch && self.out.closed.load(Ordering::Relaxed))
            || self.shutdown.wait(timeout)
    }
}

/// With several directories, an action's input is every directory's
/// current config, keyed by directory, not only the one that changed.
fn with_every_config(mut event: Event, all: &[Watcher]) -> Event {
    if all.len() > 1 {
        let every: serde_json::Map<String, serde_json::Value> = all
            .iter()
            .map(|w| {
                let config = w
                    .current()
                    .map_or(serde_json::Value::Null, |c| (**c).clone());
                (w.dir().to_string_lossy().into_owned(), config)
            })
            .collect();
        event.config = Some(Arc::new(serde_json::Value::Object(every)));
    }
    event
}

/// Prints the current config of each directory once; true if every one has
/// a valid one. With `--on-start`, then runs the actions once on it (every
/// directory's config) and is true only if they all succeed: the init
/// container's job.
pub fn once(settings: &Settings, out: &mut impl Write) -> bool {
    let mut watchers = Vec::new();
    let mut last_good = None;
    let mut ok = true;
    for options in &settings.watches {
        let mut watcher = settings.watcher(options);
        let event = once_for(&mut watcher, options);
        match settings.output {
            Print::Events(format) => {
                let _ = writeln!(out, "{}", event.render(format));
            }
            Print::Config => match (&event.config, &event.error) {
                (Some(config), None) => {
                    let pretty = serde_json::to_string_pretty(&**config).unwrap_or_default();
                    let _ = writeln!(out, "{pretty}");
                }
                _ => eprintln!(
                    "configmapwatch: {}",
                    event.error.as_deref().unwrap_or("no config")
                ),
            },
        }
        ok &= event.kind != EventKind::Error;
        if event.kind != EventKind::Error {
            last_good = Some(event);
        }
        watchers.push(watcher);
    }
    let _ = out.flush();
    match last_good {
        Some(event) if ok && settings.actions.on_start && !settings.actions.list.is_empty() => {
            run_once(settings, with_every_config(event, &watchers), out)
        }
        _ => ok,
    }
}

/// Runs one round of actions for `event`, not retried, and prints every
/// result: true if every action (and the confirmation) succeeded.
fn run_once(settings: &Settings, event: Event, out: &mut impl Write) -> bool {
    let reports = configmapwatch::actions::run_round_once(&settings.actions, event);
    for report in &reports {
        if let Some(text) = settings.output.report(report) {
            let _ = writeln!(out, "{text}");
        }
    }
    // A skipped confirmation follows a failure, which is already false.
    !reports.is_empty() && reports.iter().all(|r| r.ok)
}

fn once_for(watcher: &mut Watcher, options: &WatchOptions) -> Event {
    let deadline = Instant::now() + ONCE_SETTLE;
    loop {
        if let Some(event) = watcher.check() {
            return event;
        }
        let settled = Instant::now() >= deadline;
        let missing = watcher.layout() == Layout::Missing;
        let mut key = None;
        let mut version = "-".to_owned();
        let reason = if let Some(fault) = watcher.fault().filter(|_| missing || settled) {
            // Permission denied on the directory, or a passing fault that
            // did not pass within the settle time: named with the version
            // it keeps from being read, when that is known.
            key = fault.key.clone();
            if let Some(v) = &fault.version {
                version = v.clone();
            }
            fault.message.clone()
        } else if missing && !options.dir.exists() {
            format!("{}: directory does not exist", options.dir.display())
        } else if settled {
            format!(
                "{}: ..data stayed missing or the volume kept changing",
                options.dir.display()
            )
        } else {
            // A swap is under way (the Windows kubelet removes ..data
            // before re-creating it): look again shortly.
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        let mut event = Event::new(
            EventKind::Error,
            options.dir.as_path(),
            version.as_str(),
            SystemTime::now(),
        );
        event.key = key;
        event.error = Some(reason);
        return event;
    }
}
