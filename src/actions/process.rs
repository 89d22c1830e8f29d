//! `--process-name`: find the process to signal by its name, by scanning
//! `/proc` (Linux only). In a pod, seeing the other containers' processes
//! needs `shareProcessNamespace: true`.
//!
//! A process matches `NAME` when
//! - its `comm` (the executable's file name as it was run, which the kernel
//!   cuts to 15 bytes) is `NAME`; or, for a `NAME` longer than 15 bytes,
//!   its `comm` is the first 15 bytes of `NAME` and the file name of its
//!   `argv[0]` is `NAME`;
//! - or the file name of its executable (`/proc/PID/exe`, readable for our
//!   own user's processes) is `NAME`.
//!
//! Kernel threads, zombies and this process itself never match (nor do
//! processes whose command line cannot be read: they are gone).
//!
//! One name often covers a tree of processes: nginx's master and its
//! workers, a server and the children it forks. A match whose ancestor
//! also matches is part of that ancestor's tree and is dropped; what is
//! left are the tops of the matching trees. Exactly one top is the
//! answer. None is [`FindError::NotFound`], listing the names that are
//! there; several (separate processes of that name) is
//! [`FindError::Ambiguous`], listing them: signalling all of them, or a
//! guess, is not what `--signal` should do.

use std::{fmt, io, path::PathBuf};

/// A process found in `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessInfo {
    /// Its process id.
    pub pid: u32,
    /// Its parent's process id.
    pub ppid: u32,
    /// Its `comm` (at most 15 bytes).
    pub comm: String,
    /// Its executable, when we may read it (our own user's processes).
    pub exe: Option<PathBuf>,
    /// Its command line, arguments joined by spaces (lossily decoded).
    pub cmdline: String,
}

impl fmt::Display for ProcessInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 80;
        let cmdline = match self.cmdline.char_indices().nth(MAX) {
            Some((i, _)) => format!("{}...", &self.cmdline[..i]),
            None => self.cmdline.clone(),
        };
        write!(f, "pid {} ({cmdline}; parent {})", self.pid, self.ppid)
    }
}

/// Why no single process was found.
#[derive(Debug)]
#[non_exhaustive]
pub enum FindError {
    /// The name cannot name a process (empty, or a path).
    InvalidName {
        /// The name given.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// No process has the name.
    NotFound {
        /// The name looked for.
        name: String,
        /// How many processes were looked at.
        scanned: usize,
        /// The distinct names of the processes that are there (sorted; at
        /// most [`SEEN_MAX`]).
        seen: Vec<String>,
    },
    /// Several separate processes (none an ancestor of another) have it.
    Ambiguous {
        /// The name looked for.
        name: String,
        /// The tops of the matching trees, by pid.
        found: Vec<ProcessInfo>,
    },
    /// `/proc` cannot be listed.
    Proc {
        /// The operating system's error.
        source: io::Error,
    },
    /// Not Linux: there is no `/proc` to scan.
    Unsupported,
}

/// How many names [`FindError::NotFound`] lists at most.
pub const SEEN_MAX: usize = 20;

impl fmt::Display for FindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FindError::InvalidName { name, reason } => {
                write!(f, "invalid process name {name:?}: {reason}")
            }
            FindError::NotFound {
                name,
                scanned,
                seen,
            } => {
                write!(
                    f,
                    "no process named {name:?} (by comm or executable name) among the \
                     {scanned} other processes in /proc"
                )?;
                if !seen.is_empty() {
                    write!(f, " (their names: {}", seen.join(", "))?;
                    if seen.len() >= SEEN_MAX {
                        write!(f, ", ...")?;
                    }
                    write!(f, ")")?;
                }
                write!(
                    f,
                    "; to see another container's processes the pod needs \
                     shareProcessNamespace: true"
                )
            }
            FindError::Ambiguous { name, found } => {
                write!(f, "{} separate processes are named {name:?}: ", found.len())?;
                for (i, p) in found.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{p}")?;
                }
                write!(f, "; name the one to signal with --pid or --pid-file")
            }
            FindError::Proc { .. } => write!(f, "/proc: cannot list processes"),
            FindError::Unsupported => write!(
                f,
                "finding a process by name needs Linux's /proc; use --pid or --pid-file"
            ),
        }
    }
}

