//! The original demo as a program: an application that loads its config
//! from a ConfigMap volume and keeps it current while it runs. It logs its
//! config every 3 seconds, and says so when the config changes.
//!
//! ```text
//! cargo run --example demo -- /path/to/volume [RUN_FOR]
//! ```
//!
//! `RUN_FOR` (e.g. `10s`) stops it after that long; without it, it runs
//! until killed. Try it with `configmapwatch publish --dir /tmp/vol
//! --from-file config.json`, then publish again with a changed file.

use std::{sync::Arc, thread, time::Duration};

use configmapwatch::{Event, EventKind, Live};
use serde_json::Value;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "/opt/config".into());
    let run_for = args
        .next()
        .map(|d| humantime::parse_duration(&d))
        .transpose()?;

    let config = Live::<Value>::watch(&dir)
        .key("config.json")
        .interval(Duration::from_millis(200))
        .on_change(|_: &Arc<Value>, event: &Event| {
            if event.kind == EventKind::Change {
                println!("detected a config change; re-reading config.json");
            }
        })
        .on_error(|event: &Event| {
            eprintln!(
                "ignoring a bad config: {}",
                event.error.as_deref().unwrap_or("?")
            );
        })
        .start(Duration::from_secs(30))?;

    let started = std::time::Instant::now();
    loop {
        println!("config: {}", config.get());
        if run_for.is_some_and(|limit| started.elapsed() + Duration::from_secs(3) > limit) {
            return Ok(());
        }
        thread::sleep(Duration::from_secs(3));
    }
}
