//! Before any action: the target's own checker (`--validate-exec`, with
//! nginx), rendering for programs that read one plain file (`--render-to`
//! with environment substitution), signalling a process found by name
//! (`--process-name`), and spreading a fleet's reloads (`--jitter`).

#![cfg(target_os = "linux")]

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use crate::helper::{
    self, DEADLINE, Reaped, Running, action, bin, free_port, tool_path, wait_until,
};

/// An nginx config serving `body` on 127.0.0.1:`port`, with every path
/// it writes under `dir`.
fn nginx_conf(dir: &Path, port: u16, body: &str) -> String {
    helper::nginx_conf(
        dir,
        "",
        false,
        &format!("    listen 127.0.0.1:{port};\n    location / {{ return 200 \"{body}\\n\"; }}"),
    )
}

fn http_get(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(DEADLINE)).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    answer.split("\r\n\r\n").nth(1).map(str::to_owned)
}

#[test]
fn validate_exec_blocks_a_conf_nginx_rejects_and_a_good_one_reloads_nginx_by_name() {
    needs!("nginx");
    let vol = vol!();
    let work = vol.tmp.path().join("nginx");
    std::fs::create_dir(&work).unwrap();
    let port = free_port();
    vol.publish(&[("nginx.conf", &nginx_conf(&work, port, "v1"))]);
    // nginx under a name of its own, so that --process-name finds this one
    // and no other test's nginx.
    let name = format!("ngx{}", std::process::id() % 100_000);
    let program = vol.tmp.path().join(&name);
    std::fs::copy(tool_path("nginx"), &program).unwrap();
    // As a non-root user, as nginx runs in a hardened pod: as root, the
    // test drops to nobody (and opens up its temporary directories to it).
    let mut command = if rustix::process::geteuid().is_root() {
        use std::os::unix::fs::PermissionsExt;
        let open = |p: &Path, mode| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        open(vol.tmp.path(), 0o755);
        open(&work, 0o777);
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&program);
        c
    } else {
        Command::new(&program)
    };
    let server = Reaped(
        command
            .arg("-e")
            .arg(work.join("error.log"))
            .arg("-c")
            .arg(vol.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("nginx to serve v1", || {
        http_get(port).as_deref() == Some("v1\n")
    });
    // Serving means it has dropped to its user: no race with setpriv.
    let uid = std::fs::read_to_string(format!("/proc/{}/status", server.0.id()))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("Uid:")
                .map(|u| u.split_whitespace().next().unwrap().to_owned())
        })
        .unwrap();
    assert_ne!(uid, "0", "nginx must run as a non-root user");

    // The README's recipe, as written but for the paths and the name.
    let recipe = crate::helper::readme_command(
        "--process-name nginx",
        &[
            ("/etc/nginx/conf.d", vol.path().display().to_string()),
            (
                "nginx -t -c {}",
                format!("{} -t -c {{}}", tool_path("nginx").display()),
            ),
            ("nginx", name.clone()),
        ],
    );
    let mut cmd = bin();
    cmd.args(["-o", "json", "-i", "10ms"]).args(recipe);
    let run = Running::spawn(cmd);
    run.event();

    // A conf nginx rejects: an error event with nginx's words, no signal.
    let broken = vol.publish(&[(
        "nginx.conf",
        "events {}\nhttp { server { listen nowhere:; } }\n",
    )]);
    let e = run.event_for("error", &broken);
    let error = e["error"].as_str().unwrap();
    assert!(
        error.starts_with("key nginx.conf: refused by --validate-exec ("),
        "{e}"
    );
    assert_eq!(e["key"], "nginx.conf", "{e}");
    assert!(
        error.contains("nginx") && error.contains("test failed"),
        "{e}"
    );
    assert_eq!(http_get(port).as_deref(), Some("v1\n"));

    // A good one: accepted, nginx found by name and reloaded.
    let good = vol.publish(&[("nginx.conf", &nginx_conf(&work, port, "v2"))]);
    run.event_for("change", &good);
    let report = action(&run);
    assert_eq!(report["ok"], true, "{report}");
    assert!(
        report["target"].as_str().unwrap().contains(&name),
        "{report}"
    );
    wait_until("nginx to serve v2", || {
        http_get(port).as_deref() == Some("v2\n")
    });
    drop(server);
}

