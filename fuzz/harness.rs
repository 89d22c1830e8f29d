//! The fuzz harness, shared by the cargo-fuzz target and the integration
//! tests (which replay the corpus and random inputs without nightly).
//!
//! The input describes a whole volume: a `..data` target (valid, raw, absent
//! or not a link), data directories, and trees of files, directories,
//! symlinks (some aimed outside the volume) and FIFOs. The harness builds it
//! in a temporary directory, then reads it every way the tool does and
//! checks: no panic, no hang, nothing over the size cap, no `..` keys, and
//! never a byte from outside the volume.

use std::{fs, path::Path};

use arbitrary::{Arbitrary, Unstructured};
use configmapwatch::{Selector, Volume, WatchOptions, Watcher};

/// Content placed outside the volume; no read may ever return it. A fresh
/// random suffix each run, so that nothing the fuzzer writes inside the
/// volume (it learns compared constants) can match it.
fn outside_marker() -> String {
    format!("OUTSIDE-{:016x}", fastrand::u64(..))
}
const CAP: u64 = 4096;
const MAX_NODES: usize = 24;

#[derive(Arbitrary, Debug)]
enum Target {
    DataDir(u8),
    Raw(String),
    Missing,
    NotALink,
}

#[derive(Arbitrary, Debug)]
enum Node {
    File(String, Vec<u8>),
    Big(String),
    Dir(String, Vec<Node>),
    Link(String, LinkTarget),
    Fifo(String),
}

#[derive(Arbitrary, Debug)]
#[cfg_attr(not(unix), allow(dead_code))]
enum LinkTarget {
    Outside,
    OutsideAbsolute,
    Sibling(String),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    target: Target,
    data_dirs: Vec<Vec<Node>>,
    top: Vec<Node>,
}

/// A path component the filesystem accepts.
fn component(name: &str) -> String {
    let mut s: String = name
        .chars()
        .filter(|c| *c != '/' && *c != '\0')
        .take(40)
        .collect();
    if s.is_empty() || s == "." || s == ".." {
        s = "x".into();
    }
    s
}

fn build(dir: &Path, nodes: &[Node], outside: &Path, budget: &mut usize, depth: usize) {
    for node in nodes {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        let name = match node {
            Node::File(n, _)
            | Node::Big(n)
            | Node::Dir(n, _)
            | Node::Link(n, _)
            | Node::Fifo(n) => component(n),
        };
        // Never write through what an earlier node made: a FIFO would block
        // the builder, a symlink would lead it outside.
        if fs::symlink_metadata(dir.join(&name)).is_ok() {
            continue;
        }
        let _ = match node {
            Node::File(name, content) => fs::write(dir.join(component(name)), content),
            Node::Big(name) => {
                fs::File::create(dir.join(component(name))).and_then(|f| f.set_len(CAP + 1))
            }
            Node::Dir(name, children) if depth < 4 => {
                let sub = dir.join(component(name));
                let made = fs::create_dir(&sub);
                if made.is_ok() {
                    build(&sub, children, outside, budget, depth + 1);
                }
                made
            }
            Node::Dir(..) => Ok(()),
            Node::Link(name, target) => link(dir, &component(name), target, outside),
            Node::Fifo(name) => fifo(&dir.join(component(name))),
        };
    }
}

#[cfg(unix)]
fn link(dir: &Path, name: &str, target: &LinkTarget, outside: &Path) -> std::io::Result<()> {
    let target = match target {
        LinkTarget::Outside => "../../outside".into(),
        LinkTarget::OutsideAbsolute => outside.to_string_lossy().into_owned(),
        LinkTarget::Sibling(s) => component(s),
        LinkTarget::Raw(s) => s.replace('\0', ""),
    };
    if target.is_empty() {
        return Ok(());
    }
    std::os::unix::fs::symlink(target, dir.join(name))
}

#[cfg(not(unix))]
fn link(_: &Path, _: &str, _: &LinkTarget, _: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(target_os = "linux")]
fn fifo(path: &Path) -> std::io::Result<()> {
    rustix::fs::mkfifoat(rustix::fs::CWD, path, 0o644.into()).map_err(Into::into)
}

#[cfg(not(target_os = "linux"))]
fn fifo(_: &Path) -> std::io::Result<()> {
    Ok(())
}

/// Builds the volume `data` describes and reads it every way; panics on a
/// broken invariant.
pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let marker = outside_marker();
    let outside = tmp.path().join("outside");
    fs::write(&outside, &marker).unwrap();
    let vol = tmp.path().join("vol");
    fs::create_dir(&vol).unwrap();
    let mut budget = MAX_NODES;
    let names: Vec<String> = (0..input.data_dirs.len().min(3))
        .map(|i| format!("..2020_02_27_22_35_16.{i}"))
        .collect();
    for (name, nodes) in names.iter().zip(&input.data_dirs) {
        let dir = vol.join(name);
        fs::create_dir(&dir).unwrap();
        build(&dir, nodes, &outside, &mut budget, 0);
    }
    build(&vol, &input.top, &outside, &mut budget, 0);
    let data = vol.join("..data");
    let _ = fs::remove_file(&data);
    let _ = match &input.target {
        Target::DataDir(i) if !names.is_empty() => link(
            &vol,
            "..data",
            &LinkTarget::Raw(names[*i as usize % names.len()].clone()),
            &outside,
        ),
        Target::DataDir(_) | Target::Missing => Ok(()),
        Target::Raw(raw) => link(&vol, "..data", &LinkTarget::Raw(raw.clone()), &outside),
        Target::NotALink => fs::write(&data, b"not a link"),
    };

    let mut volume = Volume::new(&vol, CAP);
    if let Ok(snapshot) = volume.snapshot() {
        for (key, content) in &snapshot.entries {
            assert!(
                !key.split('/').any(|c| c.starts_with("..")),
                "a '..' key was read: {key}"
            );
            if let Ok(bytes) = content {
                assert!(bytes.len() as u64 <= CAP, "{key}: over the cap");
                assert!(
                    !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
                    "{key}: read from outside the volume"
                );
            }
        }
        let _ = Selector::all_keys().extract(&snapshot);
        let _ = Selector::default().extract(&snapshot);
    }
    for selector in [Selector::all_keys(), Selector::default()] {
        let mut watcher = Watcher::new(
            WatchOptions::new(&vol)
                .with_selector(selector)
                .with_max_file_size(CAP),
        );
        for _ in 0..2 {
            if let Some(event) = watcher.check()
                && let Some(config) = event.config
            {
                assert!(
                    !config.to_string().contains(&marker),
                    "config from outside the volume"
                );
            }
        }
    }
}
