//! The library's error type: every error names the path or key it concerns
//! and keeps the underlying cause as its `source`.

use std::{io, path::PathBuf};

use crate::format::{Format, Position};

/// Everything that can go wrong while reading, parsing or writing a volume.
///
/// Every error says what kind it is ([`Error::kind`]): a problem with a
/// version's content (it sticks to that version), a passing fault (retried on
/// the next tick), or a mistake in what the writer was asked to do.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed on `path`.
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What was being done, e.g. "cannot read".
        action: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
    /// The volume directory does not exist (yet).
    DirMissing {
        /// The volume directory.
        path: PathBuf,
    },
    /// `..data` is missing in a ConfigMap volume: the Windows-style swap is
    /// under way, or the volume has not been written yet.
    DataLinkMissing {
        /// The `..data` path.
        path: PathBuf,
    },
    /// `..data` points somewhere a kubelet never points it.
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
    Refused {
        /// The key (path relative to the data directory).
        key: String,
        /// Why it was refused, e.g. "is a FIFO, not a regular file".
        reason: String,
    },
    /// A certificate, its key or a trust bundle cannot be used (feature
    /// `rustls`): bad PEM, a key that does not match the leaf, a leaf that
    /// is expired or not yet valid.
    Certificate {
        /// The key at fault (`tls.crt`, `tls.key`, `ca.crt`).
        key: String,
        /// Why, naming the certificate where there is one.
        reason: String,
    },
    /// The volume as a whole is refused: over the entry, depth or total-size
    /// caps that keep memory and time bounded on a hostile volume.
    VolumeRefused {
        /// The directory read.
        path: PathBuf,
        /// Why, naming the cap.
        reason: String,
    },
    /// A key could not be read.
    ReadKey {
        /// The key.
        key: String,
        /// The file's full path.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The configured key is not in the volume.
    MissingKey {
        /// The key that was asked for.
        key: String,
        /// The version that lacks it.
        version: String,
        /// The keys the version does hold (for the message).
        present: Vec<String>,
    },
    /// A key's content does not parse in its format, or does not fit the
    /// typed config (then the message starts with the field path, e.g.
    /// `server.port: invalid type: string "x", expected u16`).
    Parse {
        /// The key.
        key: String,
        /// The format it was read as.
        format: Format,
        /// Where in the key, when the format says (always for syntax
        /// errors; not for a mismatch found in a multi-key object).
        position: Option<Position>,
        /// The parser's message, without the position.
        message: String,
    },
    /// A key's content parses, but holds a value JSON cannot carry (an
    /// infinite or NaN float). A typed config takes it
    /// ([`Live`](crate::Live)); events, webhooks and `--exec` cannot.
    Unrepresentable {
        /// The key.
        key: String,
        /// The format it was read as.
        format: Format,
        /// Where the value is.
        position: Option<Position>,
        /// The field path and the value.
        message: String,
    },
    /// A key's format cannot be told from its extension, or is not built
    /// in.
    Format {
        /// The key.
        key: String,
        /// Why, and how to choose a format.
        reason: String,
    },
    /// A validator ([`LiveBuilder::validate`](crate::LiveBuilder::validate)
    /// or `--validate-exec`) refused the version.
    Invalid {
        /// The key at fault: the one key selected, if one is.
        key: Option<String>,
        /// The version refused.
        version: String,
        /// The validator's message.
        reason: String,
    },
    /// No good config arrived in time (a [`Live`](crate::Live) starting).
    NoConfig {
        /// The volume directory.
        path: PathBuf,
        /// How long it waited.
        waited: std::time::Duration,
        /// The last error seen meanwhile, if any.
        last_error: Option<String>,
    },
    /// A text key (in `--all-keys` mode) is not UTF-8.
    NotText {
        /// The key.
        key: String,
    },
    /// The volume changed under the reader on every attempt.
    Unstable {
        /// The volume directory.
        path: PathBuf,
        /// How many consistent reads were tried.
        attempts: u32,
    },
    /// Strict environment substitution ([`crate::render::substitute_env`]):
    /// a `$(VAR)` or `${VAR}` in a key names a variable that is not set.
    UnsetVariable {
        /// The key.
        key: String,
        /// The first unset variable.
        variable: String,
        /// The 1-based line of its first reference in the key.
        line: usize,
        /// How many references to unset variables the key holds in all.
        unresolved: usize,
    },
    /// Environment substitution ([`crate::render::substitute_allowed`]): a
    /// `$(VAR)` or `${VAR}` names a variable the render may not use (not
    /// in its allow-list, or one of the tool's own `CONFIGMAPWATCH_*`,
    /// which can hold its credentials).
    VariableNotAllowed {
        /// The key.
        key: String,
        /// The first variable refused.
        variable: String,
        /// The 1-based line of its first reference in the key.
        line: usize,
        /// How many references the key holds that were left unresolved.
        unresolved: usize,
    },
    /// A key name cannot be written (writer side).
    InvalidKey {
        /// The key as given.
        key: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// A `..data_tmp` left by a writer that died between its last two
    /// steps blocks every later write, as it does the kubelet's.
    StaleLink {
        /// The stale `..data_tmp`.
        path: PathBuf,
    },
    /// Windows refused to create a symlink.
    SymlinkPrivilege {
        /// The link that could not be created.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
}

/// What kind of error it is, which decides what the watcher does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The version's content cannot be used (bad syntax, a missing key, a
    /// refused file type, a file over the cap, a bad `..data` target). It
    /// sticks to that version: reported once, the last good config stays,
    /// and only a new version is read again.
    Content,
    /// A passing fault (EMFILE, EIO, a swap under way, the directory not
    /// there yet): never taken as a verdict on the version, which is read
    /// again on the next tick.
    Transient,
    /// The writer was asked for something it cannot do (an invalid key,
    /// no symlink privilege).
    Usage,
}

impl Error {
    /// What kind of error this is. Every variant is named here, so a new
    /// one cannot be added without deciding its kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { .. }
            | Error::DirMissing { .. }
            | Error::DataLinkMissing { .. }
            | Error::ReadKey { .. }
            | Error::Unstable { .. }
            | Error::NoConfig { .. } => ErrorKind::Transient,
            Error::BadTarget { .. }
            | Error::VolumeRefused { .. }
            | Error::Refused { .. }
            | Error::Certificate { .. }
            | Error::MissingKey { .. }
            | Error::Parse { .. }
            | Error::Unrepresentable { .. }
            | Error::Format { .. }
            | Error::Invalid { .. }
            | Error::NotText { .. }
            | Error::UnsetVariable { .. }
            | Error::VariableNotAllowed { .. } => ErrorKind::Content,
            Error::InvalidKey { .. } | Error::SymlinkPrivilege { .. } | Error::StaleLink { .. } => {
                ErrorKind::Usage
            }
        }
    }

    /// True for passing faults: the next attempt may well succeed.
    pub fn is_transient(&self) -> bool {
        self.kind() == ErrorKind::Transient
    }

    /// The key this error concerns, when there is one (`..data` for a bad
    /// target).
    pub fn key(&self) -> Option<&str> {
        match self {
            Error::Refused { key, .. }
            | Error::Certificate { key, .. }
            | Error::ReadKey { key, .. }
            | Error::MissingKey { key, .. }
            | Error::Parse { key, .. }
            | Error::Unrepresentable { key, .. }
            | Error::Format { key, .. }
            | Error::NotText { key }
            | Error::UnsetVariable { key, .. }
            | Error::VariableNotAllowed { key, .. }
            | Error::InvalidKey { key, .. } => Some(key),
            Error::Invalid { key, .. } => key.as_deref(),
            Error::BadTarget { .. } | Error::DataLinkMissing { .. } => Some("..data"),
            // Named, not `_`, so that a new variant must decide its key.
            Error::Io { .. }
            | Error::DirMissing { .. }
            | Error::VolumeRefused { .. }
            | Error::NoConfig { .. }
            | Error::Unstable { .. }
            | Error::StaleLink { .. }
            | Error::SymlinkPrivilege { .. } => None,
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

// The messages too long to stand in their match arm.
const DATA_LINK_MISSING: &str =
    "..data is missing (a swap is in progress or the volume is not written yet)";
const NOT_TEXT: &str = "not valid UTF-8 text (binary keys cannot be carried in the config object)";
const STALE_LINK: &str = "left by a writer that died mid-write; like the kubelet, refusing to \
     write until it is removed (publish --repair removes it)";
const NO_SYMLINK_PRIVILEGE: &str = "Windows refused to create a symlink; enable Developer Mode \
     (Settings > System > For developers) or run as administrator";

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io { path, action, .. } => write!(f, "{}: {action}", path.display()),
            Error::DirMissing { path } => write!(f, "{}: directory does not exist", path.display()),
            Error::DataLinkMissing { path } => at_path(f, path, DATA_LINK_MISSING),
            Error::BadTarget {
                path,
                target,
                reason,
            } => at_path(
                f,
                path,
                format_args!("refusing ..data target {target:?}: {reason}"),
            ),
            Error::Refused { key, reason } | Error::Certificate { key, reason } => {
                for_key(f, Some(key), reason)
            }
            Error::Format { key, reason } => for_key(f, Some(key), reason),
            // The version is the event's; the message says what to fix.
            Error::Invalid { key, reason, .. } => for_key(f, key.as_deref(), reason),
            Error::VolumeRefused { path, reason } => write!(f, "{}: {reason}", path.display()),
            Error::ReadKey { key, path, .. } => {
                write!(f, "key {key}: cannot read {}", path.display())
            }
            Error::MissingKey {
                key,
                version,
                present,
            } => missing_key(f, key, version, present),
            Error::Parse {
                key,
                format,
                position,
                message,
            } => {
                let what = format_args!("key {key}: invalid {format}");
                at_position(f, what, *position, message)
            }
            Error::Unrepresentable {
                key,
                format,
                position,
                message,
            } => {
                let what = format_args!("key {key}: {format} value JSON cannot carry");
                at_position(f, what, *position, message)
            }
            Error::NoConfig {
                path,
                waited,
                last_error,
            } => no_config(f, path, *waited, last_error.as_deref()),
            Error::NotText { key } => write!(f, "key {key}: {NOT_TEXT}"),
            Error::Unstable { path, attempts } => at_path(
                f,
                path,
                format_args!("the volume kept changing while being read ({attempts} attempts)"),
            ),
            Error::UnsetVariable {
                key,
                variable,
                line,
                unresolved,
            } => unresolved_variable(f, key, *line, variable, "is not set", *unresolved),
            Error::VariableNotAllowed {
                key,
                variable,
                line,
                unresolved,
            } => {
                let why = not_allowed_because(variable);
                unresolved_variable(f, key, *line, variable, why, *unresolved)
            }
            Error::InvalidKey { key, reason } => write!(f, "invalid key {key:?}: {reason}"),
            Error::StaleLink { path } => at_path(f, path, STALE_LINK),
            Error::SymlinkPrivilege { path, .. } => at_path(f, path, NO_SYMLINK_PRIVILEGE),
        }
    }
}

