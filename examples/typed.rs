//! A typed YAML config shared by threads: each worker reads the current
//! config with `get()` (no lock) whenever it needs it; the main thread
//! waits for changes. A version that does not fit the type, or that the
//! validator refuses, is reported and the last good config stays.
//!
//! ```text
//! cargo run --example typed -- /path/to/volume [RUN_FOR]
//! ```
//!
//! The volume holds `config.yaml`, e.g.:
//!
//! ```yaml
//! greeting: hello
//! workers: 2
//! server:
//!   port: 8080
//! ```

use std::{
    thread,
    time::{Duration, Instant},
};

use configmapwatch::{Event, Live};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Server {
    port: u16,
}

#[derive(Debug, Deserialize)]
struct AppConfig {
    greeting: String,
    workers: usize,
    server: Server,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "/opt/config".into());
    let run_for = match args.next() {
        Some(d) => humantime::parse_duration(&d)?,
        None => Duration::MAX,
    };
    let deadline = Instant::now().checked_add(run_for);

    let config = Live::<AppConfig>::watch(&dir)
        .key("config.yaml")
        .interval(Duration::from_millis(200))
        .validate(|c: &AppConfig| match c.workers {
            1..=16 => Ok(()),
            n => Err(format!("workers must be 1 to 16, not {n}")),
        })
        .on_error(|e: &Event| {
            println!(
                "refused {}: {}",
                e.version,
                e.error.as_deref().unwrap_or("?")
            )
        })
        .start(Duration::from_secs(30))?;

    let first = config.get();
    println!(
        "started with {:?} on port {} ({} workers)",
        first.greeting, first.server.port, first.workers
    );

    for id in 0..2 {
        let config = config.clone();
        thread::spawn(move || {
            loop {
                // Each piece of work reads the config in force right now.
                let c = config.get();
                if id < c.workers {
                    println!("worker {id}: {} from port {}", c.greeting, c.server.port);
                }
                thread::sleep(Duration::from_secs(1));
            }
        });
    }

    let mut seen = first;
    loop {
        let wait = deadline.map_or(Duration::from_secs(3600), |d| {
            d.saturating_duration_since(Instant::now())
        });
        if wait.is_zero() {
            return Ok(());
        }
        if let Some(now) = config.wait_for_change(&seen, wait) {
            println!(
                "config changed ({}): {:?} on port {}",
                config.version(),
                now.greeting,
                now.server.port
            );
            seen = now;
        }
    }
}
