//! # configmapwatch
//!
//! Keeps a program's configuration in step with a Kubernetes ConfigMap (or
//! Secret, projected, downwardAPI) volume by polling `readlink(..data)`,
//! without inotify.
//!
//! - [`volume`] reads a mounted volume into consistent [`Snapshot`]s.
//! - [`format`] turns a snapshot into the config (JSON, YAML, TOML, text).
//! - [`watcher`] is the poll loop: [`Watcher::check`] is one tick,
//!   [`Watcher::run`] loops until a [`Shutdown`] fires.
//! - [`writer`] writes a volume exactly as the kubelet does (`publish`).
//!
//! ```no_run
//! use configmapwatch::{WatchOptions, Watcher, shutdown_channel};
//!
//! let mut watcher = Watcher::new(WatchOptions::new("/opt/config"));
//! let (shutdown, listener) = shutdown_channel();
//! // Keep `shutdown` somewhere (e.g. a signal handler) to stop the loop.
//! watcher.run(&listener, &mut |event: configmapwatch::Event| {
//!     println!("{}", event.to_text());
//! });
//! # drop(shutdown);
//! ```
#![deny(missing_docs)]

#[cfg(feature = "actions")]
pub mod actions;
mod error;
pub mod event;
pub mod format;
pub mod live;
pub mod volume;
pub mod watcher;
pub mod writer;

pub use error::{Error, ErrorKind, Result, error_chain};
pub use event::{Event, EventKind, OutputFormat};
pub use format::{Format, Position, Selector};
pub use live::{Live, LiveBuilder, LiveDriver};
pub use volume::{Layout, ReadStep, Snapshot, Volume};
pub use watcher::{
    EventHandler, Heartbeat, Shutdown, ShutdownListener, Validator, WatchOptions, Watcher,
    shutdown_channel,
};
pub use writer::{AtomicWriter, Outcome, Payload, Step, Swap};

/// The README's code examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
