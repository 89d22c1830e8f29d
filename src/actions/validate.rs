//! `--validate-exec`: the target's own checker (`promtool check config {}`,
//! `nginx -t -c {}`) run on a new version before it is accepted. `{}` is
//! the path of the version's data directory, or of the selected key's file
//! in it. A non-zero exit refuses the version with the checker's output;
//! the last good config stays and nothing is acted on.

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, SystemTime},
};

use serde_json::Value;

use super::{Exec, ExecError};
use crate::{
    Error,
    event::{Event, EventKind},
    volume::Snapshot,
};

/// A checker run on each new version before it is accepted.
#[derive(Debug, Clone)]
pub struct ValidateExec {
    exec: Exec,
    key: Option<String>,
    /// Asked while the checker runs: true stops it (shutdown).
    cancelled: fn() -> bool,
}

impl ValidateExec {
    /// `program args...` with `{}` in `args` standing for the version's
    /// path: the file of `key` when one key is selected, else the data
    /// directory. Killed after `timeout`.
    pub fn new(program: String, args: Vec<String>, key: Option<String>, timeout: Duration) -> Self {
        let mut exec = Exec::new(program, args);
        exec.timeout = timeout;
        exec.checker = true;
        ValidateExec {
            exec,
            key,
            cancelled: || false,
        }
    }

    /// Stops a running checker (SIGTERM to its process group) as soon as
    /// `cancelled` says so: a program shutting down does not wait for it.
    /// The version is then left unjudged, to be checked again.
    pub fn with_cancel(mut self, cancelled: fn() -> bool) -> Self {
        self.cancelled = cancelled;
        self
    }

    /// Hides `secrets` (see [`Secrets`](super::Secrets)) in what the
    /// checker writes: its refusal becomes an event on stdout and a log
    /// line.
    pub fn with_secrets(mut self, secrets: Vec<String>) -> Self {
        self.exec.secrets = secrets;
        self
    }

    /// The checker's program.
    pub fn program(&self) -> &str {
        &self.exec.program
    }

    /// Runs the checker on `snapshot` (read from `dir`), with `config` on
    /// its stdin as compact JSON. A refusal or a timeout is a content
    /// error ([`Error::Invalid`]); a checker that cannot be started (out of
    /// processes or file descriptors) is a passing fault, retried.
    pub fn check(&self, dir: &Path, snapshot: &Snapshot, config: &Value) -> Result<(), Error> {
        // Where the version was read from: in ConfigMap mode the versioned
        // directory itself, which never changes once swapped in (unlike
        // the paths through ..data); in plain mode the directory, or its
        // ..data where that is a directory (symlinks hidden).
        // On Linux, in ConfigMap mode, the checker gets the directory as a
        // handle we opened by its one name (no link followed), passed down
        // open: `/proc/self/fd/N`. A writer that swaps the version's
        // directory for a link to elsewhere after our read cannot redirect
        // what the checker reads, and relative includes (nginx's
        // `include`, Prometheus' `rule_files`) still resolve beside it.
        #[cfg(target_os = "linux")]
        let handle = pinned_dir(snapshot);
        #[cfg(target_os = "linux")]
        let data: PathBuf = match &handle {
            Some(fd) => PathBuf::from(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(fd)
            )),
            None => snapshot.data_dir.clone(),
        };
        #[cfg(not(target_os = "linux"))]
        let data = snapshot.data_dir.clone();
        let path: PathBuf = match &self.key {
            Some(key) => data.join(key),
            None => data,
        };
        let path_text = path.to_string_lossy();
        let mut exec = self.exec.clone();
        for arg in &mut exec.args {
            *arg = arg.replace("{}", &path_text);
        }
        let event = Event::new(
            EventKind::Change,
            dir,
            snapshot.version.as_str(),
            SystemTime::now(),
        );
        let slot = Mutex::new(None);
        let cancelled = self.cancelled;
        exec.run_with_config(&event, Some(config), dir, &slot, &cancelled)
            .map_err(|e| match e {
                // Said nothing about the version: passing faults, checked
                // again.
                ExecError::Start { source, .. } | ExecError::Wait { source, .. } => Error::Io {
                    path: PathBuf::from(&self.exec.program),
                    action: "cannot start the --validate-exec checker",
                    source,
                },
                ExecError::Interrupted { .. } => Error::Io {
                    path: PathBuf::from(&self.exec.program),
                    action: "the --validate-exec checker was stopped",
                    source: std::io::Error::new(std::io::ErrorKind::Interrupted, e.to_string()),
                },
                // A refusal, or a checker that never answered: the version
                // is refused.
                ExecError::Failed { .. } | ExecError::TimedOut { .. } => Error::Invalid {
                    key: self.key.clone(),
                    version: snapshot.version.clone(),
                    reason: format!("refused by --validate-exec ({}): {e}", self.exec.program),
                },
            })
    }
}

/// The version's data directory opened by its one name under its parent
/// (`O_NOFOLLOW`), without close-on-exec so that the checker inherits it:
/// `None` outside ConfigMap mode (a plain directory is the user's own) or
/// where it cannot be opened (the checker then gets the path, and a
/// vanished directory shows as its failure). The handle is closed when
/// dropped, after the checker has run; a command another thread starts
/// meanwhile may inherit it too, a read-only directory handle it does not
/// know of.
#[cfg(target_os = "linux")]
fn pinned_dir(snapshot: &Snapshot) -> Option<std::os::fd::OwnedFd> {
    use rustix::fs::{CWD, Mode, OFlags, openat};
    if snapshot.layout != crate::volume::Layout::ConfigMap {
        return None;
    }
    let parent = snapshot.data_dir.parent()?;
    let name = snapshot.data_dir.file_name()?;
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let dir = OFlags::RDONLY | OFlags::DIRECTORY;
    let parent_fd = openat(CWD, parent, dir | OFlags::CLOEXEC, Mode::empty()).ok()?;
    openat(&parent_fd, name, dir | OFlags::NOFOLLOW, Mode::empty()).ok()
}
