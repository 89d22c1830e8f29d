//! The real binary: the original demo's scenario, signals, `--once`,
//! usage errors, `publish` and `demo`.

use std::fs;

use serde_json::json;

use crate::helper::{Running, Vol, bin};

const ORIGINAL: &str = r#"{"THIS": "is a test", "HERE": "is another test", "KEY": "here's another key", "ANOTHER": "and yet another key"}"#;

fn publish(vol: &Vol, args: &[&str]) -> String {
    let out = bin()
        .arg("publish")
        .arg("--dir")
        .arg(vol.path())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The original demo: the config is printed, a key is added with
/// `kubectl edit`, the change is detected and printed.
#[test]
fn original_demo_scenario_end_to_end() {
    let vol = vol!();
    let src = vol.tmp.path().join("config.json");
    fs::write(&src, ORIGINAL).unwrap();
    publish(&vol, &["--from-file", src.to_str().unwrap()]);
    let v1 = vol.target();

    let mut cmd = bin();
    cmd.args(["--output", "json", "--interval", "20ms", "--dir"])
        .arg(vol.path());
    let watch = Running::spawn(cmd);
    let initial = watch.event();
    assert_eq!(initial["event"], "initial");
    assert_eq!(initial["version"], v1.as_str());
    assert_eq!(
        initial["config"],
        serde_json::from_str::<serde_json::Value>(ORIGINAL).unwrap()
    );
    // The initial version was swapped in before the watcher started: its
    // time since the swap is the volume's age, not a detection lag.
    assert!(initial["age_ms"].is_f64(), "{initial}");
    assert_eq!(initial.get("lag_ms"), None, "{initial}");
    assert!(initial["detected_at"].as_str().unwrap().ends_with('Z'));

    let mut edited: serde_json::Value = serde_json::from_str(ORIGINAL).unwrap();
    edited["NEW"] = json!("a key added");
    fs::write(&src, edited.to_string()).unwrap();
    let out = publish(
        &vol,
        &["--from-file", &format!("config.json={}", src.display())],
    );
    let v2 = vol.target();
    assert!(out.contains(&v2) && out.contains(&v1), "{out}");
    let change = watch.event();
    assert_eq!(
        (&change["event"], &change["version"]),
        (&json!("change"), &json!(v2))
    );
    assert_eq!(change["config"], edited);
    assert_eq!(change["previous_version"], v1.as_str());
    let lag = change["lag_ms"].as_f64().unwrap();
    assert!((0.0..10_000.0).contains(&lag), "{lag}");
}

#[test]
fn text_output_shows_event_version_lag_and_config() {
    let vol = vol!();
    let v1 = vol.publish(&[("config.json", r#"{"a": 1}"#)]);
    let mut cmd = bin();
    cmd.args(["--interval", "20ms", "-d"]).arg(vol.path());
    let watch = Running::spawn(cmd);
    let line = watch.line();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert!(fields[0].ends_with('Z'), "{line}");
    assert_eq!(fields[1], "initial");
    assert_eq!(fields[2], format!("version={v1}"));
    assert!(
        fields[3].starts_with("age=") && fields[3].ends_with("ms"),
        "{line}"
    );
    assert_eq!(fields[4], format!("dir={}", vol.path().display()));
    assert_eq!(fields[5], r#"config={"a":1}"#);
}

#[test]
fn errors_are_events_and_the_watcher_goes_on() {
    let vol = vol!();
    vol.publish(&[("config.json", r#"{"a": 1}"#)]);
    let mut cmd = bin();
    cmd.args(["-o", "json", "-i", "20ms", "-d"]).arg(vol.path());
    let watch = Running::spawn(cmd);
    watch.event();
    let bad = vol.publish(&[("config.json", "{\"a\": }")]);
    let e = watch.event_for("error", &bad);
    assert_eq!(e["key"], "config.json");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains(", at line 1 column 7: "),
        "{e}"
    );
    assert_eq!(e["config"], json!({"a": 1}));
    let good = vol.publish(&[("config.json", r#"{"a": 2}"#)]);
    assert_eq!(watch.event_for("change", &good)["config"], json!({"a": 2}));
}

#[test]
fn env_vars_configure_the_watcher() {
    let vol = vol!();
    vol.publish(&[("app.json", r#"{"from":"env"}"#)]);
    let mut cmd = bin();
    cmd.env("CONFIGMAPWATCH_DIR", vol.path())
        .env("CONFIGMAPWATCH_FILE", "app.json")
        .env("CONFIGMAPWATCH_INTERVAL", "20ms")
        .env("CONFIGMAPWATCH_OUTPUT", "json");
    let watch = Running::spawn(cmd);
    assert_eq!(watch.event()["config"], json!({"from": "env"}));
}

#[cfg(unix)]
#[test]
fn sigterm_sigint_and_sighup_end_a_5s_interval_at_once() {
    use rustix::process::Signal;
    for signal in [Signal::TERM, Signal::INT, Signal::HUP] {
        let vol = vol!();
        vol.publish(&[("config.json", "{}")]);
        let mut cmd = bin();
        cmd.args(["--interval", "5s", "-d"]).arg(vol.path());
        let mut watch = Running::spawn(cmd);
        watch.line(); // in the wait now
        let (took, status) = watch.signal_and_time_exit(signal);
        assert_eq!(status.code(), Some(0), "{signal:?}: {status}");
        assert!(took.as_millis() < 100, "{signal:?}: exit took {took:?}");
    }
}

/// On Linux the loop waits for its signals with sigtimedwait: an idle watch
/// is one thread (no signal-handling thread), and the signals it blocks for
/// that are not blocked in the commands it starts.
#[cfg(target_os = "linux")]
#[test]
fn an_idle_watch_is_one_thread_and_its_commands_block_no_signal() {
    let vol = vol!();
    vol.publish(&[("config.json", r#"{"v":1}"#)]);
    let idle = crate::helper::watch_json(&vol, &[]);
    let threads = std::fs::read_dir(format!("/proc/{}/task", idle.child.id()))
        .unwrap()
        .count();
    assert_eq!(threads, 1, "an idle watch without actions or listener");
    drop(idle);

    // Each command runs directly, not through sh: dash clears the mask it
    // inherits, which once hid commands starting with SIGTERM blocked.
    let unblocked = "grep -q SigBlk:.0000000000000000 /proc/self/status";
    let run = crate::helper::watch_json(
        &vol,
        &[
            "--validate-exec",
            unblocked,
            "--confirm-exec",
            unblocked,
            "--exec",
            "grep",
            "-q",
            "SigBlk:.0000000000000000",
            "/proc/self/status",
        ],
    );
    let v2 = vol.publish(&[("config.json", r#"{"v":2}"#)]);
    run.event_for("change", &v2); // the checker passed
    for _ in ["exec", "confirm"] {
        let a = crate::helper::action(&run);
        assert_eq!(a["ok"], json!(true), "{a}");
    }
}

#[test]
fn once_exit_codes() {
    let vol = vol!();
    let once = |vol: &Vol, extra: &[&str]| {
        let out = bin()
            .arg("--once")
            .arg("-o")
            .arg("json")
            .arg("-d")
            .arg(vol.path())
            .args(extra)
            .output()
            .unwrap();
        let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.code(), line)
    };
    let (code, line) = once(&vol, &[]);
    assert_eq!(code, Some(1), "missing dir");
    assert!(line["error"].as_str().unwrap().contains("does not exist"));

    vol.publish(&[("config.json", r#"{"ok":true}"#)]);
    let (code, line) = once(&vol, &[]);
    assert_eq!(
        (code, &line["event"], &line["config"]),
        (Some(0), &json!("initial"), &json!({"ok": true}))
    );

    let (code, line) = once(&vol, &["--file", "nope.json"]);
    assert_eq!((code, &line["key"]), (Some(1), &json!("nope.json")));

    vol.publish(&[("config.json", "{,}")]);
    let (code, line) = once(&vol, &[]);
    assert_eq!((code, &line["event"]), (Some(1), &json!("error")));
}

#[test]
fn usage_errors_exit_2_with_a_clear_message() {
    for (args, expected) in [
        (&["--interval", "0s"][..], "must be greater than zero"),
        (&["--interval", "soon"], "expected e.g. 500ms"),
        (&["--max-file-size", "lots"], "expected e.g. 1MiB"),
        (&["--output", "yaml"], "possible values: text, json"),
        (&["--all-keys", "--file", "x.json"], "cannot be used with"),
        (&["--log-level", "loud"], "expected one of off"),
        // Parsed at startup by the request's own URL parser, not retried
        // forever on every change.
        (&["--webhook-url", "http://exa mple/"], "not a valid URL"),
        (&["--webhook-url", "http://h:70000/"], "port"),
        (
            &["--confirm-exec", "true", "--webhook-url", "ftp://h/"],
            "not an http",
        ),
    ] {
        let out = bin().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn help_has_examples() {
    let out = bin().arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("Examples:") && help.contains("configmapwatch demo"));
}

#[test]
fn publish_follows_kubectl_and_skips_unchanged_payloads() {
    let vol = vol!();
    let srcdir = vol.tmp.path().join("src");
    fs::create_dir(&srcdir).unwrap();
    fs::write(srcdir.join("a.json"), "{}").unwrap();
    fs::write(srcdir.join("b.txt"), "b").unwrap();
    let args = [
        "--from-file",
        srcdir.to_str().unwrap(),
        "--from-literal",
        "mode=debug",
    ];
    let out = publish(&vol, &args);
    assert!(out.starts_with("published .."), "{out}");
    for key in ["a.json", "b.txt", "mode"] {
        assert!(vol.data_dir().join(key).is_file(), "{key}");
        assert!(
            fs::symlink_metadata(vol.path().join(key))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
    assert_eq!(
        fs::read_to_string(vol.path().join("mode")).unwrap(),
        "debug"
    );
    let before = vol.target();
    assert!(publish(&vol, &args).starts_with("unchanged"));
    assert_eq!(vol.target(), before);

    let out = bin()
        .args(["publish", "--dir"])
        .arg(vol.path())
        .args(["--from-literal", "..x=1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must not start with '..'"));
}

#[test]
fn publish_usage_errors_exit_2_and_write_failures_1() {
    let tmp = tempfile::tempdir().unwrap();
    let vol = tmp.path().join("vol");
    let big = tmp.path().join("big.json");
    fs::write(&big, "x".repeat(2048)).unwrap();
    let missing = tmp.path().join("missing.json");
    for (args, expected) in [
        (
            vec!["--from-file".to_owned(), missing.display().to_string()],
            "missing.json",
        ),
        (
            vec![
                "--from-literal".into(),
                "a=1".into(),
                "--mode".into(),
                "b=0600".into(),
            ],
            "--mode names a key the payload does not have",
        ),
        (
            vec![
                "--from-file".into(),
                big.display().to_string(),
                "--max-file-size".into(),
                "1KiB".into(),
            ],
            "over the 1024-byte limit",
        ),
    ] {
        let out = bin()
            .args(["publish", "--dir"])
            .arg(&vol)
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(stderr.contains("Usage: configmapwatch publish"), "{stderr}");
    }
    // The command line is right; the writing fails: 1.
    let file = tmp.path().join("a-file");
    fs::write(&file, "").unwrap();
    let out = bin()
        .args(["publish", "--dir"])
        .arg(file.join("vol"))
        .args(["--from-literal", "a=1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot create"), "{stderr}");
}

#[test]
fn demo_runs_and_shows_every_kind_of_event() {
    if !crate::helper::symlinks_work() {
        // without_symlinks_publish_and_demo_say_why covers this platform.
        crate::helper::no_symlinks(file!(), line!());
        return;
    }
    let out = bin().arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        " initial ",
        " change ",
        " error ",
        "a key added",
        "line 3",
        "demo: done",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in\n{stdout}");
    }
}

#[test]
fn a_missing_directory_is_waited_for_not_an_exit() {
    let vol = vol!();
    let mut cmd = bin();
    cmd.args(["-o", "json", "-i", "20ms", "-d"]).arg(vol.path());
    let watch = Running::spawn(cmd);
    let log = watch.stderr.recv_timeout(crate::helper::DEADLINE).unwrap();
    assert!(log.contains("does not exist yet"), "{log}");
    let v1 = vol.publish(&[("config.json", r#"{"late":true}"#)]);
    let e = watch.event();
    assert_eq!(
        (&e["event"], &e["version"]),
        (&json!("initial"), &json!(v1))
    );
}

/// Plain-directory mode with the real binary: what a Windows or macOS dev
/// host without `publish` sees. Runs everywhere, Wine included.
#[test]
fn the_binary_watches_a_plain_directory() {
    let vol = Vol::new();
    fs::create_dir_all(vol.path()).unwrap();
    fs::write(vol.path().join("config.json"), r#"{"a":1}"#).unwrap();
    let mut cmd = bin();
    cmd.args(["-o", "json", "-i", "20ms", "-d"]).arg(vol.path());
    let watch = Running::spawn(cmd);
    let e = watch.event();
    assert_eq!(
        (&e["event"], &e["config"], &e["lag_ms"]),
        (&json!("initial"), &json!({"a": 1}), &json!(null))
    );
    assert!(e["version"].as_str().unwrap().starts_with("plain-"), "{e}");
    fs::write(vol.path().join("config.json"), r#"{"a": 22}"#).unwrap();
    let e = watch.event();
    assert_eq!(
        (&e["event"], &e["config"]),
        (&json!("change"), &json!({"a": 22}))
    );
}

/// Where symlinks cannot be made (Wine, Windows without Developer Mode),
/// `publish` and `demo` fail with a message that says so. Linux always has
/// symlinks, so the test exists elsewhere only.
#[cfg(not(target_os = "linux"))]
#[test]
fn without_symlinks_publish_and_demo_say_why() {
    if crate::helper::symlinks_work() {
        println!(
            "SKIPPED without_symlinks: symlinks work here; this checks the message where they do not"
        );
        return;
    }
    let vol = Vol::new();
    let publish = bin()
        .args(["publish", "--from-literal", "a=1", "--dir"])
        .arg(vol.path())
        .output()
        .unwrap();
    let demo = bin().arg("demo").output().unwrap();
    for out in [publish, demo] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("symlink"), "{stderr}");
    }
}

#[cfg(windows)]
#[test]
fn signals_are_refused_on_windows() {
    let out = bin()
        .args(["--signal", "HUP", "--pid", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not supported on Windows"), "{stderr}");
}

/// Boolean variables take the usual spellings (`CONFIGMAPWATCH_ALL_KEYS=1`).
#[test]
fn boolean_env_vars_accept_1_0_yes_no_true_false() {
    let vol = vol!();
    vol.publish(&[("app.txt", "hello")]);
    for (value, all_keys) in [
        ("1", true),
        ("yes", true),
        ("true", true),
        ("0", false),
        ("no", false),
        ("false", false),
    ] {
        let out = bin()
            .env("CONFIGMAPWATCH_ALL_KEYS", value)
            .args(["--once", "-o", "json", "-d"])
            .arg(vol.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // With every key, app.txt is the config; without, config.json is
        // missing (exit 1). A refused value would be a usage error (2).
        let expected = if all_keys { 0 } else { 1 };
        assert_eq!(out.status.code(), Some(expected), "{value}: {stderr}");
    }
}

/// `-l, --log-level` is not listed under the Actions heading, in any help
/// screen.
#[test]
fn log_level_is_not_under_the_actions_heading() {
    for args in [&["--help"][..], &["publish", "--help"], &["demo", "--help"]] {
        let out = bin().args(args).output().unwrap();
        let help = String::from_utf8(out.stdout).unwrap();
        let heading_of_log_level = help
            .lines()
            .take_while(|l| !l.contains("--log-level"))
            .filter(|l| !l.starts_with(' ') && l.ends_with(':'))
            .last()
            .unwrap_or_else(|| panic!("{args:?}: no heading before --log-level:\n{help}"));
        assert!(
            !heading_of_log_level.starts_with("Actions"),
            "{args:?}: {heading_of_log_level}\n{help}"
        );
    }
}

/// The `--help` examples' command lines.
fn help_examples() -> Vec<String> {
    let out = bin().arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    help.lines()
        .skip_while(|l| !l.starts_with("Examples:"))
        .map(str::trim)
        .filter(|l| l.starts_with("configmapwatch "))
        .map(str::to_owned)
        .collect()
}

/// The arguments of the `--help` example whose command line contains
/// `marker`, with `replace` applied (paths and URLs of the target).
fn help_example(marker: &str, replace: &[(&str, String)]) -> Vec<String> {
    let examples = help_examples();
    let line = examples
        .iter()
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no example with {marker}: {examples:?}"));
    crate::helper::example_args(line, replace)
}

/// Each `--help` example is claimed by the test that runs it.
#[test]
fn every_help_example_is_run_by_a_test() {
    const RUN_BY: &[(&str, &str)] = &[
        ("--interval 5s", "the_plain_help_examples_work"),
        ("--output json", "the_plain_help_examples_work"),
        ("--exec sh -c", "the_plain_help_examples_work"),
        ("--once", "the_plain_help_examples_work"),
        ("publish --dir ./vol", "the_plain_help_examples_work"),
        ("/-/reload", "the_prometheus_help_example_fires"),
        ("--pid-file", "the_nginx_help_example_fires"),
        (
            "configmapwatch demo",
            "demo_runs_and_shows_every_kind_of_event",
        ),
    ];
    let examples = help_examples();
    assert!(examples.len() >= 8, "{examples:?}");
    for example in examples {
        assert!(
            RUN_BY.iter().any(|(marker, _)| example.contains(marker)),
            "no test runs this --help example: {example}"
        );
    }
}

/// The examples without an outside target, as written but for paths.
#[test]
fn the_plain_help_examples_work() {
    let vol = vol!();
    vol.publish(&[("config.json", r#"{"v":1}"#), ("app.txt", "hi")]);
    let dir = vol.path().display().to_string();
    let replace = [
        ("/opt/config", dir.clone()),
        ("/etc/app", dir.clone()),
        (
            "/tmp/config.json",
            vol.tmp.path().join("out.json").display().to_string(),
        ),
    ];

    // Watching prints the initial config at once, whatever the interval.
    let mut cmd = bin();
    cmd.args(help_example("--interval 5s", &replace));
    let running = Running::spawn(cmd);
    let line = running.line();
    assert!(
        line.contains(" initial ") && line.contains(r#"config={"v":1}"#),
        "{line}"
    );
    drop(running);

    let mut cmd = bin();
    cmd.args(help_example("--output json", &replace));
    let running = Running::spawn(cmd);
    let initial = running.event();
    assert_eq!(
        initial["config"],
        json!({"config.json": {"v": 1}, "app.txt": "hi"})
    );
    drop(running);

    let out = bin()
        .args(help_example("--once", &replace))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(r#"config={"v":1}"#));

    #[cfg(unix)]
    if crate::helper::have_tools(&["jq"]) {
        let mut cmd = bin();
        cmd.args(["-i", "10ms"])
            .args(help_example("--exec sh -c", &replace));
        let running = Running::spawn(cmd);
        running.line(); // the initial config
        vol.publish(&[("config.json", r#"{"v":2}"#), ("app.txt", "hi")]);
        let out = vol.tmp.path().join("out.json");
        crate::helper::wait_until("jq to write the new config", || {
            fs::read_to_string(&out)
                .ok()
                .and_then(|o| serde_json::from_str::<serde_json::Value>(&o).ok())
                == Some(json!({"v": 2}))
        });
    }

    let cwd = tempfile::tempdir().unwrap();
    fs::write(cwd.path().join("config.json"), "{}").unwrap();
    let out = bin()
        .args(help_example("publish --dir ./vol", &[]))
        .current_dir(cwd.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = |k: &str| fs::read_to_string(cwd.path().join("vol").join(k)).unwrap();
    assert_eq!(
        (key("config.json"), key("mode")),
        ("{}".to_owned(), "debug".to_owned())
    );
}

/// The Prometheus example, run against a volume shaped like Prometheus's
/// (prometheus.yml, no config.json), fires its reload webhook.
#[test]
fn the_prometheus_help_example_fires() {
    let server = crate::helper::HookServer::start(|_| (200, std::time::Duration::ZERO));
    let vol = vol!();
    vol.publish(&[("prometheus.yml", "global: {}\n")]);
    let args = help_example(
        "/-/reload",
        &[
            ("/etc/prometheus", vol.path().display().to_string()),
            ("http://127.0.0.1:9090/-/reload", server.url("/-/reload")),
        ],
    );
    let mut cmd = bin();
    cmd.args(&args).args(["-o", "json", "-i", "10ms"]);
    let run = Running::spawn(cmd);
    run.event_for("initial", &vol.target());
    let v2 = vol.publish(&[("prometheus.yml", "global: {scrape_interval: 5s}\n")]);
    assert_eq!(server.next().body["version"], json!(v2));
}

/// The nginx example, run against a volume shaped like nginx's conf.d
/// (default.conf, no config.json), signals the process in the pid file.
#[cfg(unix)]
#[test]
fn the_nginx_help_example_fires() {
    let vol = vol!();
    vol.publish(&[("default.conf", "server { listen 80; }\n")]);
    let mut target = crate::helper::Reaped(
        std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap(),
    );
    let pid_file = vol.tmp.path().join("nginx.pid");
    fs::write(&pid_file, format!("{}\n", target.0.id())).unwrap();
    let args = help_example(
        "--pid-file",
        &[
            ("/etc/nginx/conf.d", vol.path().display().to_string()),
            ("/var/run/nginx.pid", pid_file.display().to_string()),
        ],
    );
    let mut cmd = bin();
    cmd.args(&args).args(["-o", "json", "-i", "10ms"]);
    let run = Running::spawn(cmd);
    run.event_for("initial", &vol.target());
    vol.publish(&[("default.conf", "server { listen 8080; }\n")]);
    crate::helper::wait_until("the nginx stand-in to get SIGHUP", || {
        target.0.try_wait().unwrap().is_some()
    });
}

/// `configmapwatch -o json | head -n1` ends with exit 0 once its reader
/// is gone and there is no action to run.
#[test]
fn a_closed_stdout_ends_the_watch_with_exit_0_without_actions() {
    use std::io::BufRead;
    let vol = vol!();
    vol.publish(&[("config.json", "1")]);
    let mut child = crate::helper::Reaped(
        bin()
            .args(["-o", "json", "-i", "10ms", "-d"])
            .arg(vol.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut first = String::new();
    std::io::BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap(); // the reader is dropped here: stdout is closed
    assert!(first.contains("initial"), "{first}");
    vol.publish(&[("config.json", "2")]);
    let mut status = None;
    crate::helper::wait_until("the watcher to exit", || {
        status = child.0.try_wait().unwrap();
        status.is_some()
    });
    assert_eq!(status.unwrap().code(), Some(0));
}
