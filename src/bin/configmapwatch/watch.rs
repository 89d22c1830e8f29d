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
    /// What to watch.
    pub watch: WatchOptions,
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
    let mut watcher = Watcher::new(settings.watch.clone());
    watcher.run(shutdown, &mut |event: Event| {
        line(&out, &event.render(format));
        if let Some(runner) = &runner
            && settings.actions.triggered_by(&event)
        {
            runner.submit(event);
        }
    });
    if let Some(runner) = runner {
        runner.shutdown(settings.actions.shutdown_timeout);
    }
}

fn line(out: &Mutex<impl Write>, text: &str) {
    let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
    // A closed stdout must not stop the watcher: actions and logs go on.
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

/// Prints the current config once; true if there is a valid one.
pub fn once(settings: &Settings, out: &mut impl Write) -> bool {
    let mut watcher = Watcher::new(settings.watch.clone());
    let deadline = Instant::now() + ONCE_SETTLE;
    let event = loop {
        if let Some(event) = watcher.check() {
            break event;
        }
        let settled = Instant::now() >= deadline;
        let missing = watcher.layout() == Layout::Missing;
        let reason = if let Some(fault) = watcher.fault().filter(|_| missing || settled) {
            // Permission denied on the directory, or a passing fault that
            // did not pass within the settle time.
            fault.to_owned()
        } else if missing && !settings.watch.dir.exists() {
            format!("{}: directory does not exist", settings.watch.dir.display())
        } else if settled {
            format!(
                "{}: ..data stayed missing or the volume kept changing",
                settings.watch.dir.display()
            )
        } else {
            // A swap is under way (the Windows kubelet removes ..data
            // before re-creating it): look again shortly.
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        break Event {
            kind: EventKind::Error,
            dir: settings.watch.dir.as_path().into(),
            version: "-".into(),
            previous_version: None,
            detected_at: SystemTime::now(),
            lag: None,
            config: None,
            key: None,
            error: Some(reason),
        };
    };
    let _ = writeln!(out, "{}", event.render(settings.output));
    event.kind != EventKind::Error
}
