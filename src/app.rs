//! Running the watch command: the validated settings, the loop printing one
//! line per event to an output, and `--once`.

use std::{
    io::Write,
    thread,
    time::{Duration, Instant, SystemTime},
};

use crate::{
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
}

/// Watches until `shutdown` fires, printing each event as one line.
pub fn watch(settings: &Settings, shutdown: &ShutdownListener, out: &mut impl Write) {
    let mut watcher = Watcher::new(settings.watch.clone());
    let format = settings.output;
    watcher.run(shutdown, &mut |event: Event| print(out, &event, format));
}

/// Prints the current config once; true if there is a valid one.
pub fn once(settings: &Settings, out: &mut impl Write) -> bool {
    let mut watcher = Watcher::new(settings.watch.clone());
    let deadline = Instant::now() + ONCE_SETTLE;
    let event = loop {
        if let Some(event) = watcher.check() {
            break event;
        }
        let reason = if watcher.layout() == Layout::Missing {
            "directory does not exist"
        } else if Instant::now() >= deadline {
            "..data stayed missing or the volume kept changing"
        } else {
            // A swap is under way (the Windows kubelet removes ..data
            // before re-creating it): look again shortly.
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        break Event {
            kind: EventKind::Error,
            version: "-".into(),
            previous_version: None,
            detected_at: SystemTime::now(),
            lag: None,
            config: None,
            key: None,
            error: Some(format!("{}: {reason}", settings.watch.dir.display())),
        };
    };
    print(out, &event, settings.output);
    event.kind != EventKind::Error
}

fn print(out: &mut impl Write, event: &Event, format: OutputFormat) {
    // A closed stdout must not stop the watcher: actions and logs go on.
    let _ = writeln!(out, "{}", event.render(format)).and_then(|()| out.flush());
}
