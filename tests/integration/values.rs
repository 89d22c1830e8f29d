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
            r#""config":{"country":"no","mode":755,"n":12345678901234567890123,"version":1.10}"#
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