impl std::error::Error for FindError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FindError::Proc { source } => Some(source),
            _ => None,
        }
    }
}

/// The one process named `name`: the top of the only tree of matching
/// processes (see the [module docs](self) for the rule).
pub fn find_process(name: &str) -> Result<ProcessInfo, FindError> {
    let scan = scan(name)?;
    let mut tops = tops(&scan);
    match tops.len() {
        1 => Ok(tops.remove(0)),
        0 => Err(FindError::NotFound {
            name: name.to_owned(),
            scanned: scan.scanned,
            seen: scan.seen,
        }),
        _ => Err(FindError::Ambiguous {
            name: name.to_owned(),
            found: tops,
        }),
    }
}

/// Every process named `name`, by pid (the whole trees, not only their
/// tops).
pub fn matching_processes(name: &str) -> Result<Vec<ProcessInfo>, FindError> {
    scan(name).map(|scan| scan.matches)
}

/// What one pass over `/proc` found.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
struct Scan {
    matches: Vec<ProcessInfo>,
    /// Every process's parent, for the ancestry walk.
    parents: std::collections::HashMap<u32, u32>,
    scanned: usize,
    seen: Vec<String>,
}

/// The matches none of whose ancestors match.
fn tops(scan: &Scan) -> Vec<ProcessInfo> {
    let matched: std::collections::HashSet<u32> = scan.matches.iter().map(|p| p.pid).collect();
    scan.matches
        .iter()
        .filter(|p| {
            let mut at = p.ppid;
            // Bounded: a pid reused mid-scan could make a loop.
            for _ in 0..4096 {
                if matched.contains(&at) {
                    return false;
                }
                match scan.parents.get(&at) {
                    Some(&parent) if parent != at && at > 1 => at = parent,
                    _ => break,
                }
            }
            true
        })
        .cloned()
        .collect()
}

