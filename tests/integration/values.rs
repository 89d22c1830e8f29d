//! Values exactly as written, end to end through the tool (issue 21): the
//! JSON an event carries under YAML 1.2 and `--yaml-1-1`, numbers past
//! `f64` as written, and a `--validate-exec` refusal that names its key.

use serde_json::json;

use crate::helper::watch_json;

const DOC: &str = "country: no\nmode: 0755\nversion: 1.10\nn: 12345678901234567890123\n";

#[test]
fn the_events_json_follows_yaml_1_2_and_keeps_numbers_as_written() {
    let vol = vol!();
    vol.publish(&[("app.yaml", DOC)]);
    let run = watch_json(&vol, &["-f", "app.yaml"]);
    drop(run);
    let mut cmd = crate::helper::bin();
    cmd.args(["-o", "json", "--once", "-f", "app.yaml", "-d"])
        .arg(vol.path());
    let out = cmd.output().unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(
        line.contains(
            r#""config":{"country":"no","mode":755,"version":1.10,"n":12345678901234567890123}"#
        ),
        "{line}"
    );

    let run = watch_json(&vol, &["-f", "app.yaml", "--yaml-1-1"]);
    let v2 = vol.publish(&[("app.yaml", &DOC.replace("1.10", "1.20"))]);
    let e = run.event_for("change", &v2);
    assert_eq!(e["config"]["country"], json!(false), "{e}");
    assert_eq!(e["config"]["mode"], json!(493), "{e}");
}

#[test]
fn a_validate_exec_refusal_names_its_key() {
    let vol = vol!();
    vol.publish(&[("config.json", r#"{"v":1}"#)]);
    let run = watch_json(
        &vol,
        &[
            "-f",
            "config.json",
            "--validate-exec",
            "sh -c 'if grep -q bad {}; then echo no good >&2; exit 1; fi'",
        ],
    );
    let v2 = vol.publish(&[("config.json", r#"{"v":"bad"}"#)]);
    let e = run.event_for("error", &v2);
    assert_eq!(e["key"], json!("config.json"), "{e}");
    let error = e["error"].as_str().unwrap();
    assert!(
        error.starts_with("key config.json: refused by --validate-exec (sh): "),
        "{e}"
    );
    assert!(error.contains("no good"), "{e}");
}

/// The tool keeps an object's keys in the order its key's text has them
/// (feature `document-order`), in the event and in `--output config`; a
/// version that only reorders them is no event (the config compares equal:
/// the order in use stays), and the next change brings its own order.
#[test]
fn the_tool_keeps_keys_in_document_order() {
    let vol = vol!();
    vol.publish(&[("config.json", r#"{"n": 1, "f": {"z": 2, "a": 3}}"#)]);
    let mut cmd = crate::helper::bin();
    cmd.args(["-o", "config", "--once", "-d"]).arg(vol.path());
    let out = cmd.output().unwrap();
    let printed = String::from_utf8(out.stdout).unwrap();
    let keys: Vec<&str> = printed
        .lines()
        .filter_map(|l| l.trim().split_once("\":").map(|(k, _)| k))
        .collect();
    assert_eq!(keys, [r#""n"#, r#""f"#, r#""z"#, r#""a"#], "{printed}");

    let mut cmd = crate::helper::bin();
    cmd.args(["-o", "json", "-i", "10ms", "-l", "debug", "-d"])
        .arg(vol.path());
    let run = crate::helper::Running::spawn(cmd);
    let line = run.line();
    assert!(
        line.contains(r#""config":{"n":1,"f":{"z":2,"a":3}}"#),
        "{line}"
    );
    let reordered = vol.publish(&[("config.json", r#"{"f": {"a": 3, "z": 2}, "n": 1}"#)]);
    // Read (its debug line says so) before the next version is written.
    let unchanged = format!("{reordered}: config unchanged");
    let deadline = std::time::Instant::now() + crate::helper::DEADLINE;
    while !run
        .stderr
        .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
        .expect("no \"config unchanged\" for the reordered version within the deadline")
        .contains(&unchanged)
    {}
    let v3 = vol.publish(&[("config.json", r#"{"f": {"a": 3, "z": 2}, "n": 2}"#)]);
    let line = run.line();
    assert!(
        line.contains(&format!(
            r#""version":"{v3}","previous_version":"{reordered}""#
        )),
        "the reorder was an event, or v3 was not the next: {line}"
    );
    assert!(
        line.contains(r#""config":{"f":{"a":3,"z":2},"n":2}"#),
        "{line}"
    );
}
