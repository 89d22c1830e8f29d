//! Test helpers: a temporary volume written the kubelet's way (the same
//! writer as `publish`), the real binary with its output read line by line,
//! waits on conditions with deadlines, and a per-thread allocation counter.

#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    ops::ControlFlow,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use configmapwatch::{AtomicWriter, Outcome, Payload, Step, Swap};
use serde_json::Value;

/// Generous: only reached when something is broken, so that a loaded
/// machine (two builds beside the suite) never fails a healthy test.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A temporary volume directory and a kubelet-style writer for it.
pub struct Vol {
    pub tmp: tempfile::TempDir,
    pub writer: AtomicWriter,
}

/// Whether symlinks can be created here: not under Wine 8, nor on Windows
/// without Developer Mode. Probed once with the platform's own call, never
/// with the writer under test (a broken writer must fail tests, not skip
/// them).
pub fn symlinks_work() -> bool {
    static WORKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WORKS.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("target")).unwrap();
        let link = tmp.path().join("link");
        #[cfg(unix)]
        let made = std::os::unix::fs::symlink("target", &link);
        #[cfg(windows)]
        let made = std::os::windows::fs::symlink_dir("target", &link);
        // Wine reports success for links it never makes: look.
        made.is_ok() && std::fs::read_link(&link).is_ok()
    })
}

/// The reason a test is skipped where symlinks cannot be made. On Linux
/// nothing may skip: there it is a failure naming what is missing.
pub fn no_symlinks(file: &str, line: u32) {
    if cfg!(target_os = "linux") {
        panic!("{file}:{line}: cannot create symlinks on Linux; every test must run here");
    }
    report_skip(
        &format!("{file}:{line}"),
        "this platform cannot create symlinks (Wine, or Windows without Developer Mode)",
    );
}

/// The peak resident set of a running process, in KiB (Linux).
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

/// The next action result a watcher reports, skipping its other events.
pub fn action(run: &Running) -> Value {
    loop {
        let e = run.event();
        if e["event"] == "action" {
            return e;
        }
    }
}

/// Skips a test that cannot run here, saying why. Under CI on Linux, where
/// CI installs every tool and runs as root, that is a failure instead.
pub fn skip(test: &str, why: &str) {
    assert!(
        !(cfg!(target_os = "linux") && under_ci()),
        "{test}: {why}; on Linux CI every test must run"
    );
    report_skip(test, why);
}

/// Whether this is CI's run (`CI=true`), where every outside tool must be
/// there.
fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The outside programs tests run, each with the Debian package that has
/// it: the README's test section lists the same.
pub const TOOLS: &[(&str, &str)] = &[
    ("nginx", "nginx"),
    ("prometheus", "prometheus"),
    ("promtool", "prometheus"),
    ("bindfs", "bindfs"),
    ("fusermount3", "fuse3"),
    ("openssl", "openssl"),
    ("jq", "jq"),
    ("python3", "python3"),
    ("taskset", "util-linux"),
];

/// Whether every one of `tools` is installed. Where one is not, the test
/// is skipped, one line naming the tool and its package (a failure under
/// `CI=true`), and the caller returns: see [`needs!`]. Looks the tools up
/// on PATH and in sbin; it never runs the code under test.
pub fn have_tools(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| find_tool(t).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let mut packages: Vec<&str> = missing.iter().map(|t| package_of(t)).collect();
    packages.dedup();
    let test = thread::current().name().unwrap_or("a test").to_owned();
    skip(
        &test,
        &format!(
            "{} not installed (apt-get install {})",
            missing.join(", "),
            packages.join(" ")
        ),
    );
    false
}

fn package_of(tool: &str) -> &'static str {
    TOOLS
        .iter()
        .find(|(t, _)| *t == tool)
        .map(|(_, p)| *p)
        .unwrap_or_else(|| panic!("{tool} is not in helper::TOOLS: add it with its package"))
}

/// The skips so far, printed again as a count when the test binary exits.
static SKIPPED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Prints `SKIPPED <test>: <why>` past the test harness's capture (a
/// passing test's output is otherwise hidden), and remembers it for the
/// count printed at exit.
fn report_skip(test: &str, why: &str) {
    let line = format!("SKIPPED {test}: {why}");
    let _ = writeln!(std::io::stderr(), "{line}");
    let mut skipped = SKIPPED.lock().unwrap_or_else(|e| e.into_inner());
    if skipped.is_empty() {
        at_exit_print_skips();
    }
    skipped.push(line);
}

