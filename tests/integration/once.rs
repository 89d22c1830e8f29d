//! `--once` for scripts and init containers: the config alone for `| jq`,
//! and `--on-start` running the actions once, exiting with their result.

use serde_json::{Value, json};

use crate::helper::bin;

fn plain_volume(config: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("config.json"), config).unwrap();
    tmp
}

#[test]
fn once_with_output_config_prints_the_config_and_nothing_else() {
    let vol = plain_volume(r#"{"a":{"b":[1,2]}}"#);
    let out = bin()
        .args(["--once", "--output", "config", "-d"])
        .arg(vol.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap(),
        json!({"a": {"b": [1, 2]}})
    );
    assert!(stdout.contains("\n  \"a\""), "pretty: {stdout}");

    std::fs::write(vol.path().join("config.json"), "{oops").unwrap();
    let out = bin()
        .args(["--once", "--output", "config", "-d"])
        .arg(vol.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(", at line 1 column 2: "), "{stderr}");
}

#[cfg(unix)]
#[test]
fn once_with_on_start_runs_the_actions_once_and_exits_with_their_result() {
    let vol = plain_volume(r#"{"v":1}"#);
    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join("rendered.json");
    let out = bin()
        .args(["--once", "--on-start", "-o", "json", "-d"])
        .arg(vol.path())
        .args(["--exec", "sh", "-c"])
        .arg(format!("cat > '{}'", copy.display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {out:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&std::fs::read_to_string(&copy).unwrap()).unwrap(),
        json!({"v": 1})
    );
    let events: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        events
            .iter()
            .map(|e| e["event"].clone())
            .collect::<Vec<_>>(),
        [json!("initial"), json!("action")]
    );

    let out = bin()
        .args(["--once", "--on-start", "-d"])
        .arg(vol.path())
        .args(["--exec", "sh", "-c", "exit 3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAILED"));
}

/// `--once --on-start` ends, with the round's result, whatever fails and
/// whatever the retry flags: an init container that never exits blocks
/// its pod for good. (With a failed action and a confirmation it used to
/// wait forever for the skipped confirmation's report.)
#[cfg(unix)] // `true` and `false` as the commands
#[test]
fn once_on_start_always_ends_with_the_rounds_result() {
    let vol = plain_volume(r#"{"a":1}"#);
    let confirms: [(&[&str], bool); 4] = [
        (&[], true),
        (&["--confirm-exec", "true"], true),
        (&["--confirm-exec", "false"], false),
        // Nothing listens there: the confirmation fails at its timeout.
        (
            &[
                "--confirm-url",
                "http://127.0.0.1:1/status",
                "--confirm-timeout",
                "1s",
            ],
            false,
        ),
    ];
    for retry in [&[][..], &["--no-round-retry"]] {
        for (confirm, confirm_ok) in confirms {
            for (exec, exec_ok) in [("true", true), ("false", false)] {
                let mut cmd = bin();
                cmd.args(["--once", "--on-start", "-o", "json", "-d"])
                    .arg(vol.path())
                    .args(retry)
                    .args(confirm)
                    .args(["--exec", exec])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::null());
                let case = format!("{retry:?} {confirm:?} --exec {exec}");
                let mut child = crate::helper::Reaped(cmd.spawn().unwrap());
                let mut status = None;
                crate::helper::wait_until(&format!("{case} to exit"), || {
                    status = child.0.try_wait().unwrap();
                    status.is_some()
                });
                let expected = if exec_ok && confirm_ok { 0 } else { 1 };
                assert_eq!(status.unwrap().code(), Some(expected), "{case}");
            }
        }
    }
}