/// `key {key}: {reason}`, or the reason alone when no key is concerned.
fn for_key(f: &mut std::fmt::Formatter<'_>, key: Option<&str>, reason: &str) -> std::fmt::Result {
    match key {
        Some(key) => write!(f, "key {key}: {reason}"),
        None => f.write_str(reason),
    }
}

/// `key ... not found in ...`, with the keys the version holds (the first
/// ten), so that a typo shows.
fn missing_key(
    f: &mut std::fmt::Formatter<'_>,
    key: &str,
    version: &str,
    present: &[String],
) -> std::fmt::Result {
    write!(f, "key {key} not found in {version}")?;
    match present.len() {
        0 => write!(f, " (it holds no keys)"),
        n if n <= 10 => write!(f, " (its keys: {})", present.join(", ")),
        n => write!(
            f,
            " (its keys: {}, and {} more)",
            present[..10].join(", "),
            n - 10
        ),
    }
}

/// `{path}: {what}`: the shape of every error about a path.
fn at_path(
    f: &mut std::fmt::Formatter<'_>,
    path: &std::path::Path,
    what: impl std::fmt::Display,
) -> std::fmt::Result {
    write!(f, "{}: {what}", path.display())
}

/// A parse error: what, where (when the format says), then the parser's
/// message.
fn at_position(
    f: &mut std::fmt::Formatter<'_>,
    what: std::fmt::Arguments<'_>,
    position: Option<Position>,
    message: &str,
) -> std::fmt::Result {
    f.write_fmt(what)?;
    if let Some(Position { line, column }) = position {
        write!(f, ", at line {line} column {column}")?;
    }
    write!(f, ": {message}")
}

