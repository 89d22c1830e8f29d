//! # configmapwatch
//!
//! Keeps a program's configuration in step with a Kubernetes ConfigMap (or
//! Secret, projected, downwardAPI) volume by polling `readlink(..data)`,
//! without inotify.
//!
//! ## A typed config, live
//!
//! [`Live<T>`](Live) watches on a thread of its own; [`Live::get`] returns
//! the current `Arc<T>` without a lock, from any number of threads: it is
//! lock-free (never waits for the watching thread), not wait-free (cloning
//! the `Arc` contends on its count with the other readers).
//!
//! ```no_run
//! use std::time::Duration;
//! use configmapwatch::Live;
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Config {
//!     greeting: String,
//!     server: Server,
//! }
//! #[derive(Deserialize)]
//! struct Server {
//!     port: u16,
//! }
//!
//! let config = Live::<Config>::watch("/opt/config")
//!     .key("config.yaml")
//!     .validate(|c: &Config| if c.server.port == 0 { Err("port 0".into()) } else { Ok(()) })
//!     .start(Duration::from_secs(30))?; // waits for the first good config
//! let now = config.get();
//! println!("{} on port {}", now.greeting, now.server.port);
//! // Blocks until the next accepted version (or use on_change).
//! let _next = config.wait_for_change(&now, Duration::from_secs(60));
//! # Ok::<(), configmapwatch::Error>(())
//! ```
//!
//! Deserializing into `T` and the validator are part of accepting a
//! version: one that does not fit is an error event naming the key, the
//! field path, the line and the column, and the last good `T` stays. The
//! thread stops when the last handle is dropped.
//!
//! ### What counts as a change
//!
//! A `Live` holds the last *accepted* version. Each accepted version is a
//! new value, a new `Arc<T>`: it wakes [`Live::wait_for_change`] and
//! `Live::changed` (both compare with the `seen` you pass by identity,
//! `Arc::ptr_eq`, not by content), marks the value changed for every
//! `Live::subscribe` receiver (seen, as tokio's `watch` has it, once
//! `changed().await` or `borrow_and_update()` has returned), and calls
//! `on_change`. The watcher accepts a version when its config differs from
//! the current one, *or when the version before it was refused*: a bad
//! version and then a good one equal to the last good config does wake
//! waiters, with a new `Arc` equal to the one they hold, so that whoever
//! reacted to the error learns it is over. A new version with an equal
//! config and no refusal between is not a change: nothing wakes, and
//! [`Live::version`] still names the version the value came from. A
//! refused version (an error event, `on_error`) and a passing fault (read
//! again next tick) wake nothing. Waiters see the latest value only: two
//! versions accepted before a waiter runs wake it once.
//!
//! ## Async
//!
//! With the `tokio` feature, `Live::subscribe` gives a
//! `tokio::sync::watch::Receiver<Arc<T>>` (and `Live::changed(&seen)` is
//! an `async fn`):
//!
//! ```no_run
//! # #[derive(serde::Deserialize)] struct Config { greeting: String }
//! # async fn serve() -> Result<(), configmapwatch::Error> {
//! # use std::time::Duration;
//! // start() blocks until the first config: call it before the runtime,
//! // or in spawn_blocking.
//! let config = configmapwatch::Live::<Config>::watch("/opt/config")
//!     .key("config.toml")
//!     .start(Duration::from_secs(30))?;
//! let mut changes = config.subscribe();
//! while changes.changed().await.is_ok() {
//!     let now = changes.borrow_and_update().clone();
//!     println!("greeting is now {}", now.greeting);
//! }
//! # Ok(()) }
//! ```
//!
//! ## Your own loop
//!
//! The untyped [`Watcher`]: [`Watcher::check`] is one tick (an idle tick is
//! one `readlink` and no allocation), [`Watcher::run`] loops until a
//! [`Shutdown`] fires. The wait between ticks is any [`Wait`]: a program
//! that already blocks its termination signals can wait on them instead of
//! a channel, as the command-line tool does on Linux with `sigtimedwait`.
//!
//! ```no_run
//! use configmapwatch::{WatchOptions, Watcher, shutdown_channel};
//!
//! let mut watcher = Watcher::new(WatchOptions::new("/opt/config"));
//! let (shutdown, listener) = shutdown_channel();
//! // Keep `shutdown` (e.g. in a signal handler): only `trigger()` ends the
//! // loop; dropping it does not.
//! watcher.run(&listener, &mut |event: configmapwatch::Event| {
//!     println!("{}", event.to_text());
//! });
//! # drop(shutdown);
//! ```
//!
//! ## Modules and formats
//!
//! - [`volume`] reads a mounted volume into consistent [`Snapshot`]s.
//! - [`mod@format`] turns a snapshot into the config: `.json`, `.yaml`/`.yml`
//!   (feature `yaml`), `.toml` (feature `toml`) or text, by extension or
//!   [`Selector::with_format`]; every parse error names key, line, column.
//! - [`gzip`]: keys starting with `1f 8b` are decompressed before parsing
//!   (feature `gzip`), within a cap that refuses gzip bombs.
//! - [`watcher`] is the poll loop; [`live`] the typed handle.
//! - [`writer`] writes a volume exactly as the kubelet does (`publish`).
//! - [`jitter`] spreads a fleet's reactions to a change over a window
//!   (random, or a stable offset per StatefulSet ordinal).
//! - `tls` (feature `rustls`): a live rustls server certificate and trust
//!   store from a Secret volume, the certificate and key read as one pair.
//! - [`render`] writes a config to a plain file (or directory) atomically,
//!   for programs that read one file, with optional `$(VAR)` substitution.
//!
//! Features: `yaml`, `toml`, `gzip` (on with the default `cli`; opt-in for
//! the library), `tokio`, `rustls`, `actions`, `cli`.
//!
//! The stable API is [`Live`] and [`Watcher`] with their options and
//! builders ([`LiveBuilder`], [`LiveDriver`], [`WatchOptions`], [`Wait`],
//! [`Shutdown`]) and [`Event`]. The other modules ([`volume`],
//! [`mod@format`], [`render`], [`writer`], `actions`, `serve`) are building
//! blocks: public because the tool, its tests and some programs use them,
//! but shaped by the tool and more likely to change between releases.
//!
//! ## Known limitations
//!
//! - **Windows allocates on every tick**: reading `..data` goes through
//!   `std::fs::read_link`, which returns a new `PathBuf`. The idle tick of
//!   one `readlink` and no allocation holds on Unix.
//! - **Plain mode** (no `..data`, or `..data` a plain directory) sees a
//!   change by each file's size, full-precision mtime and inode, and
//!   confirms it by content only while the mtime is within its timestamp
//!   window of the look (100 ms, or 2 s for whole-second timestamps: git's
//!   "racy clean" rule). A same-size rewrite in place that keeps or
//!   restores the mtime after that window, or on a filesystem whose clock
//!   ticks coarser than the window, goes unseen until something else
//!   changes. Nothing marks a version in plain mode, so one tick may read
//!   an update's keys across it (one key old, another new); the next tick
//!   reads the rest.
//! - **FUSE**: the kernel caches a FUSE mount's attributes and entries
//!   (`attr_timeout`, `entry_timeout`; symlink targets too where the
//!   server allows it), so a swap can be seen only once that cache
//!   expires, later than the interval says. On Linux each key's size is
//!   fetched with `statx(AT_STATX_FORCE_SYNC)` when it is read (one round
//!   trip to the FUSE server per file read, none on an idle tick); on
//!   other systems, and on a kernel or sandbox without `statx`, the cached
//!   size is used, which can cut a file read short: an invalid version.
//! - **Hidden symlinks** (SMB, some FUSE mounts, Wine): `..data` shows as
//!   a directory, which is watched as plain files, with plain mode's
//!   limits above and no swap time (no lag).
#![deny(missing_docs)]

#[cfg(feature = "actions")]
pub mod actions;
mod error;
pub mod event;
pub mod format;
pub mod gzip;
pub mod jitter;
pub mod live;
pub mod render;
#[cfg(feature = "serve")]
pub mod serve;
#[cfg(feature = "rustls")]
pub mod tls;
pub mod volume;
pub mod watcher;
pub mod writer;

pub use error::{Error, ErrorKind, Result, error_chain};
pub use event::{Event, EventKind, Lag, OutputFormat};
pub use format::{Format, Position, Selector, YamlSchema};
pub use live::{Live, LiveBuilder, LiveDriver};
pub use volume::{Layout, ReadStep, Snapshot, Volume};
pub use watcher::{
    Commit, EventHandler, Fault, FaultState, Heartbeat, LayoutMode, Shutdown, ShutdownListener,
    Validator, Wait, WatchOptions, Watcher, shutdown_channel,
};
pub use writer::{AtomicWriter, Outcome, Payload, Step, Swap};

/// The README's code examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
