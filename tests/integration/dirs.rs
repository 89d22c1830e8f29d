//! Several volumes in one process (`--dir` repeated): each is its own
//! consistent snapshot on the same tick, events carry their directory, and
//! changes found on one tick run one round of actions carrying every
//! directory's config.

use serde_json::{Value, json};

#[cfg(unix)]
use crate::helper::{Running, wait_until};
use crate::helper::{Vol, bin};

#[cfg(unix)]
#[test]
fn changes_in_two_directories_on_one_tick_run_one_round_with_every_config() {
    let (a, b, c) = (vol!(), vol!(), vol!());
    for (vol, n) in [(&a, 1), (&b, 2), (&c, 3)] {
        vol.publish(&[("config.json", &format!(r#"{{"n":{n}}}"#))]);
    }
    let rounds = a.tmp.path().join("rounds.log");
    let mut cmd = bin();
    // A long interval, so that both publishes below land between two ticks.
    cmd.args(["-o", "json", "-i", "1500ms"])
        .arg("-d")
        .arg(a.path())
        .arg("--dir")
        .arg(b.path())
        .env("CONFIGMAPWATCH_DIR", "ignored-when-flags-are-given")
        .arg("-d")
        .arg(c.path())
        .arg("--exec")
        .args(["sh", "-c"])
        .arg(format!(
            "cat >> '{}'; echo >> '{}'",
            rounds.display(),
            rounds.display()
        ));
    let run = Running::spawn(cmd);
    let mut initial_dirs = Vec::new();
    for _ in 0..3 {
        let e = run.event();
        assert_eq!(e["event"], "initial", "{e}");
        initial_dirs.push(e["dir"].as_str().unwrap().to_owned());
    }
    let dirs: Vec<String> = [&a, &b, &c]
        .iter()
        .map(|v| v.path().to_string_lossy().into_owned())
        .collect();
    assert_eq!(initial_dirs, dirs);

    let va = a.publish(&[("config.json", r#"{"n":10}"#)]);
    let vc = c.publish(&[("config.json", r#"{"n":30}"#)]);
    let mut changed = Vec::new();
    while changed.len() < 2 {
        let e = run.event();
        if e["event"] == "change" {
            changed.push((e["dir"].clone(), e["version"].clone()));
        }
    }
    assert_eq!(
        changed,
        [(json!(dirs[0]), json!(va)), (json!(dirs[2]), json!(vc))]
    );
    let report = loop {
        let e = run.event();
        if e["event"] == "action" {
            break e;
        }
    };
    assert_eq!(report["ok"], true, "{report}");
    wait_until("the round's output", || {
        std::fs::read_to_string(&rounds).is_ok_and(|s| s.ends_with('\n'))
    });
    let text = std::fs::read_to_string(&rounds).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 1, "one round for one tick: {text}");
    let input: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(
        input,
        json!({&dirs[0]: {"n": 10}, &dirs[1]: {"n": 2}, &dirs[2]: {"n": 30}})
    );
}

#[test]
fn the_environment_names_several_directories_separated_by_commas() {
    let (a, b) = (Vol::new(), Vol::new());
    for (vol, n) in [(&a, 1), (&b, 2)] {
        std::fs::create_dir_all(vol.path()).unwrap();
        std::fs::write(vol.path().join("config.json"), format!(r#"{{"n":{n}}}"#)).unwrap();
    }
    let out = bin()
        .args(["--once", "-o", "json"])
        .env(
            "CONFIGMAPWATCH_DIR",
            format!("{},{}", a.path().display(), b.path().display()),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["config"], json!({"n": 1}));
    assert_eq!(events[1]["config"], json!({"n": 2}));
    assert_eq!(events[1]["dir"], b.path().to_string_lossy().as_ref());
}
