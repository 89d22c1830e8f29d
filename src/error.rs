//! The library's error type: every error names the path or key it concerns
//! and keeps the underlying cause as its `source`.

use std::{io, path::PathBuf};

/// Everything that can go wrong while reading, parsing or writing a volume.
///
/// Errors fall in two groups (see [`Error::is_retryable`]): passing states of
/// a volume that is being written (try again on the next tick), and problems
/// with the content itself (reported once per version; the last good config
/// stays in force).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation failed on `path`.
    #[error("{path}: {action}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What was being done, e.g. "cannot read".
        action: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The volume directory does not exist (yet).
    #[error("{path}: directory does not exist")]
    DirMissing {
        /// The volume directory.
        path: PathBuf,
    },
    /// `..data` is missing in a ConfigMap volume: the Windows-style swap is
    /// under way, or the volume has not been written yet.
    #[error("{path}: ..data is missing (a swap is in progress or the volume is not written yet)")]
    DataLinkMissing {
        /// The `..data` path.
        path: PathBuf,
    },
    /// `..data` points somewhere a kubelet never points it.
    #[error("{path}: refusing ..data target {target:?}: {reason}")]
    BadTarget {
        /// The `..data` path.
        path: PathBuf,
        /// The target as read (lossily decoded).
        target: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// An entry of the data directory was refused (not a regular file, too
    /// large, unreadable name).
    #[error("key {key}: {reason}")]
    Refused {
        /// The key (path relative to the data directory).
        key: String,
        /// Why it was refused, e.g. "is a FIFO, not a regular file".
        reason: String,
    },
    /// A key could not be read.
    #[error("key {key}: cannot read {path}")]
    ReadKey {
        /// The key.
        key: String,
        /// The file's full path.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The configured key is not in the volume.
    #[error("key {key} not found in {version}")]
    MissingKey {
        /// The key that was asked for.
        key: String,
        /// The version that lacks it.
        version: String,
    },
    /// A key holds invalid JSON.
    #[error("key {key}: invalid JSON at line {line}, column {column}: {message}")]
    Json {
        /// The key.
        key: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// The parser's message, without the position.
        message: String,
    },
    /// A text key (in `--all-keys` mode) is not UTF-8.
    #[error("key {key}: not valid UTF-8 text (binary keys cannot be carried in the config object)")]
    NotText {
        /// The key.
        key: String,
    },
    /// The volume changed under the reader on every attempt.
    #[error("{path}: the volume kept changing while being read ({attempts} attempts)")]
    Unstable {
        /// The volume directory.
        path: PathBuf,
        /// How many consistent reads were tried.
        attempts: u32,
    },
    /// A key name cannot be written (writer side).
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// Windows refused to create a symlink.
    #[error(
        "{path}: Windows refused to create a symlink; enable Developer Mode (Settings > System > For developers) or run as administrator"
    )]
    SymlinkPrivilege {
        /// The link that could not be created.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// True for passing states of a volume being written: the next attempt
    /// may well succeed, so the watcher retries instead of reporting.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::DataLinkMissing { .. } | Error::Unstable { .. } | Error::DirMissing { .. }
        )
    }

    /// The key this error concerns, when there is one (`..data` for a bad
    /// target).
    pub fn key(&self) -> Option<&str> {
        match self {
            Error::Refused { key, .. }
            | Error::ReadKey { key, .. }
            | Error::MissingKey { key, .. }
            | Error::Json { key, .. }
            | Error::NotText { key }
            | Error::InvalidKey { key, .. } => Some(key),
            Error::BadTarget { .. } | Error::DataLinkMissing { .. } => Some("..data"),
            _ => None,
        }
    }

    /// The message with every cause appended: `a: b: c`.
    pub fn chain(&self) -> String {
        error_chain(self)
    }

    pub(crate) fn io(path: impl Into<PathBuf>, action: &'static str, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            action,
            source,
        }
    }
}

/// Any error's message with every cause appended: `a: b: c`.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
