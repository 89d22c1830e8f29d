//! The README's command lines, each run as written (paths and addresses
//! replaced by the test's own) against a volume written the kubelet's way:
//! a recipe that stopped working fails here, not in a user's pod.

use std::{fs, path::Path};

use serde_json::json;

use crate::helper::{HookServer, Running, bin, readme_command, readme_commands, wait_until};

/// Each README command is claimed by the test that runs it, through a
/// piece of its text (the rest, synopses, are run by the usage tests).
const RUN_BY: &[(&str, &str)] = &[
    (
        "publish --dir ./vol --from-file",
        "the_dev_host_and_publish_recipes_work_as_written",
    ),
    (
        "publish --dir ./vol --from-literal",
        "the_dev_host_and_publish_recipes_work_as_written",
    ),
    (
        "--dir ./vol --interval 500ms",
        "the_dev_host_and_publish_recipes_work_as_written",
    ),
    (
        "--webhook-retries 10",
        "the_prometheus_webhook_recipe_calls_the_reload_endpoint",
    ),
    (
        "jq . > /run/app/config.json",
        "the_exec_recipe_writes_the_config_and_signals_the_app",
    ),
    (
        "--render-to /run/app/app.yaml",
        "the_render_recipe_keeps_the_file_current",
    ),
    (
        "--process-name nginx",
        "checks::validate_exec_blocks_a_conf_nginx_rejects_and_a_good_one_reloads_nginx_by_name",
    ),
    (
        "openssl pkcs12 -export",
        "tls_sidecar::the_tls_sidecar_recipe_checks_each_pair_with_openssl_and_reloads_nginx",
    ),
    (
        "--confirm-url http://127.0.0.1:9090",
        "confirm::prometheus_is_validated_reloaded_confirmed_and_a_rejected_reload_retried",
    ),
];

#[test]
fn every_readme_command_is_run_by_a_test() {
    let commands = readme_commands();
    assert!(commands.len() >= 10, "{commands:?}");
    for command in &commands {
        // The usage synopsis, and the demo (the README's first command,
        // run by cli::demo_runs_and_shows_every_kind_of_event and by CI).
        let synopsis = command.contains("[OPTIONS]") || command.contains("<DIR>");
        if synopsis || command == "configmapwatch demo" {
            continue;
        }
        assert!(
            RUN_BY.iter().any(|(marker, _)| command.contains(marker)),
            "no test runs this README command: {command}"
        );
    }
}

