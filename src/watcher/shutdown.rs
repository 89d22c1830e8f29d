//! Ending a loop: the [`Wait`] between ticks, and the shutdown channel
//! ([`Shutdown`], [`ShutdownListener`]) that is the usual one.

use std::{sync::mpsc, time::Duration};

/// Ends a running [`Watcher::run`](super::Watcher::run). Cheap to clone; usable from a signal
/// handler's thread.
#[derive(Debug, Clone)]
pub struct Shutdown(mpsc::Sender<()>);

impl Shutdown {
    /// Asks the loop to stop; it returns within one check.
    pub fn trigger(&self) {
        let _ = self.0.send(());
    }
}

/// The loop's end of the shutdown channel.
///
/// Only [`Shutdown::trigger`] ends a loop. Dropping every [`Shutdown`]
/// handle does not (the listener keeps a sender of its own), so
/// `let (_, listener) = shutdown_channel();` gives a loop that runs until
/// the process ends, never one that stops after its first check.
#[derive(Debug)]
pub struct ShutdownListener {
    rx: mpsc::Receiver<()>,
    _keep_open: mpsc::Sender<()>,
}

impl ShutdownListener {
    /// Waits up to `timeout`; true when shutdown was asked for.
    pub fn wait(&self, timeout: Duration) -> bool {
        self.rx.recv_timeout(timeout).is_ok()
    }
}

/// What [`Watcher::run`](super::Watcher::run) and [`Watcher::run_many`](super::Watcher::run_many) wait on between ticks:
/// a timed wait that says whether to stop.
///
/// [`ShutdownListener`] is the usual one. A program can bring its own: the
/// command-line tool, on Linux, waits for its termination signals with
/// `sigtimedwait`, so that an idle tick is one `readlink` and that one
/// wait, with no signal-handling thread.
pub trait Wait {
    /// Waits up to `timeout`; true when the loop should end.
    fn wait(&self, timeout: Duration) -> bool;
}

impl Wait for ShutdownListener {
    fn wait(&self, timeout: Duration) -> bool {
        ShutdownListener::wait(self, timeout)
    }
}

/// A connected [`Shutdown`] handle and listener. Keep the handle (or a
/// clone) wherever the loop should be stopped from, e.g. a signal handler.
pub fn shutdown_channel() -> (Shutdown, ShutdownListener) {
    let (tx, rx) = mpsc::channel();
    let listener = ShutdownListener {
        rx,
        _keep_open: tx.clone(),
    };
    (Shutdown(tx), listener)
}
