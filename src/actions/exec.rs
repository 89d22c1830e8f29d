//! `--exec`: run a command with the new config on stdin and the version in
//! its environment. Its stdout goes to our stderr (stdout carries events);
//! the tail of its stderr is logged.
//!
//! A command is bounded in time (`--exec-timeout`: then its whole process
//! group is killed) and in memory (only the last [`STDERR_TAIL`] bytes of
//! its stderr are kept). A command that leaves a background process holding
//! its pipes open costs nothing after it exits: on Unix one thread feeds
//! its stdin and reads its output with `poll`, and closes our ends of the
//! pipes [`DRAIN_GRACE`] after the command exits, so no thread is left
//! parked on a pipe the background process holds.

use std::{
    collections::VecDeque,
    io,
    path::Path,
    process::{Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::event::Event;

/// How much of a command's stderr is kept for the log.
const STDERR_TAIL: usize = 2048;

/// After the command exits, how long its stderr is still read: what it
/// wrote last, not what a background child it left behind writes later.
const DRAIN_GRACE: Duration = Duration::from_millis(200);

/// After a shutdown's SIGTERM, how long a command's group has to exit
/// before SIGKILL.
const STOP_GRACE: Duration = Duration::from_millis(500);

/// Why a command did not succeed: what kind of failure, in its type, so
/// that a checker that could not start (a passing fault) is never told
/// from a refusal by its message.
#[derive(Debug)]
#[non_exhaustive]
pub enum ExecError {
    /// It could not be started (out of processes or descriptors, not
    /// found).
    Start {
        /// The program.
        program: String,
        /// Why.
        source: io::Error,
    },
    /// Still running at its timeout: its process group was killed.
    TimedOut {
        /// The program.
        program: String,
        /// The timeout.
        after: Duration,
    },
    /// Stopped because the tool is shutting down.
    Interrupted {
        /// The program.
        program: String,
    },
    /// Waiting for it failed.
    Wait {
        /// The program.
        program: String,
        /// Why.
        source: io::Error,
    },
    /// It exited unsuccessfully.
    Failed {
        /// The program.
        program: String,
        /// How it exited.
        status: std::process::ExitStatus,
        /// The tail of what it wrote (the last line, or all of a
        /// checker's tail), secrets hidden.
        output: String,
    },
}

impl std::fmt::Display for ExecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExecError::Start { program, source } => write!(f, "cannot start {program}: {source}"),
            ExecError::TimedOut { program, after } => write!(
                f,
                "{program} timed out after {} and was killed (--exec-timeout)",
                humantime::format_duration(*after)
            ),
            ExecError::Interrupted { program } => write!(
                f,
                "{program} was interrupted: shutting down (SIGTERM sent to its process group)"
            ),
            ExecError::Wait { program, source } => {
                write!(f, "cannot wait for {program}: {source}")
            }
            ExecError::Failed {
                program,
                status,
                output,
            } if output.is_empty() => write!(f, "{program} {status}"),
            ExecError::Failed {
                program,
                status,
                output,
            } => write!(f, "{program} {status}: {output}"),
        }
    }
}

impl std::error::Error for ExecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ExecError::Start { source, .. } | ExecError::Wait { source, .. } => Some(source),
            ExecError::TimedOut { .. }
            | ExecError::Interrupted { .. }
            | ExecError::Failed { .. } => None,
        }
    }
}

/// A command to run on each change.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Exec {
    /// The program (looked up in `PATH`).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Killed (with its process group) if still running after this.
    pub timeout: Duration,
    /// Strings to hide in the logged stderr tail (and a checker's refusal),
    /// should the command print them: [`Secrets::values`](super::Secrets)
    /// of every secret-bearing setting, not only the webhooks'.
    pub secrets: Vec<String>,
    /// A checker's run (`--validate-exec`): its stdout is kept with its
    /// stderr, and a failure carries the whole tail, not the last line.
    pub(crate) checker: bool,
}

impl Exec {
    /// `program` with `args`, a 30 s timeout and nothing to hide.
    pub fn new(program: impl Into<String>, args: Vec<String>) -> Self {
        Exec {
            program: program.into(),
            args,
            timeout: Duration::from_secs(30),
            secrets: Vec::new(),
            checker: false,
        }
    }