/// After the harness's own result line: how many tests were skipped, and
/// the one command that installs every outside tool.
#[cfg(target_os = "linux")]
fn at_exit_print_skips() {
    extern "C" fn print_skips() {
        let skipped = SKIPPED.lock().unwrap_or_else(|e| e.into_inner());
        let mut packages: Vec<&str> = TOOLS.iter().map(|(_, p)| *p).collect();
        packages.dedup();
        let _ = writeln!(
            std::io::stderr(),
            "\n{} test(s) SKIPPED (each said why above); to run them all: apt-get install -y {}",
            skipped.len(),
            packages.join(" ")
        );
    }
    // SAFETY: `print_skips` is a plain function that only locks a static
    // and writes to stderr; atexit has no other precondition.
    unsafe {
        libc::atexit(print_skips);
    }
}

/// Elsewhere (Wine) each skip's own line is the record: CI counts them.
#[cfg(not(target_os = "linux"))]
fn at_exit_print_skips() {}

/// A kubelet-style volume, or (where symlinks cannot be made, never on
/// Linux) a printed skip and an early return from the test.
macro_rules! vol {
    () => {
        match crate::helper::Vol::kubelet() {
            Some(vol) => vol,
            None => {
                crate::helper::no_symlinks(file!(), line!());
                return Default::default();
            }
        }
    };
}

/// Returns from the test (after one SKIPPED line naming each missing tool
/// and its package) unless every named outside tool is installed; under
/// `CI=true` a missing tool fails the test instead.
// Every test that needs an outside tool is Unix-only: unused on Windows.
#[allow(unused_macros)]
macro_rules! needs {
    ($($tool:literal),+ $(,)?) => {
        if !crate::helper::have_tools(&[$($tool),+]) {
            return;
        }
    };
}

impl Vol {
    /// For kubelet-style volumes: `None` where symlinks cannot be made.
    pub fn kubelet() -> Option<Self> {
        symlinks_work().then(Self::new)
    }

    /// A temporary directory (for plain-directory tests, which need no
    /// symlinks).
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let writer = AtomicWriter::new(tmp.path().join("vol"));
        Vol { tmp, writer }
    }

    pub fn path(&self) -> &Path {
        self.writer.dir()
    }

    /// Publishes `files` (key, content) and returns the new version. The
    /// directory is created first if missing, as the kubelet creates the
    /// mount point.
    pub fn publish(&self, files: &[(&str, &str)]) -> String {
        std::fs::create_dir_all(self.path()).unwrap();
        match self.writer.write(&payload(files)).unwrap() {
            Outcome::Written { version, .. } => version,
            other => panic!("expected a swap, got {other:?}"),
        }
    }

    /// Writes `payload` with the writer, creating the directory first if
    /// missing (the kubelet creates the mount point before writing).
    pub fn write(&self, payload: &Payload) -> Outcome {
        std::fs::create_dir_all(self.path()).unwrap();
        self.writer.write(payload).unwrap()
    }

    /// Publishes with a hook after each step, swapping as `swap` says.
    pub fn publish_with_hook(
        &self,
        files: &[(&str, &str)],
        swap: Swap,
        hook: impl FnMut(Step) -> ControlFlow<()>,
    ) -> Outcome {
        std::fs::create_dir_all(self.path()).unwrap();
        self.writer
            .clone()
            .with_swap(swap)
            .write_with_hook(&payload(files), hook)
            .unwrap()
    }

    /// The current `..data` target.
    pub fn target(&self) -> String {
        std::fs::read_link(self.path().join("..data"))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    /// Points `..data` at `target` directly (for hostile volumes).
    #[cfg(unix)]
    pub fn point_data_at(&self, target: &str) {
        let link = self.path().join("..data");
        let tmp = self.path().join("..data_tmp");
        std::os::unix::fs::symlink(target, &tmp).unwrap();
        std::fs::rename(tmp, link).unwrap();
    }

    /// The data directory of the current version.
    pub fn data_dir(&self) -> PathBuf {
        self.path().join(self.target())
    }
}

pub fn payload(files: &[(&str, &str)]) -> Payload {
    let mut p = Payload::new();
    for (k, v) in files {
        p.insert(k, *v).unwrap();
    }
    p
}

/// Polls `cond` until it is true or the deadline passes.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

/// The real binary, with no configmapwatch variables inherited.
pub fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_configmapwatch"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CONFIGMAPWATCH_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// The real binary watching `vol` with JSON output every 10 ms (plus
/// `extra`), once it has reported the current version as its initial
/// config.
pub fn watch_json(vol: &Vol, extra: &[&str]) -> Running {
    let mut cmd = bin();
    cmd.args(["-o", "json", "-i", "10ms", "-d"])
        .arg(vol.path())
        .args(extra);
    let run = Running::spawn(cmd);
    run.event_for("initial", &vol.target());
    run
}