/// No good config in time, with the last error seen, if any.
fn no_config(
    f: &mut std::fmt::Formatter<'_>,
    path: &std::path::Path,
    waited: std::time::Duration,
    last_error: Option<&str>,
) -> std::fmt::Result {
    write!(
        f,
        "{}: no good config within {}",
        path.display(),
        humantime::format_duration(waited)
    )?;
    match last_error {
        Some(e) => write!(f, " (last error: {e})"),
        None => Ok(()),
    }
}

/// Why a `$(VAR)` reference may not be substituted.
fn not_allowed_because(variable: &str) -> &'static str {
    if variable.starts_with(crate::render::OWN_PREFIX) {
        "is the tool's own and never substituted"
    } else {
        "is not in the render's allow-list (--render-env-allow)"
    }
}

/// A `$(VAR)` reference not substituted, `why`, and how many others were
/// not either.
fn unresolved_variable(
    f: &mut std::fmt::Formatter<'_>,
    key: &str,
    line: usize,
    variable: &str,
    why: &str,
    unresolved: usize,
) -> std::fmt::Result {
    write!(
        f,
        "key {key}: line {line}: environment variable {variable} {why}"
    )?;
    match unresolved.saturating_sub(1) {
        0 => Ok(()),
        1 => write!(f, " (and 1 more unresolved reference)"),
        n => write!(f, " (and {n} more unresolved references)"),
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. }
            | Error::ReadKey { source, .. }
            | Error::SymlinkPrivilege { source, .. } => Some(source),
            // Named, not `_`, so that a new variant must decide its source.
            Error::DirMissing { .. }
            | Error::DataLinkMissing { .. }
            | Error::BadTarget { .. }
            | Error::Refused { .. }
            | Error::Certificate { .. }
            | Error::VolumeRefused { .. }
            | Error::MissingKey { .. }
            | Error::Parse { .. }
            | Error::Unrepresentable { .. }
            | Error::Format { .. }
            | Error::Invalid { .. }
            | Error::NoConfig { .. }
            | Error::NotText { .. }
            | Error::Unstable { .. }
            | Error::UnsetVariable { .. }
            | Error::VariableNotAllowed { .. }
            | Error::InvalidKey { .. }
            | Error::StaleLink { .. } => None,
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
