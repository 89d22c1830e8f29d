//! `--signal`: send a signal to a process given by `--pid`, `--pid-file`
//! or `--process-name` (the file read, or `/proc` scanned, on every change,
//! so a restarted process is found). Unix only; by name, Linux only.

use std::{fmt, io, path::PathBuf};

use super::process::FindError;

/// Why a signal was not sent, by cause: the caller decides by variant (a
/// pid file not written yet passes; a refused `kill` needs a deployment
/// change). The messages name the pid file or the process, never more.
#[derive(Debug)]
#[non_exhaustive]
pub enum SignalError {
    /// The pid file cannot be read (not written yet, permissions).
    PidFile {
        /// The pid file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The pid file holds no process id.
    NotAPid {
        /// The pid file.
        path: PathBuf,
        /// What it holds, trimmed.
        text: String,
    },
    /// No process, or several, of the name given.
    Find(FindError),
    /// The process id is not one `kill` takes.
    InvalidPid(u32),
    /// `kill` failed: no such process (a stale pid file), or not allowed
    /// (another container's process without a shared process namespace).
    Send {
        /// The signal, e.g. `SIGHUP`.
        signal: String,
        /// The process id.
        pid: u32,
        /// Why (ESRCH, EPERM).
        source: io::Error,
    },
    /// Signals do not exist on this system.
    Unsupported {
        /// The signal.
        signal: String,
        /// The process id.
        pid: u32,
    },
}

impl SignalError {
    /// Whether a later attempt may succeed without a change of settings: a
    /// pid file not (re)written yet, a process not running (yet, or
    /// between restarts). A refused `kill` (EPERM) or an unsupported
    /// system is not.
    pub fn is_transient(&self) -> bool {
        match self {
            SignalError::PidFile { .. } | SignalError::NotAPid { .. } | SignalError::Find(_) => {
                true
            }
            SignalError::Send { source, .. } => source.kind() != io::ErrorKind::PermissionDenied,
            SignalError::InvalidPid(_) | SignalError::Unsupported { .. } => false,
        }
    }
}

impl fmt::Display for SignalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignalError::PidFile { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            SignalError::NotAPid { path, text } => {
                write!(f, "{} does not hold a process id: {text:?}", path.display())
            }
            SignalError::Find(e) => e.fmt(f),
            SignalError::InvalidPid(pid) => write!(f, "invalid process id {pid}"),
            SignalError::Send {
                signal,
                pid,
                source,
            } => {
                #[cfg(unix)]
                let hint = match source
                    .raw_os_error()
                    .map(rustix::io::Errno::from_raw_os_error)
                {
                    Some(rustix::io::Errno::PERM) => {
                        " (signalling another container's process needs shareProcessNamespace: true \
                         and the same user, or the CAP_KILL capability)"
                    }
                    Some(rustix::io::Errno::SRCH) => " (no such process: is the pid file stale?)",
                    _ => "",
                };
                #[cfg(not(unix))]
                let hint = "";
                write!(f, "cannot send {signal} to pid {pid}: {source}{hint}")
            }
            SignalError::Unsupported { signal, pid } => {
                write!(f, "cannot send {signal} to pid {pid}: not supported")
            }
        }
    }
}

impl std::error::Error for SignalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SignalError::PidFile { source, .. } | SignalError::Send { source, .. } => Some(source),
            SignalError::Find(e) => Some(e),
            SignalError::NotAPid { .. }
            | SignalError::InvalidPid(_)
            | SignalError::Unsupported { .. } => None,
        }
    }
}

/// Where the process id comes from.
#[derive(Debug, Clone)]
pub enum PidSource {
    /// A fixed process id.
    Pid(u32),
    /// A file holding the process id, read at each signal.
    File(PathBuf),
    /// The one process of this name, looked up in `/proc` at each signal
    /// ([`find_process`](super::process::find_process): zero or several
    /// matches fail the action, naming what was found). Linux only.
    Name(String),
}

/// A signal to send on each change.
#[derive(Debug, Clone)]
pub struct SignalAction {
    name: String,
    #[cfg(unix)]
    signal: rustix::process::Signal,
    target: PidSource,
}

#[cfg(unix)]
const SIGNALS: &[(&str, rustix::process::Signal)] = {
    use rustix::process::Signal;
    &[
        ("HUP", Signal::HUP),
        ("INT", Signal::INT),
        ("QUIT", Signal::QUIT),
        ("USR1", Signal::USR1),
        ("USR2", Signal::USR2),
        ("TERM", Signal::TERM),
        ("WINCH", Signal::WINCH),
        ("ALRM", Signal::ALARM),
        ("CONT", Signal::CONT),
        ("KILL", Signal::KILL),
    ]
};

impl SignalAction {
    /// A signal by name (`HUP`, `SIGUSR1`, ...) for `target`.
    #[cfg(unix)]
    pub fn new(name: &str, target: PidSource) -> Result<Self, String> {
        if let Some(refused) = unsupported_here(std::env::consts::OS, &target) {
            return Err(refused);
        }
        let upper = name.to_ascii_uppercase();
        let short = upper.strip_prefix("SIG").unwrap_or(&upper);
        let (name, signal) = SIGNALS.iter().find(|(n, _)| *n == short).ok_or_else(|| {
            let names: Vec<_> = SIGNALS.iter().map(|(n, _)| *n).collect();
            format!(
                "unknown signal {name:?}; expected one of {}",
                names.join(", ")
            )
        })?;
        Ok(SignalAction {
            name: format!("SIG{name}"),
            signal: *signal,
            target,
        })
    }

