//! What polling costs when nothing changes (system calls, CPU, allocations,
//! memory), what a reload costs, and how fast SIGTERM ends the process.
//! Idle figures come from the real release binary; allocation and reload
//! figures from the library in this process.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use configmapwatch::{
    AtomicWriter, EventKind, Payload, Selector, WatchOptions, Watcher, shutdown_channel,
};

use crate::linux::Plan;

#[path = "../../tests/common/counting_alloc.rs"]
mod counting_alloc;
pub use counting_alloc::{CountingAlloc, allocations};

/// System calls seen by strace in an idle window.
pub struct Syscalls {
    /// readlinkat calls: one per tick.
    pub ticks: u64,
    /// (syscall, calls per tick), most frequent first.
    pub per_tick: Vec<(String, f64)>,
}

pub struct IdleCost {
    pub interval: Duration,
    pub cpu_per_tick_us: f64,
    pub cpu_percent: f64,
    pub peak_rss_kib: u64,
    pub syscalls: Result<Syscalls, String>,
}

pub struct Costs {
    pub idle: Vec<IdleCost>,
    pub allocs_per_check: f64,
    pub allocs_in_run: u64,
    pub allocs_first_wait: u64,
    pub run_ticks: u64,
    pub reload_1mib_ms: Vec<f64>,
    pub reload_100_keys_ms: Vec<f64>,
    pub shutdown_ms: Vec<f64>,
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_configmapwatch"))
}

/// Starts the binary on `dir` and waits for its initial event.
fn start_watcher(dir: &Path, interval: &str) -> Child {
    let mut child = bin()
        .args(["-l", "warn", "-i", interval, "-d"])
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("initial"), "{line}");
    child
}

/// CPU time of every thread of `pid`, in nanoseconds (schedstat).
fn cpu_ns(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum()
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn strace(pid: u32, window: Duration) -> Result<Syscalls, String> {
    let out_file = tempfile::NamedTempFile::new().unwrap();
    let status = Command::new("timeout")
        .args(["-s", "INT", &format!("{}", window.as_secs_f64())])
        .args(["strace", "-c", "-f", "-p", &pid.to_string(), "-o"])
        .arg(out_file.path())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("strace not available: {e}"))?;
    let text = std::fs::read_to_string(out_file.path()).unwrap_or_default();
    let mut counts: Vec<(String, u64)> = text
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let name = *cols.last()?;
            let calls = cols.get(3)?.parse::<u64>().ok()?;
            (name != "total" && cols[0].parse::<f64>().is_ok()).then(|| (name.to_owned(), calls))
        })
        .collect();
    let ticks = counts
        .iter()
        .find(|(n, _)| n == "readlinkat" || n == "readlink")
        .map_or(0, |(_, c)| *c);
    if ticks == 0 {
        return Err(format!(
            "strace saw no readlink (status {status}): {}",
            text.trim()
        ));
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    Ok(Syscalls {
        ticks,
        per_tick: counts
            .into_iter()
            .map(|(n, c)| (n, c as f64 / ticks as f64))
            .collect(),
    })
}

fn idle(dir: &Path, interval: Duration, window: Duration) -> IdleCost {
    let mut child = start_watcher(dir, &humantime::format_duration(interval).to_string());
    let pid = child.id();
    // Past start-up and the first ticks' first-touch costs.
    thread::sleep(interval.max(Duration::from_millis(500)) + Duration::from_millis(200));
    let (cpu0, t0) = (cpu_ns(pid), Instant::now());
    thread::sleep(window);
    let (cpu1, elapsed) = (cpu_ns(pid), t0.elapsed());
    let ticks = (elapsed.as_secs_f64() / interval.as_secs_f64()).max(1.0);
    let cpu = (cpu1 - cpu0) as f64;
    let syscalls = strace(pid, window);
    let peak = peak_rss_kib(pid);
    let _ = child.kill();
    let _ = child.wait();
    IdleCost {
        interval,
        cpu_per_tick_us: cpu / ticks / 1e3,
        cpu_percent: cpu / elapsed.as_nanos() as f64 * 100.0,
        peak_rss_kib: peak,
        syscalls,
    }
}

fn json_payload(key: &str, value: &serde_json::Value) -> Payload {
    let mut p = Payload::new();
    p.insert(key, value.to_string()).unwrap();
    p
}

