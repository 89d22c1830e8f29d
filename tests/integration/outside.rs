//! Never a byte from outside the volume (issue 20): a writer that swaps
//! the data directory itself for a symlink to another directory, between
//! the reader's check of it and its open, must never get that directory's
//! files reported as the config. The data directory is opened by its one
//! name under the volume's handle, without following a link.

#![cfg(target_os = "linux")]

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use configmapwatch::Volume;
use rustix::fs::{CWD, RenameFlags, renameat_with};

#[test]
fn a_data_directory_swapped_for_a_link_to_outside_is_never_read_through() {
    let vol = vol!();
    vol.publish(&[("config.json", r#"{"inside":true}"#)]);
    let target = vol.target();
    let data = vol.path().join(&target);
    // Outside the volume: a directory that looks like a version.
    let outside = vol.tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("config.json"), r#"{"outside":true}"#).unwrap();
    // Beside the data directory: a link to outside, exchanged with it
    // atomically (renameat2 RENAME_EXCHANGE), back and forth.
    let link = vol.path().join(format!("{target}.swap"));
    std::os::unix::fs::symlink(&outside, &link).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (stop, swaps, data, link) = (stop.clone(), swaps.clone(), data.clone(), link.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                renameat_with(CWD, &data, CWD, &link, RenameFlags::EXCHANGE).unwrap();
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut volume = Volume::new(vol.path(), 1 << 20);
    let (mut inside, mut refused, mut outside_reads) = (0u64, 0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(60);
    while swaps.load(Ordering::Relaxed) < 10_000 || inside + refused < 1_000 {
        assert!(
            Instant::now() < deadline,
            "too slow: {inside} reads, {} swaps",
            swaps.load(Ordering::Relaxed)
        );
        match volume.read_configmap() {
            Ok(snapshot) => {
                let bytes = snapshot.get("config.json").and_then(Result::ok);
                match bytes.map(|b| String::from_utf8_lossy(b).into_owned()) {
                    Some(text) if text.contains("outside") => outside_reads += 1,
                    _ => inside += 1,
                }
            }
            Err(_) => refused += 1,
        }
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    let swaps = swaps.load(Ordering::Relaxed);
    println!("{swaps} swaps: {inside} reads inside, {refused} refused, {outside_reads} outside");
    assert_eq!(
        outside_reads, 0,
        "{outside_reads} reads returned a file from outside the volume"
    );
    assert!(inside > 0, "no read succeeded between the swaps");
}

/// A checker's `{}` is the directory we read, held open, not a path a
/// writer can redirect: here the checker itself, before reading, swaps
/// the version's directory aside and puts a link to outside in its place.
/// It still reads the version (through `/proc/self/fd/N`); by path it read
/// the outside file and refused the version.
#[test]
fn a_checkers_path_cannot_be_redirected_after_the_read() {
    let vol = vol!();
    let v1 = vol.publish(&[("config.json", r#"{"where":"inside"}"#)]);
    let outside = vol.tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("config.json"), r#"{"where":"outside"}"#).unwrap();
    let (v, o) = (vol.path().display(), outside.display());
    let checker = format!(
        "sh -c 't=$(readlink {v}/..data); mv {v}/$t {v}/$t.aside && ln -s {o} {v}/$t && \
         grep -q inside \"$1\"' check {{}}"
    );
    let out = crate::helper::bin()
        .args(["--once", "-o", "json", "-d"])
        .arg(vol.path())
        .args(["--validate-exec", &checker])
        .output()
        .unwrap();
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&e["event"], &e["version"]),
        (&serde_json::json!("initial"), &serde_json::json!(v1)),
        "{e} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