    /// Runs the command for `event`. `cancelled` is asked every few
    /// milliseconds while it runs: once it says so (shutdown), the
    /// command's process group is sent SIGTERM (SIGKILL after
    /// [`STOP_GRACE`]) and the run ends as [`ExecError::Interrupted`].
    pub(crate) fn run(
        &self,
        event: &Event,
        dir: &Path,
        child_slot: &Mutex<Option<u32>>,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<(), ExecError> {
        self.run_with_config(event, event.config.as_deref(), dir, child_slot, cancelled)
    }

    /// [`run`](Self::run), with the config given apart from the event: a
    /// checker sees a config not yet accepted, which is written to its
    /// stdin from where it lies rather than copied into an event first (a
    /// copy as large as the config, issue 20).
    pub(crate) fn run_with_config(
        &self,
        event: &Event,
        config: Option<&serde_json::Value>,
        dir: &Path,
        child_slot: &Mutex<Option<u32>>,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<(), ExecError> {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .env("CONFIGMAPWATCH_VERSION", &event.version)
            .env(
                "CONFIGMAPWATCH_PREVIOUS_VERSION",
                event.previous_version.as_deref().unwrap_or(""),
            )
            .env("CONFIGMAPWATCH_DIR", dir)
            .env("CONFIGMAPWATCH_EVENT", event.kind.as_str())
            .stdin(Stdio::piped())
            .stdout(if self.checker {
                Stdio::piped()
            } else {
                Stdio::from(io::stderr())
            })
            .stderr(Stdio::piped());
        // Every secret-bearing setting's variable, from the one registry
        // (the confirmation URL once slipped through a list of our own).
        for setting in super::SECRET_SETTINGS {
            command.env_remove(setting.env);
        }
        // Its own process group: a timeout kills what it started too.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        // No signal blocked: a program that blocks its termination signals
        // in every thread (the tool does, to wait for them between ticks)
        // would otherwise pass its mask on, and the command (and what it
        // starts) could not be stopped with SIGTERM.
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: between fork and exec, only async-signal-safe calls
            // on a set on this stack: sigemptyset and pthread_sigmask.
            unsafe {
                command.pre_exec(|| {
                    let mut none = std::mem::zeroed::<libc::sigset_t>();
                    libc::sigemptyset(&mut none);
                    match libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) {
                        0 => Ok(()),
                        e => Err(io::Error::from_raw_os_error(e)),
                    }
                });
            }
        }
        let mut child = command.spawn().map_err(|e| ExecError::Start {
            program: self.program.clone(),
            source: e,
        })?;
        *child_slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(child.id());

        let config = config.map(|c| c.to_string()).unwrap_or_default();
        let deadline = Instant::now() + self.timeout;
        let (status, tail) = pipes::drive(&mut child, config.into_bytes(), deadline, cancelled);
        *child_slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let program = || self.program.clone();
        let status = status.map_err(|e| match e {
            pipes::Ended::TimedOut => ExecError::TimedOut {
                program: program(),
                after: self.timeout,
            },
            pipes::Ended::Interrupted => ExecError::Interrupted { program: program() },
            pipes::Ended::Wait(source) => ExecError::Wait {
                program: program(),
                source,
            },
        });
        let tail = self.scrub(tail.text());
        if !tail.is_empty() && !self.checker {
            log::info!("exec {}: stderr (tail): {tail}", self.program);
        }
        let status = status?;
        if status.success() {
            Ok(())
        } else {
            let output = match self.checker {
                true => tail.as_str(),
                false => tail.lines().last().unwrap_or(""),
            };
            Err(ExecError::Failed {
                program: self.program.clone(),
                status,
                output: output.to_owned(),
            })
        }
    }

    /// Hides our secrets in text the command wrote (it may have printed
    /// its environment or a URL it was given).
    fn scrub(&self, text: String) -> String {
        super::secrets::scrub(&self.secrets, &text)
    }
}

