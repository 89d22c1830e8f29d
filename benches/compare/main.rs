//! The comparison benchmark: detection lag of configmapwatch's polling
//! against inotify watchers (on a local disk and through a FUSE mount), the
//! cost of idle polling, reload cost and shutdown time, in one run.
//!
//! `cargo bench --bench compare` runs it in full and rewrites BENCHMARKS.md
//! and docs/lag.svg; `cargo bench --bench compare -- --quick` runs a small
//! version (CI) and writes its report under target/ instead; `-- --live-only`
//! prints the `Live<T>` section alone.

#[cfg(target_os = "linux")]
mod cost;
#[cfg(target_os = "linux")]
mod inotify_watchers;
#[cfg(target_os = "linux")]
mod live;
#[cfg(target_os = "linux")]
mod report;

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

    use configmapwatch::{
        AtomicWriter, Event, EventKind, Payload, WatchOptions, Watcher, shutdown_channel,
    };

    use crate::{Detections, cost, inotify_watchers, live, report};

    #[global_allocator]
    static ALLOC: cost::CountingAlloc = cost::CountingAlloc;

    /// Sizes of one run.
    pub struct Plan {
        pub quick: bool,
        pub fast_updates: usize,
        pub second_updates: usize,
        pub five_second_updates: usize,
        pub fuse_updates: usize,
        pub idle_window: Duration,
        pub repeats: usize,
    }

    /// One contender's lags, in milliseconds, and what it missed.
    pub struct LagResult {
        pub name: String,
        pub interval: Option<Duration>,
        pub mount: &'static str,
        pub lags_ms: Vec<f64>,
        pub missed: usize,
        pub published: usize,
    }

    enum Kind {
        Poll(Duration),
        DirectoryWatch,
        FileWatch,
    }

    struct Contender {
        name: String,
        interval: Option<Duration>,
        detections: Detections,
        stop: Option<configmapwatch::Shutdown>,
    }

    fn start(kind: Kind, dir: &Path) -> Contender {
        let detections: Detections = Arc::new(Mutex::new(Vec::new()));
        match kind {
            Kind::Poll(interval) => {
                let (shutdown, listener) = shutdown_channel();
                let mut watcher = Watcher::new(WatchOptions::new(dir).with_interval(interval));
                let d = detections.clone();
                thread::spawn(move || {
                    watcher.run(&listener, &mut |e: Event| {
                        if e.kind != EventKind::Error {
                            d.lock().unwrap().push((e.version, e.detected_at));
                        }
                    })
                });
                Contender {
                    name: format!(
                        "configmapwatch, poll {}",
                        humantime::format_duration(interval)
                    ),
                    interval: Some(interval),
                    detections,
                    stop: Some(shutdown),
                }
            }
            Kind::DirectoryWatch => {
                inotify_watchers::directory_watch(dir, detections.clone());
                Contender {
                    name: "inotify on the directory (configmap-reload)".into(),
                    interval: None,
                    detections,
                    stop: None,
                }
            }
            Kind::FileWatch => {
                inotify_watchers::file_watch(dir, detections.clone());
                Contender {
                    name: "inotify on config.json (naive)".into(),
                    interval: None,
                    detections,
                    stop: None,
                }
            }
        }
    }

    fn payload(n: usize) -> Payload {
        let mut p = Payload::new();
        p.insert("config.json", format!("{{\"update\": {n}}}"))
            .unwrap();
        p
    }

    /// Publishes `updates` versions at random moments (gaps drawn from
    /// `gap`), watched by `kinds` through `watch_dir` (the volume itself, or
    /// a FUSE mount of it).
    fn lag_stream(
        volume: &Path,
        watch_dir: &Path,
        mount: &'static str,
        kinds: Vec<Kind>,
        updates: usize,
        gap: (Duration, Duration),
    ) -> Vec<LagResult> {
        std::fs::create_dir_all(volume).unwrap();
        let writer = AtomicWriter::new(volume);
        writer.write(&payload(0)).unwrap();
        let mut contenders: Vec<Contender> =
            kinds.into_iter().map(|k| start(k, watch_dir)).collect();
        thread::sleep(Duration::from_millis(200)); // let every contender settle on version 0
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
        thread::sleep(gap.0); // the last update's detection window
        contenders
            .iter_mut()
            .map(|c| {
                if let Some(stop) = c.stop.take() {
                    stop.trigger();
                }
                let mut first_seen = HashMap::new();
                for (v, t) in c.detections.lock().unwrap().iter() {
                    first_seen.entry(v.clone()).or_insert(*t);
                }
                let mut lags_ms = Vec::new();
                let mut missed = 0;
                for (version, swapped) in &swaps {
                    match first_seen.get(version) {
                        Some(t) => lags_ms.push(
                            t.duration_since(*swapped).unwrap_or_default().as_secs_f64() * 1e3,
                        ),
                        None => missed += 1,
                    }
                }
                LagResult {
                    name: c.name.clone(),
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

    pub fn main() {
        let quick = std::env::args().any(|a| a == "--quick");
        let plan = if quick {
            Plan {
                quick,
                fast_updates: 20,
                second_updates: 4,
                five_second_updates: 2,
                fuse_updates: 10,
                idle_window: Duration::from_secs(2),
                repeats: 5,
            }
        } else {
            Plan {
                quick,
                fast_updates: 200,
                second_updates: 60,
                five_second_updates: 12,
                fuse_updates: 50,
                idle_window: Duration::from_secs(10),
                repeats: 20,
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

        eprintln!(
            "lag: 10 ms, 100 ms and inotify watchers ({} updates)",
            plan.fast_updates
        );
        let mut lags = lag_stream(
            &tmp.path().join("fast"),
            &tmp.path().join("fast"),
            "local disk",
            vec![
                Kind::Poll(ms(10)),
                Kind::Poll(ms(100)),
                Kind::DirectoryWatch,
                Kind::FileWatch,
            ],
            plan.fast_updates,
            (ms(150), ms(350)),
        );
        eprintln!("lag: 1 s ({} updates)", plan.second_updates);
        lags.extend(lag_stream(
            &tmp.path().join("1s"),
            &tmp.path().join("1s"),
            "local disk",
            vec![Kind::Poll(ms(1000))],
            plan.second_updates,
            (ms(1100), ms(1900)),
        ));
        eprintln!("lag: 5 s ({} updates)", plan.five_second_updates);
        lags.extend(lag_stream(
            &tmp.path().join("5s"),
            &tmp.path().join("5s"),
            "local disk",
            vec![Kind::Poll(ms(5000))],
            plan.five_second_updates,
            (ms(5100), ms(6500)),
        ));

        let source = tmp.path().join("fuse-source");
        let mountpoint = tmp.path().join("fuse-mount");
        let fuse = match fuse_mount(&source, &mountpoint) {
            Ok(()) => {
                eprintln!(
                    "lag: through a bindfs FUSE mount ({} updates)",
                    plan.fuse_updates
                );
                let result = lag_stream(
                    &source,
                    &mountpoint,
                    "FUSE (bindfs)",
                    vec![Kind::Poll(ms(100)), Kind::DirectoryWatch, Kind::FileWatch],
                    plan.fuse_updates,
                    (ms(150), ms(350)),
                );
                let unmounted = Command::new("fusermount3")
                    .arg("-u")
                    .arg(&mountpoint)
                    .status();
                if !unmounted.is_ok_and(|s| s.success()) {
                    let _ = Command::new("umount").arg(&mountpoint).status();
                }
                Ok(result)
            }
            Err(reason) => {
                eprintln!("FUSE comparison skipped: {reason}");
                Err(reason)
            }
        };

        eprintln!("cost of idle polling, reload cost, shutdown");
        let costs = cost::measure(&plan, tmp.path());

        let report = report::Report {
            plan: &plan,
            lags: &lags,
            fuse: &fuse,
            costs: &costs,
            elapsed: started.elapsed(),
        };
        eprintln!("Live<T>: reads while swapping, typed reloads");
        let live_costs = live::measure(&plan, tmp.path());
        let markdown = report.markdown() + &live::markdown(&live_costs);
        println!("{markdown}");
        let (md_path, svg_path): (PathBuf, PathBuf) = if plan.quick {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-quick");
            std::fs::create_dir_all(&dir).unwrap();
            (dir.join("BENCHMARKS.md"), dir.join("lag.svg"))
        } else {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            std::fs::create_dir_all(root.join("docs")).unwrap();
            (root.join("BENCHMARKS.md"), root.join("docs/lag.svg"))
        };
        std::fs::write(&md_path, &markdown).unwrap();
        report.plot(&svg_path);
        eprintln!("wrote {} and {}", md_path.display(), svg_path.display());
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
