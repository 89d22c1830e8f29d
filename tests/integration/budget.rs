//! Memory bounded by the input (issue 20): a YAML alias bomb is refused
//! at a peak that is a small multiple of the key's size, measured on the
//! real binary (its peak resident set, `VmHWM`), not after serde-saphyr's
//! fixed 64 MiB of expanded text.

#[cfg(target_os = "linux")]
use crate::helper::{Running, bin, peak_rss_kib};

/// The peak of a watcher started on `files`, once it has reported its
/// first event (`kind`).
#[cfg(target_os = "linux")]
fn peak_after_first_event(files: &[(&str, &str)], kind: &str) -> (u64, serde_json::Value) {
    let vol = crate::helper::Vol::new();
    let version = vol.publish(files);
    let mut cmd = bin();
    cmd.args(["-o", "json", "-i", "10ms", "--all-keys", "-d"])
        .arg(vol.path());
    let run = Running::spawn(cmd);
    let event = run.event_for(kind, &version);
    (peak_rss_kib(run.child.id()), event)
}

#[cfg(target_os = "linux")]
#[test]
fn a_yaml_alias_bomb_is_refused_at_a_small_peak() {
    // One 100 KB scalar, aliased 640 times: 64 MB once expanded.
    let scalar = "x".repeat(100_000);
    let aliases = vec!["*a"; 640].join(", ");
    let bomb = format!("a: &a \"{scalar}\"\nb: [{aliases}]\n");
    let (baseline, _) = peak_after_first_event(&[("small.yaml", "a: 1\n")], "initial");
    let (peak, event) = peak_after_first_event(&[("bomb.yaml", &bomb)], "error");
    // Refused within a few times the key's size (before: 64 MB over).
    let over = peak.saturating_sub(baseline);
    println!("alias bomb: peak {peak} KiB, {over} KiB over a small key's {baseline} KiB");
    assert!(over < 8 * 1024, "peak {peak} KiB, baseline {baseline} KiB");
    assert!(
        event["error"]
            .as_str()
            .unwrap()
            .contains("the limit that refuses alias bombs"),
        "{event}"
    );
}

/// TOML is held to YAML's node budget, counted before the toml crate
/// builds its tree (which costs up to some 250 times the text): 1 MiB of
/// tiny inline tables is refused at the peak of a small key, naming the
/// key and where the budget ran out, while a large document of ordinary
/// density (a Cargo.lock-like list of tables) is read whole.
#[cfg(target_os = "linux")]
#[test]
fn a_dense_toml_key_is_refused_by_its_node_budget_before_it_is_parsed() {
    let dense = format!("a = [{}0]\n", "{a=0},".repeat(170_000));
    let (baseline, _) = peak_after_first_event(&[("small.toml", "a = 1\n")], "initial");
    let (peak, event) = peak_after_first_event(&[("dense.toml", &dense)], "error");
    let over = peak.saturating_sub(baseline);
    println!("dense TOML: peak {peak} KiB, {over} KiB over a small key's {baseline} KiB");
    // Before the budget: some 250 MiB.
    assert!(over < 8 * 1024, "peak {peak} KiB, baseline {baseline} KiB");
    assert_eq!(event["key"], "dense.toml", "{event}");
    let error = event["error"].as_str().unwrap();
    assert!(
        error.contains("more than 250000 keys and values") && error.contains("line 1 column"),
        "{event}"
    );

    let mut lock = String::new();
    for i in 0..12_000 {
        lock.push_str(&format!(
            "[[package]]\nname = \"crate-{i}\"\nversion = \"1.{i}.0\"\nsource = \"registry\"\n\n"
        ));
    }
    let (_, event) = peak_after_first_event(&[("Cargo.toml", &lock)], "initial");
    assert_eq!(
        event["config"]["Cargo.toml"]["package"][11_999]["name"], "crate-11999",
        "a long but ordinary TOML document is read whole"
    );
}