/// A config of just under 1 MiB (the ConfigMap maximum), varied by `n`.
fn one_mib(n: usize) -> Payload {
    let mut object = serde_json::Map::new();
    let mut size = 0;
    let mut i = 0;
    while size < (1 << 20) - 200 {
        let value = format!("{n}-{}", "x".repeat(100));
        size += value.len() + 12;
        object.insert(format!("k{i:06}"), value.into());
        i += 1;
    }
    json_payload("config.json", &object.into())
}

fn hundred_keys(n: usize) -> Payload {
    let mut p = Payload::new();
    for k in 0..100 {
        let value = serde_json::json!({"n": n, "key": k, "pad": "y".repeat(1000)});
        p.insert(&format!("k{k:03}.json"), value.to_string())
            .unwrap();
    }
    p
}

/// Times the `check()` that detects, reads and parses each new version.
fn reload(dir: &Path, selector: Selector, repeats: usize, make: fn(usize) -> Payload) -> Vec<f64> {
    std::fs::create_dir_all(dir).unwrap();
    let writer = AtomicWriter::new(dir);
    writer.write(&make(0)).unwrap();
    let mut watcher = Watcher::new(
        WatchOptions::new(dir)
            .with_selector(selector)
            .with_max_file_size(2 << 20),
    );
    assert_eq!(watcher.check().unwrap().kind, EventKind::Initial);
    (1..=repeats)
        .map(|n| {
            writer.write(&make(n)).unwrap();
            let t = Instant::now();
            let event = watcher.check().unwrap();
            let took = t.elapsed().as_secs_f64() * 1e3;
            assert_eq!(event.kind, EventKind::Change, "{:?}", event.error);
            took
        })
        .collect()
}

fn shutdown_times(dir: &Path, repeats: usize) -> Vec<f64> {
    (0..repeats)
        .map(|_| {
            let mut child = start_watcher(dir, "5s");
            thread::sleep(Duration::from_millis(50));
            let pid = rustix::process::Pid::from_child(&child);
            let t = Instant::now();
            rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
            let status = child.wait().unwrap();
            assert!(status.success(), "{status}");
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect()
}

pub fn measure(plan: &Plan, tmp: &Path) -> Costs {
    let dir = tmp.join("idle");
    std::fs::create_dir_all(&dir).unwrap();
    AtomicWriter::new(&dir)
        .write(&json_payload(
            "config.json",
            &serde_json::json!({"idle": true}),
        ))
        .unwrap();

    // Allocations: 10,000 idle check() calls, then the real loop for a
    // while, counted on the watcher's own thread.
    let mut watcher = Watcher::new(WatchOptions::new(&dir));
    watcher.check().unwrap();
    let before = allocations();
    for _ in 0..10_000 {
        assert!(watcher.check().is_none());
    }
    let allocs_per_check = (allocations() - before) as f64 / 10_000.0;
    let run_window = Duration::from_secs(1);
    let (shutdown, listener) = shutdown_channel();
    let run_dir = dir.clone();
    let counter = thread::spawn(move || {
        let mut watcher =
            Watcher::new(WatchOptions::new(&run_dir).with_interval(Duration::from_millis(1)));
        watcher.check().unwrap();
        // std's channel registers a thread on its first timed wait (two
        // allocations, once); count that apart from the ticks.
        let warm = allocations();
        listener.wait(Duration::from_millis(1));
        let first_wait = allocations() - warm;
        let before = allocations();
        watcher.run(&listener, &mut |_| {});
        (first_wait, allocations() - before)
    });
    thread::sleep(run_window);
    shutdown.trigger();
    let (allocs_first_wait, allocs_in_run) = counter.join().unwrap();

    let idle = vec![
        idle(&dir, Duration::from_millis(1), plan.idle_window),
        // At one tick a second, a few ticks are too few to average out a
        // VM's wakeup noise (measured 0.009% and 0.015% over 10 ticks).
        idle(
            &dir,
            Duration::from_secs(1),
            plan.idle_window.max(Duration::from_secs(3)) * 6,
        ),
    ];
    Costs {
        idle,
        allocs_per_check,
        allocs_in_run,
        allocs_first_wait,
        run_ticks: run_window.as_millis() as u64,
        reload_1mib_ms: reload(
            &tmp.join("1mib"),
            Selector::default(),
            plan.repeats,
            one_mib,
        ),
        reload_100_keys_ms: reload(
            &tmp.join("100keys"),
            Selector::all_keys(),
            plan.repeats,
            hundred_keys,
        ),
        shutdown_ms: shutdown_times(&dir, plan.repeats / 2),
    }
}
