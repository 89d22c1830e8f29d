//! `configmapwatch demo`: the whole job on a built-in example, with no
//! cluster. It writes a temporary volume the kubelet's way, watches it in a
//! thread, publishes three updates (a key added, invalid JSON, a fix) and
//! prints what the watcher detects and how long after each swap.

use std::{
    io::Write,
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use serde_json::json;

use configmapwatch::{
    event::{Event, EventKind},
    watcher::{WatchOptions, Watcher, shutdown_channel},
    writer::{AtomicWriter, Outcome, Payload},
};

/// The demo's poll interval.
const INTERVAL: Duration = Duration::from_millis(100);
/// How long to wait for each detection before calling the demo failed.
const DEADLINE: Duration = Duration::from_secs(10);

type DemoResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Runs the demo, writing its story to `out`.
pub fn run(out: &mut impl Write) -> DemoResult {
    let volume = tempfile::Builder::new()
        .prefix("configmapwatch-demo-")
        .tempdir()?;
    let writer = AtomicWriter::new(volume.path());
    let mut config = json!({
        "THIS": "is a test",
        "HERE": "is another test",
        "KEY": "here's another key",
        "ANOTHER": "and yet another key"
    });
    let publish = |text: &str| -> DemoResult<String> {
        let mut payload = Payload::new();
        payload.insert("config.json", text)?;
        match writer.write(&payload)? {
            Outcome::Written { version, .. } => Ok(version),
            other => Err(format!("publish did not swap: {other:?}").into()),
        }
    };

    writeln!(
        out,
        "demo: a ConfigMap volume written the kubelet's way at {}",
        volume.path().display()
    )?;
    let first = publish(&serde_json::to_string_pretty(&config)?)?;

    let options = WatchOptions::new(volume.path()).with_interval(INTERVAL);
    writeln!(
        out,
        "demo: watching config.json, polling ..data every {}",
        humantime::format_duration(INTERVAL)
    )?;
    let (events_tx, events) = mpsc::channel();
    let (shutdown, listener) = shutdown_channel();
    let watcher = thread::spawn(move || {
        let mut events_tx = events_tx;
        Watcher::new(options).run(&listener, &mut events_tx)
    });

    report(out, &events, &first, EventKind::Initial)?;

    writeln!(
        out,
        "demo: update 1: add a key to config.json (as `kubectl edit cm test-config` would)"
    )?;
    config["NEW"] = json!("a key added while running");
    let v1 = publish(&serde_json::to_string_pretty(&config)?)?;
    report(out, &events, &v1, EventKind::Change)?;

    writeln!(
        out,
        "demo: update 2: break the JSON (a missing quote on line 3)"
    )?;
    let v2 = publish("{\n  \"THIS\": \"is a test\",\n  \"HERE: \"oops\"\n}\n")?;
    let error = report(out, &events, &v2, EventKind::Error)?;
    if error.config.as_deref() != Some(&config) {
        return Err("the last good config was not kept after an invalid update".into());
    }
    writeln!(
        out,
        "demo:   -> rejected; the last good config stays in force"
    )?;

    writeln!(out, "demo: update 3: fix it and change a value")?;
    config["THIS"] = json!("is a fixed test");
    let v3 = publish(&serde_json::to_string_pretty(&config)?)?;
    let fixed = report(out, &events, &v3, EventKind::Change)?;
    if fixed.config.as_deref() != Some(&config) {
        return Err("the fixed config was not the one reported".into());
    }

    shutdown.trigger();
    watcher.join().map_err(|_| "the watcher thread panicked")?;
    writeln!(
        out,
        "demo: done: 3 updates published, 3 detected (one rejected), no restarts"
    )?;
    Ok(())
}

/// Prints events until the one for `version` of kind `kind` arrives.
fn report(
    out: &mut impl Write,
    events: &mpsc::Receiver<Event>,
    version: &str,
    kind: EventKind,
) -> DemoResult<Event> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = events.recv_timeout(left).map_err(|_| {
            format!(
                "no {} event for {version} within {DEADLINE:?}",
                kind.as_str()
            )
        })?;
        writeln!(out, "{}", event.to_text())?;
        if event.version == version && event.kind == kind {
            if let Some(lag) = event.lag.filter(|_| kind != EventKind::Initial) {
                let bound = if lag.resolution.is_some() {
                    "at most "
                } else {
                    ""
                };
                writeln!(
                    out,
                    "demo:   -> {} detected {bound}{:.1} ms after the swap",
                    kind.as_str(),
                    lag.max_ms()
                )?;
            }
            return Ok(event);
        }
    }
}
