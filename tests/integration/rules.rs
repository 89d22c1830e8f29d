//! The alert and recording rules shipped in k8s/monitoring/ (issue 19),
//! held to the real series: the real binary is scraped in the state the
//! rules' unit test models (a refused version, a failing reload), every
//! input series of that test and every series a rule reads must be in the
//! scrape with the same labels (so a renamed metric or label fails here),
//! then `promtool check rules` and `promtool test rules` must pass, and the
//! PrometheusRule must hold the same groups as the plain file.

#![cfg(unix)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    time::Duration,
};

use configmapwatch::Format;
use serde_json::Value;

use crate::helper::{HookServer, action, get, sample, spawn_served, tool, watch_served};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/k8s/monitoring");

/// Labels a scrape adds to the sidecar's own: Prometheus' and Kubernetes'.
const TARGET_LABELS: &[&str] = &["job", "instance", "namespace", "pod"];

fn yaml(name: &str) -> Value {
    let path = Path::new(DIR).join(name);
    Format::Yaml
        .parse(name, &std::fs::read(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `name{a="x",b="y"}` (a scrape's line without its value, or a promtool
/// series): the name and the labels.
fn series(text: &str) -> (String, BTreeMap<String, String>) {
    let Some((name, rest)) = text.split_once('{') else {
        return (text.trim().to_owned(), BTreeMap::new());
    };
    let mut labels = BTreeMap::new();
    let mut chars = rest.chars();
    loop {
        let label: String = chars
            .by_ref()
            .take_while(|&c| c != '=')
            .filter(|&c| c != ',' && !c.is_whitespace())
            .collect();
        if label.is_empty() || label.starts_with('}') {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "{text}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.extend(chars.next()),
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(label, value);
    }
    (name.to_owned(), labels)
}

/// The metric names a PromQL expression reads (not recording rules').
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for prefix in ["configmapwatch_", "reloader_"] {
        for (at, _) in expr.match_indices(prefix) {
            let boundary = expr[..at]
                .chars()
                .last()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':'));
            let name: String = expr[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if boundary {
                names.insert(name);
            }
        }
    }
    names
}

#[test]
fn the_shipped_rules_read_the_real_series_and_pass_promtools_unit_test() {
    needs!("promtool");
    let vol = vol!();
    let v1 = vol.publish(&[("config.json", r#"{"n":1}"#)]);
    // The target refuses every reload.
    let hook = HookServer::start(|_| (500, Duration::ZERO));
    let mut cmd = watch_served(vol.path());
    cmd.args(["--webhook-retries", "0", "--webhook-url"])
        .arg(hook.url("/-/reload"));
    let (run, addr) = spawn_served(cmd);
    run.event_for("initial", &v1);
    // A version accepted whose reload fails, then one refused.
    let v2 = vol.publish(&[("config.json", r#"{"n":2}"#)]);
    run.event_for("change", &v2);
    assert_eq!(action(&run)["ok"], false);
    let v3 = vol.publish(&[("config.json", "{broken")]);
    run.event_for("error", &v3);
    let (_, metrics) = get(addr, "/metrics");
    let dir = vol.path().display().to_string();

    // The state the unit test models, in the real series.
    assert_eq!(
        sample(&metrics, "configmapwatch_actions_failing"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            &format!("configmapwatch_version_not_applied{{dir=\"{dir}\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            &format!(
                "configmapwatch_refused_version_info{{dir=\"{dir}\",key=\"config.json\",version=\"{v3}\"}}"
            )
        ),
        Some(1.0),
        "{metrics}"
    );

    // Every series of the scrape: its name and label names.
    let scraped: BTreeSet<(String, BTreeSet<String>)> = metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, labels) = series(l.rsplit_once(' ').unwrap().0);
            (name, labels.into_keys().collect())
        })
        .collect();
    let names: BTreeSet<&str> = scraped.iter().map(|(n, _)| n.as_str()).collect();

    let test = yaml("configmapwatch-rules.test.yaml");
    let inputs = test["tests"][0]["input_series"].as_array().unwrap();
    assert!(inputs.len() >= 5, "{inputs:?}");
    for input in inputs {
        let text = input["series"].as_str().unwrap();
        let (name, labels) = series(text);
        for target in TARGET_LABELS {
            assert!(labels.contains_key(*target), "{text}: no {target} label");
        }
        let own: BTreeSet<String> = labels
            .into_keys()
            .filter(|l| !TARGET_LABELS.contains(&l.as_str()))
            .collect();
        assert!(
            scraped.contains(&(name.clone(), own.clone())),
            "the unit test's input {name}{own:?} is not a series the sidecar exports:\n{metrics}"
        );
    }

    let rules = yaml("configmapwatch-rules.yaml");
    let mut read = BTreeSet::new();
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            read.extend(metric_names(rule["expr"].as_str().unwrap()));
        }
    }
    assert!(read.len() >= 4, "{read:?}");
    for name in &read {
        assert!(
            names.contains(name.as_str()),
            "a rule reads {name}, which the sidecar does not export"
        );
    }

    let operator = yaml("configmapwatch-prometheusrule.yaml");
    assert_eq!(operator["kind"], "PrometheusRule");
    assert_eq!(
        operator["spec"]["groups"], rules["groups"],
        "the PrometheusRule's groups differ from configmapwatch-rules.yaml's"
    );

    for args in [
        ["check", "rules", "configmapwatch-rules.yaml"],
        ["test", "rules", "configmapwatch-rules.test.yaml"],
    ] {
        let out = tool("promtool")
            .args(args)
            .current_dir(DIR)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!("promtool {}:\n{text}", args.join(" "));
        assert!(out.status.success(), "promtool {}: {text}", args.join(" "));
        assert!(text.contains("SUCCESS"), "{text}");
    }
}