#[test]
fn render_to_writes_the_key_with_the_environment_and_refuses_unset_variables() {
    let vol = vol!();
    let out = vol.tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let file = out.join("app.yaml");
    vol.publish(&[("app.yaml", "url: ${TARGET_URL}\nliteral: $$(KEEP)\n")]);
    let mut cmd = bin();
    cmd.args([
        "-o",
        "json",
        "-i",
        "10ms",
        "--file",
        "app.yaml",
        "--render-env-allow",
        "TARGET_URL,NOT_SET_ANYWHERE",
    ])
    .arg("-d")
    .arg(vol.path())
    .arg("--render-to")
    .arg(&file)
    .env("TARGET_URL", "http://127.0.0.1:1/");
    let run = Running::spawn(cmd);
    assert_eq!(run.event()["event"], "initial");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "url: http://127.0.0.1:1/\nliteral: $(KEEP)\n"
    );

    // An unset variable refuses the version: the file keeps the last good one.
    let bad = vol.publish(&[("app.yaml", "url: $(NOT_SET_ANYWHERE)\n")]);
    let e = run.event_for("error", &bad);
    assert!(
        e["error"].as_str().unwrap().contains("NOT_SET_ANYWHERE"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "url: http://127.0.0.1:1/\nliteral: $(KEEP)\n"
    );
    let good = vol.publish(&[("app.yaml", "url: ${TARGET_URL}v2\n")]);
    run.event_for("change", &good);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "url: http://127.0.0.1:1/v2\n"
    );
    drop(run);

    // --once renders and exits: the init container's job.
    std::fs::remove_file(&file).unwrap();
    let status = bin()
        .args([
            "--once",
            "--file",
            "app.yaml",
            "--render-env-allow",
            "TARGET_*",
            "-d",
        ])
        .arg(vol.path())
        .arg("--render-to")
        .arg(&file)
        .env("TARGET_URL", "http://127.0.0.1:2/")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "url: http://127.0.0.1:2/v2\n"
    );
}

