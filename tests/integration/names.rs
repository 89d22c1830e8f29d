//! Names are data (issue 20): a data directory or key name from the volume
//! never becomes code in a command or a forged line in our output. In a
//! ConfigMap volume, data directory names are refused unless they look like
//! a kubelet's (`..` and letters, digits, `_`, `.`, `-`), and key names
//! unless Kubernetes allows them; text output escapes control characters.

#![cfg(unix)]

use std::fs;

use serde_json::json;

use crate::helper::{Running, bin};

/// A data directory named `..x$(touch pwned)`: before, a `--validate-exec`
/// through `sh -c` ran the substitution; now the name is refused before
/// anything runs.
#[test]
fn a_data_directory_name_never_becomes_code() {
    let vol = vol!();
    vol.publish(&[("config.json", r#"{"v":1}"#)]);
    let pwned = vol.tmp.path().join("pwned");
    // Relative: a name holds no '/'; the checker runs in the tool's
    // working directory.
    for name in ["..x$(touch pwned)", "..x`touch pwned`", "..x;touch pwned"] {
        let data = vol.path().join(name);
        fs::create_dir(&data).unwrap();
        fs::write(data.join("config.json"), r#"{"v":2}"#).unwrap();
        vol.point_data_at(name);
        let out = bin()
            .current_dir(vol.tmp.path())
            .args(["--once", "-o", "json", "-d"])
            .arg(vol.path())
            .args(["--validate-exec", "sh -c 'test -s {}'"])
            .output()
            .unwrap();
        let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            (&e["event"], &e["key"]),
            (&json!("error"), &json!("..data")),
            "{e}"
        );
        assert!(
            e["error"].as_str().unwrap().contains("never has"),
            "{name}: {e}"
        );
        assert!(!pwned.exists(), "{name}: the name ran as a command");
    }
}

/// A target holding a newline cannot forge a second line of text output:
/// the refusal is one line, its control characters escaped.
#[test]
fn a_name_with_a_newline_is_one_line_of_text_output() {
    let vol = vol!();
    vol.publish(&[("config.json", r#"{"v":1}"#)]);
    let name = "..x\n2026-01-01T00:00:00Z change  version=..forged";
    fs::create_dir(vol.path().join(name)).unwrap();
    vol.point_data_at(name);
    let out = bin()
        .args(["--once", "-d"])
        .arg(vol.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert_eq!(stdout.split_whitespace().nth(1), Some("error"), "{stdout}");
    assert!(stdout.contains("\\u{a}"), "{stdout}");
}

/// A key Kubernetes would never allow (`x;id`, `a b`), in a ConfigMap
/// volume, is refused by name; in a plain directory (a dev host) file
/// names are free.
#[test]
fn key_names_kubernetes_never_allows_are_refused_in_a_configmap_volume() {
    let vol = vol!();
    vol.publish(&[("config.json", r#"{"v":1}"#)]);
    fs::write(vol.data_dir().join("x;id"), "1").unwrap();
    let mut cmd = bin();
    cmd.args(["--once", "-o", "json", "--all-keys", "-d"])
        .arg(vol.path());
    let out = cmd.output().unwrap();
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&e["event"], &e["key"]),
        (&json!("error"), &json!("x;id")),
        "{e}"
    );
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("Kubernetes never allows"),
        "{e}"
    );

    let plain = vol.tmp.path().join("plain");
    fs::create_dir(&plain).unwrap();
    fs::write(plain.join("my config.txt"), "hello").unwrap();
    let mut cmd = bin();
    cmd.args(["-o", "json", "--all-keys", "-i", "10ms", "-d"])
        .arg(&plain);
    let run = Running::spawn(cmd);
    let e = run.event();
    assert_eq!(e["event"], json!("initial"), "{e}");
    assert_eq!(e["config"]["my config.txt"], json!("hello"));
}
