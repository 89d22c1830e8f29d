//! `Live<T>`: the read path (ns per `get()` from 1 and 2 threads while
//! versions swap, beside an `RwLock<Arc<T>>` swapped as often in the same
//! run) and the typed reload cost of a 1 MiB YAML, TOML and JSON config
//! (detect + read + parse + deserialize into a struct: one driven tick).

use std::{
    fmt::Write,
    hint::black_box,
    path::Path,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use configmapwatch::{AtomicWriter, EventKind, Live, Payload};
use serde::Deserialize;

use crate::linux::Plan;

#[derive(Deserialize)]
#[allow(dead_code)] // Read through black_box only.
struct Small {
    version: u64,
    name: String,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Big {
    entries: Vec<Entry>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Entry {
    name: String,
    value: String,
    n: u64,
}

pub struct LiveCosts {
    /// (reader threads, ns per Live::get, ns per RwLock read + Arc clone)
    pub get_ns: Vec<(usize, f64, f64)>,
    /// (format, ms per typed reload)
    pub reload_ms: Vec<(&'static str, Vec<f64>)>,
}

fn payload(key: &str, text: String) -> Payload {
    let mut p = Payload::new();
    p.insert(key, text).unwrap();
    p
}

/// Just under 1 MiB of `entries`, in `format`, varied by `n`.
pub fn big(format: &str, n: usize) -> String {
    let mut out = String::new();
    let mut i = 0;
    match format {
        "yaml" => out.push_str("entries:\n"),
        "json" => out.push_str("{\"entries\": [\n"),
        _ => {}
    }
    while out.len() < (1 << 20) - 300 {
        let value = format!("{n}-{}", "x".repeat(60));
        match format {
            "yaml" => {
                let _ = write!(
                    out,
                    "  - name: k{i:06}\n    value: \"{value}\"\n    n: {n}\n"
                );
            }
            "toml" => {
                let _ = write!(
                    out,
                    "[[entries]]\nname = \"k{i:06}\"\nvalue = \"{value}\"\nn = {n}\n"
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "{}{{\"name\": \"k{i:06}\", \"value\": \"{value}\", \"n\": {n}}}",
                    if i == 0 { "" } else { "," }
                );
            }
        }
        i += 1;
    }
    if format == "json" {
        out.push_str("]}\n");
    }
    out
}

fn reload(dir: &Path, format: &'static str, repeats: usize) -> Vec<f64> {
    let key = format!("config.{format}");
    std::fs::create_dir_all(dir).unwrap();
    let writer = AtomicWriter::new(dir);
    writer.write(&payload(&key, big(format, 0))).unwrap();
    let (live, mut driver) = Live::<Big>::watch(dir)
        .key(key.clone())
        .start_driven(Duration::from_secs(10))
        .unwrap();
    (1..=repeats)
        .map(|n| {
            writer.write(&payload(&key, big(format, n))).unwrap();
            let t = Instant::now();
            let event = driver.tick().unwrap();
            let took = t.elapsed().as_secs_f64() * 1e3;
            assert_eq!(event.kind, EventKind::Change, "{:?}", event.error);
            assert_eq!(live.get().entries[0].n, n as u64);
            took
        })
        .collect()
}

fn small(n: u64) -> Payload {
    payload(
        "config.json",
        format!("{{\"version\": {n}, \"name\": \"v{n}\"}}"),
    )
}

/// ns per call of `read` from `threads` threads over `calls` calls each.
fn per_call(threads: usize, calls: u64, read: impl Fn() + Sync) -> f64 {
    let t = Instant::now();
    thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..calls {
                    read();
                }
            });
        }
    });
    t.elapsed().as_nanos() as f64 / calls as f64
}

fn get_costs(dir: &Path, calls: u64) -> Vec<(usize, f64, f64)> {
    std::fs::create_dir_all(dir).unwrap();
    let writer = AtomicWriter::new(dir);
    writer.write(&small(0)).unwrap();
    let live = Live::<Small>::watch(dir)
        .interval(Duration::from_millis(1))
        .start(Duration::from_secs(10))
        .unwrap();
    let lock = RwLock::new(Arc::new(Small {
        version: 0,
        name: "v0".into(),
    }));
    let stop = AtomicBool::new(false);
    let mut out = Vec::new();
    thread::scope(|s| {
        // Versions swap throughout: the volume for Live, the lock's Arc
        // (as often, every ms) for the RwLock.
        s.spawn(|| {
            let mut n = 1;
            while !stop.load(Ordering::Relaxed) {
                writer.write(&small(n)).unwrap();
                *lock.write().unwrap() = Arc::new(Small {
                    version: n,
                    name: format!("v{n}"),
                });
                n += 1;
                thread::sleep(Duration::from_millis(1));
            }
        });
        for threads in [1, 2] {
            let live_ns = per_call(threads, calls, || {
                black_box(live.get());
            });
            let lock_ns = per_call(threads, calls, || {
                black_box(lock.read().unwrap().clone());
            });
            out.push((threads, live_ns, lock_ns));
        }
        stop.store(true, Ordering::Relaxed);
    });
    out
}

/// (format, ms per typed reload) of a 1 MiB YAML, TOML and JSON config.
pub fn reloads(plan: &Plan, tmp: &Path) -> Vec<(&'static str, Vec<f64>)> {
    ["yaml", "toml", "json"]
        .into_iter()
        .map(|format| {
            (
                format,
                reload(&tmp.join(format!("live-{format}")), format, plan.repeats),
            )
        })
        .collect()
}

pub fn measure(plan: &Plan, tmp: &Path) -> LiveCosts {
    let calls = if plan.quick { 200_000 } else { 5_000_000 };
    LiveCosts {
        get_ns: get_costs(&tmp.join("live-get"), calls),
        reload_ms: reloads(plan, tmp),
    }
}

/// `format<TAB>p50 ms<TAB>max ms` lines, for the profile comparison (which
/// runs this benchmark built at each opt-level).
pub fn reload_lines(reloads: &[(&'static str, Vec<f64>)]) -> String {
    reloads
        .iter()
        .map(|(format, v)| {
            format!(
                "{format}\t{}\t{}\n",
                percentile(v, 50.0),
                v.iter().copied().fold(f64::NAN, f64::max)
            )
        })
        .collect()
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn markdown(c: &LiveCosts) -> String {
    let mut out = String::from(
        "\n## Live<T>: reads while versions swap\n\n\
         ns per call, each thread calling in a tight loop while a writer swaps a new version \
         every ms (`Live::get()` against the volume; the same swap rate for the lock).\n\n\
         | reader threads | `Live::get()` ns | `RwLock<Arc<T>>` read + clone ns |\n| ---: | ---: | ---: |\n",
    );
    for (threads, live, lock) in &c.get_ns {
        let _ = writeln!(out, "| {threads} | {live:.1} | {lock:.1} |");
    }
    out.push_str(
        "\n## Live<T>: typed reload of a 1 MiB config (detect + read + parse + deserialize, one tick; target < 10 ms)\n\n\
         | format | p50 ms | max ms | runs | target |\n| --- | ---: | ---: | ---: | --- |\n",
    );
    for (format, v) in &c.reload_ms {
        let p50 = percentile(v, 50.0);
        let _ = writeln!(
            out,
            "| {format} | {p50:.2} | {:.2} | {} | {} |",
            v.iter().copied().fold(f64::NAN, f64::max),
            v.len(),
            if p50 < 10.0 { "met" } else { "missed" }
        );
    }
    out
}
