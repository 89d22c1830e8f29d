//! `--listen-address`: /metrics scraped by a real client and checked by
//! promtool, /healthz catching a loop that is really stuck (its stdout is
//! a full pipe), /readyz naming the directories without a config, and bad
//! or slow clients that never hold up the watcher.

#![cfg(unix)]

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use crate::helper::{
    DEADLINE, HookServer, Vol, bin, get, pipe_lines, request, sample, served_at, spawn_served,
    tool, wait_until, watch_served,
};

#[test]
fn metrics_follow_reloads_and_errors_and_pass_promtool() {
    needs!("promtool");
    let vol = vol!();
    let v1 = vol.publish(&[("config.json", r#"{"n":1}"#)]);
    // The first call answers 200, the second 500: one good reload, one failed.
    let hook = HookServer::start(|n| (if n == 0 { 200 } else { 500 }, Duration::ZERO));
    let mut cmd = watch_served(vol.path());
    cmd.args([
        "--webhook-retries",
        "0",
        "--no-round-retry",
        "--webhook-url",
    ])
    .arg(hook.url("/-/reload"));
    let (run, addr) = spawn_served(cmd);
    run.event_for("initial", &v1);
    let dir = vol.path().display().to_string();

    let (code, metrics) = get(addr, "/metrics");
    assert_eq!(code, 200);
    assert_eq!(sample(&metrics, "reloader_watches"), Some(1.0));
    assert_eq!(sample(&metrics, "reloader_reloads_total"), Some(0.0));
    assert_eq!(
        sample(
            &metrics,
            &format!("configmapwatch_config_valid{{dir=\"{dir}\"}}")
        ),
        Some(1.0)
    );

    let v2 = vol.publish(&[("config.json", r#"{"n":2}"#)]);
    run.event_for("change", &v2);
    assert_eq!(crate::helper::action(&run)["ok"], true);
    let (_, metrics) = get(addr, "/metrics");
    assert_eq!(sample(&metrics, "reloader_reloads_total"), Some(1.0));
    assert_eq!(
        sample(&metrics, "reloader_last_reload_successful"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "configmapwatch_action_runs_total{action=\"webhook\",result=\"success\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, "configmapwatch_detection_lag_seconds_count"),
        Some(1.0)
    );
    assert!(
        metrics.contains(&format!(
            "configmapwatch_config_info{{dir=\"{dir}\",hash=\""
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("version=\"{v2}\"}} 1")),
        "{metrics}"
    );
    let checks = sample(
        &metrics,
        &format!("configmapwatch_checks_total{{dir=\"{dir}\"}}"),
    )
    .unwrap();
    assert!(checks >= 2.0, "{checks}");

    // An invalid version: not acted on, and the reloader alert's gauge says so.
    let v3 = vol.publish(&[("config.json", "{broken")]);
    run.event_for("error", &v3);
    let (_, metrics) = get(addr, "/metrics");
    assert_eq!(
        sample(&metrics, "reloader_last_reload_successful"),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &metrics,
            &format!("configmapwatch_config_valid{{dir=\"{dir}\"}}")
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &metrics,
            &format!("configmapwatch_errors_total{{dir=\"{dir}\",key=\"config.json\"}}")
        ),
        Some(1.0)
    );
    // The config in use is still v2's.
    assert!(
        metrics.contains(&format!("version=\"{v2}\"}} 1")),
        "{metrics}"
    );
    // (v3 is named only as the refused version, not as the config in use.)
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("configmapwatch_config_info{") && l.contains(&v3)),
        "{metrics}"
    );

    // A good version whose reload the target refuses (500).
    let v4 = vol.publish(&[("config.json", r#"{"n":4}"#)]);
    run.event_for("change", &v4);
    assert_eq!(crate::helper::action(&run)["ok"], false);
    let (_, metrics) = get(addr, "/metrics");
    assert_eq!(sample(&metrics, "reloader_reloads_failed_total"), Some(1.0));
    assert_eq!(
        sample(&metrics, "reloader_last_reload_successful"),
        Some(0.0)
    );
    assert_eq!(
        sample(&metrics, "configmapwatch_webhook_attempts_total"),
        Some(2.0)
    );

    // promtool reads the scrape as Prometheus would, and lints it.
    let mut promtool = tool("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{metrics}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn healthz_fails_while_the_loop_is_stuck_and_recovers() {
    let vol = vol!();
    vol.publish(&[("config.json", r#"{"n":0}"#)]);
    // Nobody reads stdout: once the pipe is full, the loop blocks writing
    // an event, as behind a stalled log collector.
    let mut child = watch_served(vol.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = pipe_lines(child.stderr.take().unwrap());
    let stdout = child.stdout.take().unwrap();
    let _reap = crate::helper::Reaped(child);
    let addr = served_at(&stderr);
    assert_eq!(get(addr, "/healthz").0, 200);

    let pad = "x".repeat(32 * 1024);
    let (code, body) = {
        let deadline = Instant::now() + DEADLINE;
        let mut n = 0;
        loop {
            n += 1;
            // Each version adds an event line of 32 KiB to the pipe.
            vol.publish(&[("config.json", &format!(r#"{{"n":{n},"pad":"{pad}"}}"#))]);
            let (code, body) = get(addr, "/healthz");
            if code == 503 {
                break (code, body);
            }
            assert!(Instant::now() < deadline, "/healthz stayed {code}: {body}");
            thread::sleep(Duration::from_millis(100));
        }
    };
    assert_eq!(code, 503);
    assert!(body.starts_with("stuck: no check for "), "{body}");
    // Still answering the other endpoints meanwhile.
    assert_eq!(get(addr, "/readyz").0, 200);

    // Reading the pipe unblocks the loop: alive again.
    let _lines = pipe_lines(stdout);
    wait_until("/healthz to recover", || get(addr, "/healthz").0 == 200);
}

#[test]
fn readyz_names_the_directories_without_a_valid_config() {
    let (a, b) = (vol!(), Vol::new());
    let va = a.publish(&[("config.json", "{}")]);
    let mut cmd = watch_served(a.path());
    cmd.arg("-d").arg(b.path());
    let (run, addr) = spawn_served(cmd);
    run.event_for("initial", &va);
    let (code, body) = get(addr, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(&b.path().display().to_string()), "{body}");
    assert!(!body.contains(&a.path().display().to_string()), "{body}");
    // A bad first version does not make it ready either.
    let bad = b.publish(&[("config.json", "{")]);
    run.event_for("error", &bad);
    assert_eq!(get(addr, "/readyz").0, 503);
    let good = b.publish(&[("config.json", "{}")]);
    run.event_for("initial", &good);
    let (code, body) = get(addr, "/readyz");
    assert_eq!(
        (code, body.as_str()),
        (200, "ready: every directory has a valid config\n")
    );
    // A later bad version keeps the last good config: still ready.
    let bad = b.publish(&[("config.json", "{")]);
    run.event_for("error", &bad);
    assert_eq!(get(addr, "/readyz").0, 200);
}

#[test]
fn bad_and_slow_clients_get_errors_and_never_hold_up_the_watcher() {
    let vol = vol!();
    vol.publish(&[("config.json", r#"{"n":0}"#)]);
    let (run, addr) = spawn_served(watch_served(vol.path()));

    assert_eq!(get(addr, "/nope").0, 404);
    let (code, head, _) = request(addr, "POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(code, 405);
    assert!(head.contains("Allow: GET, HEAD"), "{head}");
    assert_eq!(request(addr, "\x16\x03\x01garbage\r\n\r\n").0, 400);
    let (code, head, body) = request(addr, "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(code, 200, "{head}");
    assert!(body.is_empty(), "{body:?}");
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(10_000));
    assert_eq!(request(addr, &huge).0, 431);

    // 64 clients hold connections open, four times the slots: half send
    // nothing, half a request head that never ends.
    let slow: Vec<TcpStream> = (0..64)
        .map(|i| {
            let mut s = TcpStream::connect(addr).unwrap();
            if i % 2 == 1 {
                s.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
            }
            s
        })
        .collect();
    // The watcher goes on detecting meanwhile.
    let v = vol.publish(&[("config.json", r#"{"n":1}"#)]);
    run.event_for("change", &v);
    // Every probe is answered while they hold on: a probe sends its
    // request at once and takes the slot of the oldest idle client.
    for _ in 0..24 {
        assert_eq!(get(addr, "/healthz").0, 200);
        assert_eq!(get(addr, "/readyz").0, 200);
    }
    // Each idle client is answered 408 (evicted, or at its deadline) and
    // dropped.
    let mut timed_out = 0;
    for mut s in slow {
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        timed_out += usize::from(answer.starts_with("HTTP/1.1 408"));
    }
    assert_eq!(timed_out, 64, "every idle client is answered 408");
    assert_eq!(get(addr, "/healthz").0, 200);
}

/// A confirmed round is one reload, as the Prometheus reloader counts
/// (it used to count the confirmation as a second one).
#[test]
fn a_confirmed_round_counts_one_reload() {
    let vol = vol!();
    let v1 = vol.publish(&[("config.json", r#"{"n":1}"#)]);
    let hook = HookServer::start(|_| (200, Duration::ZERO));
    let mut cmd = watch_served(vol.path());
    cmd.args(["--webhook-url", &hook.url("/-/reload")])
        .args(["--confirm-exec", "true"]);
    let (run, addr) = spawn_served(cmd);
    run.event_for("initial", &v1);
    for (round, n) in [(1.0, 2), (2.0, 3)] {
        let v = vol.publish(&[("config.json", &format!(r#"{{"n":{n}}}"#))]);
        run.event_for("change", &v);
        // The webhook's report, then the confirmation's.
        let actions = [crate::helper::action(&run), crate::helper::action(&run)];
        assert!(actions.iter().all(|a| a["ok"] == true), "{actions:?}");
        let (_, metrics) = get(addr, "/metrics");
        assert_eq!(sample(&metrics, "reloader_reloads_total"), Some(round));
        assert_eq!(sample(&metrics, "reloader_reloads_failed_total"), Some(0.0));
    }
}

#[test]
fn a_taken_address_is_a_startup_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let vol = Vol::new();
    let out = bin()
        .args(["--listen-address", &addr, "-d"])
        .arg(vol.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("error: --listen-address {addr}: ")) && stderr.contains("in use"),
        "{stderr}"
    );
}