/// Runs `configmapwatch ARGS` in `cwd` to completion; its stdout.
fn run_in(cwd: &Path, command: &str) -> String {
    let args = crate::helper::example_args(command, &[]);
    let out = bin().args(&args).current_dir(cwd).output().unwrap();
    assert!(
        out.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn readme_has(command: &str) -> String {
    let commands = readme_commands();
    assert!(
        commands.iter().any(|c| c == command),
        "not in the README: {command}"
    );
    command.to_owned()
}

#[test]
fn the_dev_host_and_publish_recipes_work_as_written() {
    if !crate::helper::symlinks_work() {
        crate::helper::no_symlinks(file!(), line!());
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let vol = cwd.join("vol");
    let first = readme_has("configmapwatch publish --dir ./vol --from-file config.json");
    let watch = readme_has("configmapwatch --dir ./vol --interval 500ms");

    // "On a Windows or macOS dev host": publish, watch, edit, publish.
    fs::write(cwd.join("config.json"), r#"{"v": 1}"#).unwrap();
    assert!(run_in(cwd, &first).starts_with("published .."));
    let mut cmd = bin();
    cmd.args(crate::helper::example_args(&watch, &[]))
        .current_dir(cwd);
    let running = Running::spawn(cmd);
    let initial = running.line();
    assert!(
        initial.contains(" initial ") && initial.contains(r#"config={"v":1}"#),
        "{initial}"
    );
    fs::write(cwd.join("config.json"), r#"{"v": 2}"#).unwrap();
    run_in(cwd, &first);
    let change = running.line();
    assert!(
        change.contains(" change ") && change.contains(r#"config={"v":2}"#),
        "{change}"
    );
    drop(running);

    // The publish examples, in order: each payload replaces the last.
    fs::write(cwd.join("dev.json"), r#"{"dev": true}"#).unwrap();
    fs::create_dir(cwd.join("confdir")).unwrap();
    fs::write(cwd.join("confdir/a.yaml"), "a: 1\n").unwrap();
    fs::write(cwd.join("confdir/b.txt"), "b").unwrap();
    let read = |key: &str| fs::read_to_string(vol.join(key)).ok();
    run_in(
        cwd,
        &readme_has("configmapwatch publish --dir ./vol --from-file app.json=./dev.json"),
    );
    assert_eq!(read("app.json").as_deref(), Some(r#"{"dev": true}"#));
    assert_eq!(
        read("config.json"),
        None,
        "the payload replaces the previous one"
    );
    run_in(
        cwd,
        &readme_has("configmapwatch publish --dir ./vol --from-file ./confdir/"),
    );
    assert_eq!(
        (read("a.yaml").as_deref(), read("b.txt").as_deref()),
        (Some("a: 1\n"), Some("b"))
    );
    run_in(
        cwd,
        &readme_has("configmapwatch publish --dir ./vol --from-literal mode=debug"),
    );
    assert_eq!(read("mode").as_deref(), Some("debug"));
}

#[test]
fn the_prometheus_webhook_recipe_calls_the_reload_endpoint() {
    let server = HookServer::start(|_| (200, std::time::Duration::ZERO));
    let vol = vol!();
    vol.publish(&[("prometheus.yml", "global:\n  scrape_interval: 15s\n")]);
    let args = readme_command(
        "--webhook-retries 10",
        &[
            ("/etc/prometheus", vol.path().display().to_string()),
            ("http://127.0.0.1:9090", server.url("")),
        ],
    );
    let mut cmd = bin();
    cmd.args(["-o", "json", "-i", "10ms"]).args(&args);
    let run = Running::spawn(cmd);
    run.event_for("initial", &vol.target());
    let v2 = vol.publish(&[("prometheus.yml", "global:\n  scrape_interval: 30s\n")]);
    let hook = server.next();
    assert_eq!(
        (hook.method.as_str(), hook.url.as_str()),
        ("POST", "/-/reload")
    );
    assert_eq!(hook.body["version"], json!(v2));
}

#[cfg(unix)]
#[test]
fn the_exec_recipe_writes_the_config_and_signals_the_app() {
    needs!("jq");
    let vol = vol!();
    vol.publish(&[("config.json", r#"{"v":1}"#)]);
    let app = vol.tmp.path().join("run-app");
    fs::create_dir(&app).unwrap();
    // The app: writes its pid, and says so on each SIGUSR1.
    let _app = crate::helper::Reaped(
        std::process::Command::new("sh")
            .args([
                "-c",
                r#"trap 'echo reloaded >> got' USR1; echo $$ > pid; while :; do sleep 0.05; done"#,
            ])
            .current_dir(&app)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the app's pid file", || {
        fs::read_to_string(app.join("pid")).is_ok_and(|p| p.ends_with('\n'))
    });
    let args = readme_command(
        "jq . > /run/app/config.json",
        &[
            ("/opt/config", vol.path().display().to_string()),
            ("/run/app", app.display().to_string()),
        ],
    );
    let mut cmd = bin();
    cmd.args(["-o", "json", "-i", "10ms"]).args(&args);
    let run = Running::spawn(cmd);
    run.event_for("initial", &vol.target());
    vol.publish(&[("config.json", r#"{"v":2}"#)]);
    wait_until("the config written by jq and the app signalled", || {
        let written = fs::read_to_string(app.join("config.json")).unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(&written).ok() == Some(json!({"v": 2}))
            && fs::read_to_string(app.join("got")).is_ok_and(|g| g.contains("reloaded"))
    });
}

#[test]
fn the_render_recipe_keeps_the_file_current() {
    let vol = vol!();
    vol.publish(&[("app.yaml", "greeting: $(APP_GREETING)\n")]);
    let out = vol.tmp.path().join("run-app");
    fs::create_dir(&out).unwrap();
    let args = readme_command(
        "--render-to /run/app/app.yaml",
        &[
            ("/etc/app-config", vol.path().display().to_string()),
            ("/run/app", out.display().to_string()),
        ],
    );
    let mut cmd = bin();
    cmd.args(["-o", "json", "-i", "10ms"])
        .args(&args)
        .env("APP_GREETING", "hello");
    let run = Running::spawn(cmd);
    run.event_for("initial", &vol.target());
    let rendered = out.join("app.yaml");
    assert_eq!(fs::read_to_string(&rendered).unwrap(), "greeting: hello\n");
    let v2 = vol.publish(&[("app.yaml", "greeting: $(APP_GREETING) again\n")]);
    run.event_for("change", &v2);
    wait_until("the new render", || {
        fs::read_to_string(&rendered).is_ok_and(|r| r == "greeting: hello again\n")
    });
}
