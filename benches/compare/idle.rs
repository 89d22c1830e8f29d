//! Idle cost of every watcher, side by side: CPU per tick from
//! /proc/PID/schedstat over windows of many ticks (3 windows: min, median,
//! max), RSS and PSS from smaps_rollup, system calls per tick from
//! `strace -c`, and CPU per tick as the volume grows to 10,000 keys.
//!
//! The watchers of one measurement run at the same time on the same volume,
//! so that every one sees the same machine; idle pollers use a few hundred
//! microseconds a tick at most, too little to disturb each other on 2 cores.

use std::{path::Path, thread, time::Duration};

use configmapwatch::{AtomicWriter, Payload};

use crate::peers::{self, Peer, Running};

/// One watcher's idle figures at one interval.
pub struct IdleFigures {
    pub peer: Peer,
    /// µs of CPU per tick, one value per window.
    pub cpu_per_tick_us: Vec<f64>,
    pub ticks_per_window: f64,
    pub rss_kib: u64,
    pub pss_kib: u64,
    /// (syscall, calls per tick), or why not measured.
    pub syscalls: Result<Vec<(String, f64)>, String>,
}

/// The idle figures of every peer at one interval; the inotify peers (no
/// ticks) report CPU per second of the window instead.
pub struct IdleRun {
    pub interval: Duration,
    pub figures: Vec<IdleFigures>,
}

/// A volume written the kubelet's way (the library's `AtomicWriter`, which
/// follows Kubernetes' pkg/volume/util/atomic_writer.go step by step):
/// config.json plus `extra` keys of 100 bytes.
pub fn volume(dir: &Path, extra: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut p = Payload::new();
    p.insert("config.json", "{\"idle\": true}").unwrap();
    for k in 0..extra {
        p.insert(&format!("k{k:05}.txt"), "x".repeat(100)).unwrap();
    }
    AtomicWriter::new(dir).write(&p).unwrap();
}

fn settle(running: &mut [Running], interval: Duration) {
    for r in running.iter_mut() {
        if let Err(e) = r.wait_ready(Duration::from_secs(60)) {
            panic!("{} did not start: {e}", r.peer.label());
        }
    }
    // Past start-up and the first ticks' first-touch costs (watchexec and
    // PollingObserver take their first snapshot of the tree).
    thread::sleep((interval * 3).max(Duration::from_secs(2)));
}

/// µs per tick of each of `running` over `repeats` windows of `window`.
pub fn cpu_windows(
    running: &[Running],
    interval: Duration,
    window: Duration,
    repeats: usize,
) -> Vec<Vec<f64>> {
    let mut per = vec![Vec::new(); running.len()];
    for _ in 0..repeats {
        let t0 = std::time::Instant::now();
        let before: Vec<u64> = running.iter().map(|r| peers::cpu_ns(r.pid())).collect();
        thread::sleep(window);
        let elapsed = t0.elapsed();
        for (i, r) in running.iter().enumerate() {
            let ns = peers::cpu_ns(r.pid()).saturating_sub(before[i]) as f64;
            let ticks = elapsed.as_secs_f64() / interval.as_secs_f64();
            per[i].push(ns / ticks / 1e3);
        }
    }
    per
}

/// Every peer idle at `interval`: CPU windows, memory, then strace.
pub fn measure(
    tmp: &Path,
    interval: Duration,
    window: Duration,
    repeats: usize,
    strace_window: Duration,
) -> IdleRun {
    let dir = tmp.join(format!("idle-{}", interval.as_millis()));
    volume(&dir, 0);
    // The inotify peers idle on a volume of their own: the pollers' reads
    // of the shared one (directory opens, stats) would wake them.
    let quiet = tmp.join(format!("idle-{}-inotify", interval.as_millis()));
    volume(&quiet, 0);
    let mut running: Vec<Running> = Peer::POLLERS
        .iter()
        .filter(|p| p.polls_at(interval))
        .map(|&p| peers::spawn(p, &dir, interval, false))
        .chain(
            Peer::NOTIFIERS
                .iter()
                .map(|&p| peers::spawn(p, &quiet, interval, false)),
        )
        .collect();
    settle(&mut running, interval);
    let cpu = cpu_windows(&running, interval, window, repeats);
    let memory: Vec<(u64, u64)> = running.iter().map(|r| peers::memory_kib(r.pid())).collect();
    // All traced at once: one window for every watcher.
    let ticks = strace_window.as_secs_f64() / interval.as_secs_f64();
    let traces: Vec<_> = running
        .iter()
        .map(|r| {
            let pid = r.pid();
            thread::spawn(move || peers::strace_counts(pid, strace_window))
        })
        .collect();
    let traces: Vec<_> = traces.into_iter().map(|t| t.join().unwrap()).collect();
    let figures = running
        .into_iter()
        .zip(cpu)
        .zip(memory)
        .zip(traces)
        .map(|(((r, cpu), (rss, pss)), trace)| {
            let peer = r.peer;
            r.stop();
            IdleFigures {
                peer,
                cpu_per_tick_us: cpu,
                ticks_per_window: window.as_secs_f64() / interval.as_secs_f64(),
                rss_kib: rss,
                pss_kib: pss,
                syscalls: trace.map(|counts| {
                    counts
                        .into_iter()
                        .map(|(n, c)| (n, c as f64 / ticks))
                        .collect()
                }),
            }
        })
        .collect();
    IdleRun { interval, figures }
}

/// CPU per tick (median of `repeats` windows, µs) of each poller at
/// `interval` on volumes of 10, 1,000 and 10,000 keys: (keys, peer, µs).
pub fn by_keys(
    tmp: &Path,
    interval: Duration,
    window: Duration,
    repeats: usize,
) -> Vec<(usize, Peer, Vec<f64>)> {
    let mut out = Vec::new();
    for keys in [10usize, 1_000, 10_000] {
        eprintln!("  {keys} keys");
        let dir = tmp.join(format!("keys-{keys}"));
        // config.json is one of the keys.
        volume(&dir, keys - 1);
        let mut running: Vec<Running> = Peer::POLLERS
            .iter()
            .filter(|p| p.polls_at(interval))
            .map(|&p| peers::spawn(p, &dir, interval, false))
            .collect();
        settle(&mut running, interval);
        let cpu = cpu_windows(&running, interval, window, repeats);
        for (r, cpu) in running.into_iter().zip(cpu) {
            out.push((keys, r.peer, cpu));
            r.stop();
        }
    }
    out
}
