//! The real peers configmapwatch is compared with, run as the separate
//! processes users would run: Python watchdog (`Observer`, inotify, and
//! `PollingObserver`), `watchexec --poll`, `inotifywait -m -r`, `fswatch`
//! with its poll monitor, and a C floor program (`readlink(..data)` then
//! `clock_nanosleep`). `peers/setup-peers.sh` installs them from their
//! registries into target/peers; this module starts them, times what they
//! print, and reads what they cost from /proc.
//!
//! A peer's detection is the moment one of its output lines reaches the
//! benchmark. Peers that report paths, not versions, are credited with the
//! version `..data` names at that moment: what a reload triggered by that
//! line would read. configmapwatch and the floor print the version they read.

use std::{
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant, SystemTime},
};

use crate::Detections;

/// The root of the checkout: target/peers lives under it.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn peers_dir() -> PathBuf {
    root().join("target/peers")
}

/// Runs the setup script and returns (peer, version) pairs. A peer that
/// cannot be installed ends the benchmark here: none is dropped silently.
pub fn setup() -> Vec<(String, String)> {
    let script = root().join("benches/compare/peers/setup-peers.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed ({}): the peers are not installed, so the comparison cannot run",
        script.display(),
        out.status
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Peer {
    /// configmapwatch's release binary.
    Ours,
    /// The C floor program.
    Floor,
    WatchdogPolling,
    Watchexec,
    Fswatch,
    WatchdogInotify,
    Inotifywait,
}

impl Peer {
    /// Every peer with a poll interval, ours first, then the floor.
    pub const POLLERS: [Peer; 5] = [
        Peer::Ours,
        Peer::Floor,
        Peer::WatchdogPolling,
        Peer::Watchexec,
        Peer::Fswatch,
    ];
    /// The inotify peers (no interval).
    pub const NOTIFIERS: [Peer; 2] = [Peer::WatchdogInotify, Peer::Inotifywait];

    /// Whether the peer can poll every `interval`. fswatch's poll monitor
    /// sleeps whole seconds, at least one, whatever `-l` asks (libfswatch's
    /// poll_monitor: `sleep(latency < MIN_POLL_LATENCY ? MIN_POLL_LATENCY :
    /// latency)` with MIN_POLL_LATENCY = 1), and compares whole-second
    /// mtimes: it is run at 1 s only.
    pub fn polls_at(self, interval: Duration) -> bool {
        self != Peer::Fswatch || interval >= Duration::from_secs(1)
    }

    pub fn label(self) -> &'static str {
        match self {
            Peer::Ours => "configmapwatch",
            Peer::Floor => "C floor (readlink + clock_nanosleep)",
            Peer::WatchdogPolling => "watchdog PollingObserver",
            Peer::Watchexec => "watchexec --poll",
            Peer::Fswatch => "fswatch -m poll_monitor",
            Peer::WatchdogInotify => "watchdog Observer (inotify)",
            Peer::Inotifywait => "inotifywait -m -r (change events)",
        }
    }

    pub fn name(self, interval: Option<Duration>) -> String {
        match interval {
            Some(i) => format!("{}, {}", self.label(), humantime::format_duration(i)),
            None => self.label().to_owned(),
        }
    }

    /// The command that watches `dir`, polling every `interval` where the
    /// peer polls.
    pub fn command(self, dir: &Path, interval: Duration) -> Command {
        let peers = peers_dir();
        let secs = format!("{}", interval.as_secs_f64());
        match self {
            Peer::Ours => ours_at(
                Path::new(env!("CARGO_BIN_EXE_configmapwatch")),
                dir,
                interval,
            ),
            Peer::Floor => {
                let mut c = Command::new(peers.join("floor"));
                c.arg(dir).arg(interval.as_nanos().to_string());
                c
            }
            Peer::WatchdogPolling | Peer::WatchdogInotify => {
                let mut c = Command::new("python3");
                c.env("PYTHONPATH", peers.join("python"))
                    .arg(root().join("benches/compare/peers/watchdog_peer.py"))
                    .arg(if self == Peer::WatchdogPolling {
                        "polling"
                    } else {
                        "observer"
                    })
                    .arg(dir)
                    .arg(&secs);
                c
            }
            Peer::Watchexec => {
                // No command to run: its events as JSON lines on stdout.
                // Debounce at its 1 ms minimum so that the poll, not the
                // debounce (50 ms by default), is what is measured.
                let mut c = Command::new(peers.join("bin/watchexec"));
                c.arg(format!("--poll={}", humantime::format_duration(interval)))
                    .args(["--debounce=1ms", "--no-vcs-ignore", "--no-project-ignore"])
                    .args(["--no-global-ignore", "--no-default-ignore"])
                    .args(["--only-emit-events", "--emit-events-to=json-stdio"])
                    .arg("-w")
                    .arg(dir);
                c
            }
            Peer::Fswatch => {
                let mut c = Command::new("fswatch");
                c.args(["-m", "poll_monitor", "-r", "-l", &secs]).arg(dir);
                c
            }
            Peer::Inotifywait => {
                // The change events only, as a reload sidecar asks for:
                // with every event, each read of the volume (a directory
                // listing, a poller's walk) would be reported too.
                let mut c = Command::new("inotifywait");
                c.args([
                    "-m",
                    "-r",
                    "-e",
                    "modify,attrib,close_write,move,create,delete",
                ])
                .arg(dir);
                c
            }
        }
    }
}

/// A build of configmapwatch at `binary` watching `dir` every `interval`,
/// printing JSON events.
pub fn ours_at(binary: &Path, dir: &Path, interval: Duration) -> Command {
    let mut c = Command::new(binary);
    c.args(["-o", "json", "-l", "warn", "-i"])
        .arg(humantime::format_duration(interval).to_string())
        .arg("-d")
        .arg(dir);
    c
}

/// The static musl build the setup script makes (the container image's).
pub fn static_binary() -> PathBuf {
    peers_dir().join("musl/x86_64-unknown-linux-musl/release/configmapwatch")
}

/// A peer process being watched.
pub struct Running {
    pub peer: Peer,
    pub interval: Option<Duration>,
    pub child: Child,
    pub detections: Detections,
    /// What it wrote to stderr so far.
    pub stderr: Arc<Mutex<String>>,
    /// Lines it printed: a start-up line counts as ready.
    pub lines: Arc<Mutex<usize>>,
    /// Ours only: the error events it printed, which explain a missed
    /// update when there is one.
    pub errors: Arc<Mutex<Vec<String>>>,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Ready once it printed something (ours, the floor, watchdog) or said
    /// its watches are set (inotifywait), or after `fallback` for peers
    /// that print nothing until a change (watchexec, fswatch).
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let t = Instant::now();
        let silent = matches!(self.peer, Peer::Watchexec | Peer::Fswatch);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!(
                    "exited ({status}): {}",
                    self.stderr.lock().unwrap().trim()
                ));
            }
            let printed = *self.lines.lock().unwrap() > 0;
            let established = self.stderr.lock().unwrap().contains("Watches established");
            if printed || established || (silent && t.elapsed() > Duration::from_millis(1500)) {
                return Ok(());
            }
            if t.elapsed() > timeout {
                return Err(format!("not ready after {timeout:?}"));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `peer` on `dir`; as uid/gid 65534 (nobody) when `unprivileged`,
/// since inotify limits and some costs differ for root.
pub fn spawn(peer: Peer, dir: &Path, interval: Duration, unprivileged: bool) -> Running {
    let mut running = spawn_command(peer, wrap(peer.command(dir, interval), unprivileged), dir);
    running.interval = (!Peer::NOTIFIERS.contains(&peer)).then_some(interval);
    running
}

/// `inner` as is, or run as uid/gid 65534 through setpriv.
fn wrap(inner: Command, unprivileged: bool) -> Command {
    if unprivileged {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(inner.get_program())
            .args(inner.get_args());
        for (k, v) in inner.get_envs() {
            if let Some(v) = v {
                c.env(k, v);
            }
        }
        c
    } else {
        inner
    }
}

/// Starts `cmd`, a run of `peer` watching `dir` (for a peer that reports
/// paths, the volume whose `..data` its lines are credited with).
pub fn spawn_command(peer: Peer, mut cmd: Command, dir: &Path) -> Running {
    let interval = cmd
        .get_args()
        .zip(cmd.get_args().skip(1))
        .find(|(a, _)| *a == "-i")
        .and_then(|(_, v)| humantime::parse_duration(&v.to_string_lossy()).ok());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", peer.label()));
    let detections: Detections = Arc::new(Mutex::new(Vec::new()));
    let lines = Arc::new(Mutex::new(0));
    let stderr = Arc::new(Mutex::new(String::new()));
    let out = child.stdout.take().unwrap();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let (d, n, errs, watched) = (
        detections.clone(),
        lines.clone(),
        errors.clone(),
        dir.to_owned(),
    );
    thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let now = SystemTime::now();
            *n.lock().unwrap() += 1;
            match version_of(peer, &line, &watched) {
                Some(version) => d.lock().unwrap().push((version, now)),
                None if peer == Peer::Ours => errs.lock().unwrap().push(line),
                None => {}
            }
        }
    });
    let mut err = child.stderr.take().unwrap();
    let e = stderr.clone();
    thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = err.read(&mut buffer) {
            if n == 0 {
                break;
            }
            let mut text = e.lock().unwrap();
            // Only the start matters (errors, readiness); a chatty peer
            // must not grow it without bound.
            if text.len() < 64 * 1024 {
                text.push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        }
    });
    Running {
        peer,
        interval,
        child,
        detections,
        stderr,
        lines,
        errors,
    }
}

