//! The comparison benchmark: configmapwatch against the real peers users
//! would otherwise run (Python watchdog's Observer and PollingObserver,
//! `watchexec --poll`, `inotifywait -m -r`, `fswatch`'s poll monitor) and a
//! C floor program, all installed by `peers/setup-peers.sh` and run as
//! processes on the same stream of kubelet-style updates: detection lag on a
//! local disk and through a FUSE mount, idle CPU per tick against the floor,
//! memory, system calls, cost as the volume grows, and node scale (hundreds
//! of watchers on one machine); then reload cost, shutdown time and
//! `Live<T>`, in one run.
//!
//! `cargo bench --bench compare` runs it in full and rewrites BENCHMARKS.md
//! and the plots in docs/; `cargo bench --bench compare -- --quick` runs
//! every peer for a shorter time (CI) and writes its report under
//! target/bench-quick instead; `-- --live-only` prints the `Live<T>` section
//! alone, `-- --profiles-only` the release profile's opt-levels side by side
//! and `-- --memory-only [LABEL=BINARY...]` the cgroup-charged memory of
//! every program (root; extra builds of ours by path).

#[cfg(target_os = "linux")]
mod charged;
#[cfg(target_os = "linux")]
mod cost;
#[cfg(target_os = "linux")]
mod idle;
#[cfg(target_os = "linux")]
mod inotify_watchers;
#[cfg(target_os = "linux")]
mod live;
#[cfg(target_os = "linux")]
mod peer_report;
#[cfg(target_os = "linux")]
mod peers;
#[cfg(target_os = "linux")]
mod profiles;
#[cfg(target_os = "linux")]
mod report;
#[cfg(target_os = "linux")]
mod scale;

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("the comparison benchmark needs Linux (inotify, strace, /proc)");
}

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

/// What a contender saw: (version, when).
#[cfg(target_os = "linux")]
pub type Detections = std::sync::Arc<std::sync::Mutex<Vec<(String, std::time::SystemTime)>>>;

#[cfg(target_os = "linux")]
mod linux {
    use std::{
        collections::HashMap,
        path::{Path, PathBuf},
        process::Command,
        sync::{Arc, Mutex},
        thread,
        time::{Duration, Instant, SystemTime},
    };

    use configmapwatch::{AtomicWriter, Payload};

    use crate::{
        Detections, charged, cost, idle, inotify_watchers, live, peer_report, peers, peers::Peer,
        profiles, report, scale,
    };

    #[global_allocator]
    static ALLOC: cost::CountingAlloc = cost::CountingAlloc;

    /// Sizes of one run.
    pub struct Plan {
        pub quick: bool,
        pub fast_updates: usize,
        pub second_updates: usize,
        pub fuse_updates: usize,
        pub fuse_second_updates: usize,
        pub idle_window: Duration,
        pub repeats: usize,
        /// Idle CPU windows (each of >= 120 ticks at 1 s and >= 2,000 at
        /// 10 ms in the full run), and how many.
        pub idle_1s_window: Duration,
        pub idle_10ms_window: Duration,
        pub idle_repeats: usize,
        pub strace_1s_window: Duration,
        pub strace_10ms_window: Duration,
        pub keys_window: Duration,
        pub keys_repeats: usize,
        pub node_window: Duration,
    }

    /// One contender's lags, in milliseconds, and what it missed.
    pub struct LagResult {
        pub name: String,
        pub peer: Option<Peer>,
        pub interval: Option<Duration>,
        pub mount: &'static str,
        pub lags_ms: Vec<f64>,
        pub missed: usize,
        pub published: usize,
    }

    struct Contender {
        name: String,
        peer: Option<Peer>,
        interval: Option<Duration>,
        detections: Detections,
        running: Option<peers::Running>,
    }

    fn payload(n: usize) -> Payload {
        let mut p = Payload::new();
        p.insert("config.json", format!("{{\"update\": {n}}}"))
            .unwrap();
        p
    }