/// A running watcher process whose stdout lines arrive on a channel.
pub struct Running {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub stderr: mpsc::Receiver<String>,
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = pipe_lines(child.stdout.take().unwrap());
        let stderr = pipe_lines(child.stderr.take().unwrap());
        Running {
            child,
            lines,
            stderr,
        }
    }

    pub fn lines_try(&self) -> Option<String> {
        self.lines.recv_timeout(Duration::from_secs(5)).ok()
    }
    /// The next stdout line, within the deadline.
    pub fn line(&self) -> String {
        self.lines
            .recv_timeout(DEADLINE)
            .expect("no output line within the deadline")
    }

    /// The next stdout line parsed as a JSON event.
    pub fn event(&self) -> Value {
        let line = self.line();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"))
    }

    /// Events until one of `kind` for `version` arrives, which is returned;
    /// the others are dropped (see [`Running::events_until`] to keep them).
    pub fn event_for(&self, kind: &str, version: &str) -> Value {
        self.events_until(kind, version).pop().unwrap()
    }

    /// Every event up to and including the first of `kind` for `version`.
    pub fn events_until(&self, kind: &str, version: &str) -> Vec<Value> {
        let mut events = Vec::new();
        loop {
            let e = self.event();
            let found = e["event"] == kind && e["version"] == version;
            events.push(e);
            if found {
                return events;
            }
        }
    }

    /// Sends `signal` and returns how long the process took to exit.
    #[cfg(unix)]
    pub fn signal_and_time_exit(
        &mut self,
        signal: rustix::process::Signal,
    ) -> (Duration, std::process::ExitStatus) {
        let pid = rustix::process::Pid::from_child(&self.child);
        let sent = Instant::now();
        rustix::process::kill_process(pid, signal).unwrap();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (sent.elapsed(), status);
            }
            assert!(
                sent.elapsed() < DEADLINE,
                "process did not exit after {signal:?}"
            );
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Everything on stderr so far.
    pub fn stderr_so_far(&self) -> String {
        self.stderr.try_iter().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process that is killed and reaped when dropped, so a failing
/// test does not leave it behind.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn pipe_lines(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[path = "../common/counting_alloc.rs"]
mod counting_alloc;
pub use counting_alloc::{CountingAlloc, allocations};

/// One request received by [`HookServer`].
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A real HTTP server on 127.0.0.1; `respond(n)` gives the status and the
/// delay before answering the n-th request (0-based).
pub struct HookServer {
    server: std::sync::Arc<tiny_http::Server>,
    pub port: u16,
    pub requests: mpsc::Receiver<Received>,
}

impl HookServer {
    pub fn start(respond: impl Fn(usize) -> (u16, Duration) + Send + 'static) -> Self {
        let server = std::sync::Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let port = server.server_addr().to_ip().unwrap().port();
        let (tx, requests) = mpsc::channel();
        let s = server.clone();
        thread::spawn(move || {
            let mut n = 0;
            while let Ok(mut request) = s.recv() {
                let mut body = String::new();
                let _ = request.as_reader().read_to_string(&mut body);
                let received = Received {
                    method: request.method().to_string(),
                    url: request.url().to_owned(),
                    headers: request
                        .headers()
                        .iter()
                        .map(|h| (h.field.to_string(), h.value.to_string()))
                        .collect(),
                    body: serde_json::from_str(&body).unwrap_or(Value::Null),
                };
                let _ = tx.send(received);
                let (status, delay) = respond(n);
                n += 1;
                // The server's own slowness, being simulated: not a test
                // waiting for something.
                thread::sleep(delay);
                let _ = request.respond(tiny_http::Response::empty(status));
            }
        });
        HookServer {
            server,
            port,
            requests,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn next(&self) -> Received {
        self.requests
            .recv_timeout(DEADLINE)
            .expect("no webhook request within the deadline")
    }
}

impl Drop for HookServer {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

/// Makes a FIFO at `path` (rustix on Linux; the `mkfifo` tool elsewhere,
/// where rustix has no mkfifoat).
#[cfg(unix)]
pub fn mkfifo(path: &Path) {
    #[cfg(target_os = "linux")]
    rustix::fs::mkfifoat(rustix::fs::CWD, path, 0o644.into()).unwrap();
    #[cfg(not(target_os = "linux"))]
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

// The sidecar's HTTP endpoints, seen from a client.

/// The address the binary says it serves on (it was given port 0).
pub fn served_at(stderr: &std::sync::mpsc::Receiver<String>) -> SocketAddr {
    loop {
        let line = stderr
            .recv_timeout(DEADLINE)
            .expect("no 'serving' line on stderr");
        if let Some(addr) = line.split("on http://").nth(1) {
            return addr.trim().parse().unwrap();
        }
    }
}

/// One raw HTTP/1.1 exchange: the status code, the head and the body.
pub fn request(addr: SocketAddr, raw: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(raw.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    (code, head.to_owned(), body.to_owned())
}

pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (code, _, body) = request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    );
    (code, body)
}

/// The value of the series `name` (with its labels, exactly as printed).
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// An outside tool a test has checked for with [`needs!`].
pub fn tool(name: &str) -> Command {
    Command::new(tool_path(name))
}

/// An nginx config for a test: in the foreground, every file it writes
/// under `dir`, its access log there too when `access_log` (else off).
/// `main` goes before `events` (e.g. `master_process off;`); `server` is
/// the body of its one server block, `listen 127.0.0.1:...` included.
pub fn nginx_conf(dir: &Path, main: &str, access_log: bool, server: &str) -> String {
    let d = dir.display();
    let access_log = if access_log {
        format!("{d}/access.log")
    } else {
        "off".to_owned()
    };
    format!(
        "daemon off;
{main}
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 16; }}
http {{
  access_log {access_log};
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
{server}
  }}
}}
"
    )
}

