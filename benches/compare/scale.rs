//! Node scale: N = 100 and 500 pod volumes on one machine, each watched by
//! its own process (configmapwatch, or the C floor), or all by one process
//! given every directory (configmapwatch, or the C floor); and N
//! `inotifywait` as one non-root user under the machine's
//! `fs.inotify.max_user_instances`.
//!
//! Every watcher runs as uid/gid 65534 (setpriv): per-user limits differ for
//! root. Measured while idle: total CPU (schedstat, summed over every
//! process) and total PSS; then one update is published to every volume at
//! once and the benchmark waits until every volume's update was reported.

use std::{
    collections::HashMap,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant, SystemTime},
};

use configmapwatch::{AtomicWriter, Outcome, Payload};

use crate::peers::{self, Peer, Running};

/// One node-scale setup's figures.
pub struct NodeFigures {
    pub what: String,
    pub n: usize,
    pub processes: usize,
    /// Total CPU while idle, % of one core.
    pub cpu_percent: f64,
    /// µs of CPU per tick per volume.
    pub cpu_per_volume_tick_us: f64,
    pub pss_kib: u64,
    /// From the first swap to the last volume's detection.
    pub all_reported_ms: f64,
    /// Worst per-volume lag (its own swap to its detection).
    pub max_lag_ms: f64,
    /// Volumes whose update was not reported.
    pub missed: usize,
}

/// Where N inotifywait as one user stopped working.
pub struct InotifyLimit {
    pub n: usize,
    pub max_user_instances: String,
    pub started: usize,
    /// (index of the first that failed, its error)
    pub first_failure: Option<(usize, String)>,
    pub pss_kib: u64,
}

fn payload(n: usize) -> Payload {
    let mut p = Payload::new();
    p.insert("config.json", format!("{{\"update\": {n}}}"))
        .unwrap();
    p
}

/// N volumes under `base`, readable by uid 65534.
fn volumes(base: &Path, n: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(base).unwrap();
    let dirs: Vec<PathBuf> = (0..n).map(|i| base.join(format!("pod{i:03}"))).collect();
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap();
        AtomicWriter::new(d).write(&payload(0)).unwrap();
    }
    open_up(base);
    dirs
}

/// tempfile makes 0700 directories: let the unprivileged watchers in.
fn open_up(path: &Path) {
    let mut p = Some(path);
    while let Some(dir) = p {
        if dir == Path::new("/") || dir == Path::new("/tmp") {
            break;
        }
        let mode = std::fs::metadata(dir).unwrap().permissions().mode();
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o755));
        p = dir.parent();
    }
}