    /// Signals do not exist on Windows: refused at startup, like
    /// [`unsupported_here`]'s cases.
    #[cfg(not(unix))]
    pub fn new(name: &str, target: PidSource) -> Result<Self, String> {
        let _ = (name, target);
        Err("--signal is not supported on Windows; use --exec or --webhook-url instead".into())
    }

    /// `SIGHUP to pid 42` or `SIGHUP to the pid in /run/app.pid`.
    pub fn describe(&self) -> String {
        match &self.target {
            PidSource::Pid(pid) => format!("{} to pid {pid}", self.name),
            PidSource::File(path) => format!("{} to the pid in {}", self.name, path.display()),
            PidSource::Name(name) => format!("{} to the process named {name}", self.name),
        }
    }

    fn pid(&self) -> Result<u32, SignalError> {
        match &self.target {
            PidSource::Pid(pid) => Ok(*pid),
            PidSource::File(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| SignalError::PidFile {
                        path: path.clone(),
                        source,
                    })?;
                text.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|pid| *pid > 0)
                    .ok_or_else(|| SignalError::NotAPid {
                        path: path.clone(),
                        text: text.trim().to_owned(),
                    })
            }
            PidSource::Name(name) => super::process::find_process(name)
                .map(|p| p.pid)
                .map_err(SignalError::Find),
        }
    }

    /// [`try_send`](Self::try_send), its error as the text an action's
    /// report carries.
    pub(crate) fn send(&self) -> Result<(), String> {
        self.try_send().map_err(|e| e.to_string())
    }

    /// Sends the signal to the process the target names now.
    pub(crate) fn try_send(&self) -> Result<(), SignalError> {
        let pid = self.pid()?;
        #[cfg(unix)]
        {
            let target = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
                .ok_or(SignalError::InvalidPid(pid))?;
            rustix::process::kill_process(target, self.signal).map_err(|e| SignalError::Send {
                signal: self.name.clone(),
                pid,
                source: e.into(),
            })
        }
        #[cfg(not(unix))]
        Err(SignalError::Unsupported {
            signal: self.name.clone(),
            pid,
        })
    }
}

/// What `os` cannot do for `target`, refused at startup rather than on
/// every change: finding a process by name reads Linux's /proc, which
/// macOS and the BSDs do not have.
#[cfg(unix)]
fn unsupported_here(os: &str, target: &PidSource) -> Option<String> {
    let os = match os {
        "linux" => return None,
        "macos" => "macOS",
        other => other,
    };
    matches!(target, PidSource::Name(_)).then(|| {
        format!("--process-name is not supported on {os}; use --pid or --pid-file instead")
    })
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn process_name_is_refused_at_startup_where_there_is_no_proc() {
        let name = PidSource::Name("nginx".into());
        assert_eq!(
            unsupported_here("macos", &name).as_deref(),
            Some("--process-name is not supported on macOS; use --pid or --pid-file instead")
        );
        assert!(unsupported_here("freebsd", &name).is_some());
        assert_eq!(unsupported_here("linux", &name), None);
        assert_eq!(unsupported_here("macos", &PidSource::Pid(1)), None);
        // On this platform, the constructor says the same.
        let made = SignalAction::new("HUP", name);
        assert_eq!(
            made.is_err(),
            unsupported_here(std::env::consts::OS, &PidSource::Name("x".into())).is_some()
        );
    }

    fn to(target: PidSource) -> SignalAction {
        SignalAction::new("HUP", target).unwrap()
    }

    #[test]
    fn a_pid_file_not_written_yet_passes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.pid");
        let e = to(PidSource::File(path.clone())).try_send().unwrap_err();
        assert!(matches!(e, SignalError::PidFile { .. }), "{e:?}");
        assert!(e.is_transient());
        assert!(
            e.to_string()
                .starts_with(&format!("cannot read {}: ", path.display())),
            "{e}"
        );
        std::fs::write(&path, " nginx\n").unwrap();
        let e = to(PidSource::File(path.clone())).try_send().unwrap_err();
        assert!(matches!(e, SignalError::NotAPid { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!("{} does not hold a process id: \"nginx\"", path.display())
        );
    }

    #[test]
    fn a_process_that_is_gone_is_named_with_a_hint() {
        // Above any pid_max (2^22 at most): no such process.
        let e = to(PidSource::Pid(i32::MAX as u32)).try_send().unwrap_err();
        assert!(matches!(e, SignalError::Send { .. }), "{e:?}");
        assert!(e.is_transient());
        let message = e.to_string();
        assert!(
            message.starts_with(&format!("cannot send SIGHUP to pid {}: ", i32::MAX)),
            "{message}"
        );
        assert!(
            message.ends_with(" (no such process: is the pid file stale?)"),
            "{message}"
        );
        let e = to(PidSource::Pid(u32::MAX)).try_send().unwrap_err();
        assert_eq!(e.to_string(), format!("invalid process id {}", u32::MAX));
        assert!(!e.is_transient());
    }
}
