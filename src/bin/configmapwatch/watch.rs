//! The watch command: the validated settings, the loop printing one
//! line per event to an output and handing good changes to the actions, and
//! `--once`.

use std::{
    io::Write,
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant, SystemTime},
};

use configmapwatch::{
    actions::{ActionRunner, Actions},
    event::{Event, EventKind, OutputFormat},
    volume::Layout,
    watcher::{ShutdownListener, WatchOptions, Watcher},
};

/// How long `--once` waits for a volume in the middle of a swap to settle.
const ONCE_SETTLE: Duration = Duration::from_secs(2);

/// Everything the watch command needs, already validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// What to watch: one entry per directory, in the order given.
    pub watches: Vec<WatchOptions>,
    /// How events are printed.
    pub output: OutputFormat,
    /// What to do on a change.
    pub actions: Actions,
}

/// Watches until `shutdown` fires, printing each event (and each action's
/// result) as one line, then waits for a running round of actions for at
/// most the shutdown timeout.
pub fn watch(settings: &Settings, shutdown: &ShutdownListener, out: impl Write + Send + 'static) {
    let format = settings.output;
    let out = Arc::new(Mutex::new(out));
    let runner = (!settings.actions.list.is_empty()).then(|| {
        let out = out.clone();
        ActionRunner::start(settings.actions.clone(), move |report| {
            line(&out, &report.render(format));
        })
    });
    let mut watchers: Vec<Watcher> = settings.watches.iter().cloned().map(Watcher::new).collect();
    Watcher::run_many(&mut watchers, shutdown, &mut |all, events| {
        // One round of actions per tick, however many directories changed:
        // for the last triggering event, carrying every directory's config.
        let mut round = None;
        for event in events {
            line(&out, &event.render(format));
            if settings.actions.triggered_by(&event) {
                round = Some(event);
            }
        }
        if let (Some(runner), Some(event)) = (&runner, round) {
            runner.submit(with_every_config(event, all));
        }
    });
    if let Some(runner) = runner {
        runner.shutdown(settings.actions.shutdown_timeout);
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

fn line(out: &Mutex<impl Write>, text: &str) {
    let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
    // A closed stdout must not stop the watcher: actions and logs go on.
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

/// Prints the current config of each directory once; true if every one has
/// a valid one.
pub fn once(settings: &Settings, out: &mut impl Write) -> bool {
    let mut ok = true;
    for options in &settings.watches {
        let event = once_for(options);
        let _ = writeln!(out, "{}", event.render(settings.output));
        ok &= event.kind != EventKind::Error;
    }
    ok
}

fn once_for(options: &WatchOptions) -> Event {
    let mut watcher = Watcher::new(options.clone());
    let deadline = Instant::now() + ONCE_SETTLE;
    loop {
        if let Some(event) = watcher.check() {
            return event;
        }
        let settled = Instant::now() >= deadline;
        let missing = watcher.layout() == Layout::Missing;
        let reason = if let Some(fault) = watcher.fault().filter(|_| missing || settled) {
            // Permission denied on the directory, or a passing fault that
            // did not pass within the settle time.
            fault.to_owned()
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
        return Event {
            kind: EventKind::Error,
            dir: options.dir.as_path().into(),
            version: "-".into(),
            previous_version: None,
            detected_at: SystemTime::now(),
            lag: None,
            config: None,
            key: None,
            error: Some(reason),
        };
    }
}