/// Feeding a command's stdin and reading its output until it exits (and
/// a short grace after), on the calling thread where the platform can
/// poll pipes.
mod pipes {
    use std::{
        io,
        process::{Child, ExitStatus},
        time::Instant,
    };

    use super::{DRAIN_GRACE, STOP_GRACE, Tail, stop_group};

    /// Why no exit status came.
    pub(super) enum Ended {
        /// The deadline passed: the group was killed.
        TimedOut,
        /// Cancelled (shutdown): the group was sent SIGTERM, then SIGKILL
        /// if it outlived [`STOP_GRACE`].
        Interrupted,
        /// Waiting for the child failed.
        Wait(io::Error),
    }

    /// Feeds `input`, keeps the tail of stderr (and of stdout, when
    /// piped), waits for the exit until `deadline` (then kills the group),
    /// and reads what is left for at most [`DRAIN_GRACE`] after the exit.
    #[cfg(unix)]
    pub(super) fn drive(
        child: &mut Child,
        input: Vec<u8>,
        deadline: Instant,
        cancelled: &dyn Fn() -> bool,
    ) -> (Result<ExitStatus, Ended>, Tail) {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        use std::os::fd::{AsFd, OwnedFd};

        let nonblocking = |fd: OwnedFd| {
            // A pipe we cannot make non-blocking is not read: better no
            // log tail than a thread parked on it.
            rustix::io::ioctl_fionbio(&fd, true).ok().map(|()| fd)
        };
        let mut stdin = child.stdin.take().map(OwnedFd::from).and_then(nonblocking);
        let mut outputs: Vec<OwnedFd> = [
            child.stderr.take().map(OwnedFd::from),
            child.stdout.take().map(OwnedFd::from),
        ]
        .into_iter()
        .flatten()
        .filter_map(nonblocking)
        .collect();
        let mut written = 0;
        let mut tail = Tail::default();
        let mut chunk = [0u8; 4096];
        let mut exited: Option<(ExitStatus, Instant)> = None;
        // Polls at most this long between looks at the child.
        let step = Timespec {
            tv_sec: 0,
            tv_nsec: 5_000_000,
        };
        loop {
            if exited.is_none() {
                match child.try_wait() {
                    Ok(Some(status)) => exited = Some((status, Instant::now() + DRAIN_GRACE)),
                    Ok(None) if Instant::now() >= deadline => {
                        stop_group(child.id(), true);
                        let _ = child.wait();
                        return (Err(Ended::TimedOut), tail);
                    }
                    Ok(None) if cancelled() => {
                        interrupt(child);
                        return (Err(Ended::Interrupted), tail);
                    }
                    Ok(None) => {}
                    Err(e) => return (Err(Ended::Wait(e)), tail),
                }
            }
            if let Some((status, grace)) = exited {
                // What the command itself wrote is read; a background
                // process it left may hold the pipes for long: our ends
                // close here, with the input nobody will read.
                if outputs.is_empty() || Instant::now() >= grace {
                    return (Ok(status), tail);
                }
                stdin = None;
            }
            let mut fds: Vec<PollFd<'_>> = outputs
                .iter()
                .map(|fd| PollFd::new(fd, PollFlags::IN))
                .collect();
            if let Some(fd) = &stdin {
                fds.push(PollFd::new(fd, PollFlags::OUT));
            }
            if poll(&mut fds, Some(&step)).is_err() {
                continue; // EINTR: look again
            }
            let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
            drop(fds);
            let mut closed = Vec::new();
            for (i, fd) in outputs.iter().enumerate() {
                if !ready[i] {
                    continue;
                }
                loop {
                    match rustix::io::read(fd.as_fd(), &mut chunk) {
                        Ok(0) => {
                            closed.push(i);
                            break;
                        }
                        Ok(n) => tail.push(&chunk[..n]),
                        Err(rustix::io::Errno::INTR) => {}
                        Err(rustix::io::Errno::AGAIN) => break,
                        Err(_) => {
                            closed.push(i);
                            break;
                        }
                    }
                }
            }
            for i in closed.into_iter().rev() {
                outputs.remove(i);
            }
            if let Some(fd) = stdin.as_ref().filter(|_| ready[ready.len() - 1]) {
                match rustix::io::write(fd.as_fd(), &input[written..]) {
                    Ok(n) => written += n,
                    Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
                    // EPIPE: the command closed its stdin unread.
                    Err(_) => written = input.len(),
                }
                if written >= input.len() {
                    stdin = None; // EOF for the command
                }
            }
        }
    }

