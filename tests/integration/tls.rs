//! HTTPS webhooks against a real TLS server on 127.0.0.1 (nginx, with a
//! certificate authority and a server certificate made by the test with
//! openssl): the right CA is accepted, a wrong one and the public roots
//! are refused, and skipping verification works and is warned about.

#![cfg(all(unix, feature = "tls"))]

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::Stdio,
};

use crate::helper::{self, Reaped, bin, free_port, openssl, tool, wait_until};

/// A CA, and a certificate for 127.0.0.1 signed by it, in `dir`.
fn make_certs(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let ca = |args: &[&str]| openssl(dir, args);
    ca(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=configmapwatch test CA",
    ]);
    ca(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    ca(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);
}

/// nginx serving HTTPS on 127.0.0.1, answering 200 to any request.
struct Nginx {
    _process: Reaped,
    port: u16,
    access_log: PathBuf,
}

fn nginx(dir: &Path) -> Nginx {
    let port = free_port();
    let d = dir.display();
    let conf = dir.join("nginx.conf");
    let server = format!(
        "    listen 127.0.0.1:{port} ssl;
    ssl_certificate {d}/server.pem;
    ssl_certificate_key {d}/server.key;
    location / {{ return 200 \"reloaded\\n\"; }}"
    );
    std::fs::write(
        &conf,
        helper::nginx_conf(dir, "master_process off;", true, &server),
    )
    .unwrap();
    let child = tool("nginx")
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let process = Reaped(child);
    wait_until("nginx to listen", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Nginx {
        _process: process,
        port,
        access_log: dir.join("access.log"),
    }
}

/// `--once --on-start` with one HTTPS webhook: the exit code and the output.
fn once(url: &str, extra: &[&str]) -> (Option<i32>, String) {
    let vol = vol!();
    vol.publish(&[("config.json", r#"{"n":1}"#)]);
    let out = bin()
        .args(["--once", "--on-start", "--webhook-retries", "0", "-d"])
        .arg(vol.path())
        .args(["--webhook-url", url])
        .args(extra)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn https_webhooks_verify_the_server_against_the_given_ca() {
    needs!("openssl", "nginx");
    let tmp = tempfile::tempdir().unwrap();
    let server_dir = tmp.path().join("server");
    make_certs(&server_dir);
    // Another CA, valid but not the one that signed the server's certificate.
    let other = tmp.path().join("other");
    make_certs(&other);
    let nginx = nginx(&server_dir);
    let url = format!("https://127.0.0.1:{}/-/reload", nginx.port);
    let ca = server_dir.join("ca.pem").display().to_string();
    let wrong = other.join("ca.pem").display().to_string();

    let (code, text) = once(&url, &["--webhook-ca-file", &ca]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("webhook ok"), "{text}");
    wait_until("the request in nginx's access log", || {
        std::fs::read_to_string(&nginx.access_log)
            .is_ok_and(|log| log.contains("\"POST /-/reload HTTP/1.1\" 200"))
    });

    let (code, text) = once(&url, &["--webhook-ca-file", &wrong]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("webhook FAILED"), "{text}");
    assert!(text.to_lowercase().contains("certificate"), "{text}");

    // The bundled public roots do not know a test CA either.
    let (code, text) = once(&url, &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.to_lowercase().contains("certificate"), "{text}");

    let (code, text) = once(&url, &["--webhook-insecure-skip-verify"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("are not verified"), "{text}");

    // A CA file that is missing or holds no certificate: a startup error.
    let (code, text) = once(&url, &["--webhook-ca-file", "/nonexistent/ca.pem"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("/nonexistent/ca.pem"), "{text}");
    let key = server_dir.join("ca.key").display().to_string();
    let (code, text) = once(&url, &["--webhook-ca-file", &key]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("no PEM certificate"), "{text}");
}
