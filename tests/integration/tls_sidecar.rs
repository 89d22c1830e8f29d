//! Certificates for programs in other languages, through the real binary:
//! the README's sidecar recipe (openssl checks the pair, nginx gets SIGHUP)
//! against nginx serving HTTPS from a Secret volume as an unprivileged
//! user, seen by `openssl s_client`; and the certificate expiry gauge on a
//! real scrape, with the shipped alert rules run on its series by promtool.

#![cfg(all(target_os = "linux", feature = "rustls"))]

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
};

use time::OffsetDateTime;

use crate::{
    certs::{Ca, Pair},
    helper::{
        self, Reaped, Running, action, bin, free_port, get, readme_command, sample, spawn_served,
        tool, tool_path, wait_until, watch_served,
    },
};

/// nginx serving HTTPS on 127.0.0.1:`port` with the Secret volume `vol`'s
/// `tls.crt` and `tls.key` (paths through `..data`, as a pod mounts them),
/// writing under `work`; as nobody when the test runs as root, since nginx
/// in a hardened pod is not root.
fn nginx(vol: &Path, work: &Path, port: u16) -> Reaped {
    let v = vol.display();
    let conf = work.join("nginx.conf");
    let server = format!(
        "    listen 127.0.0.1:{port} ssl;
    ssl_certificate {v}/tls.crt;
    ssl_certificate_key {v}/tls.key;
    location / {{ return 200 \"ok\\n\"; }}"
    );
    std::fs::write(&conf, helper::nginx_conf(work, "", false, &server)).unwrap();
    let mut command = if rustix::process::geteuid().is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(tool_path("nginx"));
        c
    } else {
        Command::new(tool_path("nginx"))
    };
    Reaped(
        command
            .arg("-e")
            .arg(work.join("error.log"))
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// The base64 of a PEM certificate, whitespace removed: how two PEM
/// texts of one certificate compare equal whatever their line endings.
fn pem_body(pem: &str) -> Option<String> {
    let begin = "-----BEGIN CERTIFICATE-----";
    let start = pem.find(begin)? + begin.len();
    let end = start + pem[start..].find("-----END CERTIFICATE-----")?;
    Some(pem[start..end].split_whitespace().collect())
}

/// The certificate nginx on `port` serves, as `openssl s_client` sees it
/// (a full handshake, no session reused); `None` while it does not answer.
fn served(port: u16) -> Option<String> {
    let out = tool("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", "localhost"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    pem_body(&String::from_utf8_lossy(&out.stdout))
}

fn is_served(port: u16, pair: &Pair) -> bool {
    served(port) == pem_body(&pair.cert)
}

#[test]
fn the_tls_sidecar_recipe_checks_each_pair_with_openssl_and_reloads_nginx() {
    needs!("nginx", "openssl");
    let vol = vol!();
    let ca = Ca::new("sidecar CA");
    let (one, two, three) = (ca.leaf(1), ca.leaf(2), ca.leaf(3));
    let now = OffsetDateTime::now_utc();
    let expired = ca.leaf_with(
        4,
        &["localhost"],
        now - time::Duration::days(2),
        now - time::Duration::days(1),
    );
    let four = ca.leaf(5);
    let publish =
        |cert: &Pair, key: &Pair| vol.publish(&[("tls.crt", &cert.cert), ("tls.key", &key.key)]);
    publish(&one, &one);
    let work = vol.tmp.path().join("nginx");
    std::fs::create_dir(&work).unwrap();
    if rustix::process::geteuid().is_root() {
        use std::os::unix::fs::PermissionsExt;
        let open = |p: &Path, mode| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        // nobody reads the volume (as the pod's fsGroup would let it) and
        // writes its pid and logs.
        open(vol.tmp.path(), 0o755);
        open(&work, 0o777);
    }
    let port = free_port();
    let _nginx = nginx(vol.path(), &work, port);
    wait_until("nginx to serve the first pair", || is_served(port, &one));
    let pid_file = work.join("nginx.pid");
    wait_until("nginx's pid file", || {
        std::fs::read_to_string(&pid_file).is_ok_and(|p| p.ends_with('\n'))
    });

    // The README's command, as written but for the paths.
    let recipe = readme_command(
        "openssl pkcs12 -export",
        &[
            ("/etc/tls", vol.path().display().to_string()),
            ("/run/nginx/nginx.pid", pid_file.display().to_string()),
        ],
    );
    let mut cmd = bin();
    cmd.args(["-o", "json", "-i", "10ms"]).args(&recipe);
    let run = Running::spawn(cmd);
    run.event_for("initial", &vol.target());

    // A new pair: checked, nginx signalled, the new certificate served.
    let v2 = publish(&two, &two);
    run.event_for("change", &v2);
    let report = action(&run);
    assert_eq!(
        (report["ok"].clone(), report["version"].clone()),
        (true.into(), v2.clone().into()),
        "{report}"
    );
    wait_until("nginx to serve the second pair", || is_served(port, &two));

    // A torn pair (a new certificate, the old key) and an expired pair:
    // refused with openssl's words; nginx is not signalled.
    let torn = publish(&three, &two);
    let e = run.event_for("error", &torn);
    let error = e["error"].as_str().unwrap();
    assert_eq!(e["key"], "tls.crt", "{e}");
    assert!(
        error.contains("refused by --validate-exec (sh)")
            && error.contains("No cert in -in file 'tls.crt' matches private key"),
        "{e}"
    );
    let old = publish(&expired, &expired);
    let e = run.event_for("error", &old);
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("Certificate will expire"),
        "{e}"
    );
    assert!(is_served(port, &two), "nginx keeps the pair it had");

    // The next good pair: the first action since the second pair is for
    // it, so neither refused version was signalled.
    let v5 = publish(&four, &four);
    run.event_for("change", &v5);
    let report = action(&run);
    assert_eq!(report["version"], v5.as_str(), "{report}");
    wait_until("nginx to serve the next good pair", || {
        is_served(port, &four)
    });
}

/// The series `configmapwatch_certificate_expiry_seconds{...}` of a
/// scrape: each with its labels as printed, and its value.
fn expiry_series(metrics: &str) -> Vec<(String, f64)> {
    metrics
        .lines()
        .filter(|l| l.starts_with("configmapwatch_certificate_expiry_seconds{"))
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

fn unix(t: OffsetDateTime) -> f64 {
    t.unix_timestamp() as f64
}

#[test]
fn the_certificate_expiry_gauge_follows_accepted_versions_and_the_rules_alert_on_it() {
    needs!("promtool");
    let vol = vol!();
    let ca = Ca::new("gauge CA");
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let hour = time::Duration::hours(1);
    let soon = ca.leaf_with(
        0x1a,
        &["localhost"],
        now - hour,
        now + time::Duration::days(3),
    );
    let later = ca.leaf_with(
        0x2b,
        &["localhost"],
        now - hour,
        now + time::Duration::days(90),
    );
    let v1 = vol.publish(&[
        ("tls.crt", &soon.cert),
        ("tls.key", &soon.key),
        ("ca.crt", &ca.pem),
    ]);
    let mut cmd = watch_served(vol.path());
    cmd.args(["--file", "tls.crt,ca.crt", "--format", "text"]);
    let (run, addr) = spawn_served(cmd);
    run.event_for("initial", &v1);
    let dir = vol.path().display().to_string();
    let leaf = |serial: &str| {
        format!(
            "configmapwatch_certificate_expiry_seconds{{dir=\"{dir}\",key=\"tls.crt\",serial=\"{serial}\",subject=\"CN=leaf {}\"}}",
            u64::from_str_radix(serial, 16).unwrap()
        )
    };
    let (_, metrics) = get(addr, "/metrics");
    assert_eq!(
        sample(&metrics, &leaf("1a")),
        Some(unix(now + time::Duration::days(3))),
        "{metrics}"
    );
    // The CA in ca.crt has its own series (rcgen's default validity).
    let series = expiry_series(&metrics);
    assert_eq!(series.len(), 2, "{metrics}");
    assert!(
        series
            .iter()
            .any(|(s, _)| s.contains("key=\"ca.crt\"") && s.contains("subject=\"CN=gauge CA\"")),
        "{metrics}"
    );
    let scraped_soon = leaf("1a");

    // A renewed certificate replaces the old one's series.
    let v2 = vol.publish(&[
        ("tls.crt", &later.cert),
        ("tls.key", &later.key),
        ("ca.crt", &ca.pem),
    ]);
    run.event_for("change", &v2);
    let (_, metrics) = get(addr, "/metrics");
    assert_eq!(
        sample(&metrics, &leaf("2b")),
        Some(unix(now + time::Duration::days(90))),
        "{metrics}"
    );
    assert_eq!(sample(&metrics, &scraped_soon), None, "{metrics}");
    assert_eq!(expiry_series(&metrics).len(), 2, "{metrics}");
    drop(run);
    // The scrape as Prometheus reads it, linted.
    let mut lint = tool("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lint.stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = lint.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The shipped rules: valid, and run by promtool on the series exactly
    // as scraped. time() starts at 0 in a rules test, so a value of 3 days
    // is a certificate 3 days from its end: the 7-day alert fires after
    // its 10 minutes, the 1-day one does not; 90 days fires neither.
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s/examples/certificate-rules.yaml");
    let out = tool("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("promtool check rules: {said}");
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml_quoted = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let (soon_s, later_s) = (scraped_soon, leaf("2b"));
    let labels = |series: &str| -> String {
        let inner = &series[series.find('{').unwrap() + 1..series.len() - 1];
        inner
            .split("\",")
            .map(|kv| {
                let (k, v) = kv.split_once("=\"").unwrap();
                format!(
                    "              {k}: {}\n",
                    yaml_quoted(v.trim_end_matches('"'))
                )
            })
            .collect()
    };
    let test = format!(
        "rule_files:
  - {rules}
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: {soon}
        values: '{three_days}x30'
      - series: {later}
        values: '{ninety_days}x30'
    alert_rule_test:
      - eval_time: 15m
        alertname: CertificateExpiresSoon
        exp_alerts:
          - exp_labels:
              severity: warning
{labels}            exp_annotations:
              summary: {summary}
              description: \"The certificate was not renewed: check the Certificate's status and cert-manager's logs.\"
      - eval_time: 15m
        alertname: CertificateExpiresWithinADay
        exp_alerts: []
",
        rules = yaml_quoted(&rules.display().to_string()),
        soon = yaml_quoted(&soon_s),
        later = yaml_quoted(&later_s),
        three_days = 3 * 86400,
        ninety_days = 90 * 86400,
        labels = labels(&soon_s),
        summary = yaml_quoted(&format!("CN=leaf 26 (serial 1a) in {dir}/tls.crt expires within 7 days")),
    );
    let file = vol.tmp.path().join("rules-test.yaml");
    std::fs::write(&file, &test).unwrap();
    let out = tool("promtool")
        .args(["test", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("promtool test rules: {said}");
    assert!(
        out.status.success(),
        "{said}{}\n{test}",
        String::from_utf8_lossy(&out.stderr)
    );
}
