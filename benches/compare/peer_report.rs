//! The peer comparison's part of BENCHMARKS.md (one table per
//! measurement, with ratios to the floor and to each peer), its targets, and
//! its plots: idle CPU per tick against the number of keys, and node-scale
//! CPU and PSS against N.

use std::{fmt::Write, path::Path, time::Duration};

use plotters::prelude::*;

use crate::{
    idle::{IdleFigures, IdleRun},
    peers::{Peer, StaticMemory, spread},
    scale::{InotifyLimit, NodeFigures},
};

pub struct PeerResults {
    /// (peer, version) from the setup script.
    pub versions: Vec<(String, String)>,
    /// Every peer idle at 10 ms, then at 1 s.
    pub idle: Vec<IdleRun>,
    /// (keys, peer, µs per tick of each window) at 1 s.
    pub keys: Vec<(usize, Peer, Vec<f64>)>,
    pub node: Vec<NodeFigures>,
    pub inotify_limits: Vec<InotifyLimit>,
    pub static_rss: Result<StaticMemory, String>,
    /// Every program alone in a memory cgroup after a reload, the static
    /// build first.
    pub charged: Result<Vec<crate::charged::Charged>, String>,
}

pub struct Target {
    pub what: String,
    pub measured: String,
    pub met: bool,
}

fn mib(kib: u64) -> String {
    format!("{:.2}", kib as f64 / 1024.0)
}

