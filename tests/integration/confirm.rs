//! Making sure a reload took effect: a failed round retried, the config
//! unchanged, until it holds (one failure event, then the success), and a
//! real Prometheus (Debian's package) validated with promtool, reloaded,
//! confirmed through its runtimeinfo, and a reload it rejects retried until
//! a fixed version arrives, with the metrics and /readyz saying so.

#![cfg(target_os = "linux")]

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use crate::helper::{
    HookServer, Reaped, Running, action, free_port, get, sample, spawn_served, tool, wait_until,
    watch_served,
};

#[test]
fn a_failed_round_is_retried_unchanged_until_it_succeeds_and_reported_once() {
    let vol = vol!();
    vol.publish(&[("config.json", r#"{"n":1}"#)]);
    // The target fails twice, then accepts.
    let hook = HookServer::start(|n| (if n < 2 { 500 } else { 200 }, Duration::ZERO));
    let mut cmd = watch_served(vol.path());
    cmd.args(["--webhook-retries", "0", "--webhook-url"])
        .arg(hook.url("/-/reload"));
    let (run, addr) = spawn_served(cmd);
    assert_eq!(run.event()["event"], "initial");
    let v2 = vol.publish(&[("config.json", r#"{"n":2}"#)]);
    run.event_for("change", &v2);
    let failed = action(&run);
    assert_eq!(
        (failed["ok"].clone(), failed["version"].clone()),
        (false.into(), v2.clone().into())
    );
    let (code, body) = get(addr, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.starts_with("reload not confirmed (retrying): webhook"),
        "{body}"
    );
    // The next action event is the success: retries that fail again are
    // not reported one by one.
    let ok = action(&run);
    assert_eq!(
        (ok["ok"].clone(), ok["version"].clone()),
        (true.into(), v2.clone().into())
    );
    for _ in 0..3 {
        hook.next();
    }
    assert_eq!(get(addr, "/readyz").0, 200);
    let (_, metrics) = get(addr, "/metrics");
    assert_eq!(sample(&metrics, "reloader_reloads_failed_total"), Some(2.0));
    assert_eq!(
        sample(&metrics, "reloader_last_reload_successful"),
        Some(1.0)
    );
}

/// A real Prometheus on 127.0.0.1 reading its config through the volume.
struct Prometheus {
    _process: Reaped,
    port: u16,
}

fn prometheus(config: &Path, data: &Path) -> Prometheus {
    let port = free_port();
    let process = Reaped(
        tool("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-lifecycle")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_until("prometheus to be ready", || {
        std::net::TcpStream::connect(addr).is_ok() && get(addr, "/-/ready").0 == 200
    });
    Prometheus {
        _process: process,
        port,
    }
}

impl Prometheus {
    /// The config Prometheus runs with, as it reports it.
    fn config(&self) -> String {
        let addr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        get(addr, "/api/v1/status/config").1
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

fn prometheus_yml(interval: &str) -> String {
    format!("global:\n  scrape_interval: {interval}\n")
}

fn watcher(
    vol: &crate::helper::Vol,
    prom: &Prometheus,
    validate: bool,
) -> (Running, std::net::SocketAddr) {
    // The README's recipe, as written but for the paths and addresses
    // (and without its checker where the test needs a reload refused by
    // Prometheus itself).
    let mut recipe = crate::helper::readme_command(
        "--confirm-url http://127.0.0.1:9090",
        &[
            ("/etc/prometheus", vol.path().display().to_string()),
            ("http://127.0.0.1:9090", prom.url("")),
            (":9533", "127.0.0.1:0".to_owned()),
        ],
    );
    if !validate {
        let at = recipe.iter().position(|a| a == "--validate-exec").unwrap();
        recipe.drain(at..at + 2);
    }
    let mut cmd = crate::helper::bin();
    cmd.args(["-o", "json", "-i", "10ms", "--webhook-retries", "0"])
        .args(recipe);
    let (run, addr) = spawn_served(cmd);
    assert_eq!(run.event()["event"], "initial");
    (run, addr)
}

#[test]
fn prometheus_is_validated_reloaded_confirmed_and_a_rejected_reload_retried() {
    needs!("prometheus", "promtool");
    let vol = vol!();
    vol.publish(&[("prometheus.yml", &prometheus_yml("15s"))]);
    let data = vol.tmp.path().join("tsdb");
    let prom = prometheus(&vol.path().join("prometheus.yml"), &data);
    assert!(prom.config().contains("scrape_interval: 15s"));

    // With promtool as the checker: a good version is applied and confirmed.
    let (run, _) = watcher(&vol, &prom, true);
    let v2 = vol.publish(&[("prometheus.yml", &prometheus_yml("20s"))]);
    run.event_for("change", &v2);
    let webhook = action(&run);
    assert_eq!(
        (webhook["action"].clone(), webhook["ok"].clone()),
        ("webhook".into(), true.into()),
        "{webhook}"
    );
    let confirm = action(&run);
    assert_eq!(
        (confirm["action"].clone(), confirm["ok"].clone()),
        ("confirm".into(), true.into()),
        "{confirm}"
    );
    assert!(prom.config().contains("scrape_interval: 20s"));

    // A version promtool rejects is never sent.
    let v3 = vol.publish(&[("prometheus.yml", &prometheus_yml("bad"))]);
    let e = run.event_for("error", &v3);
    assert!(e["error"].as_str().unwrap().contains("promtool"), "{e}");
    let v4 = vol.publish(&[("prometheus.yml", &prometheus_yml("25s"))]);
    run.event_for("change", &v4);
    // The next action is for v4: nothing was sent for v3.
    assert_eq!(action(&run)["version"], v4);
    assert_eq!(action(&run)["action"], "confirm");
    drop(run);

    // Without the checker, Prometheus itself rejects a version (500 on
    // reload): the round is retried, the metrics and /readyz say so, until
    // a fixed version arrives.
    let (run, addr) = watcher(&vol, &prom, false);
    let v5 = vol.publish(&[("prometheus.yml", &prometheus_yml("1x"))]);
    run.event_for("change", &v5);
    let failed = action(&run);
    assert_eq!(
        (failed["ok"].clone(), failed["version"].clone()),
        (false.into(), v5.clone().into()),
        "{failed}"
    );
    let (_, metrics) = get(addr, "/metrics");
    assert_eq!(
        sample(&metrics, "reloader_last_reload_successful"),
        Some(0.0)
    );
    assert_eq!(get(addr, "/readyz").0, 503);
    wait_until("a retry of the rejected round", || {
        sample(&get(addr, "/metrics").1, "reloader_reloads_failed_total").unwrap_or(0.0) >= 2.0
    });
    assert!(prom.config().contains("scrape_interval: 25s"));
    let v6 = vol.publish(&[("prometheus.yml", &prometheus_yml("30s"))]);
    run.event_for("change", &v6);
    loop {
        let report = action(&run);
        if report["version"] == v6 && report["action"] == "confirm" {
            assert_eq!(report["ok"], true, "{report}");
            break;
        }
    }
    assert!(prom.config().contains("scrape_interval: 30s"));
    assert_eq!(get(addr, "/readyz").0, 200);
    let (_, metrics) = get(addr, "/metrics");
    assert_eq!(
        sample(&metrics, "reloader_last_reload_successful"),
        Some(1.0)
    );
    let _ = Command::new("true");
}