fn check_name(name: &str) -> Result<(), FindError> {
    let invalid = |reason| {
        Err(FindError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("empty");
    }
    if name.contains('/') || name.contains('\0') {
        return invalid("a process name, not a path: give the executable's file name");
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn scan(name: &str) -> Result<Scan, FindError> {
    check_name(name)?;
    Err(FindError::Unsupported)
}

/// The kernel's limit on `comm`, less its NUL.
#[cfg(target_os = "linux")]
const COMM_MAX: usize = 15;

#[cfg(target_os = "linux")]
fn scan(name: &str) -> Result<Scan, FindError> {
    use std::{collections::BTreeSet, fs, path::Path};

    check_name(name)?;
    let entries = fs::read_dir("/proc").map_err(|source| FindError::Proc { source })?;
    let me = std::process::id();
    // What `comm` holds for `name`: the kernel cuts it at 15 bytes (on a
    // character boundary or not: compare bytes).
    let comm_of_name = &name.as_bytes()[..name.len().min(COMM_MAX)];
    let long = name.len() > COMM_MAX;
    let mut scan = Scan {
        matches: Vec::new(),
        parents: Default::default(),
        scanned: 0,
        seen: Vec::new(),
    };
    let mut seen = BTreeSet::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may end at any point of the scan: whatever cannot be
        // read is skipped.
        let proc = Path::new("/proc").join(pid.to_string());
        let Ok(stat) = fs::read(proc.join("stat")) else {
            continue;
        };
        let Some(Stat {
            comm,
            state,
            ppid,
            flags,
        }) = parse_stat(&stat)
        else {
            continue;
        };
        scan.parents.insert(pid, ppid);
        // By the kernel's flag, not by pid 2's children: in a container's
        // pid namespace, pid 2 is an ordinary process.
        if pid == me || matches!(state, b'Z' | b'X' | b'x') || flags & PF_KTHREAD != 0 {
            continue;
        }
        scan.scanned += 1;
        let comm_text = String::from_utf8_lossy(comm).into_owned();
        let exe = fs::read_link(proc.join("exe")).ok().map(|exe| {
            // An executable replaced on disk since it started.
            match exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
                Some(s) => PathBuf::from(s),
                None => exe,
            }
        });
        let exe_matches = exe
            .as_deref()
            .and_then(Path::file_name)
            .is_some_and(|n| n == name);
        let mut cmdline = None;
        let comm_matches = comm == comm_of_name
            && (!long || {
                let args = fs::read(proc.join("cmdline")).unwrap_or_default();
                let argv0 = args.split(|b| *b == 0).next().unwrap_or_default();
                let base = argv0.rsplit(|b| *b == b'/').next().unwrap_or_default();
                let matches = base == name.as_bytes();
                cmdline = Some(args);
                matches
            });
        if !(comm_matches || exe_matches) {
            if seen.len() < SEEN_MAX {
                seen.insert(comm_text);
            }
            continue;
        }
        let args = match cmdline {
            Some(args) => args,
            None => fs::read(proc.join("cmdline")).unwrap_or_default(),
        };
        if args.is_empty() {
            // Gone meanwhile, or no user-space process to signal.
            continue;
        }
        let cmdline = args
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(String::from_utf8_lossy)
            .collect::<Vec<_>>()
            .join(" ");
        scan.matches.push(ProcessInfo {
            pid,
            ppid,
            comm: comm_text,
            exe,
            cmdline,
        });
    }
    scan.matches.sort_by_key(|p| p.pid);
    scan.seen = seen.into_iter().collect();
    Ok(scan)
}

/// The kernel's task flag of a kernel thread (`include/linux/sched.h`).
#[cfg(target_os = "linux")]
const PF_KTHREAD: u64 = 0x0020_0000;

/// What is used of `/proc/PID/stat`.
#[cfg(target_os = "linux")]
#[derive(Debug, PartialEq, Eq)]
struct Stat<'a> {
    comm: &'a [u8],
    state: u8,
    ppid: u32,
    flags: u64,
}

