//! The sidecar's status page and readiness (issue 19): `/status` names, per
//! directory, the version on disk, the version applied and since when, the
//! last error and the retry pending; `/readyz`, `configmapwatch_config_valid`
//! and the page agree through a refused version, with and without
//! `--ready-requires-latest`; and a fault in its grace shows as a pending
//! retry before it is an error event.

use std::{sync::Arc, time::Duration};

use configmapwatch::{
    Error, EventKind, WatchOptions, Watcher,
    serve::{Server, ServerOptions, Status},
};
use serde_json::Value;

use crate::helper::{get, sample, spawn_served, wait_until, watch_served};

fn status_page(addr: std::net::SocketAddr) -> Value {
    let (code, body) = get(addr, "/status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON: {body}: {e}"))
}

/// `/readyz`, the page's `ready` and `config_valid`, and the metric agree.
fn assert_agree(addr: std::net::SocketAddr, dir: &str) -> (Value, String, String) {
    let page = status_page(addr);
    let (code, readyz) = get(addr, "/readyz");
    let (_, metrics) = get(addr, "/metrics");
    assert_eq!(page["ready"], code == 200, "{page:#} vs {code} {readyz}");
    assert_eq!(page["readiness"].as_str().unwrap(), readyz.trim_end());
    let valid = sample(
        &metrics,
        &format!("configmapwatch_config_valid{{dir=\"{dir}\"}}"),
    );
    assert_eq!(
        page["dirs"][0]["config_valid"],
        valid == Some(1.0),
        "{page:#}"
    );
    (page, readyz, metrics)
}