    /// Publishes `updates` versions at random moments (gaps drawn from
    /// `gap`) with the library's `AtomicWriter`, which takes the steps of
    /// Kubernetes' pkg/volume/util/atomic_writer.go (new timestamped
    /// directory, `..data_tmp`, rename over `..data`, old directory
    /// removed). `pollers` (every peer at each interval), the inotify peers
    /// and, when `naive`, our single-file inotify imitation watch it
    /// through `watch_dir` (the volume itself, or a FUSE mount of it).
    #[allow(clippy::too_many_arguments)]
    fn lag_stream(
        volume: &Path,
        watch_dir: &Path,
        mount: &'static str,
        intervals: &[Duration],
        notifiers: bool,
        updates: usize,
        gap: (Duration, Duration),
    ) -> Vec<LagResult> {
        std::fs::create_dir_all(volume).unwrap();
        let writer = AtomicWriter::new(volume);
        writer.write(&payload(0)).unwrap();
        let mut contenders: Vec<Contender> = Vec::new();
        for &interval in intervals {
            for peer in Peer::POLLERS.into_iter().filter(|p| p.polls_at(interval)) {
                let r = peers::spawn(peer, watch_dir, interval, false);
                contenders.push(Contender {
                    name: peer.name(Some(interval)),
                    peer: Some(peer),
                    interval: Some(interval),
                    detections: r.detections.clone(),
                    running: Some(r),
                });
            }
        }
        if notifiers {
            for peer in Peer::NOTIFIERS {
                let r = peers::spawn(peer, watch_dir, Duration::ZERO, false);
                contenders.push(Contender {
                    name: peer.name(None),
                    peer: Some(peer),
                    interval: None,
                    detections: r.detections.clone(),
                    running: Some(r),
                });
            }
            // The one case no peer shows: a watch on the file itself,
            // which the first swap ends (viper/fsnotify users' mistake).
            let detections: Detections = Arc::new(Mutex::new(Vec::new()));
            inotify_watchers::file_watch(watch_dir, detections.clone());
            contenders.push(Contender {
                name: "inotify on config.json (naive, our imitation)".into(),
                peer: None,
                interval: None,
                detections,
                running: None,
            });
        }
        for c in &mut contenders {
            if let Some(Err(e)) = c
                .running
                .as_mut()
                .map(|r| r.wait_ready(Duration::from_secs(60)))
            {
                panic!("{} did not start: {e}", c.name);
            }
        }
        // Let every contender settle on version 0 (first snapshots taken).
        let slowest = intervals.iter().max().copied().unwrap_or_default();
        thread::sleep(slowest * 2 + Duration::from_millis(500));
        let mut swaps: Vec<(String, SystemTime)> = Vec::new();
        for n in 1..=updates {
            let pause = gap.0 + (gap.1 - gap.0).mul_f64(fastrand::f64());
            thread::sleep(pause);
            let version = match writer.write(&payload(n)).unwrap() {
                configmapwatch::Outcome::Written { version, .. } => version,
                other => panic!("{other:?}"),
            };
            let swapped = std::fs::symlink_metadata(volume.join("..data"))
                .unwrap()
                .modified()
                .unwrap();
            swaps.push((version, swapped));
        }
        // The last update's detection window.
        thread::sleep(slowest * 2 + Duration::from_millis(300));
        contenders
            .into_iter()
            .map(|c| {
                let mut said = String::new();
                if let Some(r) = c.running {
                    said = format!(
                        "{}{}",
                        r.errors.lock().unwrap().join("\n"),
                        r.stderr.lock().unwrap()
                    );
                    r.stop();
                }
                let mut first_seen = HashMap::new();
                for (v, t) in c.detections.lock().unwrap().iter() {
                    first_seen.entry(v.clone()).or_insert(*t);
                }
                let mut lags_ms = Vec::new();
                let mut missed = 0;
                for (n, (version, swapped)) in swaps.iter().enumerate() {
                    match first_seen.get(version) {
                        Some(t) => lags_ms.push(
                            t.duration_since(*swapped).unwrap_or_default().as_secs_f64() * 1e3,
                        ),
                        None => {
                            missed += 1;
                            // A poller missing an update is a finding to
                            // explain, not only to count.
                            if c.interval.is_some() {
                                eprintln!(
                                    "  {} ({mount}) missed update {} of {} ({version}); it said: {}",
                                    c.name,
                                    n + 1,
                                    swaps.len(),
                                    if said.trim().is_empty() { "nothing" } else { said.trim() }
                                );
                            }
                        }
                    }
                }
                LagResult {
                    name: c.name,
                    peer: c.peer,
                    interval: c.interval,
                    mount,
                    lags_ms,
                    missed,
                    published: swaps.len(),
                }
            })
            .collect()
    }