/// The version a line stands for (see the module docs).
fn version_of(peer: Peer, line: &str, dir: &Path) -> Option<String> {
    match peer {
        Peer::Ours => {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            (v["event"] != "error").then(|| v["version"].as_str().map(str::to_owned))?
        }
        Peer::Floor => Some(line.trim().to_owned()),
        _ if line == "ready" => None,
        _ => std::fs::read_link(dir.join("..data"))
            .ok()
            .map(|t| t.to_string_lossy().into_owned()),
    }
}

/// CPU time of every thread of `pid`, in nanoseconds (schedstat's first
/// field: exact, unlike getrusage's tick sampling).
pub fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// (RSS, PSS) in KiB from smaps_rollup.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("Rss:"), field("Pss:"))
}

/// System calls of `pid` (all threads) over `window`: (name, calls), most
/// frequent first.
pub fn strace_counts(pid: u32, window: Duration) -> Result<Vec<(String, u64)>, String> {
    let out_file = tempfile::NamedTempFile::new().unwrap();
    let status = Command::new("timeout")
        .args(["-s", "INT", &format!("{}", window.as_secs_f64())])
        .args(["strace", "-c", "-f", "-p", &pid.to_string(), "-o"])
        .arg(out_file.path())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("strace not available: {e}"))?;
    let text = std::fs::read_to_string(out_file.path()).unwrap_or_default();
    // timeout's 124: strace ran the whole window (an idle inotify watcher
    // makes no call at all, and strace then prints nothing).
    if text.trim().is_empty() && status.code() == Some(124) {
        return Ok(Vec::new());
    }
    let mut counts: Vec<(String, u64)> = text
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let name = *cols.last()?;
            let calls = cols.get(3)?.parse::<u64>().ok()?;
            (name != "total" && cols[0].parse::<f64>().is_ok()).then(|| (name.to_owned(), calls))
        })
        .collect();
    if counts.is_empty() {
        return Err(format!("strace saw nothing: {}", text.trim()));
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    Ok(counts)
}

