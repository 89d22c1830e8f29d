//! `Live::get` beside an `RwLock<Arc<T>>` read and clone: ns per get from
//! 1, 2 and 8 reader threads while a writer swaps a new version every ms
//! (a kubelet-style write of the volume, one driven tick of the `Live`,
//! and a new `Arc` stored in the lock, so that both face the same load).
//!
//! Built on the library alone (no `cli`), so that it is quick to build and
//! can be run with each arc-swap version the bound allows:
//! `cargo bench --bench live_get --no-default-features`. The figures and
//! what they decided are in BENCHMARKS.md ("Live::get: arc-swap or a
//! lock").

use std::{
    hint::black_box,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use configmapwatch::{AtomicWriter, Live, Payload};

#[derive(serde::Deserialize)]
#[allow(dead_code)] // Read through black_box only.
struct Small {
    version: u64,
    name: String,
}

fn small(n: u64) -> Payload {
    let mut p = Payload::new();
    p.insert(
        "config.json",
        format!("{{\"version\": {n}, \"name\": \"v{n}\"}}"),
    )
    .unwrap();
    p
}

/// ns of wall time per call, per thread: `threads` threads each calling
/// `read` `calls` times, all started together.
fn per_call(threads: usize, calls: u64, read: &(impl Fn() + Sync)) -> f64 {
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; a filter or other flags are ignored.
    let quick = std::env::args().any(|a| a == "--quick");
    let (calls, rounds) = if quick { (100_000, 3) } else { (2_000_000, 7) };
    let tmp = tempfile::tempdir().unwrap();
    let writer = AtomicWriter::new(tmp.path());
    writer.write(&small(0)).unwrap();
    let (live, mut driver) = Live::<Small>::watch(tmp.path())
        .start_driven(Duration::from_secs(10))
        .unwrap();
    let lock = RwLock::new(Arc::new(Small {
        version: 0,
        name: "v0".into(),
    }));
    let stop = AtomicBool::new(false);
    println!("| reader threads | `Live::get()` ns | `RwLock<Arc<T>>` read + clone ns |");
    println!("| ---: | ---: | ---: |");
    thread::scope(|s| {
        s.spawn(|| {
            let mut n = 1;
            while !stop.load(Ordering::Relaxed) {
                writer.write(&small(n)).unwrap();
                driver.tick();
                *lock.write().unwrap() = Arc::new(Small {
                    version: n,
                    name: format!("v{n}"),
                });
                n += 1;
                thread::sleep(Duration::from_millis(1));
            }
        });
        for threads in [1, 2, 8] {
            // Alternated round by round, so that a burst of other load on
            // the machine falls on both sides; the median of each.
            let (mut live_ns, mut lock_ns) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                live_ns.push(per_call(threads, calls, &|| {
                    black_box(live.get());
                }));
                lock_ns.push(per_call(threads, calls, &|| {
                    black_box(lock.read().unwrap().clone());
                }));
            }
            println!(
                "| {threads} | {:.1} | {:.1} |",
                median(live_ns),
                median(lock_ns)
            );
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(
        live.get().version > 0,
        "the versions swapped during the run"
    );
}