    fn fuse_mount(source: &Path, mountpoint: &Path) -> Result<(), String> {
        if !Path::new("/dev/fuse").exists() {
            return Err("no /dev/fuse".into());
        }
        std::fs::create_dir_all(source).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(mountpoint).map_err(|e| e.to_string())?;
        let out = Command::new("bindfs")
            .arg("--no-allow-other")
            .arg(source)
            .arg(mountpoint)
            .output()
            .map_err(|e| {
                format!("bindfs not available ({e}); install Debian's bindfs and fuse3")
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "bindfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Gaps between updates for the 10 ms / 100 ms pollers and the inotify
    /// peers, and for the 1 s pollers.
    const FAST_GAPS: (Duration, Duration) =
        (Duration::from_millis(150), Duration::from_millis(350));
    const SLOW_GAPS: (Duration, Duration) =
        (Duration::from_millis(1100), Duration::from_millis(1900));

    /// Lag through a bindfs mount of a volume under `tmp`: every peer at
    /// 10 ms and 100 ms and the inotify peers, then (`with_1s`) every peer
    /// at 1 s; `Err` (printed) when FUSE cannot be mounted here.
    fn fuse_lags(tmp: &Path, plan: &Plan, with_1s: bool) -> Result<Vec<LagResult>, String> {
        let ms = Duration::from_millis;
        let source = tmp.join("fuse-source");
        let mountpoint = tmp.join("fuse-mount");
        if let Err(reason) = fuse_mount(&source, &mountpoint) {
            eprintln!("FUSE COMPARISON SKIPPED: {reason}");
            return Err(reason);
        }
        eprintln!(
            "lag, bindfs FUSE mount: 10 ms, 100 ms, inotify ({} updates), 1 s ({} updates)",
            plan.fuse_updates,
            if with_1s { plan.fuse_second_updates } else { 0 }
        );
        let mut result = lag_stream(
            &source.join("fast"),
            &mountpoint.join("fast"),
            "FUSE (bindfs)",
            &[ms(10), ms(100)],
            true,
            plan.fuse_updates,
            FAST_GAPS,
        );
        if with_1s {
            result.extend(lag_stream(
                &source.join("1s"),
                &mountpoint.join("1s"),
                "FUSE (bindfs)",
                &[ms(1000)],
                false,
                plan.fuse_second_updates,
                SLOW_GAPS,
            ));
        }
        fuse_unmount(&mountpoint);
        Ok(result)
    }

    fn fuse_unmount(mountpoint: &Path) {
        let unmounted = Command::new("fusermount3")
            .arg("-u")
            .arg(mountpoint)
            .status();
        if !unmounted.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg(mountpoint).status();
        }
    }

    pub fn main() {
        let quick = std::env::args().any(|a| a == "--quick");
        let secs = Duration::from_secs;
        let plan = if quick {
            Plan {
                quick,
                fast_updates: 20,
                second_updates: 4,
                fuse_updates: 10,
                fuse_second_updates: 3,
                idle_window: secs(2),
                repeats: 5,
                idle_1s_window: secs(5),
                idle_10ms_window: secs(2),
                idle_repeats: 3,
                strace_1s_window: secs(3),
                strace_10ms_window: secs(1),
                keys_window: secs(3),
                keys_repeats: 1,
                node_window: secs(3),
            }
        } else {
            Plan {
                quick,
                fast_updates: 200,
                second_updates: 60,
                fuse_updates: 100,
                fuse_second_updates: 30,
                idle_window: secs(10),
                repeats: 20,
                // 125 ticks at 1 s, 2,500 at 10 ms, each window.
                idle_1s_window: secs(125),
                idle_10ms_window: secs(25),
                idle_repeats: 3,
                strace_1s_window: secs(20),
                strace_10ms_window: secs(5),
                keys_window: secs(15),
                keys_repeats: 3,
                node_window: secs(30),
            }
        };
        let started = Instant::now();
        let tmp = tempfile::tempdir().unwrap();
        let ms = Duration::from_millis;
        // `-- --live-only`: just the Live<T> section, printed.
        if std::env::args().any(|a| a == "--live-only") {
            println!("{}", live::markdown(&live::measure(&plan, tmp.path())));
            return;
        }
        // `-- --live-reload-only`: the typed reloads as tab-separated
        // lines, read by the profile comparison.
        if std::env::args().any(|a| a == "--live-reload-only") {
            print!("{}", live::reload_lines(&live::reloads(&plan, tmp.path())));
            return;
        }
        // `-- --profiles-only`: opt-level 3, "s" and "z" side by side.
        if std::env::args().any(|a| a == "--profiles-only") {
            peers::setup();
            println!(
                "{}",
                profiles::markdown(&profiles::measure(&plan, tmp.path()))
            );
            return;
        }
        // `-- --memory-only [LABEL=BINARY...]`: the cgroup-charged memory
        // of every program, and of other builds of ours.
        if std::env::args().any(|a| a == "--memory-only") {
            peers::setup();
            let extra: Vec<(String, PathBuf)> = std::env::args()
                .filter_map(|a| {
                    let (label, path) = a.split_once('=')?;
                    Some((label.to_owned(), PathBuf::from(path)))
                })
                .collect();
            println!(
                "{}",
                charged::markdown(&charged::measure(tmp.path(), &extra))
            );
            return;
        }
        // `-- --fuse-only`: the FUSE lag section alone, printed (to chase a
        // missed update without the hour-long run).
        if std::env::args().any(|a| a == "--fuse-only") {
            peers::setup();
            for r in &fuse_lags(tmp.path(), &plan, false).unwrap() {
                println!("{}: {} of {} missed", r.name, r.missed, r.published);
            }
            return;
        }

        eprintln!("peers: installing (cached under target/peers) and building the floor");
        let versions = peers::setup();
        eprintln!(
            "lag, local disk: every peer at 10 ms and 100 ms, inotify peers ({} updates)",
            plan.fast_updates
        );
        let disk = tmp.path().join("disk");
        let mut lags = lag_stream(
            &disk.join("fast"),
            &disk.join("fast"),
            "local disk",
            &[ms(10), ms(100)],
            true,
            plan.fast_updates,
            FAST_GAPS,
        );
        eprintln!(
            "lag, local disk: every peer at 1 s ({} updates)",
            plan.second_updates
        );
        lags.extend(lag_stream(
            &disk.join("1s"),
            &disk.join("1s"),
            "local disk",
            &[ms(1000)],
            false,
            plan.second_updates,
            SLOW_GAPS,
        ));

        let fuse = fuse_lags(tmp.path(), &plan, true);

        eprintln!("idle CPU, memory, system calls: every peer at 10 ms");
        let idle_runs = vec![
            idle::measure(
                tmp.path(),
                ms(10),
                plan.idle_10ms_window,
                plan.idle_repeats,
                plan.strace_10ms_window,
            ),
            {
                eprintln!("idle CPU, memory, system calls: every peer at 1 s");
                idle::measure(
                    tmp.path(),
                    ms(1000),
                    plan.idle_1s_window,
                    plan.idle_repeats,
                    plan.strace_1s_window,
                )
            },
        ];
        eprintln!("idle CPU per tick at 1 s vs keys in the volume");
        let keys = idle::by_keys(tmp.path(), ms(1000), plan.keys_window, plan.keys_repeats);

        let mut node = Vec::new();
        let mut inotify_limits = Vec::new();
        for n in [100, 500] {
            for peer in [Peer::Ours, Peer::Floor] {
                eprintln!("node scale: {n} x {} at 1 s", peer.label());
                node.push(scale::separate(
                    tmp.path(),
                    peer,
                    n,
                    ms(1000),
                    plan.node_window,
                ));
            }
            for peer in [Peer::Ours, Peer::Floor] {
                eprintln!(
                    "node scale: one {} watching {n} directories at 1 s",
                    peer.label()
                );
                node.push(scale::one_process(
                    tmp.path(),
                    peer,
                    n,
                    ms(1000),
                    plan.node_window,
                ));
            }
            eprintln!("node scale: {n} x inotifywait as uid 65534");
            inotify_limits.push(scale::inotify_limit(tmp.path(), n));
        }
        let static_rss = peers::static_idle_memory(tmp.path());
        eprintln!("memory charged to a cgroup per program, after a reload");
        let charged = charged::measure(tmp.path(), &[]);

        eprintln!("cost of idle polling, reload cost, shutdown");
        let costs = cost::measure(&plan, tmp.path());

        let peer_results = peer_report::PeerResults {
            versions,
            idle: idle_runs,
            keys,
            node,
            inotify_limits,
            static_rss,
            charged,
        };
        let report = report::Report {
            plan: &plan,
            lags: &lags,
            fuse: &fuse,
            costs: &costs,
            peers: &peer_results,
            elapsed: started.elapsed(),
        };
        eprintln!("Live<T>: reads while swapping, typed reloads");
        let live_costs = live::measure(&plan, tmp.path());
        // Three static release builds and three bench builds: the full run's
        // (and `-- --profiles-only`), not CI's quick one.
        let profile = if plan.quick {
            "\n(The release profile's opt-levels side by side: the full run only.)\n".to_owned()
        } else {
            eprintln!("the release profile: opt-level 3, s and z side by side");
            profiles::markdown(&profiles::measure(&plan, tmp.path()))
        };
        let markdown = report.markdown() + &profile + &live::markdown(&live_costs);
        println!("{markdown}");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let (md_path, svg_dir): (PathBuf, PathBuf) = if plan.quick {
            let dir = root.join("target/bench-quick");
            (dir.join("BENCHMARKS.md"), dir.join("docs"))
        } else {
            (root.join("BENCHMARKS.md"), root.join("docs"))
        };
        std::fs::create_dir_all(&svg_dir).unwrap();
        std::fs::write(&md_path, &markdown).unwrap();
        report.plot(&svg_dir);
        eprintln!(
            "wrote {} and the plots in {}",
            md_path.display(),
            svg_dir.display()
        );
        if let Err(failures) = report.check_targets() {
            eprintln!("targets missed:\n{failures}");
            if plan.quick {
                // The quick run is for keeping the benchmark working; the
                // full run is the one whose figures are reported.
                eprintln!("(quick mode: reported, not fatal)");
            }
        }
    }
}
