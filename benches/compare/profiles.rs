//! The release profile, chosen by measurement: the static musl build (TLS
//! included, PIE, panics unwinding) at opt-level 3, "s" and "z", side by
//! side on the same commit. For each: the binary's size and whether it is
//! static-pie; a typed reload of a 1 MiB YAML, TOML and JSON config in
//! process (`Live<T>`, this benchmark's `--live-reload-only` built at that
//! opt-level); the same reload as a process (the static binary watching
//! every 1 ms: from the `..data` swap to its change event on our end of the
//! pipe, the config printed in it); and its idle CPU per tick against the
//! C floor, all of them at once on one volume.
//!
//! Each opt-level builds into target/profiles/ (its own target directories:
//! the running benchmark holds target/), through cargo's
//! `CARGO_PROFILE_RELEASE_OPT_LEVEL` (benches inherit the release profile).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use configmapwatch::{AtomicWriter, Payload};

use crate::{
    idle,
    linux::Plan,
    peers::{self, Peer, spread},
};

/// The opt-levels compared.
const LEVELS: [&str; 3] = ["3", "s", "z"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The release profile's opt-level as Cargo.toml sets it (what ships).
pub fn shipped_opt_level() -> String {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap_or_default();
    let mut in_release = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_release = line == "[profile.release]";
        } else if in_release && let Some(v) = line.strip_prefix("opt-level") {
            let v = v.trim_start_matches([' ', '=']).trim_matches('"');
            return format!("opt-level {v}");
        }
    }
    "opt-level 3".into()
}

pub struct ProfileFigures {
    pub level: &'static str,
    pub binary_bytes: u64,
    /// `file`'s verdict.
    pub file: String,
    /// ET_DYN without a PT_INTERP program header: static-pie.
    pub static_pie: bool,
    /// (format, p50 ms, max ms) in process.
    pub in_process: Result<Vec<(String, Vec<f64>)>, String>,
    /// (format, ms of each run) as a process.
    pub process: Result<Vec<(&'static str, Vec<f64>)>, String>,
    /// µs of CPU per idle tick at 10 ms, one value per window.
    pub idle_us: Vec<f64>,
    /// Memory in its own cgroup after a reload.
    pub charged: Result<crate::charged::Charged, String>,
}

pub struct Profiles {
    pub figures: Vec<ProfileFigures>,
    /// The C floor's µs per tick in the same windows.
    pub floor_us: Vec<f64>,
    pub idle_interval: Duration,
    pub idle_window: Duration,
}

fn cargo(level: &str) -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root())
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", level)
        .env("CARGO_PROFILE_BENCH_OPT_LEVEL", level)
        .stderr(Stdio::inherit());
    c
}

/// The static musl binary at `level`.
fn build(level: &str) -> Result<PathBuf, String> {
    let dir = root().join("target/profiles").join(level);
    let status = cargo(level)
        .args(["build", "-q", "--release", "--locked"])
        .args([
            "--target",
            "x86_64-unknown-linux-musl",
            "--bin",
            "configmapwatch",
        ])
        .arg("--target-dir")
        .arg(&dir)
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!(
            "the musl build at opt-level {level} failed ({status})"
        ));
    }
    Ok(dir.join("x86_64-unknown-linux-musl/release/configmapwatch"))
}

/// This benchmark built at `level`; `run` then runs its `Live<T>` reloads
/// (`--live-reload-only`) without building again.
fn bench(level: &str, run: bool, quick: bool) -> Result<String, String> {
    let mut c = cargo(level);
    c.args([
        "bench",
        "-q",
        "--locked",
        "--bench",
        "compare",
        "--target-dir",
    ])
    .arg(
        root()
            .join("target/profiles")
            .join(format!("{level}-bench")),
    );
    if run {
        c.args(["--", "--live-reload-only"]);
        if quick {
            c.arg("--quick");
        }
    } else {
        c.arg("--no-run");
    }
    let out = c.output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "the bench at opt-level {level} failed ({})",
            out.status
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// (format, p50 ms) of one run of the `Live<T>` reloads at `level`.
fn in_process(level: &str, quick: bool) -> Result<Vec<(String, f64)>, String> {
    Ok(bench(level, true, quick)?
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some((f.next()?.to_owned(), f.next()?.parse().ok()?))
        })
        .collect())
}

/// ELF64: e_type ET_DYN (3) and no PT_INTERP (3) program header.
fn is_static_pie(binary: &Path) -> bool {
    let Ok(b) = std::fs::read(binary) else {
        return false;
    };
    let u16_at = |o: usize| b.get(o..o + 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map(|s| u32::from_le_bytes(s.try_into().unwrap()))
    };
    let u64_at = |o: usize| {
        b.get(o..o + 8)
            .map(|s| u64::from_le_bytes(s.try_into().unwrap()))
    };
    if b.get(..5) != Some(b"\x7fELF\x02") || u16_at(16) != Some(3) {
        return false;
    }
    let (Some(phoff), Some(size), Some(count)) = (u64_at(32), u16_at(54), u16_at(56)) else {
        return false;
    };
    (0..usize::from(count)).all(|i| u32_at(phoff as usize + i * usize::from(size)) != Some(3))
}

