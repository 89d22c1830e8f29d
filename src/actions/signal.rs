//! `--signal`: send a signal to a process given by `--pid`, `--pid-file`
//! or `--process-name` (the file read, or `/proc` scanned, on every change,
//! so a restarted process is found). Unix only; by name, Linux only.

use std::path::PathBuf;

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

    fn pid(&self) -> Result<u32, String> {
        match &self.target {
            PidSource::Pid(pid) => Ok(*pid),
            PidSource::File(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                text.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|pid| *pid > 0)
                    .ok_or_else(|| {
                        format!(
                            "{} does not hold a process id: {:?}",
                            path.display(),
                            text.trim()
                        )
                    })
            }
            PidSource::Name(name) => super::process::find_process(name)
                .map(|p| p.pid)
                .map_err(|e| e.to_string()),
        }
    }

    pub(crate) fn send(&self) -> Result<(), String> {
        let pid = self.pid()?;
        #[cfg(unix)]
        {
            let target = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
                .ok_or_else(|| format!("invalid process id {pid}"))?;
            rustix::process::kill_process(target, self.signal).map_err(|e| {
                let hint = match e {
                    rustix::io::Errno::PERM => {
                        " (signalling another container's process needs shareProcessNamespace: true \
                         and the same user, or the CAP_KILL capability)"
                    }
                    rustix::io::Errno::SRCH => " (no such process: is the pid file stale?)",
                    _ => "",
                };
                format!("cannot send {} to pid {pid}: {e}{hint}", self.name)
            })
        }
        #[cfg(not(unix))]
        Err(format!(
            "cannot send {} to pid {pid}: not supported",
            self.name
        ))
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
}
