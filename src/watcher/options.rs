//! What to watch and how: [`WatchOptions`] and the [`LayoutMode`] it may
//! force.

use std::{path::PathBuf, time::Duration};

use crate::{format::Selector, volume};

/// What to watch and how; the validated form of the command line. Built
/// with [`WatchOptions::new`] and the `with_*` methods (fields may be
/// added).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WatchOptions {
    /// The volume directory.
    pub dir: PathBuf,
    /// Which key (or all keys) make up the config.
    pub selector: Selector,
    /// Time between checks.
    pub interval: Duration,
    /// Files larger than this are refused.
    pub max_file_size: u64,
    /// The keys read in one version add up to at most this.
    pub max_total_size: u64,
    /// Which layout the directory is watched in ([`LayoutMode::Auto`]: as
    /// it is).
    pub layout: LayoutMode,
    /// How long a passing fault (EACCES, EIO, a checker that cannot start)
    /// is retried quietly before it is also reported as an error event.
    pub fault_grace: Duration,
}

/// The default [`WatchOptions::fault_grace`]: a swap under way or a
/// momentary EMFILE is over well before; a fault that lasts this long is
/// worth telling.
pub const DEFAULT_FAULT_GRACE: Duration = Duration::from_secs(3);

/// Which layout a directory is watched in: as it is (the default), or
/// forced. Where the filesystem hides symlinks, or where reading plain
/// files must never happen, force one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LayoutMode {
    /// As the directory is: ConfigMap mode while `..data` is a symlink;
    /// plain mode over `<dir>/..data` while it is a real directory (a
    /// filesystem that hides symlinks: SMB, some FUSE mounts, Wine, where
    /// one warning says so); plain mode over the directory itself when it
    /// has no `..data`.
    #[default]
    Auto,
    /// ConfigMap mode only: a directory without `..data` waits for it, and
    /// a `..data` that is not a symlink is reported once as an error and
    /// waited on. Plain files are never read.
    ConfigMap,
    /// Plain mode only: `<dir>/..data` when it exists, as a directory or
    /// through the symlink (followed on each look, so on a kubelet volume
    /// each update is seen once, as a change of content), otherwise the
    /// directory itself. An update's keys may be read across two versions,
    /// and with no swap time there is no lag.
    Plain,
}

impl WatchOptions {
    /// Options for `dir` with the defaults: `config.json`, 1 s, 16 MiB.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        WatchOptions {
            dir: dir.into(),
            selector: Selector::default(),
            interval: Duration::from_secs(1),
            max_file_size: volume::DEFAULT_MAX_FILE_SIZE,
            max_total_size: volume::DEFAULT_MAX_TOTAL_SIZE,
            layout: LayoutMode::Auto,
            fault_grace: DEFAULT_FAULT_GRACE,
        }
    }

    /// How long a passing fault is retried quietly (with backoff) before it
    /// is also reported as an error event for the version it keeps from
    /// being read. The fault is still retried after; its recovery is a
    /// `change` event.
    pub fn with_fault_grace(mut self, grace: Duration) -> Self {
        self.fault_grace = grace;
        self
    }

    /// Which layout the directory is watched in: [`LayoutMode::Auto`] (the
    /// default) follows what `..data` is; the others force a mode.
    pub fn with_layout(mut self, layout: LayoutMode) -> Self {
        self.layout = layout;
        self
    }

    /// Which key(s) make up the config, and how they are parsed.
    pub fn with_selector(mut self, selector: Selector) -> Self {
        self.selector = selector;
        self
    }

    /// Time between checks.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Files larger than this are refused.
    pub fn with_max_file_size(mut self, bytes: u64) -> Self {
        self.max_file_size = bytes;
        self
    }

    /// The keys read in one version add up to at most this.
    pub fn with_max_total_size(mut self, bytes: u64) -> Self {
        self.max_total_size = bytes;
        self
    }

    /// The same options for another directory.
    pub fn with_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = dir.into();
        self
    }
}
