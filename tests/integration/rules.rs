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

/// The real binary in the state the rules' unit test models: a version
/// accepted whose reload fails, then one refused. Its scrape, with every
/// family the README documents present.
fn faulty_sidecar_metrics() -> String {
    let vol = crate::helper::Vol::kubelet().expect("symlinks");
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
    metrics
}

#[test]
fn the_shipped_rules_read_the_real_series_and_pass_promtools_unit_test() {
    needs!("promtool");
    if !crate::helper::symlinks_work() {
        return crate::helper::no_symlinks(file!(), line!());
    }
    let metrics = faulty_sidecar_metrics();

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

/// The README's table of series and a real scrape are the same: every
/// family exported is documented, with its labels and type, and nothing
/// documented is missing.
#[test]
fn every_series_is_documented_in_the_readme_with_its_labels() {
    if !crate::helper::symlinks_work() {
        return crate::helper::no_symlinks(file!(), line!());
    }
    let metrics = faulty_sidecar_metrics();
    // Family -> (type, label names), from the scrape.
    let mut exported: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            exported.insert(name.to_owned(), (kind.to_owned(), BTreeSet::new()));
        }
    }
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let (name, labels) = series(line.rsplit_once(' ').unwrap().0);
        let family = exported
            .keys()
            .find(|f| {
                name == **f
                    || ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| name == format!("{f}{s}"))
            })
            .cloned()
            .unwrap_or_else(|| panic!("{name}: no TYPE line"));
        let own = labels.into_keys().filter(|l| l != "le");
        exported.get_mut(&family).unwrap().1.extend(own);
    }

    let readme = include_str!("../../README.md");
    let section = readme
        .split("## Metrics and health probes")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .unwrap();
    let mut documented = BTreeMap::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split(" | ").collect();
        let text = cells[0].trim_start_matches("| ").trim_matches('`');
        if !(text.starts_with("configmapwatch_") || text.starts_with("reloader_")) {
            continue;
        }
        let (name, labels) = match text.split_once('{') {
            Some((name, labels)) => (
                name,
                labels
                    .trim_end_matches('}')
                    .split(',')
                    .map(str::to_owned)
                    .collect(),
            ),
            None => (text, BTreeSet::new()),
        };
        assert!(cells.len() >= 3, "{row}: no type or meaning");
        documented.insert(name.to_owned(), (cells[1].to_owned(), labels));
    }
    // Present only while a certificate is watched: its own test
    // (tls_sidecar) checks the name and labels against a real scrape.
    let conditional = "configmapwatch_certificate_expiry_seconds";
    assert!(
        documented.remove(conditional).is_some(),
        "{conditional} is documented"
    );
    assert_eq!(
        documented, exported,
        "the README's table of series (left) and a real scrape (right) differ"
    );
}