/// A key of just under 1 MiB, as the `Live<T>` section writes it.
fn payload(format: &str, n: usize) -> Payload {
    let mut p = Payload::new();
    p.insert(&format!("config.{format}"), crate::live::big(format, n))
        .unwrap();
    p
}

/// The static binary reloading a 1 MiB key of each format as a process:
/// ms from the swap to its change event line reaching us, `repeats` runs.
fn process_reload(
    binary: &Path,
    tmp: &Path,
    repeats: usize,
) -> Result<Vec<(&'static str, Vec<f64>)>, String> {
    let mut out = Vec::new();
    for format in ["yaml", "toml", "json"] {
        let dir = tmp.join(format!("process-reload-{format}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let writer = AtomicWriter::new(&dir);
        writer.write(&payload(format, 0)).unwrap();
        // Every 1 ms: the wait for the next tick adds 0.5 ms on average.
        let mut cmd = peers::ours_at(binary, &dir, Duration::from_millis(1));
        cmd.args(["-f", &format!("config.{format}")]);
        let mut running = peers::spawn_command(Peer::Ours, cmd, &dir);
        running.wait_ready(Duration::from_secs(30))?;
        let mut runs = Vec::new();
        for n in 1..=repeats {
            let version = match writer.write(&payload(format, n)).unwrap() {
                configmapwatch::Outcome::Written { version, .. } => version,
                other => return Err(format!("{other:?}")),
            };
            let swapped = std::fs::symlink_metadata(dir.join("..data"))
                .and_then(|m| m.modified())
                .map_err(|e| e.to_string())?;
            let t = Instant::now();
            let seen = loop {
                let found = running
                    .detections
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|(v, _)| *v == version)
                    .map(|(_, at)| *at);
                if let Some(at) = found {
                    break at;
                }
                if t.elapsed() > Duration::from_secs(10) {
                    let errors = running.errors.lock().unwrap().join("\n");
                    return Err(format!("no change event for {format} {version}: {errors}"));
                }
                thread::sleep(Duration::from_millis(1));
            };
            runs.push(
                seen.duration_since(swapped)
                    .unwrap_or_default()
                    .as_secs_f64()
                    * 1e3,
            );
        }
        running.stop();
        out.push((format, runs));
    }
    Ok(out)
}

/// µs per idle tick of each binary and of the floor, all at once.
fn idle_ratio(
    binaries: &[PathBuf],
    tmp: &Path,
    interval: Duration,
    window: Duration,
    repeats: usize,
) -> (Vec<Vec<f64>>, Vec<f64>) {
    let dir = tmp.join("profiles-idle");
    idle::volume(&dir, 0);
    let mut running: Vec<peers::Running> = binaries
        .iter()
        .map(|b| peers::spawn_command(Peer::Ours, peers::ours_at(b, &dir, interval), &dir))
        .collect();
    running.push(peers::spawn(Peer::Floor, &dir, interval, false));
    for r in &mut running {
        if let Err(e) = r.wait_ready(Duration::from_secs(30)) {
            panic!("{} did not start: {e}", r.peer.label());
        }
    }
    thread::sleep(Duration::from_secs(2));
    let mut cpu = idle::cpu_windows(&running, interval, window, repeats);
    for r in running {
        r.stop();
    }
    let floor = cpu.pop().unwrap();
    (cpu, floor)
}

pub fn measure(plan: &Plan, tmp: &Path) -> Profiles {
    let mut figures = Vec::new();
    let mut binaries = Vec::new();
    for level in LEVELS {
        eprintln!("  opt-level {level}: static musl build, Live<T> bench build");
        let binary = build(level).unwrap_or_else(|e| panic!("{e}"));
        let file = Command::new("file")
            .arg("-b")
            .arg(&binary)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|e| format!("file: {e}"));
        figures.push(ProfileFigures {
            level,
            binary_bytes: std::fs::metadata(&binary).map_or(0, |m| m.len()),
            file,
            static_pie: is_static_pie(&binary),
            in_process: bench(level, false, plan.quick).map(|_| Vec::new()),
            process: Err("not measured".into()),
            idle_us: Vec::new(),
            charged: Err("not measured".into()),
        });
        binaries.push(binary);
    }
    // Measured once every build is done (no compiler of ours running beside
    // them), in rounds that take each level in turn: a busy moment on a
    // shared machine then falls on every level alike, not on one.
    let rounds = if plan.quick { 1 } else { 5 };
    for round in 1..=rounds {
        eprintln!("  in process, round {round} of {rounds}");
        for f in &mut figures {
            let Ok(so_far) = &mut f.in_process else {
                continue;
            };
            match in_process(f.level, plan.quick) {
                Ok(p50s) => {
                    for (format, p50) in p50s {
                        match so_far.iter_mut().find(|(f, _)| *f == format) {
                            Some((_, v)) => v.push(p50),
                            None => so_far.push((format, vec![p50])),
                        }
                    }
                }
                Err(e) => f.in_process = Err(e),
            }
        }
    }
    for (f, binary) in figures.iter_mut().zip(&binaries) {
        eprintln!("  opt-level {}: reloads as a process", f.level);
        f.process = process_reload(binary, tmp, plan.repeats);
    }
    let interval = Duration::from_millis(10);
    eprintln!("  idle CPU per tick at 10 ms, every build and the floor at once");
    let (idle, floor_us) = idle_ratio(
        &binaries,
        tmp,
        interval,
        plan.idle_10ms_window,
        plan.idle_repeats,
    );
    for (f, us) in figures.iter_mut().zip(idle) {
        f.idle_us = us;
    }
    eprintln!("  memory charged to a cgroup per build, after a reload");
    let programs = figures
        .iter()
        .zip(&binaries)
        .map(|(f, b)| crate::charged::ours(format!("opt-level {}", f.level), b))
        .collect();
    match crate::charged::measure_programs(tmp, programs) {
        Ok(rows) => {
            for (f, c) in figures.iter_mut().zip(rows) {
                f.charged = Ok(c);
            }
        }
        Err(e) => {
            for f in &mut figures {
                f.charged = Err(e.clone());
            }
        }
    }
    Profiles {
        figures,
        floor_us,
        idle_interval: interval,
        idle_window: plan.idle_10ms_window,
    }
}

