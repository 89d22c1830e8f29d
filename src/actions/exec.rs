//! `--exec`: run a command with the new config on stdin and the version in
//! its environment. Its stdout goes to our stderr (stdout carries events);
//! the tail of its stderr is logged.

use std::{
    io::{self, Read, Write},
    path::Path,
    process::{Command, Stdio},
    sync::Mutex,
    thread,
};

use crate::event::Event;

/// How much of a command's stderr is kept for the log.
const STDERR_TAIL: usize = 2048;

/// A command to run on each change.
#[derive(Debug, Clone)]
pub struct Exec {
    /// The program (looked up in `PATH`).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
}

impl Exec {
    pub(crate) fn run(
        &self,
        event: &Event,
        dir: &Path,
        child_slot: &Mutex<Option<u32>>,
    ) -> Result<(), String> {
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .env("CONFIGMAPWATCH_VERSION", &event.version)
            .env(
                "CONFIGMAPWATCH_PREVIOUS_VERSION",
                event.previous_version.as_deref().unwrap_or(""),
            )
            .env("CONFIGMAPWATCH_DIR", dir)
            .env("CONFIGMAPWATCH_EVENT", event.kind.as_str())
            .stdin(Stdio::piped())
            .stdout(Stdio::from(io::stderr()))
            .stderr(Stdio::piped())
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
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let tail = thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            let start = buf.len().saturating_sub(STDERR_TAIL);
            String::from_utf8_lossy(&buf[start..]).trim().to_owned()
        });

        let status = child.wait();
        *child_slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let tail = tail.join().unwrap_or_default();
        let status = status.map_err(|e| format!("cannot wait for {}: {e}", self.program))?;
        if !tail.is_empty() {
            log::info!("exec {}: stderr (tail): {tail}", self.program);
        }
        if status.success() {
            Ok(())
        } else {
            let last = tail.lines().last().unwrap_or("");
            Err(format!(
                "{} {status}{}{last}",
                self.program,
                if last.is_empty() { "" } else { ": " }
            ))
        }
    }
}

/// Stops a command left running at shutdown.
pub(crate) fn stop(pid: u32) {
    #[cfg(unix)]
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    #[cfg(not(unix))]
    let _ = pid;
}
