//! A tokio service reading its live config: request handling reads the
//! current config with `get()`, and a task awaits changes on the
//! `tokio::sync::watch` stream (feature `tokio`).
//!
//! ```text
//! cargo run --example tokio_service -- /path/to/volume [RUN_FOR]
//! ```
//!
//! The volume holds `config.toml`, e.g. `greeting = "hello"`.

use std::time::Duration;

use configmapwatch::Live;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Config {
    greeting: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "/opt/config".into());
    let run_for = match args.next() {
        Some(d) => humantime::parse_duration(&d)?,
        None => Duration::from_secs(u32::MAX.into()),
    };

    // Starting blocks until the first good config: do it off the runtime.
    let config = tokio::task::spawn_blocking(move || {
        Live::<Config>::watch(dir)
            .key("config.toml")
            .interval(Duration::from_millis(200))
            .start(Duration::from_secs(30))
    })
    .await??;
    println!("serving with greeting {:?}", config.get().greeting);

    let mut changes = config.subscribe();
    let reloads = tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            let now = changes.borrow_and_update().clone();
            println!("reloaded: greeting is now {:?}", now.greeting);
        }
    });

    let serve = async {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            // A "request": uses the config in force when it arrives.
            println!("request handled: {}", config.get().greeting);
        }
    };
    let _ = tokio::time::timeout(run_for, serve).await;
    drop(config);
    // Dropping the last handle stops watching, which ends the stream.
    reloads.await?;
    Ok(())
}