/// Parses `pid (comm) state ppid pgrp session tty_nr tpgid flags ...`.
/// `comm` may hold spaces and parentheses: it ends at the last `)`.
#[cfg(target_os = "linux")]
fn parse_stat(stat: &[u8]) -> Option<Stat<'_>> {
    let open = stat.iter().position(|b| *b == b'(')?;
    let close = stat.iter().rposition(|b| *b == b')')?;
    let comm = stat.get(open + 1..close)?;
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    let ppid = fields.next()?.parse().ok()?;
    let flags = fields.nth(4)?.parse().ok()?;
    Some(Stat {
        comm,
        state,
        ppid,
        flags,
    })
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::{
        os::unix::process::CommandExt,
        path::Path,
        process::{Child, Command},
        time::{Duration, Instant},
    };

    /// A name no other process has.
    fn unique(prefix: &str) -> String {
        format!("{prefix}{:08x}", fastrand::u32(..))
    }

    /// A link named `name` in `dir` to `target`: run through it, a process
    /// gets `name` as its comm (the kernel takes the name it was run by).
    fn alias(dir: &Path, name: &str, target: &str) -> PathBuf {
        let link = dir.join(name);
        std::os::unix::fs::symlink(target, &link).unwrap();
        link
    }

    /// Kills the child's whole process group when dropped, so a failing
    /// test leaves nothing running.
    struct Group(Child);

    impl Group {
        fn spawn(command: &mut Command) -> Group {
            // A copied executable can be briefly busy (ETXTBSY) while
            // another test thread forks with it still open for writing.
            for _ in 0..100 {
                match command.process_group(0).spawn() {
                    Ok(child) => return Group(child),
                    Err(e) if e.raw_os_error() == Some(26) => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) => panic!("cannot spawn {command:?}: {e}"),
                }
            }
            panic!("{command:?} stayed busy");
        }

        fn pid(&self) -> u32 {
            self.0.id()
        }
    }

    impl Drop for Group {
        fn drop(&mut self) {
            if let Some(pgid) = rustix::process::Pid::from_raw(self.0.id() as i32) {
                let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
            }
            let _ = self.0.wait();
        }
    }

    fn sleeper(path: &Path) -> Group {
        Group::spawn(Command::new(path).arg("60"))
    }

    /// Polls until `name` has exactly `n` matches. A child's own children
    /// take a moment to start; a spawned child is visible under its new
    /// name only a moment after spawn returns (the kernel wakes a vfork
    /// parent when exec replaces the memory, before it sets the new comm);
    /// and a shell's fork keeps the shell's name until it execs, so for a
    /// moment (longer on a loaded machine) there can be one more.
    fn wait_for_matches(name: &str, n: usize) -> Vec<ProcessInfo> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = matching_processes(name).unwrap();
            if found.len() == n || Instant::now() > deadline {
                assert_eq!(found.len(), n, "{found:#?}");
                return found;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn one_process_is_found_by_its_comm() {
        let dir = tempfile::tempdir().unwrap();
        let name = unique("cmw");
        let child = sleeper(&alias(dir.path(), &name, "/bin/sleep"));
        wait_for_matches(&name, 1);
        let found = find_process(&name).unwrap();
        assert_eq!(found.pid, child.pid());
        assert_eq!(found.ppid, std::process::id());
        assert_eq!(found.comm, name);
        assert!(found.cmdline.ends_with(&format!("{name} 60")), "{found:?}");
        // Its executable is what the link resolves to.
        let exe = found.exe.expect("our own child's exe is readable");
        assert_eq!(exe.file_name().unwrap(), "sleep");
    }

    #[test]
    fn none_is_an_error_naming_the_name_and_what_is_there() {
        let name = unique("nothere");
        let err = find_process(&name).unwrap_err();
        let FindError::NotFound { scanned, seen, .. } = &err else {
            panic!("{err:?}");
        };
        assert!(*scanned > 0 && !seen.is_empty(), "{err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("no process named {name:?}")),
            "{text}"
        );
        assert!(text.contains("shareProcessNamespace"), "{text}");
    }

    #[test]
    fn two_separate_processes_are_ambiguous_and_both_named() {
        let dir = tempfile::tempdir().unwrap();
        let name = unique("cmw");
        let link = alias(dir.path(), &name, "/bin/sleep");
        let (a, b) = (sleeper(&link), sleeper(&link));
        wait_for_matches(&name, 2);
        let err = find_process(&name).unwrap_err();
        let FindError::Ambiguous { found, .. } = &err else {
            panic!("{err:?}");
        };
        let mut pids: Vec<u32> = found.iter().map(|p| p.pid).collect();
        let mut want = vec![a.pid(), b.pid()];
        pids.sort();
        want.sort();
        assert_eq!(pids, want);
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("2 separate processes are named {name:?}: pid ")),
            "{text}"
        );
        for pid in want {
            assert!(text.contains(&format!("pid {pid} (")), "{text}");
        }
        assert!(text.contains("--pid"), "{text}");
    }

    #[test]
    fn a_tree_of_same_named_processes_resolves_to_its_top() {
        // Like nginx's master and workers: a shell of that name starting
        // another of that name (which does not exec away: `; :`).
        let dir = tempfile::tempdir().unwrap();
        let name = unique("cmw");
        let shell = alias(dir.path(), &name, "/bin/sh");
        let script = format!("{} -c 'sleep 60; :' & wait", shell.display());
        let top = Group::spawn(Command::new(&shell).arg("-c").arg(script));
        let all = wait_for_matches(&name, 2);
        let child = all.iter().find(|p| p.pid != top.pid()).unwrap();
        assert_eq!(child.ppid, top.pid());
        assert_eq!(find_process(&name).unwrap().pid, top.pid());
    }

    #[test]
    fn a_long_name_matches_by_comm_prefix_and_argv0() {
        let dir = tempfile::tempdir().unwrap();
        let name = unique("configmapwatch-long-");
        assert!(name.len() > COMM_MAX);
        let child = sleeper(&alias(dir.path(), &name, "/bin/sleep"));
        wait_for_matches(&name, 1);
        let found = find_process(&name).unwrap();
        assert_eq!(found.pid, child.pid());
        assert_eq!(found.comm.as_bytes(), &name.as_bytes()[..COMM_MAX]);
        // Another long name with the same first 15 bytes is not it.
        let other = format!("{}-other", &name[..COMM_MAX]);
        assert!(matches!(
            find_process(&other),
            Err(FindError::NotFound { .. })
        ));
    }

    #[test]
    fn the_executables_file_name_matches_whatever_the_comm() {
        let dir = tempfile::tempdir().unwrap();
        let exe_name = unique("cmwexe");
        let exe = dir.path().join(&exe_name);
        std::fs::copy("/bin/sleep", &exe).unwrap();
        // Run through a link of another name: comm is the link's name.
        let link_name = unique("cmwlink");
        let child = sleeper(&alias(dir.path(), &link_name, exe.to_str().unwrap()));
        let found = find_process(&exe_name).unwrap();
        assert_eq!(
            (found.pid, found.comm.as_str()),
            (child.pid(), link_name.as_str())
        );
    }

    #[test]
    fn zombies_and_this_process_never_match() {
        let dir = tempfile::tempdir().unwrap();
        let name = unique("cmw");
        let mut child = Command::new(alias(dir.path(), &name, "/bin/true"))
            .spawn()
            .unwrap();
        // Exited, not yet reaped: a zombie until wait().
        let deadline = Instant::now() + Duration::from_secs(10);
        let stat = format!("/proc/{}/stat", child.id());
        while !std::fs::read_to_string(&stat).unwrap().contains(") Z ") {
            assert!(Instant::now() < deadline, "never became a zombie");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(matching_processes(&name).unwrap().is_empty());
        child.wait().unwrap();

        let me = std::fs::read_to_string("/proc/self/comm").unwrap();
        let mine = matching_processes(me.trim()).unwrap();
        assert!(mine.iter().all(|p| p.pid != std::process::id()));
    }

    #[test]
    fn a_signal_action_by_name_reaches_the_process() {
        use super::super::{PidSource, SignalAction};
        use std::os::unix::process::ExitStatusExt;

        let dir = tempfile::tempdir().unwrap();
        let name = unique("cmw");
        let mut child = sleeper(&alias(dir.path(), &name, "/bin/sleep"));
        wait_for_matches(&name, 1);
        let action = SignalAction::new("TERM", PidSource::Name(name.clone())).unwrap();
        assert_eq!(
            action.describe(),
            format!("SIGTERM to the process named {name}")
        );
        action.send().unwrap();
        let status = child.0.wait().unwrap();
        assert_eq!(status.signal(), Some(15), "{status:?}");
        // Gone now: the next round's error names the name.
        let err = action.send().unwrap_err();
        assert!(
            err.starts_with(&format!("no process named {name:?}")),
            "{err}"
        );
    }

    #[test]
    fn paths_and_empty_names_are_refused() {
        for name in ["", "/usr/sbin/nginx", "a/b"] {
            let err = find_process(name).unwrap_err();
            assert!(matches!(err, FindError::InvalidName { .. }), "{err:?}");
        }
    }

    #[test]
    fn stat_with_spaces_and_parens_in_comm_parses() {
        let stat = b"42 (a) b (c) S 7 42 42 0 -1 4194560 0 0";
        let want = Stat {
            comm: b"a) b (c",
            state: b'S',
            ppid: 7,
            flags: 4194560,
        };
        assert_eq!(parse_stat(stat), Some(want));
        assert_eq!(parse_stat(b"garbage"), None);
        assert_eq!(parse_stat(b"1 (x) S 0"), None);
    }
}