/// Where an outside tool lives (on PATH, or in an sbin directory: nginx);
/// the test must have checked for it with [`needs!`].
pub fn tool_path(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| {
        panic!(
            "{name} is not installed: the test should start with needs!(\"{name}\") \
             (apt-get install {})",
            package_of(name)
        )
    })
}

/// Runs `openssl args` in `dir` (the test checked for it with
/// [`needs!`]), failing the test with its stderr if it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = tool("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A port free on 127.0.0.1 for a server the test starts (nginx,
/// Prometheus), which binds it itself.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real binary watching `dir` with JSON output every 10 ms, serving its
/// HTTP endpoints on a free port; add arguments, then [`spawn_served`].
pub fn watch_served(dir: &Path) -> Command {
    let mut cmd = bin();
    cmd.args([
        "-o",
        "json",
        "-i",
        "10ms",
        "--listen-address",
        "127.0.0.1:0",
        "-d",
    ])
    .arg(dir);
    cmd
}

/// Starts `cmd` (from [`watch_served`]) and returns it with the address it
/// serves on.
pub fn spawn_served(cmd: Command) -> (Running, SocketAddr) {
    let run = Running::spawn(cmd);
    let addr = served_at(&run.stderr);
    (run, addr)
}

/// Every command line in the README's code blocks that runs configmapwatch
/// (`\` continuations joined, a trailing `# comment` and a `$ ` prompt
/// dropped), as written.
pub fn readme_commands() -> Vec<String> {
    let readme = include_str!("../../README.md");
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut pending: Option<String> = None;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            continue;
        }
        let line = line.strip_prefix("$ ").unwrap_or(line);
        let line = match line.find("  #") {
            Some(at) => &line[..at],
            None => line,
        };
        let text = match pending.take() {
            Some(mut so_far) => {
                so_far.push(' ');
                so_far.push_str(line.trim());
                so_far
            }
            // Not the Cargo.toml line `configmapwatch = { ... }`.
            None if line.starts_with("configmapwatch ") && !line.contains(" = ") => {
                line.trim().to_owned()
            }
            None => continue,
        };
        match text.strip_suffix('\\') {
            Some(head) => pending = Some(head.trim_end().to_owned()),
            None => commands.push(text),
        }
    }
    commands
}

/// The arguments of the one README command containing `marker`: see
/// [`example_args`].
pub fn readme_command(marker: &str, replace: &[(&str, String)]) -> Vec<String> {
    let found: Vec<String> = readme_commands()
        .into_iter()
        .filter(|c| c.contains(marker))
        .collect();
    assert_eq!(found.len(), 1, "README commands with {marker:?}: {found:?}");
    example_args(&found[0], replace)
}

/// A documented command line's arguments, split as a shell would, without
/// the program name. Each argument equal to a `from` of `replace` becomes
/// its `to`; a `from` holding a `/` (a path or URL) is also replaced inside
/// arguments.
pub fn example_args(line: &str, replace: &[(&str, String)]) -> Vec<String> {
    let words = shell_words::split(line).unwrap();
    assert_eq!(words[0], "configmapwatch", "{line}");
    words[1..]
        .iter()
        .map(|arg| match replace.iter().find(|(from, _)| from == arg) {
            Some((_, to)) => to.clone(),
            None => replace
                .iter()
                .filter(|(from, _)| from.contains('/'))
                .fold(arg.clone(), |arg, (from, to)| arg.replace(from, to)),
        })
        .collect()
}

#[cfg(any(windows, target_os = "linux"))]
#[path = "../common/process.rs"]
mod process;
#[cfg(any(windows, target_os = "linux"))]
pub use process::Process;
