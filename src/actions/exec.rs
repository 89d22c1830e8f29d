//! `--exec`: run a command with the new config on stdin and the version in
//! its environment. Its stdout goes to our stderr (stdout carries events);
//! the tail of its stderr is logged.
//!
//! A command is bounded in time (`--exec-timeout`: then its whole tree is
//! killed, its process group on Unix, its Job Object on Windows: see
//! `exec/job.rs`) and in memory (only the last [`STDERR_TAIL`] bytes of
//! its stderr are kept). A command that leaves a background process holding
//! its pipes open costs nothing after it exits: on Unix one thread feeds
//! its stdin and reads its output with `poll`, and closes our ends of the
//! pipes [`DRAIN_GRACE`] after the command exits, so no thread is left
//! parked on a pipe the background process holds.

use std::{
    collections::VecDeque,
    io,
    path::Path,
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::event::Event;

#[cfg(windows)]
mod job;

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
    /// Still running at its timeout: its process group (on Windows, its
    /// Job Object) was killed.
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
                "{program} was interrupted: shutting down ({})",
                if cfg!(windows) {
                    "its Job Object terminated"
                } else {
                    "SIGTERM sent to its process group"
                }
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
    /// Killed (with its process group, or on Windows its Job Object) if
    /// still running after this.
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
    /// [`STOP_GRACE`]; on Windows its job is terminated) and the run ends
    /// as [`ExecError::Interrupted`].
    pub(crate) fn run(
        &self,
        event: &Event,
        dir: &Path,
        child_slot: &Mutex<Option<Tree>>,
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
        child_slot: &Mutex<Option<Tree>>,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<(), ExecError> {
        let mut command = self.command(event, dir);
        let (mut child, tree) = self.spawn(&mut command)?;
        *child_slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(tree.clone());

        let config = config.map(|c| c.to_string()).unwrap_or_default();
        let deadline = Instant::now() + self.timeout;
        let (status, tail) =
            pipes::drive(&mut child, &tree, config.into_bytes(), deadline, cancelled);
        *child_slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.outcome(status, tail)
    }

    /// The command for `event`: its environment (ours less every
    /// secret-bearing setting's variable, plus the event's), its pipes,
    /// and on Unix its own process group and no blocked signal.
    fn command(&self, event: &Event, dir: &Path) -> Command {
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
        #[cfg(unix)]
        unix_group_and_mask(&mut command);
        command
    }

    /// What the run comes to: its error, if it did not exit successfully,
    /// with the tail of its output (secrets hidden); the tail of a
    /// command's (not a checker's) stderr is logged either way.
    fn outcome(
        &self,
        status: Result<std::process::ExitStatus, pipes::Ended>,
        tail: Tail,
    ) -> Result<(), ExecError> {
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

    /// Starts `command` and returns it with its [`Tree`]. On Windows it is
    /// created suspended and resumed once it is in its job, so that
    /// nothing it starts escapes the job.
    fn spawn(&self, command: &mut Command) -> Result<(Child, Tree), ExecError> {
        let start = |source| ExecError::Start {
            program: self.program.clone(),
            source,
        };
        #[cfg(windows)]
        {
            use std::os::windows::process::CommandExt;
            let job = job::Job::new().map_err(start)?;
            command.creation_flags(job::CREATE_SUSPENDED);
            let mut child = command.spawn().map_err(start)?;
            if let Err(e) = job.adopt(&child) {
                // Still suspended (it has run nothing), or in the job if
                // resumed before a later step failed: nothing is left.
                job.terminate();
                let _ = child.kill();
                let _ = child.wait();
                return Err(start(e));
            }
            Ok((
                child,
                Tree {
                    job: std::sync::Arc::new(job),
                },
            ))
        }
        #[cfg(not(windows))]
        {
            let child = command.spawn().map_err(start)?;
            let pid = child.id();
            Ok((child, Tree { pid }))
        }
    }

    /// Hides our secrets in text the command wrote (it may have printed
    /// its environment or a URL it was given).
    fn scrub(&self, text: String) -> String {
        super::secrets::scrub(&self.secrets, &text)
    }
}

/// Its own process group: a timeout or a shutdown kills what it started
/// too. And no signal blocked: a program that blocks its termination
/// signals in every thread (the tool does, to wait for them between ticks)
/// would otherwise pass its mask on, and the command (and what it starts)
/// could not be stopped with SIGTERM.
#[cfg(unix)]
fn unix_group_and_mask(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    command.process_group(0);
    // SAFETY: between fork and exec, only async-signal-safe calls on a set
    // on this stack: sigemptyset and pthread_sigmask.
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

/// Feeding a command's stdin and reading its output until it exits (and
/// a short grace after), on the calling thread where the platform can
/// poll pipes.
mod pipes {
    use std::{
        io,
        process::{Child, ExitStatus},
        time::Instant,
    };

    use super::{DRAIN_GRACE, STOP_GRACE, Tail, Tree};

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
        tree: &Tree,
        input: Vec<u8>,
        deadline: Instant,
        cancelled: &dyn Fn() -> bool,
    ) -> (Result<ExitStatus, Ended>, Tail) {
        let mut pipes = Pipes::take(child, input);
        let mut exited: Option<(ExitStatus, Instant)> = None;
        loop {
            if exited.is_none() {
                match look(child, tree, deadline, cancelled) {
                    Ok(Some(status)) => exited = Some((status, Instant::now() + DRAIN_GRACE)),
                    Ok(None) => {}
                    Err(ended) => return (Err(ended), pipes.tail),
                }
            }
            if let Some((status, grace)) = exited {
                // What the command itself wrote is read; a background
                // process it left may hold the pipes for long: our ends
                // close here, with the input nobody will read.
                if pipes.outputs.is_empty() || Instant::now() >= grace {
                    return (Ok(status), pipes.tail);
                }
                pipes.stdin = None;
            }
            pipes.step();
        }
    }

    /// One look at the child: its exit status once it has exited. Past
    /// `deadline` its tree is killed, once `cancelled` it is interrupted,
    /// and either is the end (the child reaped).
    fn look(
        child: &mut Child,
        tree: &Tree,
        deadline: Instant,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Option<ExitStatus>, Ended> {
        match child.try_wait() {
            Ok(Some(status)) => Ok(Some(status)),
            Ok(None) if Instant::now() >= deadline => {
                tree.kill();
                // The child itself where the tree cannot be killed (no
                // process group nor job); already dead elsewhere.
                let _ = child.kill();
                let _ = child.wait();
                Err(Ended::TimedOut)
            }
            Ok(None) if cancelled() => {
                interrupt(child, tree);
                Err(Ended::Interrupted)
            }
            Ok(None) => Ok(None),
            Err(e) => Err(Ended::Wait(e)),
        }
    }

    /// Our non-blocking ends of a command's pipes, what is left to write
    /// to its stdin, and the tail of what it wrote.
    #[cfg(unix)]
    struct Pipes {
        stdin: Option<std::os::fd::OwnedFd>,
        /// Its stderr, and its stdout when piped; each dropped at its EOF.
        outputs: Vec<std::os::fd::OwnedFd>,
        input: Vec<u8>,
        written: usize,
        tail: Tail,
    }

    #[cfg(unix)]
    impl Pipes {
        /// Takes `child`'s pipes, made non-blocking.
        fn take(child: &mut Child, input: Vec<u8>) -> Pipes {
            use std::os::fd::OwnedFd;
            let nonblocking = |fd: OwnedFd| {
                // A pipe we cannot make non-blocking is not read: better no
                // log tail than a thread parked on it.
                rustix::io::ioctl_fionbio(&fd, true).ok().map(|()| fd)
            };
            Pipes {
                stdin: child.stdin.take().map(OwnedFd::from).and_then(nonblocking),
                outputs: [
                    child.stderr.take().map(OwnedFd::from),
                    child.stdout.take().map(OwnedFd::from),
                ]
                .into_iter()
                .flatten()
                .filter_map(nonblocking)
                .collect(),
                input,
                written: 0,
                tail: Tail::default(),
            }
        }

        /// Waits at most 5 ms (between looks at the child) for a pipe to
        /// be ready, then reads what the ready outputs hold and writes
        /// what stdin takes.
        fn step(&mut self) {
            use rustix::event::{PollFd, PollFlags, Timespec, poll};
            let step = Timespec {
                tv_sec: 0,
                tv_nsec: 5_000_000,
            };
            let mut fds: Vec<PollFd<'_>> = self
                .outputs
                .iter()
                .map(|fd| PollFd::new(fd, PollFlags::IN))
                .collect();
            if let Some(fd) = &self.stdin {
                fds.push(PollFd::new(fd, PollFlags::OUT));
            }
            if poll(&mut fds, Some(&step)).is_err() {
                return; // EINTR: look again
            }
            let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
            drop(fds);
            self.read(&ready);
            if self.stdin.is_some() && ready[ready.len() - 1] {
                self.write();
            }
        }

        /// Reads each ready output until it would block; drops those at
        /// their end (or failing).
        fn read(&mut self, ready: &[bool]) {
            use std::os::fd::AsFd;
            let mut chunk = [0u8; 4096];
            let mut closed = Vec::new();
            for (i, fd) in self.outputs.iter().enumerate() {
                if !ready[i] {
                    continue;
                }
                loop {
                    match rustix::io::read(fd.as_fd(), &mut chunk) {
                        Ok(0) => {
                            closed.push(i);
                            break;
                        }
                        Ok(n) => self.tail.push(&chunk[..n]),
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
                self.outputs.remove(i);
            }
        }

        /// Writes what stdin takes of the input; closes it (EOF for the
        /// command) once all is written or the command closed its end.
        fn write(&mut self) {
            use std::os::fd::AsFd;
            let Some(fd) = &self.stdin else {
                return;
            };
            match rustix::io::write(fd.as_fd(), &self.input[self.written..]) {
                Ok(n) => self.written += n,
                Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
                // EPIPE: the command closed its stdin unread.
                Err(_) => self.written = self.input.len(),
            }
            if self.written >= self.input.len() {
                self.stdin = None;
            }
        }
    }

    /// SIGTERM to the group (on Windows the job terminated at once), then
    /// SIGKILL if it has not exited within [`STOP_GRACE`]; reaped either
    /// way.
    fn interrupt(child: &mut Child, tree: &Tree) {
        tree.term();
        let until = Instant::now() + STOP_GRACE;
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        tree.kill();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Without `poll` on pipes (Windows): a thread feeds stdin and one
    /// reads each output, and reading stops being waited for
    /// [`DRAIN_GRACE`] after the exit.
    #[cfg(not(unix))]
    pub(super) fn drive(
        child: &mut Child,
        tree: &Tree,
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
            match look(child, tree, deadline, cancelled) {
                Ok(Some(status)) => break Ok(status),
                Ok(None) => thread::sleep(Duration::from_millis(5)),
                Err(ended) => break Err(ended),
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

/// A running command and what it started, as a timeout or a shutdown ends
/// them: its process group on Unix (it leads its own), its Job Object on
/// Windows. Cloned into the action worker's slot, from which a shutdown
/// that gave up waiting for the worker stops it ([`stop`]).
#[derive(Debug, Clone)]
pub(crate) struct Tree {
    /// The command's pid, which is its process group's id.
    #[cfg(not(windows))]
    pid: u32,
    /// Shared with the slot: the job's handle closes when the last clone
    /// goes, never while a shutdown is about to use it.
    #[cfg(windows)]
    job: std::sync::Arc<job::Job>,
}

impl Tree {
    /// Asks the tree to end: SIGTERM to the group. Windows has no such
    /// request for a program without a window (a console control event
    /// reaches only processes sharing our console, and may be ignored):
    /// there the job is terminated at once.
    fn term(&self) {
        #[cfg(unix)]
        self.signal(rustix::process::Signal::TERM);
        #[cfg(windows)]
        self.job.terminate();
    }

    /// Ends the tree at once: SIGKILL to the group; the job terminated.
    fn kill(&self) {
        #[cfg(unix)]
        self.signal(rustix::process::Signal::KILL);
        #[cfg(windows)]
        self.job.terminate();
    }

    #[cfg(unix)]
    fn signal(&self, signal: rustix::process::Signal) {
        if let Some(pgid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process_group(pgid, signal);
        }
    }
}

/// Stops a command left running at shutdown: SIGTERM to its group; its
/// job terminated on Windows.
pub(crate) fn stop(tree: &Tree) {
    tree.term();
}

/// A process a test did not start, shared with the integration tests.
#[cfg(test)]
#[path = "../../tests/common/process.rs"]
mod test_process;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;
    use std::{
        sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        },
        thread::JoinHandle,
        time::SystemTime,
    };

    /// Only reached when something is broken (as the integration tests'
    /// deadline).
    const DEADLINE: Duration = Duration::from_secs(30);

    /// Not a test: the process tree the tree tests start, run by them as a
    /// command (this test binary, with `--ignored --exact`), with
    /// `CONFIGMAPWATCH_DIR` set by [`Exec::run`]. The command starts itself
    /// again as its own child (`CMW_TREE_LEVEL=2`, the tool's grandchild)
    /// and writes that one's pid to `grandchild.pid`; both then hang.
    #[test]
    #[ignore = "a helper process, started by the tree tests"]
    fn tree_helper() {
        let Some(dir) = std::env::var_os("CONFIGMAPWATCH_DIR") else {
            return;
        };
        if std::env::var_os("CMW_TREE_LEVEL").is_none() {
            let mut grandchild = Command::new(std::env::current_exe().unwrap())
                .args(std::env::args_os().skip(1))
                .env("CMW_TREE_LEVEL", "2")
                .stdin(Stdio::null())
                .spawn()
                .unwrap();
            let dir = Path::new(&dir);
            let tmp = dir.join("grandchild.tmp");
            std::fs::write(&tmp, grandchild.id().to_string()).unwrap();
            std::fs::rename(tmp, dir.join("grandchild.pid")).unwrap();
            // It never ends: nor does this.
            let _ = grandchild.wait();
        }
        loop {
            std::thread::park();
        }
    }

    /// [`tree_helper`] run by [`Exec::run`] on another thread.
    struct TreeRun {
        dir: tempfile::TempDir,
        cancel: Arc<AtomicBool>,
        slot: Arc<Mutex<Option<Tree>>>,
        run: JoinHandle<Result<(), ExecError>>,
    }

    impl TreeRun {
        fn start(timeout: Duration) -> TreeRun {
            let dir = tempfile::tempdir().unwrap();
            let helper = format!(
                "{}::tree_helper",
                module_path!().split_once("::").unwrap().1
            );
            let exe = std::env::current_exe().unwrap();
            let mut exec = Exec::new(
                exe.to_string_lossy(),
                ["--ignored", "--exact", &helper, "--nocapture"]
                    .map(String::from)
                    .to_vec(),
            );
            exec.timeout = timeout;
            // Its stdout (the harness's lines) into the kept tail, not
            // into the test's output.
            exec.checker = true;
            let cancel = Arc::new(AtomicBool::new(false));
            let slot = Arc::new(Mutex::new(None));
            let run = std::thread::spawn({
                let (cancel, slot) = (cancel.clone(), slot.clone());
                let path = dir.path().to_owned();
                move || {
                    let event =
                        Event::new(EventKind::Change, path.as_path(), "v1", SystemTime::now());
                    exec.run(&event, &path, &slot, &|| cancel.load(Ordering::Relaxed))
                }
            });
            TreeRun {
                dir,
                cancel,
                slot,
                run,
            }
        }

        /// The grandchild, once the command has started it.
        fn grandchild(&self) -> Process {
            let file = self.dir.path().join("grandchild.pid");
            let until = Instant::now() + DEADLINE;
            loop {
                if let Some(pid) = std::fs::read_to_string(&file)
                    .ok()
                    .and_then(|p| p.parse().ok())
                {
                    return Process::open(pid);
                }
                assert!(
                    !self.run.is_finished() && Instant::now() < until,
                    "the command never started its child"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }

        fn result(self) -> Result<(), ExecError> {
            self.run.join().unwrap()
        }
    }

    use super::test_process::Process;

    /// `--exec-timeout`: a command whose child hangs is killed with that
    /// child (on Windows only the command was, before its Job Object).
    #[test]
    fn a_timeout_kills_the_commands_whole_tree() {
        // Long enough for two test binaries to start under Wine on a busy
        // machine: the grandchild must be there before the timeout.
        let timeout = Duration::from_secs(5);
        let run = TreeRun::start(timeout);
        let mut grandchild = run.grandchild();
        let result = run.result();
        assert!(
            matches!(result, Err(ExecError::TimedOut { after, .. }) if after == timeout),
            "{result:?}"
        );
        assert!(
            grandchild.gone_within(DEADLINE),
            "the command's child (pid {}) outlived its timeout",
            grandchild.pid
        );
    }

    /// Shutdown while a command runs (the round's own stop, asked through
    /// `cancelled`): the command and its child are ended.
    #[test]
    fn a_shutdown_ends_the_commands_whole_tree() {
        let run = TreeRun::start(DEADLINE);
        let mut grandchild = run.grandchild();
        run.cancel.store(true, Ordering::Relaxed);
        let result = run.result();
        assert!(
            matches!(result, Err(ExecError::Interrupted { .. })),
            "{result:?}"
        );
        assert!(
            grandchild.gone_within(DEADLINE),
            "the command's child (pid {}) outlived the shutdown",
            grandchild.pid
        );
    }

    /// A shutdown that gave up waiting for the action worker stops the
    /// command from the worker's slot ([`stop`]): its child goes too.
    #[test]
    fn stop_from_the_slot_ends_the_commands_whole_tree() {
        let run = TreeRun::start(DEADLINE);
        let mut grandchild = run.grandchild();
        let tree = run.slot.lock().unwrap().clone().expect("a running command");
        stop(&tree);
        let result = run.result();
        assert!(
            matches!(result, Err(ExecError::Failed { .. })),
            "{result:?}"
        );
        assert!(
            grandchild.gone_within(DEADLINE),
            "the command's child (pid {}) outlived the shutdown",
            grandchild.pid
        );
    }

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
