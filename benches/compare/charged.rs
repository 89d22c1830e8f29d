//! Memory as a container is charged for it: each program runs alone in a
//! memory cgroup of its own, created before it starts (so every page it
//! faults in, its binary's included, is charged there), takes one reload,
//! idles a few ticks, and is then read three ways:
//!
//! - RSS (smaps_rollup of every process in the group): what `ps` shows;
//! - the cgroup's usage: what the container is charged, page cache of the
//!   files it read included;
//! - the kubelet's working set: usage minus inactive file pages, what
//!   `kubectl top` shows and what eviction acts on.
//!
//! A page in the page cache is charged to the group that first brought it
//! in. So that a program's binary is charged to its own group and not to
//! whoever read it before (the build, an earlier run), clean page cache is
//! dropped before each program starts (`echo 1 > /proc/sys/vm/drop_caches`,
//! root only). Pages another running process keeps mapped (a shared
//! libc, the Python interpreter of a concurrent run) cannot be dropped and
//! stay charged elsewhere: dynamically linked programs are charged less
//! than they would be alone on a node, never more.

use std::{
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use configmapwatch::{AtomicWriter, Payload};

use crate::peers::{self, Peer};

/// One program's memory after a reload, in KiB.
pub struct Charged {
    pub label: String,
    pub rss_kib: u64,
    pub usage_kib: u64,
    pub inactive_file_kib: u64,
    pub active_file_kib: u64,
    pub anon_kib: u64,
    /// Kernel memory charged to the group (page tables, slab, stacks).
    pub kernel_kib: u64,
}

impl Charged {
    /// The kubelet's working set: usage minus inactive file, floored at 0
    /// (cAdvisor's computation).
    pub fn working_set_kib(&self) -> u64 {
        self.usage_kib.saturating_sub(self.inactive_file_kib)
    }
}

/// Where the groups are made, and the names of its files.
struct Hierarchy {
    /// The memory cgroup this benchmark runs in: the new groups are its
    /// children, so that they stay inside whatever limits apply to it.
    base: PathBuf,
    usage: &'static str,
    inactive_file: &'static str,
    active_file: &'static str,
    anon: &'static str,
    /// v1: a file of its own; v2: a memory.stat key.
    kernel: Kernel,
}

enum Kernel {
    File(&'static str),
    Stat(&'static str),
}

impl Hierarchy {
    fn find() -> Result<Self, String> {
        let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
        // cgroup v1's memory controller: "N:memory:/path".
        if let Some(path) = own.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
            controllers
                .split(',')
                .any(|c| c == "memory")
                .then_some(path)
        }) {
            let base = Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'));
            if base.join("memory.usage_in_bytes").exists() {
                return Ok(Hierarchy {
                    base,
                    usage: "memory.usage_in_bytes",
                    inactive_file: "total_inactive_file",
                    active_file: "total_active_file",
                    anon: "total_rss",
                    kernel: Kernel::File("memory.kmem.usage_in_bytes"),
                });
            }
        }
        // cgroup v2: "0::/path", where the memory controller is enabled for
        // the children of our group.
        let path = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .ok_or("no memory cgroup (v1 or v2) for this process")?;
        for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
            let base = Path::new(root).join(path.trim_start_matches('/'));
            let enabled = std::fs::read_to_string(base.join("cgroup.subtree_control"))
                .is_ok_and(|s| s.split_whitespace().any(|c| c == "memory"));
            if enabled {
                return Ok(Hierarchy {
                    base,
                    usage: "memory.current",
                    inactive_file: "inactive_file",
                    active_file: "active_file",
                    anon: "anon",
                    kernel: Kernel::Stat("kernel"),
                });
            }
        }
        Err("no writable memory cgroup: v1's memory controller is not mounted for this process and v2's is not enabled for its children".into())
    }
}