fn p50(v: &[f64]) -> f64 {
    spread(v).1
}

pub fn markdown(p: &Profiles) -> String {
    let shipped = shipped_opt_level();
    let mut out = format!(
        "\n## The release profile: opt-level 3, \"s\" and \"z\" side by side\n\n\
         The static musl build (default features, TLS included), PIE and `panic = \"unwind\"`, lto, one \
         codegen unit, stripped; only the opt-level differs. Shipped: **{shipped}** (Cargo.toml). In process: \
         `Live<T>` typed reload of a 1 MiB config (detect + read + parse + deserialize, one driven tick), this \
         benchmark built at that opt-level (glibc): the median of 5 runs' p50s (20 reloads each), the levels \
         taking turns. As a process: the static binary watching every 1 ms \
         (`-o json`), from the `..data` swap to its change event (the config printed in it) on our end of \
         the pipe. Idle: µs of CPU per tick at {} (3 windows of {}, medians), every build and the C floor at \
         once. Reproduce: `cargo bench --bench compare -- --profiles-only`.\n\n\
         Memory: the build alone in a memory cgroup after a reload, as in the per-program table (RSS / \
         charged / working set).\n\n\
         | opt-level | binary MB | static-pie | in process ms: YAML / TOML / JSON | as a process p50 ms: YAML / TOML / JSON | idle µs per tick (× floor) | MiB: RSS / charged / working set |\n\
         | --- | ---: | --- | --- | --- | ---: | --- |\n",
        humantime::format_duration(p.idle_interval),
        humantime::format_duration(p.idle_window),
    );
    let floor = p50(&p.floor_us);
    for f in &p.figures {
        let in_process = match &f.in_process {
            Ok(v) => v
                .iter()
                .map(|(_, p50s)| format!("{:.1}", p50(p50s)))
                .collect::<Vec<_>>()
                .join(" / "),
            Err(e) => format!("not measured: {e}"),
        };
        let process = match &f.process {
            Ok(v) => v
                .iter()
                .map(|(_, runs)| format!("{:.1}", p50(runs)))
                .collect::<Vec<_>>()
                .join(" / "),
            Err(e) => format!("not measured: {e}"),
        };
        let idle = p50(&f.idle_us);
        let memory = match &f.charged {
            Ok(c) => format!(
                "{:.2} / {:.2} / {:.2}",
                c.rss_kib as f64 / 1024.0,
                c.usage_kib as f64 / 1024.0,
                c.working_set_kib() as f64 / 1024.0
            ),
            Err(e) => format!("not measured: {e}"),
        };
        out.push_str(&format!(
            "| {}{} | {:.2} | {} | {in_process} | {process} | {idle:.1} ({:.2}x) | {memory} |\n",
            f.level,
            if shipped == format!("opt-level {}", f.level) {
                " (shipped)"
            } else {
                ""
            },
            f.binary_bytes as f64 / 1e6,
            if f.static_pie { "yes" } else { "**no**" },
            idle / floor,
        ));
    }
    out.push_str(&format!(
        "\nC floor: {floor:.1} µs per tick. As a process: {} runs per format, each format's runs in turn on \
         one binary, the levels one after the other. `file` on the first: {}\n",
        p.figures
            .first()
            .and_then(|f| f.process.as_ref().ok())
            .and_then(|v| v.first())
            .map_or(0, |(_, runs)| runs.len()),
        p.figures.first().map_or("-", |f| f.file.as_str())
    ));
    out
}
