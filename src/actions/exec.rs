//! `--exec`: run a command with the new config on stdin and the version in
//! its environment. Its stdout goes to our stderr (stdout carries events);
//! the tail of its stderr is logged.
//!
//! A command is bounded in time (`--exec-timeout`: then its whole process
//! group is killed) and in memory (only the last [`STDERR_TAIL`] bytes of
//! its stderr are kept). A command that leaves a background process holding
//! its stderr open does not hold up the next round: reading stops shortly
//! after the command itself exits.

use std::{
    collections::VecDeque,
    io::{self, Read, Write},
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use crate::event::Event;

/// How much of a command's stderr is kept for the log.
const STDERR_TAIL: usize = 2048;

/// After the command exits, how long its stderr is still read: what it
/// wrote last, not what a background child it left behind writes later.
const DRAIN_GRACE: Duration = Duration::from_millis(200);

/// Environment variables of ours that can hold secrets (webhook URLs with
/// credentials, header values): never passed to a command.
const SECRET_VARS: &[&str] = &[
    "CONFIGMAPWATCH_WEBHOOK_URL",
    "CONFIGMAPWATCH_WEBHOOK_HEADER",
];

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
    /// Strings to hide in the logged stderr tail (webhook URLs and header
    /// values), should the command print them.
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

    pub(crate) fn run(
        &self,
        event: &Event,
        dir: &Path,
        child_slot: &Mutex<Option<u32>>,
    ) -> Result<(), String> {
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
        for var in SECRET_VARS {
            command.env_remove(var);
        }
        // Its own process group: a timeout kills what it started too.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.program))?;
        *child_slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(child.id());

        // Feed stdin on its own thread: a command that never reads it must
        // not block us once the pipe is full.
        let config = event
            .config
            .as_deref()
            .map(|c| c.to_string())
            .unwrap_or_default();
        let mut stdin = child.stdin.take().expect("stdin is piped");
        thread::spawn(move || {
            let _ = stdin.write_all(config.as_bytes());
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
        let reader = read_into_tail(Box::new(child.stderr.take().expect("stderr is piped")));
        // A checker's verdict is often on stdout (promtool's FAILED lines).
        let stdout_reader = child.stdout.take().map(|out| read_into_tail(Box::new(out)));

        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if Instant::now() >= deadline => {
                    stop_group(child.id(), true);
                    let _ = child.wait();
                    break Err(format!(
                        "{} timed out after {} and was killed (--exec-timeout)",
                        self.program,
                        humantime::format_duration(self.timeout)
                    ));
                }
                Ok(None) => thread::sleep(Duration::from_millis(5)),
                Err(e) => break Err(format!("cannot wait for {}: {e}", self.program)),
            }
        };
        *child_slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
        // The pipe closes when the command's last writer exits; a
        // background child may keep it open for long: stop waiting soon.
        let grace = Instant::now() + DRAIN_GRACE;
        let finished =
            || reader.is_finished() && stdout_reader.as_ref().is_none_or(|r| r.is_finished());
        while !finished() && Instant::now() < grace {
            thread::sleep(Duration::from_millis(2));
        }
        let tail = self.scrub(tail.lock().unwrap_or_else(|e| e.into_inner()).text());
        if !tail.is_empty() && !self.checker {
            log::info!("exec {}: stderr (tail): {tail}", self.program);
        }
        let status = status?;
        if status.success() {
            Ok(())
        } else {
            let last = match self.checker {
                true => tail.as_str(),
                false => tail.lines().last().unwrap_or(""),
            };
            Err(format!(
                "{} {status}{}{last}",
                self.program,
                if last.is_empty() { "" } else { ": " }
            ))
        }
    }

    /// Hides our secrets in text the command wrote (it may have printed
    /// its environment or a URL it was given).
    fn scrub(&self, mut text: String) -> String {
        for secret in &self.secrets {
            text = text.replace(secret.as_str(), "***");
        }
        text
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