#[test]
fn a_newer_version_during_the_jitter_delay_replaces_the_waiting_one() {
    let vol = vol!();
    vol.publish(&[("config.json", r#"{"n":1}"#)]);
    let log = vol.tmp.path().join("rounds.log");
    let mut cmd = bin();
    // web-1's stable place in a 2 s window: about 1.24 s after a change.
    cmd.args([
        "-o",
        "json",
        "-i",
        "10ms",
        "--jitter",
        "2s",
        "--jitter-from-ordinal",
        "-d",
    ])
    .arg(vol.path())
    .env("POD_NAME", "web-1")
    .arg("--exec")
    .args(["sh", "-c"])
    .arg(format!(
        "echo \"$CONFIGMAPWATCH_VERSION\" >> '{}'",
        log.display()
    ));
    let run = Running::spawn(cmd);
    assert_eq!(run.event()["event"], "initial");
    let v2 = vol.publish(&[("config.json", r#"{"n":2}"#)]);
    run.event_for("change", &v2);
    let v3 = vol.publish(&[("config.json", r#"{"n":3}"#)]);
    run.event_for("change", &v3);
    let report = action(&run);
    assert_eq!(report["version"], v3, "{report}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), format!("{v3}\n"));
    assert!(run.stderr_so_far().contains("(--jitter)"));
}

#[test]
fn twenty_replicas_with_jitter_spread_their_reloads_over_the_window() {
    let vol = vol!();
    vol.publish(&[("config.json", r#"{"n":1}"#)]);
    let log = vol.tmp.path().join("when.log");
    let runs: Vec<Running> = (0..20)
        .map(|_| {
            let mut cmd = bin();
            cmd.args(["-o", "json", "-i", "10ms", "--jitter", "2s", "-d"])
                .arg(vol.path())
                .arg("--exec")
                .args(["sh", "-c"])
                .arg(format!("date +%s.%N >> '{}'", log.display()));
            Running::spawn(cmd)
        })
        .collect();
    for run in &runs {
        assert_eq!(run.event()["event"], "initial");
    }
    let v2 = vol.publish(&[("config.json", r#"{"n":2}"#)]);
    for run in &runs {
        let report = loop {
            let e = run.event();
            if e["event"] == "action" {
                break e;
            }
        };
        assert_eq!(
            (report["ok"].clone(), report["version"].clone()),
            (true.into(), v2.clone().into())
        );
    }
    let times: Vec<f64> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(times.len(), 20);
    let first = times.iter().cloned().fold(f64::MAX, f64::min);
    let last = times.iter().cloned().fold(f64::MIN, f64::max);
    let spread = last - first;
    println!("20 replicas with --jitter 2s: reloads spread over {spread:.3} s");
    // Uniform delays in [0, 2 s): 20 of them all within 0.5 s of each
    // other has a probability below 1e-9.
    assert!(spread > 0.5 && spread < 2.0 + 1.0, "spread {spread:.3} s");
    let _ = Duration::ZERO;
}

/// gzip compresses `data` with the gzip tool.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip is not installed");
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&data).unwrap());
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert!(out.status.success());
    out.stdout
}

#[test]
fn gzip_keys_are_read_as_their_text_and_a_bomb_is_refused_at_the_file_cap() {
    let vol = vol!();
    let mut payload = configmapwatch::Payload::new();
    payload
        .insert(
            "prometheus.yaml.gz",
            gzip(b"global:\n  scrape_interval: 15s\n"),
        )
        .unwrap()
        .insert("bomb.json.gz", gzip(&vec![b' '; 8 << 20]))
        .unwrap();
    vol.write(&payload);
    let out = bin()
        .args([
            "--once",
            "-o",
            "config",
            "--file",
            "prometheus.yaml.gz",
            "-d",
        ])
        .arg(vol.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        config,
        serde_json::json!({"global": {"scrape_interval": "15s"}})
    );

    // 8 MiB of text under a 1 MiB cap: refused, not inflated.
    let out = bin()
        .args([
            "--once",
            "--max-file-size",
            "1MiB",
            "--file",
            "bomb.json.gz",
            "-d",
        ])
        .arg(vol.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("decompresses to more than 1 MiB"), "{text}");
}

/// Rendering is the commit of an accepted version, not part of accepting
/// it: a render that cannot be written yet (its directory is missing) is a
/// passing fault, retried in plain mode as in ConfigMap mode, and the
/// version is reported once its file is written, never refused for it. A
/// checker that refuses a version leaves the rendered file as it was.
#[test]
fn a_render_that_cannot_be_written_yet_is_retried_not_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("plain");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("app.yaml"), "a: 1\n").unwrap();
    let out_dir = tmp.path().join("run");
    let out = out_dir.join("app.yaml");
    let mut cmd = bin();
    cmd.args(["-o", "json", "-i", "10ms", "--file", "app.yaml", "-d"])
        .arg(&dir)
        .arg("--render-to")
        .arg(&out)
        .args(["--fault-grace", "1h"])
        .args(["--validate-exec", "grep -qv refuse {}"]);
    let run = Running::spawn(cmd);
    // Retried quietly while the directory is missing; then written.
    wait_until("the fault to be logged", || {
        run.stderr_so_far().contains("retrying (not a verdict")
    });
    std::fs::create_dir(&out_dir).unwrap();
    let e = run.event();
    assert_eq!(e["event"], "initial", "{e}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "a: 1\n");
    // Refused by the checker: nothing written.
    let refused = "a: refuse\n";
    std::fs::write(dir.join("app.yaml"), refused).unwrap();
    let e = run.event();
    assert_eq!(e["event"], "error", "{e}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "a: 1\n");
}