/// Publishes version 1 to every volume, then waits up to `timeout` for
/// every volume's update to be reported in `detections`. Returns (time to
/// the last report from the first swap, worst lag, missed).
fn update_all(
    dirs: &[PathBuf],
    detections: &[crate::Detections],
    timeout: Duration,
) -> (f64, f64, usize) {
    let mut swaps: Vec<(String, SystemTime)> = Vec::new();
    for d in dirs {
        let version = match AtomicWriter::new(d).write(&payload(1)).unwrap() {
            Outcome::Written { version, .. } => version,
            other => panic!("{other:?}"),
        };
        let swapped = std::fs::symlink_metadata(d.join("..data"))
            .unwrap()
            .modified()
            .unwrap();
        swaps.push((version, swapped));
    }
    let t = Instant::now();
    let seen = || {
        let mut first: HashMap<String, SystemTime> = HashMap::new();
        for d in detections {
            for (v, at) in d.lock().unwrap().iter() {
                first.entry(v.clone()).or_insert(*at);
            }
        }
        first
    };
    loop {
        let first = seen();
        let done = swaps.iter().all(|(v, _)| first.contains_key(v));
        if done || t.elapsed() > timeout {
            let start = swaps.iter().map(|s| s.1).min().unwrap();
            let mut last = start;
            let mut worst = 0f64;
            let mut missed = 0;
            for (v, swapped) in &swaps {
                match first.get(v) {
                    Some(at) => {
                        last = last.max(*at);
                        worst = worst.max(
                            at.duration_since(*swapped)
                                .unwrap_or_default()
                                .as_secs_f64()
                                * 1e3,
                        );
                    }
                    None => missed += 1,
                }
            }
            let all = last.duration_since(start).unwrap_or_default().as_secs_f64() * 1e3;
            return (all, worst, missed);
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Total CPU (% of a core) of `pids` over `window`.
fn total_cpu(pids: &[u32], window: Duration) -> f64 {
    let t0 = Instant::now();
    let before: u64 = pids.iter().map(|&p| peers::cpu_ns(p)).sum();
    thread::sleep(window);
    let after: u64 = pids.iter().map(|&p| peers::cpu_ns(p)).sum();
    (after - before) as f64 / t0.elapsed().as_nanos() as f64 * 100.0
}

fn wait_all(running: &mut [Running]) {
    for r in running.iter_mut() {
        if let Err(e) = r.wait_ready(Duration::from_secs(120)) {
            panic!("{} did not start: {e}", r.peer.label());
        }
    }
}

/// N separate processes of `peer`, one per volume, at `interval`.
pub fn separate(
    tmp: &Path,
    peer: Peer,
    n: usize,
    interval: Duration,
    window: Duration,
) -> NodeFigures {
    let dirs = volumes(&tmp.join(format!("node-{peer:?}-{n}")), n);
    let mut running: Vec<Running> = dirs
        .iter()
        .map(|d| peers::spawn(peer, d, interval, true))
        .collect();
    wait_all(&mut running);
    thread::sleep(interval * 2);
    let pids: Vec<u32> = running.iter().map(Running::pid).collect();
    let cpu = total_cpu(&pids, window);
    let pss = pids.iter().map(|&p| peers::memory_kib(p).1).sum();
    let detections: Vec<_> = running.iter().map(|r| r.detections.clone()).collect();
    let (all, worst, missed) =
        update_all(&dirs, &detections, interval * 5 + Duration::from_secs(5));
    for r in running {
        r.stop();
    }
    NodeFigures {
        what: format!("{} separate processes", peer.label()),
        n,
        processes: n,
        cpu_percent: cpu,
        cpu_per_volume_tick_us: cpu / 100.0 * interval.as_secs_f64() * 1e6 / n as f64,
        pss_kib: pss,
        all_reported_ms: all,
        max_lag_ms: worst,
        missed,
    }
}

/// One configmapwatch given every one of the N directories (`--dir` once
/// per volume).
pub fn one_process(
    tmp: &Path,
    peer: Peer,
    n: usize,
    interval: Duration,
    window: Duration,
) -> NodeFigures {
    let name = if peer == Peer::Floor { "floor" } else { "ours" };
    let dirs = volumes(&tmp.join(format!("node-one-{name}-{n}")), n);
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
    match peer {
        Peer::Floor => {
            cmd.arg(peers::peers_dir().join("floor"))
                .args(&dirs)
                .arg(interval.as_nanos().to_string());
        }
        _ => {
            cmd.arg(env!("CARGO_BIN_EXE_configmapwatch"))
                .args(["-o", "json", "-l", "warn", "-i"])
                .arg(humantime::format_duration(interval).to_string());
            for d in &dirs {
                cmd.arg("-d").arg(d);
            }
        }
    }
    let mut running = peers::spawn_command(peer, cmd, &dirs[0]);
    // Ready when every directory's initial event is in.
    let t = Instant::now();
    while running.detections.lock().unwrap().len() < n {
        if let Some(status) = running.child.try_wait().unwrap() {
            panic!(
                "{} with {n} directories exited ({status}): {}",
                peer.label(),
                running.stderr.lock().unwrap()
            );
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{} with {n} directories: only {} initial events after 60 s",
            peer.label(),
            running.detections.lock().unwrap().len()
        );
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(interval * 2);
    let pid = running.pid();
    let cpu = total_cpu(&[pid], window);
    let pss = peers::memory_kib(pid).1;
    let (all, worst, missed) = update_all(
        &dirs,
        std::slice::from_ref(&running.detections),
        interval * 5 + Duration::from_secs(5),
    );
    running.stop();
    NodeFigures {
        what: match peer {
            Peer::Floor => "one C floor process, every directory".into(),
            _ => "one configmapwatch, every directory".into(),
        },
        n,
        processes: 1,
        cpu_percent: cpu,
        cpu_per_volume_tick_us: cpu / 100.0 * interval.as_secs_f64() * 1e6 / n as f64,
        pss_kib: pss,
        all_reported_ms: all,
        max_lag_ms: worst,
        missed,
    }
}

/// N `inotifywait -m -r` as uid 65534: how many start, and the error of
/// the first that does not. The limit is read, never changed.
pub fn inotify_limit(tmp: &Path, n: usize) -> InotifyLimit {
    let max_user_instances = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_instances")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|e| format!("unreadable: {e}"));
    let dirs = volumes(&tmp.join(format!("node-inotify-{n}")), n);
    let mut running = Vec::new();
    let mut started = 0;
    let mut first_failure = None;
    for (i, d) in dirs.iter().enumerate() {
        // One at a time: which one fails must not depend on start-up order.
        let mut r = peers::spawn(Peer::Inotifywait, d, Duration::ZERO, true);
        match r.wait_ready(Duration::from_secs(20)) {
            Ok(()) => started += 1,
            Err(e) => {
                if first_failure.is_none() {
                    first_failure = Some((i + 1, e));
                }
            }
        }
        running.push(r);
    }
    let pss = running.iter().map(|r| peers::memory_kib(r.pid()).1).sum();
    for r in running {
        r.stop();
    }
    InotifyLimit {
        n,
        max_user_instances,
        started,
        first_failure,
        pss_kib: pss,
    }
}