fn read_u64(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn stat(group: &Path, key: &str) -> u64 {
    std::fs::read_to_string(group.join("memory.stat"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// Drops clean page cache (root only): see the module docs.
fn drop_caches() -> Result<(), String> {
    let _ = Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "1\n")
        .map_err(|e| format!("cannot drop the page cache ({e}): run as root"))
}

/// `program` started through a shell that first moves itself into `group`,
/// then execs: the program's first page fault is already charged there.
fn in_group(group: &Path, program: &Command) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(r#"echo $$ > "$0/cgroup.procs" && exec "$@""#)
        .arg(group)
        .arg(program.get_program())
        .args(program.get_args());
    for (k, v) in program.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c
}

fn payload(n: usize) -> Payload {
    let mut p = Payload::new();
    p.insert("config.json", format!("{{\"update\": {n}}}"))
        .unwrap();
    p
}

/// One program's figures: started in a fresh group on a volume of its own,
/// one update published once it is ready, read after `idle` more.
fn one(
    hierarchy: &Hierarchy,
    tmp: &Path,
    n: usize,
    label: &str,
    peer: Peer,
    command: Command,
    idle: Duration,
) -> Result<Charged, String> {
    let dir = tmp.join(format!("charged-{n}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let writer = AtomicWriter::new(&dir);
    writer.write(&payload(0)).unwrap();
    let group = hierarchy
        .base
        .join(format!("configmapwatch-bench-{}-{n}", std::process::id()));
    std::fs::create_dir(&group).map_err(|e| format!("{}: {e}", group.display()))?;
    let result = (|| {
        drop_caches()?;
        let mut running = peers::spawn_command(peer, in_group(&group, &command), &dir);
        let measured = (|| {
            running.wait_ready(Duration::from_secs(60))?;
            thread::sleep(Duration::from_secs(2));
            let version = match writer.write(&payload(1)).unwrap() {
                configmapwatch::Outcome::Written { version, .. } => version,
                other => return Err(format!("{other:?}")),
            };
            let t = Instant::now();
            while !running
                .detections
                .lock()
                .unwrap()
                .iter()
                .any(|(v, _)| *v == version)
            {
                if t.elapsed() > Duration::from_secs(10) {
                    return Err(format!("{label} did not report the update"));
                }
                thread::sleep(Duration::from_millis(10));
            }
            thread::sleep(idle);
            let procs = std::fs::read_to_string(group.join("cgroup.procs")).unwrap_or_default();
            let rss_kib = procs
                .lines()
                .filter_map(|p| p.trim().parse().ok())
                .map(|pid| peers::memory_kib(pid).0)
                .sum();
            Ok(Charged {
                label: label.to_owned(),
                rss_kib,
                usage_kib: read_u64(&group.join(hierarchy.usage)) / 1024,
                inactive_file_kib: stat(&group, hierarchy.inactive_file) / 1024,
                active_file_kib: stat(&group, hierarchy.active_file) / 1024,
                anon_kib: stat(&group, hierarchy.anon) / 1024,
                kernel_kib: match hierarchy.kernel {
                    Kernel::File(f) => read_u64(&group.join(f)),
                    Kernel::Stat(k) => stat(&group, k),
                } / 1024,
            })
        })();
        running.stop();
        measured
    })();
    // The group is empty once the program has exited; its remaining
    // charges (page cache) move to the parent when it is removed.
    let t = Instant::now();
    while std::fs::remove_dir(&group).is_err() && t.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(20));
    }
    result
}

/// A program to measure: (label, how its output is read, command with "-"
/// for the volume directory).
pub type Program = (String, Peer, Command);

/// A build of ours at `binary`, every 1 s.
pub fn ours(label: String, binary: &Path) -> Program {
    (
        label,
        Peer::Ours,
        peers::ours_at(binary, Path::new("-"), Duration::from_secs(1)),
    )
}

/// Every program of the comparison, each alone in its own group, one after
/// the other, at 1 s where it polls: the static build first, then `extra`
/// builds of ours (label, binary), then the peers.
pub fn measure(tmp: &Path, extra: &[(String, PathBuf)]) -> Result<Vec<Charged>, String> {
    let interval = Duration::from_secs(1);
    let mut programs = vec![ours(
        format!(
            "configmapwatch, static musl build (as shipped, {})",
            crate::profiles::shipped_opt_level()
        ),
        &peers::static_binary(),
    )];
    for (label, binary) in extra {
        programs.push(ours(label.clone(), binary));
    }
    for peer in Peer::POLLERS
        .into_iter()
        .chain(Peer::NOTIFIERS)
        .filter(|p| p.polls_at(interval))
    {
        programs.push((
            match peer {
                Peer::Ours => "configmapwatch, glibc build (cargo's release binary)".into(),
                _ => peer.label().to_owned(),
            },
            peer,
            peer.command(Path::new("-"), interval),
        ));
    }
    measure_programs(tmp, programs)
}

/// `programs`, each alone in its own group, one after the other.
pub fn measure_programs(tmp: &Path, programs: Vec<Program>) -> Result<Vec<Charged>, String> {
    let hierarchy = Hierarchy::find()?;
    let idle = Duration::from_secs(3);
    let mut out = Vec::new();
    for (n, (label, peer, command)) in programs.into_iter().enumerate() {
        eprintln!("  {label}");
        // Each on a volume of its own: the command's directory is set here.
        let dir = tmp.join(format!("charged-{n}"));
        let command = with_dir(command, &dir);
        out.push(one(&hierarchy, tmp, n, &label, peer, command, idle)?);
    }
    Ok(out)
}

/// `command` with its "-" argument (the directory placeholder) set to `dir`.
fn with_dir(command: Command, dir: &Path) -> Command {
    let mut c = Command::new(command.get_program());
    for a in command.get_args() {
        if a == "-" {
            c.arg(dir);
        } else {
            c.arg(a);
        }
    }
    for (k, v) in command.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c
}

fn mib(kib: u64) -> String {
    format!("{:.2}", kib as f64 / 1024.0)
}

pub fn markdown(result: &Result<Vec<Charged>, String>) -> String {
    let mut out = String::from(
        "\n### Memory charged to the container (a cgroup per program, after a reload)\n\n\
         Each program alone in a memory cgroup of its own, entered before it starts; clean page cache \
         dropped first so that its binary is charged to it; one update published, then 3 s idle (every 1s \
         where it polls). RSS from smaps_rollup; charged: the cgroup's usage (page cache of the files it \
         read included: what the container is charged); working set: usage minus inactive file, what the \
         kubelet reports (`kubectl top`) and evicts on. Kernel: page tables, slab and stacks charged \
         to the group (part of the charge and of the working set). Shared libraries another process keeps \
         mapped stay charged elsewhere. cgroup v1 charges in per-CPU batches (64 pages): a figure can move by \
         0.25 MiB per CPU between runs. Reproduce: `cargo bench --bench compare -- --memory-only` (root).\n\n\
         | program | RSS MiB | charged MiB | working set MiB | anon MiB | active file MiB | inactive file MiB | kernel MiB |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    match result {
        Ok(rows) => {
            for c in rows {
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                    c.label,
                    mib(c.rss_kib),
                    mib(c.usage_kib),
                    mib(c.working_set_kib()),
                    mib(c.anon_kib),
                    mib(c.active_file_kib),
                    mib(c.inactive_file_kib),
                    mib(c.kernel_kib)
                ));
            }
        }
        Err(e) => out.push_str(&format!("| not measured: {e} | | | | | | | |\n")),
    }
    out
}
