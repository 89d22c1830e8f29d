//! Actions with the real binary: a real HTTP server on 127.0.0.1, real
//! child processes, a real signal.

use std::time::Duration;
#[cfg(unix)]
use std::{fs, process::Command};

use serde_json::{Value, json};

#[cfg(unix)]
use crate::helper::Running;
#[cfg(unix)]
use crate::helper::{DEADLINE, bin, wait_until};
use crate::helper::{HookServer, watch_json};

use crate::helper::action;

fn ok(status: u16) -> impl Fn(usize) -> (u16, Duration) {
    move |_| (status, Duration::ZERO)
}

#[test]
fn webhook_gets_the_event_and_retries_until_accepted() {
    let server = HookServer::start(|n| (if n < 2 { 500 } else { 200 }, Duration::ZERO));
    let vol = vol!();
    vol.publish(&[("config.json", r#"{"v":1}"#)]);
    let run = watch_json(&vol, &["--webhook-url", &server.url("/-/reload")]);
    let v2 = vol.publish(&[("config.json", r#"{"v":2}"#)]);
    let a = action(&run);
    assert_eq!(
        (&a["action"], &a["ok"], &a["attempts"], &a["version"]),
        (&json!("webhook"), &json!(true), &json!(3), &json!(v2))
    );
    for _ in 0..3 {
        let r = server.next();
        assert_eq!((r.method.as_str(), r.url.as_str()), ("POST", "/-/reload"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            (&r.body["event"], &r.body["version"]),
            (&json!("change"), &json!(v2))
        );
        assert_eq!(r.body["config"], json!({"v": 2}));
    }
}

#[test]
fn exhausted_retries_fail_and_the_next_change_runs_again() {
    let server = HookServer::start(|n| (if n < 3 { 503 } else { 200 }, Duration::ZERO));
    let vol = vol!();
    vol.publish(&[("config.json", "1")]);
    let run = watch_json(
        &vol,
        &["--webhook-url", &server.url("/"), "--webhook-retries", "2"],
    );
    let v2 = vol.publish(&[("config.json", "2")]);
    let a = action(&run);
    assert_eq!(
        (&a["ok"], &a["attempts"], &a["version"]),
        (&json!(false), &json!(3), &json!(v2))
    );
    assert!(
        a["error"]
            .as_str()
            .unwrap()
            .contains("status 503 not accepted"),
        "{a}"
    );
    let v3 = vol.publish(&[("config.json", "3")]);
    let a = action(&run);
    assert_eq!(
        (&a["ok"], &a["attempts"], &a["version"]),
        (&json!(true), &json!(1), &json!(v3))
    );
}

#[test]
fn a_slow_webhook_times_out() {
    let server = HookServer::start(|_| (200, Duration::from_secs(3)));
    let vol = vol!();
    vol.publish(&[("config.json", "1")]);
    let run = watch_json(
        &vol,
        &[
            "--webhook-url",
            &server.url("/"),
            "--webhook-timeout",
            "200ms",
            "--webhook-retries",
            "0",
        ],
    );
    vol.publish(&[("config.json", "2")]);
    let a = action(&run);
    assert_eq!((&a["ok"], &a["attempts"]), (&json!(false), &json!(1)));
    assert!(a["error"].as_str().unwrap().contains("timed out"), "{a}");
    assert!(
        a["error"]
            .as_str()
            .unwrap()
            .ends_with("(gave up after 1 attempt)"),
        "{a}"
    );
    assert!(a["duration_ms"].as_f64().unwrap() < 2000.0, "{a}");
}

#[test]
fn accepted_status_codes() {
    for (status, accept, expect_ok) in [
        (202, None, true),
        (202, Some("200"), false),
        (204, Some("200,204"), true),
        (301, None, false),
    ] {
        let server = HookServer::start(ok(status));
        let vol = vol!();
        vol.publish(&[("config.json", "1")]);
        let mut args = vec![
            "--webhook-url".to_owned(),
            server.url("/"),
            "--webhook-retries".into(),
            "0".into(),
        ];
        if let Some(accept) = accept {
            args.extend(["--webhook-status-code".to_owned(), accept.to_owned()]);
        }
        let run = watch_json(&vol, &args.iter().map(String::as_str).collect::<Vec<_>>());
        vol.publish(&[("config.json", "2")]);
        assert_eq!(action(&run)["ok"], json!(expect_ok), "{status} {accept:?}");
    }
}

#[test]
fn credentials_never_reach_logs_or_events_even_at_trace() {
    let server = HookServer::start(|n| (if n == 0 { 500 } else { 200 }, Duration::ZERO));
    let vol = vol!();
    vol.publish(&[("config.json", "1")]);
    let url = format!(
        "http://alice:pw-s3cret@127.0.0.1:{}/hook?token=qtok3n",
        server.port
    );
    let mut run = watch_json(
        &vol,
        &[
            "--log-level",
            "trace",
            "--webhook-url",
            &url,
            "--webhook-header",
            "Authorization: Bearer hdr-s3cret",
        ],
    );
    vol.publish(&[("config.json", "2")]);
    let a = action(&run);
    assert_eq!((&a["ok"], &a["attempts"]), (&json!(true), &json!(2)));
    let r = server.next();
    assert_eq!(
        r.header("authorization"),
        Some("Bearer hdr-s3cret"),
        "the header is sent"
    );
    assert!(r.url.contains("token=qtok3n"));
    // Stop the process so that everything it wrote can be read.
    let _ = run.child.kill();
    let _ = run.child.wait();
    // Everything to the end of the stream, not just what arrived so far.
    let stderr = run.stderr.iter().collect::<Vec<_>>().join("\n");
    let text = format!("{a}\n{stderr}");
    assert!(stderr.contains("TRACE") || stderr.contains("DEBUG") || stderr.contains("INFO"));
    for secret in ["pw-s3cret", "qtok3n", "hdr-s3cret", "YWxpY2U6cHctczNjcmV0"] {
        assert!(!text.contains(secret), "{secret} leaked:\n{text}");
    }
    assert!(
        a["target"].as_str().unwrap().contains("***@127.0.0.1"),
        "{a}"
    );
}

#[test]
fn a_burst_during_a_round_collapses_into_one_round_for_the_latest() {
    // The first round's webhook is held until the whole burst has been
    // detected: however fast or loaded the machine, every later change
    // arrives while a round runs, so the burst must collapse into exactly
    // one more round, for the latest version.
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let gate = std::sync::Mutex::new(gate);
    let server = HookServer::start(move |n| {
        if n == 0 {
            let _ = gate.lock().unwrap().recv_timeout(crate::helper::DEADLINE);
        }
        (200, Duration::ZERO)
    });
    let vol = vol!();
    vol.publish(&[("config.json", "0")]);
    let run = watch_json(
        &vol,
        &[
            "--webhook-url",
            &server.url("/"),
            "--webhook-timeout",
            "60s",
        ],
    );
    // Every event of the stream is kept: an action line that arrives while
    // the burst is published counts as much as one read after it.
    let mut events = Vec::new();
    let mut last = String::new();
    for i in 1..=20 {
        last = vol.publish(&[("config.json", &i.to_string())]);
        events.extend(run.events_until("change", &last)); // each one detected
    }
    release.send(()).unwrap();
    while !events
        .iter()
        .any(|e| e["event"] == "action" && e["version"] == last.as_str())
    {
        events.push(run.event());
    }
    let rounds: Vec<&Value> = events.iter().filter(|e| e["event"] == "action").collect();
    assert!(rounds.iter().all(|a| a["ok"] == json!(true)), "{rounds:?}");
    assert_eq!(rounds.len(), 2, "20 changes during one round: {rounds:?}");
    let bodies: Vec<Value> = (0..rounds.len())
        .map(|_| server.next().body["config"].clone())
        .collect();
    assert_eq!(bodies[1], json!(20), "{bodies:?}");
    assert!(bodies[0].as_i64() < Some(20), "{bodies:?}");
}

#[test]
fn an_invalid_config_triggers_nothing_and_on_start_runs_the_initial() {
    let server = HookServer::start(ok(200));
    let vol = vol!();
    let v1 = vol.publish(&[("config.json", "1")]);
    let run = watch_json(&vol, &["--webhook-url", &server.url("/"), "--on-start"]);
    assert_eq!(action(&run)["version"], json!(v1));
    assert_eq!(server.next().body["event"], "initial");
    let bad = vol.publish(&[("config.json", "{")]);
    run.event_for("error", &bad);
    let good = vol.publish(&[("config.json", "3")]);
    assert_eq!(action(&run)["version"], json!(good));
    let r = server.next();
    assert_eq!(
        (&r.body["version"], &r.body["event"]),
        (&json!(good), &json!("change"))
    );

    // Without --on-start the initial config triggers nothing.
    let vol = vol!();
    vol.publish(&[("config.json", "1")]);
    let run = watch_json(&vol, &["--webhook-url", &server.url("/")]);
    let v2 = vol.publish(&[("config.json", "2")]);
    assert_eq!(action(&run)["version"], json!(v2));
    assert_eq!(server.next().body["version"], json!(v2));
}

#[cfg(unix)]
#[test]
fn exec_gets_the_config_on_stdin_and_the_version_in_its_environment() {
    let vol = vol!();
    let v1 = vol.publish(&[("config.json", r#"{"v":1}"#)]);
    let out = vol.tmp.path().join("exec.out");
    let script = r#"cat > "$OUT"; printf '\n%s|%s|%s|%s\n' "$CONFIGMAPWATCH_EVENT" "$CONFIGMAPWATCH_VERSION" "$CONFIGMAPWATCH_PREVIOUS_VERSION" "$CONFIGMAPWATCH_DIR" >> "$OUT""#;
    let mut cmd = bin();
    cmd.env("OUT", &out)
        .args(["-o", "json", "-i", "10ms", "-d"])
        .arg(vol.path())
        .args(["--exec", "sh", "-c", script]);
    let run = Running::spawn(cmd);
    run.event_for("initial", &v1);
    let v2 = vol.publish(&[("config.json", r#"{"v": 2}"#)]);
    let a = action(&run);
    assert_eq!(
        (&a["action"], &a["ok"], &a["version"]),
        (&json!("exec"), &json!(true), &json!(v2))
    );
    let written = fs::read_to_string(&out).unwrap();
    let expected = format!("{{\"v\":2}}\nchange|{v2}|{v1}|{}\n", vol.path().display());
    assert_eq!(written, expected);
}

#[cfg(unix)]
#[test]
fn a_failing_command_is_reported_with_its_status_and_stderr() {
    let vol = vol!();
    vol.publish(&[("config.json", "1")]);
    let run = watch_json(
        &vol,
        &["--exec", "sh", "-c", "echo boom-from-child >&2; exit 3"],
    );
    vol.publish(&[("config.json", "2")]);
    let a = action(&run);
    assert_eq!(a["ok"], json!(false));
    let error = a["error"].as_str().unwrap();
    assert!(
        error.contains("exit status: 3") && error.contains("boom-from-child"),
        "{error}"
    );
    wait_until("the stderr tail in the log", || {
        run.stderr.try_iter().any(|l| l.contains("boom-from-child"))
    });
}

#[cfg(unix)]
#[test]
fn signal_reaches_the_process_in_the_pid_file() {
    use std::os::unix::process::ExitStatusExt;
    let vol = vol!();
    vol.publish(&[("config.json", "1")]);
    // Killed when dropped, even if the test fails.
    let mut target = crate::helper::Reaped(Command::new("sleep").arg("60").spawn().unwrap());
    let pid_file = vol.tmp.path().join("app.pid");
    fs::write(&pid_file, format!("{}\n", target.0.id())).unwrap();
    let run = watch_json(
        &vol,
        &[
            "--signal",
            "SIGUSR1",
            "--pid-file",
            pid_file.to_str().unwrap(),
        ],
    );
    let v2 = vol.publish(&[("config.json", "2")]);
    // Rounds run in order and each reports, so a round for the initial
    // config would report before this one: the first report being v2's
    // shows the initial config signalled nothing.
    let a = action(&run);
    assert_eq!(
        (&a["action"], &a["ok"], &a["version"]),
        (&json!("signal"), &json!(true), &json!(v2)),
        "no signal for the initial config"
    );
    let mut status = None;
    wait_until("the target to die of SIGUSR1", || {
        status = target.0.try_wait().unwrap();
        status.is_some()
    });
    assert_eq!(
        status.unwrap().signal(),
        Some(rustix::process::Signal::USR1.as_raw())
    );
}

#[cfg(unix)]
#[test]
fn sigterm_waits_for_a_running_action_at_most_the_shutdown_timeout() {
    use rustix::process::Signal;
    // A round that outlives the timeout: exit after the timeout, status 0.
    let server = HookServer::start(|_| (200, Duration::from_secs(5)));
    let vol = vol!();
    vol.publish(&[("config.json", "1")]);
    let mut run = watch_json(
        &vol,
        &[
            "--webhook-url",
            &server.url("/"),
            "--shutdown-timeout",
            "300ms",
        ],
    );
    let v2 = vol.publish(&[("config.json", "2")]);
    server.next(); // the round is in flight
    let (took, status) = run.signal_and_time_exit(Signal::TERM);
    assert_eq!(status.code(), Some(0));
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // The round left unfinished is reported, not silently dropped.
    let a = action(&run);
    assert_eq!((&a["ok"], &a["version"]), (&json!(false), &json!(v2)));
    assert!(
        a["error"].as_str().unwrap().starts_with("interrupted"),
        "{a}"
    );

    // A round that finishes within the timeout: waited for, then exit.
    let server = HookServer::start(|_| (200, Duration::from_millis(400)));
    let mut run = watch_json(
        &vol,
        &[
            "--webhook-url",
            &server.url("/"),
            "--shutdown-timeout",
            "5s",
        ],
    );
    let v3 = vol.publish(&[("config.json", "3")]);
    server.next();
    let (took, status) = run.signal_and_time_exit(Signal::TERM);
    assert_eq!(status.code(), Some(0));
    assert!(took < DEADLINE);
    let a = action(&run);
    assert_eq!((&a["ok"], &a["version"]), (&json!(true), &json!(v3)));
}

/// `--exec -- PROGRAM ARGS` works like `--exec PROGRAM ARGS`.
#[cfg(unix)]
#[test]
fn exec_accepts_a_double_dash_before_the_command() {
    let vol = vol!();
    vol.publish(&[("config.json", "1")]);
    let out = vol.tmp.path().join("ran");
    let mut cmd = bin();
    cmd.env("OUT", &out)
        .args(["-o", "json", "-i", "10ms", "--on-start", "-d"])
        .arg(vol.path())
        .args([
            "--exec",
            "--",
            "sh",
            "-c",
            r#"echo "$CONFIGMAPWATCH_EVENT" > "$OUT""#,
        ]);
    let run = Running::spawn(cmd);
    let a = action(&run);
    assert_eq!(
        (&a["action"], &a["ok"]),
        (&json!("exec"), &json!(true)),
        "{a}"
    );
    assert_eq!(fs::read_to_string(&out).unwrap(), "initial\n");
}

/// SIGTERM ends the tool within a second whatever is running: a checker on
/// the loop's thread, a command, a confirmation command, a webhook in
/// flight. Commands get SIGTERM (their process group) at once, and the
/// round is reported as interrupted. (A checker used to be waited for to
/// its end, a command for --shutdown-timeout, 5 s by default.)
#[cfg(unix)]
#[test]
fn sigterm_ends_the_tool_within_a_second_whatever_runs() {
    use rustix::process::Signal;
    let vol = vol!();
    vol.publish(&[("config.json", r#""fast""#)]);
    let pid_file = vol.tmp.path().join("child.pid");
    let slow = format!("echo $$ > {}; exec sleep 10", pid_file.display());
    let checker = format!("sh -c 'grep -q slow {{}} || exit 0; {slow}'");
    let confirm = format!("sh -c '{slow}'");
    let server = HookServer::start(|_| (200, Duration::from_secs(10)));
    let url = server.url("/");
    let cases: [(&str, Vec<&str>); 4] = [
        ("checker", vec!["--validate-exec", &checker]),
        ("exec", vec!["--exec", "sh", "-c", &slow]),
        (
            "confirm",
            vec!["--confirm-exec", &confirm, "--exec", "true"],
        ),
        ("webhook", vec!["--webhook-url", &url]),
    ];
    for (what, args) in cases {
        let _ = fs::remove_file(&pid_file);
        let mut run = watch_json(&vol, &args);
        let v = vol.publish(&[("config.json", r#""slow""#)]);
        if what == "webhook" {
            server.next(); // in flight
        } else {
            wait_until(&format!("the {what} to run"), || {
                fs::read_to_string(&pid_file).is_ok_and(|p| p.ends_with('\n'))
            });
        }
        let (took, status) = run.signal_and_time_exit(Signal::TERM);
        println!("{what}: SIGTERM to exit {took:?}");
        assert_eq!(status.code(), Some(0), "{what}");
        assert!(took < Duration::from_secs(2), "{what}: {took:?}");
        if what != "webhook" {
            let pid: i32 = fs::read_to_string(&pid_file)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            assert!(
                !std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "{what}: its process outlived the tool"
            );
        }
        if what != "checker" {
            // The round's report for the action that was running (the
            // confirmation comes after --exec true's success).
            let a = loop {
                let a = action(&run);
                if a["ok"] == json!(false) || a["action"] == what {
                    break a;
                }
            };
            assert_eq!(
                (&a["ok"], &a["version"]),
                (&json!(false), &json!(v)),
                "{what}"
            );
            assert!(
                a["error"].as_str().unwrap().contains("interrupted"),
                "{what}: {a}"
            );
        }
        vol.publish(&[("config.json", r#""fast""#)]);
    }
}

/// A round is queued before its tick's events are printed (a blocked
/// stdout never delays a reload), yet a fast round's report must not be
/// printed before the change it acts on: a consumer reading events in
/// order (and this suite) would see an action for a version not yet
/// announced. The tool runs on one CPU, where the runner's thread woken
/// by the queued round tends to run before the loop prints the change.
#[cfg(target_os = "linux")]
#[test]
fn an_action_line_never_comes_before_the_change_it_acts_on() {
    needs!("taskset");
    let vol = vol!();
    vol.publish(&[("config.json", "0")]);
    let _target = crate::helper::Reaped(Command::new("sleep").arg("600").spawn().unwrap());
    let mut cmd = Command::new(crate::helper::tool_path("taskset"));
    cmd.args(["-c", "0"]).arg(bin().get_program());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CONFIGMAPWATCH_") {
            cmd.env_remove(key);
        }
    }
    cmd.args(["-o", "json", "-i", "1ms", "-d"])
        .arg(vol.path())
        .args(["--signal", "SIGCONT", "--pid"])
        .arg(_target.0.id().to_string());
    let run = Running::spawn(cmd);
    run.event_for("initial", &vol.target());
    for n in 1..=60 {
        let version = vol.publish(&[("config.json", &n.to_string())]);
        let mut changed = false;
        loop {
            let e = run.event();
            if e["version"] != version.as_str() {
                continue;
            }
            match e["event"].as_str() {
                Some("change") => changed = true,
                Some("action") => {
                    assert!(
                        changed,
                        "update {n}: the action line came before its change: {e}"
                    );
                    assert_eq!(e["ok"], true, "{e}");
                    break;
                }
                _ => panic!("update {n}: {e}"),
            }
        }
    }
}