#[test]
fn a_refused_version_is_not_applied_on_the_page_and_metrics_while_the_pod_stays_ready() {
    let vol = vol!();
    let v1 = vol.publish(&[("config.json", r#"{"n":1}"#)]);
    let (run, addr) = spawn_served(watch_served(vol.path()));
    run.event_for("initial", &v1);
    let dir = vol.path().display().to_string();
    let not_applied = format!("configmapwatch_version_not_applied{{dir=\"{dir}\"}}");

    let (page, readyz, metrics) = assert_agree(addr, &dir);
    assert_eq!(readyz, "ready: every directory has a valid config\n");
    let d = &page["dirs"][0];
    assert_eq!(d["dir"], dir);
    assert_eq!(d["on_disk"]["version"], v1);
    assert_eq!(d["applied"]["version"], v1);
    assert_eq!(d["applied"]["hash"].as_str().unwrap().len(), 16);
    assert!(d["applied"]["since"].is_string(), "{d:#}");
    assert_eq!(
        (&d["not_applied_since"], &d["last_error"], &d["retry"]),
        (&Value::Null, &Value::Null, &Value::Null)
    );
    assert_eq!(sample(&metrics, &not_applied), Some(0.0));

    // A refused version: the last good config serves, the pod stays ready,
    // and everything says the newest is not applied, and why.
    let v2 = vol.publish(&[("config.json", "{broken")]);
    run.event_for("error", &v2);
    let (page, readyz, metrics) = assert_agree(addr, &dir);
    assert_eq!(page["ready"], true);
    assert!(readyz.contains(&v2), "{readyz}");
    let d = &page["dirs"][0];
    assert_eq!(d["on_disk"]["version"], v2);
    assert_eq!(d["applied"]["version"], v1);
    assert_eq!(d["config_valid"], false);
    assert!(d["not_applied_since"].is_string(), "{d:#}");
    assert_eq!(d["last_error"]["version"], v2);
    assert_eq!(d["last_error"]["key"], "config.json");
    assert!(
        d["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("JSON")
    );
    assert_eq!(sample(&metrics, &not_applied), Some(1.0));
    let refused = format!(
        "configmapwatch_refused_version_info{{dir=\"{dir}\",key=\"config.json\",version=\"{v2}\"}}"
    );
    assert_eq!(sample(&metrics, &refused), Some(1.0), "{metrics}");
    let age = format!("configmapwatch_version_not_applied_seconds{{dir=\"{dir}\"}}");
    let first = sample(&metrics, &age).unwrap();
    wait_until("the age to grow", || {
        sample(&get(addr, "/metrics").1, &age).unwrap() > first
    });

    // A good version: applied; the last error stays on the page.
    let v3 = vol.publish(&[("config.json", r#"{"n":3}"#)]);
    run.event_for("change", &v3);
    let (page, readyz, metrics) = assert_agree(addr, &dir);
    assert_eq!(readyz, "ready: every directory has a valid config\n");
    let d = &page["dirs"][0];
    assert_eq!(
        (&d["on_disk"]["version"], &d["applied"]["version"]),
        (&v3.clone().into(), &v3.clone().into())
    );
    assert_eq!(d["not_applied_since"], Value::Null);
    assert_eq!(d["last_error"]["version"], v2);
    assert_eq!(sample(&metrics, &not_applied), Some(0.0));
    assert_eq!(sample(&metrics, &age), Some(0.0));
    assert!(
        !metrics.contains("configmapwatch_refused_version_info{"),
        "{metrics}"
    );
}

#[test]
fn ready_requires_latest_takes_a_pod_with_a_refused_version_out_of_rotation() {
    let vol = vol!();
    let v1 = vol.publish(&[("config.json", r#"{"n":1}"#)]);
    let mut cmd = watch_served(vol.path());
    // The environment's spelling, as a pod spec sets it.
    cmd.env("CONFIGMAPWATCH_READY_REQUIRES_LATEST", "true");
    let (run, addr) = spawn_served(cmd);
    run.event_for("initial", &v1);
    let dir = vol.path().display().to_string();
    let (page, _, _) = assert_agree(addr, &dir);
    assert_eq!(
        (&page["ready"], &page["ready_requires_latest"]),
        (&true.into(), &true.into())
    );

    let v2 = vol.publish(&[("config.json", "{broken")]);
    run.event_for("error", &v2);
    let (page, readyz, _) = assert_agree(addr, &dir);
    assert_eq!(page["ready"], false);
    assert!(
        readyz.starts_with("a newer version is not applied (--ready-requires-latest): ")
            && readyz.contains(&v2),
        "{readyz}"
    );
    let v3 = vol.publish(&[("config.json", r#"{"n":3}"#)]);
    run.event_for("change", &v3);
    let (page, _, _) = assert_agree(addr, &dir);
    assert_eq!(page["ready"], true);
}

/// A checker that cannot start (a passing fault): during the grace the
/// page shows the retry pending (attempts, next attempt, the version it
/// keeps from being read) and nothing is refused yet; once reported, the
/// version is not applied since the fault began. Through the library's
/// Status and Server, driven tick by tick.
#[test]
fn a_fault_in_its_grace_is_a_pending_retry_then_a_version_not_applied() {
    let vol = vol!();
    let v1 = vol.publish(&[("config.json", r#"{"n":1}"#)]);
    let grace = Duration::from_millis(300);
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fails = failing.clone();
    let mut watcher = Watcher::new(
        WatchOptions::new(vol.path())
            .with_interval(Duration::from_millis(5))
            .with_fault_grace(grace),
    )
    .with_validator(Box::new(move |_, _| {
        if fails.load(std::sync::atomic::Ordering::SeqCst) {
            Err(Error::Io {
                path: "checker".into(),
                action: "cannot start the checker",
                source: std::io::Error::other("Too many open files"),
            })
        } else {
            Ok(())
        }
    }));
    let status = Arc::new(Status::new(
        std::slice::from_ref(&watcher),
        watcher.interval(),
        false,
    ));
    let server = Server::start("127.0.0.1:0", status.clone(), ServerOptions::default()).unwrap();
    let addr = server.local_addr();
    let tick = |watcher: &mut Watcher| {
        let event = watcher.check();
        if let Some(e) = &event {
            status.observe(e);
        }
        event
    };
    assert_eq!(tick(&mut watcher).map(|e| e.kind), Some(EventKind::Initial));

    failing.store(true, std::sync::atomic::Ordering::SeqCst);
    let v2 = vol.publish(&[("config.json", r#"{"n":2}"#)]);
    assert!(tick(&mut watcher).is_none(), "in its grace: no event");
    let page = status_page(addr);
    let d = &page["dirs"][0];
    assert_eq!(d["on_disk"]["version"], v2, "{d:#}");
    assert_eq!(d["applied"]["version"], v1);
    let retry = &d["retry"];
    assert_eq!(retry["version"], v2, "{retry:#}");
    assert_eq!(
        (&retry["attempts"], &retry["reported"]),
        (&1.into(), &false.into())
    );
    assert!(retry["next_attempt_at"].is_string(), "{retry:#}");
    assert!(
        retry["message"]
            .as_str()
            .unwrap()
            .contains("Too many open files"),
        "{retry:#}"
    );
    assert_eq!(
        d["not_applied_since"],
        Value::Null,
        "not refused in its grace"
    );
    assert_eq!(page["ready"], true);

    let mut reported = None;
    wait_until("the fault to outlast its grace", || {
        reported = tick(&mut watcher);
        reported.is_some()
    });
    assert_eq!(reported.unwrap().kind, EventKind::Error);
    let page = status_page(addr);
    let d = &page["dirs"][0];
    assert_eq!(d["retry"]["reported"], true, "{d:#}");
    assert_eq!(d["config_valid"], false);
    assert_eq!(
        d["not_applied_since"], d["retry"]["since"],
        "not applied since the fault began: {d:#}"
    );
    assert_eq!(d["last_error"]["version"], v2);

    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    wait_until("the recovery", || {
        tick(&mut watcher).is_some_and(|e| e.kind == EventKind::Change)
    });
    let d = &status_page(addr)["dirs"][0];
    assert_eq!(
        (&d["retry"], &d["not_applied_since"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(d["applied"]["version"], v2);
}