fn us(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn median(v: &[f64]) -> f64 {
    spread(v).1
}

impl PeerResults {
    fn run(&self, interval: Duration) -> Option<&IdleRun> {
        self.idle.iter().find(|r| r.interval == interval)
    }

    fn figure(run: &IdleRun, peer: Peer) -> Option<&IdleFigures> {
        run.figures.iter().find(|f| f.peer == peer)
    }

    fn median_of(run: &IdleRun, peer: Peer) -> f64 {
        Self::figure(run, peer).map_or(f64::NAN, |f| median(&f.cpu_per_tick_us))
    }

    pub fn versions_table(&self, out: &mut String) {
        out.push_str(
            "## The watchers\n\nInstalled by `benches/compare/peers/setup-peers.sh` (cached under target/peers), \
             run as separate processes on the same volumes. A peer's detection is the moment one of its output \
             lines reaches the benchmark; peers that print paths are credited with the version `..data` names at \
             that moment (what a reload triggered by that line would read). watchexec runs with `--debounce=1ms` \
             (its minimum; the default 50 ms would be measured otherwise) and no ignore files.\n\n\
             | watcher | version | installed from | stands for |\n| --- | --- | --- | --- |\n",
        );
        let version = |n: &str| {
            self.versions
                .iter()
                .find(|v| v.0 == n)
                .map_or("?".into(), |v| v.1.clone())
        };
        let rows = [
            (
                "configmapwatch",
                "this build (release; static musl build for memory)".to_owned(),
                "this repository",
                "readlink(..data) per tick",
            ),
            (
                "C floor: readlink(..data) + clock_nanosleep",
                version("floor"),
                "benches/compare/peers/floor.c, built by gcc",
                "the physical limit of a poller",
            ),
            (
                "watchdog `PollingObserver`",
                version("watchdog"),
                "PyPI `watchdog`",
                "the usual polling fallback",
            ),
            (
                "watchdog `Observer` (inotify)",
                version("watchdog"),
                "PyPI `watchdog`",
                "the original demo's approach",
            ),
            (
                "`watchexec --poll`",
                version("watchexec"),
                "crates.io `watchexec-cli` (`cargo install --locked`)",
                "notify's PollWatcher, the Rust polling peer",
            ),
            (
                "`inotifywait -m -r`",
                version("inotifywait"),
                "Debian `inotify-tools`",
                "a plain inotify sidecar (configmap-reload's mechanism)",
            ),
            (
                "`fswatch -m poll_monitor -r -l 1`",
                version("fswatch"),
                "Debian `fswatch` (has the poll monitor)",
                "a portable poller; run at 1 s only: its poll monitor sleeps whole seconds, at least 1 \
                 (libfswatch `MIN_POLL_LATENCY = 1`), and compares whole-second mtimes",
            ),
            (
                "inotify on config.json (naive)",
                "-".into(),
                "our imitation (benches/compare/inotify_watchers.rs)",
                "viper/fsnotify users' single-file watch: no peer shows it",
            ),
        ];
        for (w, v, from, what) in rows {
            let _ = writeln!(out, "| {w} | {v} | {from} | {what} |");
        }
        let _ = writeln!(out, "\nFUSE: {}.\n", version("bindfs"));
    }

    fn idle_table(out: &mut String, run: &IdleRun) {
        let every = humantime::format_duration(run.interval);
        let floor = Self::median_of(run, Peer::Floor);
        let ours = Self::median_of(run, Peer::Ours);
        let ticks = run.figures.first().map_or(0.0, |f| f.ticks_per_window);
        let _ = writeln!(
            out,
            "### Idle CPU per tick, every {every}\n\n/proc/PID/schedstat (ns on CPU, every thread), {} windows of {ticks:.0} ticks, \
             all watchers at once on the same idle volume. The inotify peers have no ticks: their figure is CPU \
             per {every} of the window.\n\n\
             | watcher | µs per tick: min | median | max | × floor (median) | × configmapwatch (median) |\n\
             | --- | ---: | ---: | ---: | ---: | ---: |",
            run.figures.first().map_or(0, |f| f.cpu_per_tick_us.len())
        );
        for f in &run.figures {
            let (lo, mid, hi) = spread(&f.cpu_per_tick_us);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.2} | {:.2} |",
                f.peer.label(),
                us(lo),
                us(mid),
                us(hi),
                mid / floor,
                mid / ours
            );
        }
        out.push('\n');
    }

    fn memory_table(&self, out: &mut String) {
        let Some(run) = self.run(Duration::from_secs(1)) else {
            return;
        };
        let ours = Self::figure(run, Peer::Ours).map_or(0, |f| f.pss_kib) as f64;
        out.push_str(
            "### Memory while idle (every 1s; smaps_rollup)\n\n\
             | watcher | RSS MiB | PSS MiB | PSS × configmapwatch |\n| --- | ---: | ---: | ---: |\n",
        );
        for f in &run.figures {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.1} |",
                f.peer.label(),
                mib(f.rss_kib),
                mib(f.pss_kib),
                f.pss_kib as f64 / ours
            );
        }
        match &self.static_rss {
            Ok(s) => {
                let _ = writeln!(
                    out,
                    "| configmapwatch, static musl build ({:.2} MB binary) | {} | {} | |\n\n\
                     What the static build's RSS is made of (smaps, KiB):\n\n| mapping | RSS KiB |\n| --- | ---: |",
                    s.binary_bytes as f64 / 1e6,
                    mib(s.rss_kib),
                    mib(s.pss_kib)
                );
                for (part, kib) in &s.parts {
                    let _ = writeln!(out, "| {part} | {kib} |");
                }
            }
            Err(e) => {
                let _ = writeln!(
                    out,
                    "| configmapwatch, static musl build | not measured: {e} | | |"
                );
            }
        }
        out.push('\n');
    }

    fn syscall_table(&self, out: &mut String) {
        out.push_str(
            "### System calls per idle tick (strace -c -f, all watchers traced at once)\n\n\
             | watcher | every 10ms | every 1s |\n| --- | --- | --- |\n",
        );
        let cell = |f: Option<&IdleFigures>| match f.map(|f| &f.syscalls) {
            Some(Ok(calls)) if calls.is_empty() => "**0**: none".to_owned(),
            Some(Ok(calls)) => {
                let total: f64 = calls.iter().map(|c| c.1).sum();
                let top: Vec<String> = calls
                    .iter()
                    .take(5)
                    .map(|(n, c)| format!("{c:.2} {n}"))
                    .collect();
                format!("**{total:.2}**: {}", top.join(", "))
            }
            Some(Err(e)) => format!("not measured: {e}"),
            None => "-".into(),
        };
        for peer in Peer::POLLERS.iter().chain(&Peer::NOTIFIERS) {
            let at = |ms| {
                self.run(Duration::from_millis(ms))
                    .and_then(|r| Self::figure(r, *peer))
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                peer.label(),
                cell(at(10)),
                cell(at(1000))
            );
        }
        out.push_str("\nThe inotify peers have no ticks: theirs are calls per 10 ms / 1 s of the window.\n\n");
    }

    fn keys_table(&self, out: &mut String) {
        out.push_str(
            "### Idle CPU per tick as the volume grows (every 1s; median µs per tick)\n\n\
             Each volume has config.json and 100-byte keys; configmapwatch watches config.json (its idle tick \
             is one readlink whatever the volume holds), the walk-based pollers walk the whole tree.\n\n\
             | watcher | 10 keys | 1,000 keys | 10,000 keys | 10,000 ÷ 10 |\n| --- | ---: | ---: | ---: | ---: |\n",
        );
        for peer in Peer::POLLERS {
            let at = |k: usize| {
                self.keys
                    .iter()
                    .find(|(n, p, _)| *n == k && *p == peer)
                    .map_or(f64::NAN, |(_, _, v)| median(v))
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.1} |",
                peer.label(),
                us(at(10)),
                us(at(1000)),
                us(at(10000)),
                at(10000) / at(10)
            );
        }
        out.push_str("\n![Idle CPU per tick vs keys](docs/idle-keys.svg)\n\n");
    }

    fn node_table(&self, out: &mut String) {
        out.push_str(
            "### Node scale: N pod volumes on one machine, every 1s, as uid 65534\n\n\
             Total CPU from schedstat over every process while idle; total PSS; then one update published to every \
             volume at once (written one after the other): the time from the first swap to the last volume's report, \
             and the worst lag of any volume from its own swap.\n\n\
             | watchers | N | processes | total CPU, % of a core | µs per volume per tick | × N floors (CPU) | total PSS MiB | all reported after ms | worst lag ms | missed |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for f in &self.node {
            let floor = self
                .node
                .iter()
                .find(|g| {
                    // Separate processes against N floor processes; one
                    // process against one floor process reading every link.
                    let floor = if f.processes == 1 {
                        "one C floor"
                    } else {
                        "C floor"
                    };
                    g.n == f.n && g.what.starts_with(floor)
                })
                .map_or(f64::NAN, |g| g.cpu_percent);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.3}% | {:.1} | {:.2} | {} | {:.0} | {:.0} | {} |",
                f.what,
                f.n,
                f.processes,
                f.cpu_percent,
                f.cpu_per_volume_tick_us,
                f.cpu_percent / floor,
                mib(f.pss_kib),
                f.all_reported_ms,
                f.max_lag_ms,
                f.missed
            );
        }
        out.push_str(
            "\n![Node scale: total CPU and PSS vs N](docs/node-scale.svg)\n\n\
             ### N inotifywait as one non-root user (uid 65534)\n\n\
             Started one after another under the machine's `fs.inotify.max_user_instances` (read, not changed).\n\n\
             | N | max_user_instances | started | first failure | its error | total PSS MiB of those running |\n\
             | ---: | ---: | ---: | --- | --- | ---: |\n",
        );
        for l in &self.inotify_limits {
            let (at, error) = match &l.first_failure {
                Some((i, e)) => (
                    format!("watcher {i}"),
                    e.replace('\n', " ").replace('|', "\\|"),
                ),
                None => ("none".into(), "-".into()),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {at} | {error} | {} |",
                l.n,
                l.max_user_instances,
                l.started,
                mib(l.pss_kib)
            );
        }
        out.push('\n');
    }

    pub fn markdown(&self, out: &mut String) {
        out.push_str("## Idle cost against the peers\n\n");
        for run in &self.idle {
            Self::idle_table(out, run);
        }
        self.memory_table(out);
        out.push_str(&crate::charged::markdown(&self.charged));
        out.push('\n');
        self.syscall_table(out);
        self.keys_table(out);
        self.node_table(out);
    }

    pub fn targets(&self, fuse: &Result<Vec<crate::linux::LagResult>, String>) -> Vec<Target> {
        let mut t = Vec::new();
        if let Some(run) = self.run(Duration::from_secs(1)) {
            let (ours, floor) = (
                Self::median_of(run, Peer::Ours),
                Self::median_of(run, Peer::Floor),
            );
            t.push(Target {
                what: "idle CPU per tick at 1 s within 1.3x of the C floor (medians)".into(),
                measured: format!("{} µs vs {} µs: {:.2}x", us(ours), us(floor), ours / floor),
                met: ours <= 1.3 * floor,
            });
            for peer in [Peer::WatchdogPolling, Peer::Watchexec, Peer::Fswatch] {
                let theirs = Self::median_of(run, peer);
                t.push(Target {
                    what: format!(
                        "idle CPU per tick at 1 s at least 5x below {}",
                        peer.label()
                    ),
                    measured: format!(
                        "{} µs vs {} µs: {:.1}x lower",
                        us(ours),
                        us(theirs),
                        theirs / ours
                    ),
                    met: theirs >= 5.0 * ours,
                });
            }
        }
        if let Some(run) = self.run(Duration::from_millis(10)) {
            let (ours, floor) = (
                Self::median_of(run, Peer::Ours),
                Self::median_of(run, Peer::Floor),
            );
            t.push(Target {
                what: "idle CPU per tick at 10 ms within 1.1x of the C floor (medians)".into(),
                measured: format!("{} µs vs {} µs: {:.2}x", us(ours), us(floor), ours / floor),
                met: ours <= 1.1 * floor,
            });
        }
        // What the kubelet counts and evicts on, not RSS (which a program
        // can lower by dropping pages the kernel keeps charged): the 1.3
        // MiB of the former idle-RSS target. The peers are shown, not
        // ranked: their shared libraries stay charged to other groups.
        let what = "working set (cgroup usage minus inactive file) of the static build after a reload under 1.3 MiB";
        match &self.charged {
            Ok(rows) if !rows.is_empty() => {
                let ours = &rows[0];
                let peers: Vec<String> = rows[1..]
                    .iter()
                    .filter(|c| !c.label.starts_with("configmapwatch"))
                    .map(|c| format!("{} {}", c.label, mib(c.working_set_kib())))
                    .collect();
                t.push(Target {
                    what: what.into(),
                    measured: format!(
                        "{} MiB (charged {} MiB); peers' working sets (MiB): {}",
                        mib(ours.working_set_kib()),
                        mib(ours.usage_kib),
                        peers.join(", ")
                    ),
                    met: ours.working_set_kib() < 1331,
                });
            }
            Ok(_) => {}
            Err(e) => t.push(Target {
                what: what.into(),
                measured: format!("not measured: {e}"),
                met: false,
            }),
        }
        match fuse {
            Ok(lags) => {
                let ours_missed: usize = lags
                    .iter()
                    .filter(|l| l.peer == Some(Peer::Ours))
                    .map(|l| l.missed)
                    .sum();
                let notifiers: Vec<_> = lags.iter().filter(|l| l.interval.is_none()).collect();
                let all_missed = notifiers.iter().all(|l| l.missed == l.published);
                t.push(Target {
                    what:
                        "FUSE: configmapwatch misses 0 updates where every inotify peer misses all"
                            .into(),
                    measured: format!(
                        "configmapwatch missed {ours_missed}; inotify peers missed {}",
                        notifiers
                            .iter()
                            .map(|l| format!("{} of {} ({})", l.missed, l.published, l.name))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    met: ours_missed == 0 && all_missed,
                });
            }
            Err(e) => t.push(Target {
                what: "FUSE: configmapwatch misses 0 updates where every inotify peer misses all"
                    .into(),
                measured: format!("not measured: {e}"),
                met: false,
            }),
        }
        for n in [100, 500] {
            let find = |p: &str| self.node.iter().find(|f| f.n == n && f.what.starts_with(p));
            if let (Some(ours), Some(floor)) = (find("configmapwatch"), find("C floor")) {
                let ratio = ours.cpu_percent / floor.cpu_percent;
                t.push(Target {
                    what: format!("node scale: {n} separate configmapwatch within 1.3x of {n} floor programs in total CPU"),
                    measured: format!("{:.3}% vs {:.3}% of a core: {ratio:.2}x", ours.cpu_percent, floor.cpu_percent),
                    met: ratio <= 1.3,
                });
            }
        }
        let one_of = |p: &str| {
            self.node
                .iter()
                .find(|f| f.n == 500 && f.processes == 1 && f.what.starts_with(p))
        };
        if let Some(one) = one_of("one configmapwatch") {
            let floor = one_of("one C floor").map_or(String::new(), |f| {
                format!(
                    " (one C floor process reading the same 500 links: {:.3}%, {:.2}x)",
                    f.cpu_percent,
                    one.cpu_percent / f.cpu_percent
                )
            });
            t.push(Target {
                what: "one configmapwatch watching 500 directories at 1 s: under 0.1% of a core, every update reported within one interval".into(),
                measured: format!(
                    "{:.3}% of a core{floor}; worst lag {:.0} ms, {} missed",
                    one.cpu_percent, one.max_lag_ms, one.missed
                ),
                met: one.cpu_percent < 0.1 && one.max_lag_ms <= 1000.0 && one.missed == 0,
            });
        }
        t
    }

    /// docs/idle-keys.svg and docs/node-scale.svg.
    pub fn plot(&self, dir: &Path) {
        let path = dir.join("idle-keys.svg");
        let root = SVGBackend::new(&path, (900, 520)).into_drawing_area();
        root.fill(&WHITE).unwrap();
        let top = self
            .keys
            .iter()
            .map(|k| median(&k.2))
            .fold(1.0f64, f64::max)
            * 2.0;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Idle CPU per tick vs keys in the volume (every 1 s)",
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((5f64..20_000f64).log_scale(), (10f64..top).log_scale())
            .unwrap();
        chart
            .configure_mesh()
            .x_desc("keys (log scale)")
            .y_desc("µs of CPU per idle tick (log scale)")
            .draw()
            .unwrap();
        for (i, peer) in Peer::POLLERS.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let points: Vec<(f64, f64)> = self
                .keys
                .iter()
                .filter(|k| k.1 == *peer)
                .map(|k| (k.0 as f64, median(&k.2).max(10.0)))
                .collect();
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .unwrap()
                .label(peer.label())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .unwrap();
        root.present().unwrap();

        let path = dir.join("node-scale.svg");
        let root = SVGBackend::new(&path, (1100, 480)).into_drawing_area();
        root.fill(&WHITE).unwrap();
        let (left, right) = root.split_horizontally(550);
        let setups: Vec<String> = {
            let mut s: Vec<String> = self.node.iter().map(|f| f.what.clone()).collect();
            s.dedup();
            s.sort();
            s.dedup();
            s
        };
        type Value = fn(&NodeFigures) -> f64;
        let cpu: Value = |f| f.cpu_percent;
        let pss: Value = |f| f.pss_kib as f64 / 1024.0;
        let panels = [
            (
                &left,
                "Total idle CPU vs N (every 1 s)",
                "% of one core",
                cpu,
            ),
            (&right, "Total PSS vs N", "MiB", pss),
        ];
        for (area, caption, unit, value) in panels {
            let top = self.node.iter().map(value).fold(0.0f64, f64::max) * 1.15 + 1e-3;
            let mut chart = ChartBuilder::on(area)
                .caption(caption, ("sans-serif", 18))
                .margin(15)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(0f64..550f64, 0f64..top)
                .unwrap();
            chart
                .configure_mesh()
                .x_desc("N pod volumes")
                .y_desc(unit)
                .draw()
                .unwrap();
            for (i, setup) in setups.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                let points: Vec<(f64, f64)> = self
                    .node
                    .iter()
                    .filter(|f| &f.what == setup)
                    .map(|f| (f.n as f64, value(f)))
                    .collect();
                chart
                    .draw_series(LineSeries::new(points, color.stroke_width(2)))
                    .unwrap()
                    .label(setup.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .unwrap();
        }
        root.present().unwrap();
    }
}