/// min, median, max.
pub fn spread(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

/// The static musl build's idle memory, and what makes it up.
pub struct StaticMemory {
    pub binary_bytes: u64,
    pub rss_kib: u64,
    pub pss_kib: u64,
    /// (mapping, RSS KiB), largest first: the binary's text and data, the
    /// heap, the stack, the rest.
    pub parts: Vec<(String, u64)>,
}

/// Runs the static build (built by the setup script) idle at 1 s and reads
/// its smaps.
pub fn static_idle_memory(tmp: &Path) -> Result<StaticMemory, String> {
    let binary = static_binary();
    let binary_bytes = std::fs::metadata(&binary)
        .map_err(|e| format!("{}: {e}", binary.display()))?
        .len();
    let dir = tmp.join("idle-static");
    crate::idle::volume(&dir, 0);
    let mut cmd = Command::new(&binary);
    cmd.args(["-o", "json", "-l", "warn", "-i", "1s", "-d"])
        .arg(&dir);
    let mut running = spawn_command(Peer::Ours, cmd, &dir);
    running.wait_ready(Duration::from_secs(10))?;
    thread::sleep(Duration::from_secs(3));
    let pid = running.pid();
    let (rss_kib, pss_kib) = memory_kib(pid);
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    running.stop();
    // smaps: a header line per mapping (address perms offset dev inode
    // [path]), then "Key: value kB" lines.
    let mut parts: Vec<(String, u64)> = Vec::new();
    let mut current = String::new();
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let path = cols.get(5).copied().unwrap_or("[anonymous]");
            let name = if path.ends_with("/configmapwatch") {
                "the binary"
            } else {
                path
            };
            current = format!("{name} ({})", cols.get(1).copied().unwrap_or("?"));
        } else if let Some(v) = line.strip_prefix("Rss:") {
            let kib: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            match parts.iter_mut().find(|p| p.0 == current) {
                Some(p) => p.1 += kib,
                None => parts.push((current.clone(), kib)),
            }
        }
    }
    parts.retain(|p| p.1 > 0);
    parts.sort_by_key(|p| std::cmp::Reverse(p.1));
    Ok(StaticMemory {
        binary_bytes,
        rss_kib,
        pss_kib,
        parts,
    })
}