    /// SIGTERM to the group, then SIGKILL if it has not exited within
    /// [`STOP_GRACE`]; reaped either way.
    fn interrupt(child: &mut Child) {
        stop_group(child.id(), false);
        let until = Instant::now() + STOP_GRACE;
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        stop_group(child.id(), true);
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Without `poll` on pipes (Windows): a thread feeds stdin and one
    /// reads each output, and reading stops being waited for
    /// [`DRAIN_GRACE`] after the exit.
    #[cfg(not(unix))]
    pub(super) fn drive(
        child: &mut Child,
        input: Vec<u8>,
        deadline: Instant,
        cancelled: &dyn Fn() -> bool,
    ) -> (Result<ExitStatus, Ended>, Tail) {
        use std::{
            io::{Read, Write},
            sync::{Arc, Mutex},
            thread,
            time::Duration,
        };
        let mut stdin = child.stdin.take().expect("stdin is piped");
        thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let tail = Arc::new(Mutex::new(Tail::default()));
        let read_into_tail = |mut from: Box<dyn Read + Send>| {
            let tail = tail.clone();
            thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = from.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    tail.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(&chunk[..n]);
                }
            })
        };
        let readers: Vec<_> = [
            child.stderr.take().map(|e| read_into_tail(Box::new(e))),
            child.stdout.take().map(|o| read_into_tail(Box::new(o))),
        ]
        .into_iter()
        .flatten()
        .collect();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if Instant::now() >= deadline => {
                    stop_group(child.id(), true);
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(Ended::TimedOut);
                }
                Ok(None) if cancelled() => {
                    interrupt(child);
                    break Err(Ended::Interrupted);
                }
                Ok(None) => thread::sleep(Duration::from_millis(5)),
                Err(e) => break Err(Ended::Wait(e)),
            }
        };
        let grace = Instant::now() + DRAIN_GRACE;
        while !readers.iter().all(|r| r.is_finished()) && Instant::now() < grace {
            thread::sleep(Duration::from_millis(2));
        }
        let tail = std::mem::take(&mut *tail.lock().unwrap_or_else(|e| e.into_inner()));
        (status, tail)
    }
}

/// The last [`STDERR_TAIL`] bytes of a stream.
#[derive(Debug, Default)]
struct Tail(VecDeque<u8>);

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        let keep = &bytes[bytes.len().saturating_sub(STDERR_TAIL)..];
        let overflow = (self.0.len() + keep.len()).saturating_sub(STDERR_TAIL);
        self.0.drain(..overflow);
        self.0.extend(keep);
    }

    fn text(&self) -> String {
        let (a, b) = self.0.as_slices();
        let mut bytes = a.to_vec();
        bytes.extend_from_slice(b);
        String::from_utf8_lossy(&bytes).trim().to_owned()
    }
}

/// Stops a command left running at shutdown (SIGTERM to its group).
pub(crate) fn stop(pid: u32) {
    stop_group(pid, false);
}

fn stop_group(pid: u32, kill: bool) {
    #[cfg(unix)]
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let signal = if kill {
            rustix::process::Signal::KILL
        } else {
            rustix::process::Signal::TERM
        };
        // The command leads its own group (process_group(0)).
        let _ = rustix::process::kill_process_group(pid, signal);
    }
    #[cfg(not(unix))]
    let _ = (pid, kill);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_bytes_only() {
        let mut tail = Tail::default();
        for _ in 0..1000 {
            tail.push(&[b'a'; 1000]);
        }
        tail.push(b"the end");
        assert_eq!(tail.0.len(), STDERR_TAIL);
        assert!(tail.text().ends_with("the end"));
        tail.push(&[b'z'; 5000]);
        assert_eq!(tail.text(), "z".repeat(STDERR_TAIL));
    }
}
