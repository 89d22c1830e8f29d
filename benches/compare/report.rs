//! Turning measurements into BENCHMARKS.md, the lag plots (local disk and
//! FUSE), and the verdict on each target; the peer comparison's own tables
//! and plots are in peer_report.rs.

use std::{fmt::Write, path::Path, time::Duration};

use plotters::prelude::*;

use crate::{
    cost::Costs,
    linux::{LagResult, Plan},
    peer_report::PeerResults,
    peers::Peer,
};

pub struct Report<'a> {
    pub plan: &'a Plan,
    pub lags: &'a [LagResult],
    pub fuse: &'a Result<Vec<LagResult>, String>,
    pub costs: &'a Costs,
    pub peers: &'a PeerResults,
    pub elapsed: Duration,
}

/// Nearest-rank percentile of `values` (unsorted).
fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NAN, f64::max)
}

fn ms(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.0}")
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    // Other work on the machine shows in every figure: say how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "{cpu}, {cores} cores, Linux {}; load average at the end {}",
        kernel.trim(),
        load.join(" ")
    )
}

struct Target {
    what: String,
    measured: String,
    met: bool,
}

impl Report<'_> {
    fn lag_table(out: &mut String, lags: &[LagResult]) {
        out.push_str(
            "| watcher | filesystem | updates | p50 ms | p90 ms | p99 ms | max ms | missed |\n",
        );
        out.push_str("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        for l in lags {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                l.name,
                l.mount,
                l.published,
                ms(percentile(&l.lags_ms, 50.0)),
                ms(percentile(&l.lags_ms, 90.0)),
                ms(percentile(&l.lags_ms, 99.0)),
                ms(max(&l.lags_ms)),
                l.missed
            );
        }
    }

    fn targets(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        // Lag targets are ours; the peers' lags are in the tables.
        for l in self
            .lags
            .iter()
            .chain(self.fuse.iter().flatten())
            .filter(|l| l.peer == Some(Peer::Ours))
        {
            let interval_ms = l.interval.unwrap().as_secs_f64() * 1e3;
            let p99 = percentile(&l.lags_ms, 99.0);
            targets.push(Target {
                what: format!("{} ({}): lag p99 <= interval + 2 ms", l.name, l.mount),
                measured: format!("p99 {} ms, {} missed", ms(p99), l.missed),
                met: p99 <= interval_ms + 2.0 && l.missed == 0,
            });
        }
        for t in self.peers.targets(self.fuse) {
            targets.push(Target {
                what: t.what,
                measured: t.measured,
                met: t.met,
            });
        }
        let c = self.costs;
        for idle in &c.idle {
            let every = humantime::format_duration(idle.interval);
            match &idle.syscalls {
                Ok(s) => {
                    let readlinks = s
                        .per_tick
                        .iter()
                        .find(|(n, _)| n.starts_with("readlink"))
                        .map_or(0.0, |p| p.1);
                    let others: f64 = s
                        .per_tick
                        .iter()
                        // The wait between ticks: the tool's sigtimedwait on
                        // Linux, a channel's futex for library loops, and
                        // the restart of either after a stop.
                        .filter(|(n, _)| {
                            !n.starts_with("readlink")
                                && !["rt_sigtimedwait", "futex", "restart_syscall"]
                                    .contains(&n.as_str())
                        })
                        .map(|p| p.1)
                        .sum::<f64>()
                        + 0.0;
                    targets.push(Target {
                        what: format!("every {every}: exactly one readlink per idle tick, nothing but the wait besides"),
                        measured: format!("{readlinks:.3} readlink + {others:.3} other calls per tick (besides the wait), {} ticks", s.ticks),
                        met: (readlinks - 1.0).abs() < 1e-9 && others < 0.01,
                    });
                }
                Err(e) => targets.push(Target {
                    what: format!("every {every}: system calls per idle tick"),
                    measured: format!("not measured: {e}"),
                    met: false,
                }),
            }
            targets.push(Target {
                what: format!("every {every}: peak RSS < 4 MiB"),
                measured: format!("{:.2} MiB", idle.peak_rss_kib as f64 / 1024.0),
                met: idle.peak_rss_kib < 4096,
            });
            if idle.interval >= Duration::from_secs(1) {
                targets.push(Target {
                    what: format!("every {every}: idle CPU < 0.01% of a core"),
                    measured: format!("{:.4}%", idle.cpu_percent),
                    met: idle.cpu_percent < 0.01,
                });
            }
        }
        targets.push(Target {
            what: "zero heap allocations per idle tick".into(),
            measured: format!(
                "{} per check(); {} in run() over ~{} ticks at 1 ms",
                c.allocs_per_check, c.allocs_in_run, c.run_ticks
            ),
            met: c.allocs_per_check == 0.0 && c.allocs_in_run == 0,
        });
        let p50 = percentile(&c.reload_1mib_ms, 50.0);
        targets.push(Target {
            what: "1 MiB config: detect + read + parse < 10 ms".into(),
            measured: format!("p50 {} ms, max {} ms", ms(p50), ms(max(&c.reload_1mib_ms))),
            met: p50 < 10.0,
        });
        let worst = max(&c.shutdown_ms);
        targets.push(Target {
            what: "SIGTERM to exit (5 s interval) < 50 ms".into(),
            measured: format!("max {} ms over {} runs", ms(worst), c.shutdown_ms.len()),
            met: worst < 50.0,
        });
        targets
    }

    pub fn check_targets(&self) -> Result<(), String> {
        let missed: Vec<String> = self
            .targets()
            .into_iter()
            .filter(|t| !t.met)
            .map(|t| format!("- {}: {}", t.what, t.measured))
            .collect();
        if missed.is_empty() {
            Ok(())
        } else {
            Err(missed.join("\n"))
        }
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let command = if self.plan.quick {
            "cargo bench --bench compare -- --quick"
        } else {
            "cargo bench --bench compare"
        };
        let _ = writeln!(out, "# Benchmarks\n");
        let _ = writeln!(
            out,
            "Regenerated by `{command}` on {} (took {:.0} s).\n\nMachine: {}.\n",
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
            self.elapsed.as_secs_f64(),
            machine()
        );
        self.peers.versions_table(&mut out);
        out.push_str("## Detection lag\n\nUpdates are published the kubelet's way (Kubernetes' pkg/volume/util/atomic_writer.go: new timestamped directory, `..data_tmp`, rename over `..data`, old directory removed) at random moments: 150-350 ms apart for the 10 ms and 100 ms pollers and the inotify peers, 1.1-1.9 s apart for the 1 s pollers. Lag runs from the swap (the `..data` symlink's mtime) to detection. All watchers of a stream run at once and see the same updates. A missed update is a version the watcher never reported.\n\n");
        Self::lag_table(&mut out, self.lags);
        out.push_str("\n![Lag distributions, local disk](docs/lag.svg)\n\n## Through a FUSE mount\n\nUpdates are written to the source directory; the watchers watch a bindfs mount of it. inotify sees no events for changes made underneath a FUSE mount.\n\n");
        match self.fuse {
            Ok(lags) => Self::lag_table(&mut out, lags),
            Err(reason) => {
                let _ = writeln!(out, "SKIPPED: {reason}.");
            }
        }
        out.push_str("\n![Lag distributions, FUSE](docs/lag-fuse.svg)\n\n");
        self.peers.markdown(&mut out);
        out.push_str("\n## Cost of idle polling (release binary, nothing changing)\n\n| interval | system calls per idle tick (strace -c) | CPU per tick | idle CPU | peak RSS |\n| --- | --- | ---: | ---: | ---: |\n");
        for idle in &self.costs.idle {
            let calls = match &idle.syscalls {
                Ok(s) => s
                    .per_tick
                    .iter()
                    .map(|(n, c)| format!("{c:.3} {n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                Err(e) => format!("not measured: {e}"),
            };
            let _ = writeln!(
                out,
                "| {} | {calls} | {:.1} µs | {:.4}% of a core | {:.2} MiB |",
                humantime::format_duration(idle.interval),
                idle.cpu_per_tick_us,
                idle.cpu_percent,
                idle.peak_rss_kib as f64 / 1024.0
            );
        }
        let c = self.costs;
        let _ = writeln!(
            out,
            "\nHeap allocations per idle tick: {} per `check()` (10,000 calls); {} in `run()` over ~{} ticks at 1 ms, \
             after a one-time {} on the thread's first timed wait (std's channel registering the thread).\n",
            c.allocs_per_check, c.allocs_in_run, c.run_ticks, c.allocs_first_wait
        );
        out.push_str("## Reload cost (detect + read + parse, one `check()`)\n\n| volume | p50 ms | max ms | runs |\n| --- | ---: | ---: | ---: |\n");
        for (what, v) in [
            ("config.json of 1 MiB", &c.reload_1mib_ms),
            ("100 keys of 1 KiB, --all-keys", &c.reload_100_keys_ms),
        ] {
            let _ = writeln!(
                out,
                "| {what} | {} | {} | {} |",
                ms(percentile(v, 50.0)),
                ms(max(v)),
                v.len()
            );
        }
        let _ = writeln!(
            out,
            "\n## Shutdown\n\nSIGTERM to exit with a 5 s interval: p50 {} ms, max {} ms over {} runs.\n",
            ms(percentile(&c.shutdown_ms, 50.0)),
            ms(max(&c.shutdown_ms)),
            c.shutdown_ms.len()
        );
        out.push_str("## Targets\n\n| target | measured | |\n| --- | --- | --- |\n");
        for t in self.targets() {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                t.what,
                t.measured,
                if t.met { "met" } else { "**missed**" }
            );
        }
        out
    }

    /// Every plot, into `dir`.
    pub fn plot(&self, dir: &Path) {
        Self::lag_plot(self.lags, "local disk", &dir.join("lag.svg"));
        if let Ok(fuse) = self.fuse {
            Self::lag_plot(fuse, "FUSE (bindfs)", &dir.join("lag-fuse.svg"));
        }
        self.peers.plot(dir);
    }

    /// Cumulative lag distributions, log-scaled, one line per watcher.
    fn lag_plot(lags: &[LagResult], mount: &str, path: &Path) {
        // Watchers that missed updates say so in the legend: a line drawn
        // from one detection must not pass for a good result; those that
        // saw nothing are listed in the caption's place of a line.
        let series: Vec<(String, Vec<f64>)> = lags
            .iter()
            .filter(|l| !l.lags_ms.is_empty())
            .map(|l| {
                let mut v = l.lags_ms.clone();
                v.sort_by(f64::total_cmp);
                let missed = match l.missed {
                    0 => String::new(),
                    n => format!(", missed {n} of {}", l.published),
                };
                (format!("{}{missed}", l.name), v)
            })
            .collect();
        let blind: Vec<&str> = lags
            .iter()
            .filter(|l| l.lags_ms.is_empty())
            .map(|l| l.name.as_str())
            .collect();
        let root = SVGBackend::new(path, (1100, 700)).into_drawing_area();
        root.fill(&WHITE).unwrap();
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("Detection lag after the kubelet's swap (cumulative), {mount}"),
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((0.005f64..10_000f64).log_scale(), 0f64..1f64)
            .unwrap();
        chart
            .configure_mesh()
            .x_desc("lag (ms, log scale)")
            .y_desc("fraction of updates detected")
            .draw()
            .unwrap();
        for (i, (label, values)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let n = values.len() as f64;
            let points = values
                .iter()
                .enumerate()
                .map(|(k, v)| (v.max(0.005), (k + 1) as f64 / n));
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .unwrap()
                .label(label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 12))
            .draw()
            .unwrap();
        if !blind.is_empty() {
            root.draw(&Text::new(
                format!("saw no update at all: {}", blind.join("; ")),
                (70, 680),
                ("sans-serif", 13).into_font().color(&RED),
            ))
            .unwrap();
        }
        root.present().unwrap();
    }
}
