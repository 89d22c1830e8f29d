//! Live TLS certificates (feature `rustls`) against real rustls servers and
//! clients on 127.0.0.1: a Secret volume written the kubelet's way, with
//! certificates made by the test (rcgen; openssl for the RSA and the
//! PKCS#1/SEC1 key forms). Rotation with every handshake succeeding, beside
//! a naive two-file reloader on the same writer; each kind of invalid pair
//! refused while the old pair keeps serving; SNI; a live trust store for
//! clients and for mTLS.

#![cfg(all(unix, feature = "rustls"))]

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use arc_swap::ArcSwap;
use configmapwatch::{
    Event, EventKind,
    tls::{CertDriver, LiveCert, LiveRoots, SniCerts},
};
use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType, SerialNumber};
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
    server::ResolvesServerCert,
    sign::CertifiedKey,
};
use time::OffsetDateTime;

use crate::helper::{self, DEADLINE, Vol, openssl, wait_until};

const FAST: Duration = Duration::from_millis(10);

/// A test certificate authority.
pub struct Ca {
    pub pem: String,
    pub der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf made by [`Ca::leaf`]: PEM chain and key, and the DER served.
#[derive(Clone)]
pub struct Pair {
    pub cert: String,
    pub key: String,
    pub der: Vec<u8>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `localhost` and 127.0.0.1 with `serial`, valid
    /// from an hour ago for a year.
    pub fn leaf(&self, serial: u64) -> Pair {
        let now = OffsetDateTime::now_utc();
        self.leaf_with(
            serial,
            &["localhost"],
            now - time::Duration::hours(1),
            now + time::Duration::days(365),
        )
    }

    pub fn leaf_with(
        &self,
        serial: u64,
        names: &[&str],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Pair {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params
            .distinguished_name
            .push(DnType::CommonName, format!("leaf {serial}"));
        params.serial_number = Some(SerialNumber::from(serial));
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        fresh(
            ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

/// A client config that never resumes a session: a resumed handshake
/// carries no certificate, and every handshake here must show the one
/// served now.
pub fn fresh(mut config: ClientConfig) -> Arc<ClientConfig> {
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// A TLS server on 127.0.0.1: `threads` threads accept and complete
/// handshakes (then write one byte) until dropped.
pub struct Server {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(config: Arc<ServerConfig>, threads: usize) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|_| {
                let listener = listener.try_clone().unwrap();
                let (config, stop) = (config.clone(), stop.clone());
                thread::spawn(move || {
                    for sock in listener.incoming() {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let Ok(mut sock) = sock else { continue };
                        let mut conn = ServerConnection::new(config.clone()).unwrap();
                        // The client's verdict is what the tests assert; a
                        // client that gave up shows here as an error.
                        let _ = serve_one(&mut conn, &mut sock);
                    }
                })
            })
            .collect();
        Server {
            addr,
            stop,
            threads,
        }
    }
}

fn serve_one(conn: &mut ServerConnection, sock: &mut TcpStream) -> std::io::Result<()> {
    sock.set_read_timeout(Some(DEADLINE))?;
    while conn.is_handshaking() {
        conn.complete_io(sock)?;
    }
    conn.writer().write_all(b"!")?;
    conn.complete_io(sock)?;
    Ok(())
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for _ in &self.threads {
            let _ = TcpStream::connect(self.addr);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One full handshake (and the server's byte) as `name`; the leaf the
/// server presented, or the error.
pub fn handshake(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    name: &str,
) -> Result<Vec<u8>, String> {
    let mut sock = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    let mut conn = ClientConnection::new(config.clone(), server_name).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let mut byte = [0u8; 1];
    tls.read_exact(&mut byte).map_err(|e| e.to_string())?;
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no certificate")?;
    Ok(leaf.to_vec())
}

fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> Arc<ServerConfig> {
    Arc::new(
        ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(resolver),
    )
}

fn errors_sink() -> (Arc<Mutex<Vec<Event>>>, impl FnMut(&Event) + Send + 'static) {
    let log: Arc<Mutex<Vec<Event>>> = Arc::default();
    let sink = log.clone();
    (log, move |e: &Event| sink.lock().unwrap().push(e.clone()))
}

fn tls_files(pair: &Pair) -> [(&'static str, &str); 2] {
    [("tls.crt", &pair.cert), ("tls.key", &pair.key)]
}

/// Served, rotated, described: the first pair serves; a new one serves
/// from the tick that sees it; the change event names subject, SANs,
/// serial and expiry, and carries no private key.
#[test]
fn serves_the_current_pair_and_rotates() {
    let vol = vol!();
    let ca = Ca::new("rotate CA");
    let (a, b) = (ca.leaf(1), ca.leaf(2));
    vol.publish(&tls_files(&a));
    let changes: Arc<Mutex<Vec<Event>>> = Arc::default();
    let sink = changes.clone();
    let (live, mut driver) = LiveCert::watch(vol.path())
        .on_change(move |_, e| sink.lock().unwrap().push(e.clone()))
        .start_driven(DEADLINE)
        .unwrap();
    let server = Server::start(server_config(Arc::new(live.clone())), 1);
    let client = ca.client_config();
    assert_eq!(handshake(server.addr, &client, "localhost").unwrap(), a.der);

    let version = vol.publish(&tls_files(&b));
    assert_eq!(handshake(server.addr, &client, "localhost").unwrap(), a.der);
    let event = driver.tick().expect("the new version");
    assert_eq!(
        (event.kind, event.version.as_str()),
        (EventKind::Change, version.as_str())
    );
    assert_eq!(handshake(server.addr, &client, "localhost").unwrap(), b.der);
    assert_eq!(live.version(), version);
    assert!(driver.tick().is_none(), "an idle tick reports nothing");

    let json = event.to_json().to_string();
    assert!(!json.contains("PRIVATE KEY"), "{json}");
    let cert = &event.config.as_ref().unwrap()["certificates"][0];
    assert_eq!(cert["subject"], "CN=leaf 2");
    assert_eq!(cert["serial"], "02");
    assert_eq!(
        cert["sans"],
        serde_json::json!(["DNS:localhost", "IP:127.0.0.1"])
    );
    assert!(cert["not_after"].as_str().unwrap().ends_with('Z'), "{cert}");
    let seen = changes.lock().unwrap();
    assert_eq!(seen.len(), 2, "the first pair and the rotation");
    assert!(!seen[0].to_json().to_string().contains("PRIVATE KEY"));
}

/// Each kind of bad version is refused, naming the key and the reason,
/// while the last good pair keeps serving handshakes; a good one after
/// them is taken.
#[test]
fn invalid_pairs_are_refused_and_the_old_pair_keeps_serving() {
    let vol = vol!();
    let ca = Ca::new("refusals CA");
    let good = ca.leaf(1);
    vol.publish(&tls_files(&good));
    let (errors, on_error) = errors_sink();
    let (live, mut driver) = LiveCert::watch(vol.path())
        .on_error(on_error)
        .start_driven(DEADLINE)
        .unwrap();
    let server = Server::start(server_config(Arc::new(live.clone())), 1);
    let client = ca.client_config();

    let other = ca.leaf(2);
    let now = OffsetDateTime::now_utc();
    let expired = ca.leaf_with(
        3,
        &["localhost"],
        now - time::Duration::days(30),
        now - time::Duration::days(1),
    );
    let future = ca.leaf_with(
        4,
        &["localhost"],
        now + time::Duration::days(1),
        now + time::Duration::days(30),
    );
    let garbage =
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";
    // (what, the files, the key blamed, the reason given)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            "mismatched key",
            vec![("tls.crt", &good.cert), ("tls.key", &other.key)],
            "tls.key",
            "does not match the certificate \"CN=leaf 1\"",
        ),
        (
            "expired",
            tls_files(&expired).to_vec(),
            "tls.crt",
            "expired at",
        ),
        (
            "not yet valid",
            tls_files(&future).to_vec(),
            "tls.crt",
            "is not valid yet",
        ),
        (
            "garbage certificate",
            vec![("tls.crt", garbage), ("tls.key", &good.key)],
            "tls.crt",
            "not an X.509 certificate",
        ),
        (
            "not PEM at all",
            vec![("tls.crt", "hello"), ("tls.key", &good.key)],
            "tls.crt",
            "holds no PEM CERTIFICATE block",
        ),
        (
            "garbage key",
            vec![
                ("tls.crt", &good.cert),
                (
                    "tls.key",
                    "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                ),
            ],
            "tls.key",
            "unusable private key",
        ),
        (
            "a key without a certificate",
            vec![("tls.key", &good.key)],
            "tls.crt",
            "key tls.crt not found",
        ),
        (
            "a certificate in place of the key",
            vec![("tls.crt", &good.cert), ("tls.key", &good.cert)],
            "tls.key",
            "holds no PEM private key",
        ),
    ];
    for (what, files, key, reason) in cases {
        let n = errors.lock().unwrap().len();
        let version = vol.publish(&files);
        let event = driver.tick().unwrap_or_else(|| panic!("{what}: no event"));
        assert_eq!(event.kind, EventKind::Error, "{what}");
        assert_eq!(event.version, version, "{what}");
        assert_eq!(event.key.as_deref(), Some(key), "{what}: {event:?}");
        let message = event.error.as_deref().unwrap();
        assert!(
            message.contains(reason),
            "{what}: {message:?} lacks {reason:?}"
        );
        assert!(
            event.config.is_none(),
            "{what}: an error event carries no key material"
        );
        assert_eq!(errors.lock().unwrap().len(), n + 1, "{what}: on_error");
        assert_eq!(
            handshake(server.addr, &client, "localhost").unwrap(),
            good.der,
            "{what}: the last good pair serves"
        );
        assert_eq!(live.get().leaf.serial, "01", "{what}");
    }
    let fixed = ca.leaf(5);
    let version = vol.publish(&tls_files(&fixed));
    let event = driver.tick().unwrap();
    assert_eq!((event.kind, event.version), (EventKind::Change, version));
    assert_eq!(
        handshake(server.addr, &client, "localhost").unwrap(),
        fixed.der
    );
}

/// No good pair within the wait: start fails naming the last refusal.
#[test]
fn start_without_a_good_pair_fails_naming_why() {
    let vol = vol!();
    let ca = Ca::new("start CA");
    let (a, b) = (ca.leaf(1), ca.leaf(2));
    vol.publish(&[("tls.crt", &a.cert), ("tls.key", &b.key)]);
    let e = LiveCert::watch(vol.path())
        .interval(FAST)
        .start(Duration::from_millis(200))
        .unwrap_err();
    let message = e.to_string();
    assert!(message.contains("key tls.key: does not match"), "{message}");

    // The refusal itself: a variant of its own, a content error (it
    // sticks to the version).
    let e = configmapwatch::tls::ServerCert::from_pem(
        "tls.crt",
        a.cert.as_bytes(),
        "tls.key",
        b.key.as_bytes(),
        &rustls::crypto::ring::default_provider(),
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(
        matches!(&e, configmapwatch::Error::Certificate { key, .. } if key == "tls.key"),
        "{e:?}"
    );
    assert_eq!(
        (e.key(), e.kind()),
        (Some("tls.key"), configmapwatch::ErrorKind::Content)
    );
}

/// Key names other than tls.crt/tls.key; a chain with its intermediate
/// (here the CA) after the leaf is served whole.
#[test]
fn custom_key_names_and_a_full_chain() {
    let vol = vol!();
    let ca = Ca::new("chain CA");
    let a = ca.leaf(7);
    let chain = format!("{}{}", a.cert, ca.pem);
    vol.publish(&[("fullchain.pem", &chain), ("privkey.pem", &a.key)]);
    let cert = LiveCert::watch(vol.path())
        .certificate("fullchain.pem")
        .private_key("privkey.pem")
        .start(DEADLINE)
        .unwrap();
    assert_eq!(cert.certified_key().cert.len(), 2);
    let server = Server::start(server_config(Arc::new(cert)), 1);
    assert_eq!(
        handshake(server.addr, &ca.client_config(), "localhost").unwrap(),
        a.der
    );
}

/// RSA, ECDSA and Ed25519 keys, in PKCS#8 and in the traditional forms
/// (PKCS#1 for RSA, SEC1 for EC), made by openssl: each serves.
#[test]
fn rsa_ecdsa_ed25519_in_pkcs1_pkcs8_sec1() {
    needs!("openssl");
    let vol = vol!();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let kinds: [(&str, &[&str], Option<&str>); 5] = [
        ("rsa-pkcs8", &["-newkey", "rsa:2048"], None),
        (
            "rsa-pkcs1",
            &["-newkey", "rsa:2048"],
            Some("RSA PRIVATE KEY"),
        ),
        (
            "ec-pkcs8",
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
            None,
        ),
        (
            "ec-sec1",
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp384r1"],
            Some("EC PRIVATE KEY"),
        ),
        ("ed25519", &["-newkey", "ed25519"], None),
    ];
    let mut first = true;
    let mut driver: Option<CertDriver> = None;
    let mut live: Option<LiveCert> = None;
    for (name, newkey, traditional) in kinds {
        let (key, crt) = (format!("{name}.key"), format!("{name}.crt"));
        let mut args = vec![
            "req",
            "-x509",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ];
        args.extend_from_slice(newkey);
        args.extend_from_slice(&[
            "-keyout",
            &key,
            "-out",
            &crt,
            "-addext",
            "subjectAltName=DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ]);
        openssl(dir, &args);
        let key = match traditional {
            Some(_) => {
                let old = format!("{name}.old.key");
                openssl(dir, &["pkey", "-in", &key, "-traditional", "-out", &old]);
                old
            }
            None => key,
        };
        let key_pem = std::fs::read_to_string(dir.join(&key)).unwrap();
        let marker = format!("-----BEGIN {}-----", traditional.unwrap_or("PRIVATE KEY"));
        assert!(key_pem.starts_with(&marker), "{name}: {key_pem:.40}");
        let crt_pem = std::fs::read_to_string(dir.join(&crt)).unwrap();
        vol.publish(&[("tls.crt", &crt_pem), ("tls.key", &key_pem)]);
        if first {
            let (l, d) = LiveCert::watch(vol.path()).start_driven(DEADLINE).unwrap();
            (live, driver, first) = (Some(l), Some(d), false);
        } else {
            let event = driver.as_mut().unwrap().tick().unwrap();
            assert_eq!(event.kind, EventKind::Change, "{name}: {:?}", event.error);
        }
        let der = CertificateDer::from_pem_slice(crt_pem.as_bytes()).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(der.clone()).unwrap();
        let client = fresh(
            ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        let server = Server::start(server_config(Arc::new(live.clone().unwrap())), 1);
        assert_eq!(
            handshake(server.addr, &client, "localhost").as_deref(),
            Ok(der.as_ref()),
            "{name}"
        );
    }
}

/// One resolver, one Secret per name: each name gets its own certificate
/// (exact, then wildcard), others the fallback; each rotates on its own.
#[test]
fn sni_picks_the_secret_of_the_name() {
    let (api, apps, other) = (vol!(), vol!(), vol!());
    let ca = Ca::new("SNI CA");
    let a = ca.leaf_with(
        1,
        &["api.test"],
        OffsetDateTime::now_utc() - time::Duration::hours(1),
        OffsetDateTime::now_utc() + time::Duration::days(9),
    );
    let b = ca.leaf_with(
        2,
        &["*.apps.test"],
        OffsetDateTime::now_utc() - time::Duration::hours(1),
        OffsetDateTime::now_utc() + time::Duration::days(9),
    );
    let c = ca.leaf(3);
    api.publish(&tls_files(&a));
    apps.publish(&tls_files(&b));
    other.publish(&tls_files(&c));
    let certs = SniCerts::builder()
        .name("API.test", LiveCert::watch(api.path()).interval(FAST))
        .name("*.apps.test", LiveCert::watch(apps.path()).interval(FAST))
        .fallback(LiveCert::watch(other.path()).interval(FAST))
        .start(DEADLINE)
        .unwrap();
    let server = Server::start(server_config(Arc::new(certs)), 1);
    let client = ca.client_config();
    assert_eq!(handshake(server.addr, &client, "api.test").unwrap(), a.der);
    assert_eq!(
        handshake(server.addr, &client, "one.apps.test").unwrap(),
        b.der
    );
    assert_eq!(handshake(server.addr, &client, "localhost").unwrap(), c.der);

    let a2 = ca.leaf_with(
        4,
        &["api.test"],
        OffsetDateTime::now_utc() - time::Duration::hours(1),
        OffsetDateTime::now_utc() + time::Duration::days(90),
    );
    api.publish(&tls_files(&a2));
    wait_until("the api pair rotated", || {
        handshake(server.addr, &client, "api.test").unwrap() == a2.der
    });
    assert_eq!(
        handshake(server.addr, &client, "one.apps.test").unwrap(),
        b.der
    );
}

/// A client that trusts what ca.crt holds now; a server whose client
/// certificates must be signed by it (mTLS). Rotating ca.crt moves both.
#[test]
fn live_trust_store_for_clients_and_mtls() {
    let (cas, certs) = (vol!(), vol!());
    let (one, two) = (Ca::new("CA one"), Ca::new("CA two"));
    cas.publish(&[("ca.crt", &one.pem)]);
    let (errors, on_error) = errors_sink();
    let roots = LiveRoots::watch(cas.path())
        .interval(FAST)
        .on_error(on_error)
        .start(DEADLINE)
        .unwrap();
    assert_eq!(roots.get().certs[0].subject, "CN=CA one");

    // mTLS: the server's own pair from CA one; clients must hold a
    // certificate signed by the CA in ca.crt.
    let server_pair = one.leaf(10);
    certs.publish(&tls_files(&server_pair));
    let cert = LiveCert::watch(certs.path()).start(DEADLINE).unwrap();
    let mtls = Server::start(
        Arc::new(
            ServerConfig::builder()
                .with_client_cert_verifier(roots.client_verifier())
                .with_cert_resolver(Arc::new(cert)),
        ),
        1,
    );
    let client_with = |ca: &Ca, serial| {
        let pair = ca.leaf(serial);
        let chain = vec![CertificateDer::from(pair.der.clone())];
        let key = PrivateKeyDer::from_pem_slice(pair.key.as_bytes()).unwrap();
        let mut trust = RootCertStore::empty();
        trust.add(one.der.clone()).unwrap();
        fresh(
            ClientConfig::builder()
                .with_root_certificates(trust)
                .with_client_auth_cert(chain, key)
                .unwrap(),
        )
    };
    let (client_one, client_two) = (client_with(&one, 20), client_with(&two, 21));
    assert!(handshake(mtls.addr, &client_one, "localhost").is_ok());
    assert!(handshake(mtls.addr, &client_two, "localhost").is_err());

    // A client verifying servers against the live store.
    let verifying = fresh(
        ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(roots.server_verifier())
            .with_no_client_auth(),
    );
    assert!(handshake(mtls.addr, &client_one, "localhost").is_ok());
    let plain = Server::start(
        server_config(Arc::new(
            LiveCert::watch(certs.path()).start(DEADLINE).unwrap(),
        )),
        1,
    );
    assert_eq!(
        handshake(plain.addr, &verifying, "localhost").unwrap(),
        server_pair.der
    );

    // A bad bundle is refused; the old one keeps verifying.
    let version = cas.publish(&[("ca.crt", "not a bundle")]);
    wait_until("the bad bundle refused", || {
        errors.lock().unwrap().iter().any(|e| e.version == version)
    });
    assert!(handshake(mtls.addr, &client_one, "localhost").is_ok());

    // Rotate to CA two: its clients get in, CA one's no longer; the
    // verifying client now refuses the server signed by CA one.
    cas.publish(&[("ca.crt", &two.pem)]);
    wait_until("CA two current", || {
        roots.get().certs[0].subject == "CN=CA two"
    });
    assert!(handshake(mtls.addr, &client_two, "localhost").is_ok());
    assert!(handshake(mtls.addr, &client_one, "localhost").is_err());
    let refused = handshake(plain.addr, &verifying, "localhost").unwrap_err();
    assert!(refused.contains("UnknownIssuer"), "{refused}");
}

/// What a rotation run counted, for one server.
#[derive(Debug, Default)]
pub struct Counts {
    pub handshakes: u64,
    pub failures: u64,
    /// Pairs the reloader installed whose key did not match (naive only).
    pub torn: u64,
    /// Reads that failed mid-swap (naive only).
    pub read_errors: u64,
}

/// The hot-reload code commonly written: poll `tls.crt` and `tls.key`
/// (through their top-level links), and when either file changed re-read
/// both and install them, building the pair with rustls'
/// `CertifiedKey::new` as resolvers do (no consistency check).
#[derive(Debug)]
pub struct NaiveReloader {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for NaiveReloader {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn naive_load(dir: &Path) -> std::io::Result<CertifiedKey> {
    let cert = std::fs::read(dir.join("tls.crt"))?;
    let key = std::fs::read(dir.join("tls.key"))?;
    let chain = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(std::io::Error::other)?;
    let key = PrivateKeyDer::from_pem_slice(&key).map_err(std::io::Error::other)?;
    let key =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(std::io::Error::other)?;
    Ok(CertifiedKey::new(chain, key))
}

fn file_id(path: &Path) -> Option<(u64, SystemTime)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.modified().ok()?))
}

/// Rotates `pairs` through a volume the kubelet's way while `clients`
/// threads per server handshake in a tight loop against two servers: ours
/// (a [`LiveCert`]) and the naive reloader, both polling every `poll`.
/// Ours must succeed on every handshake and see, per client, versions
/// that never go backwards and were current at the time.
pub fn rotation_run(pairs: &[Pair], ca: &Ca, clients: usize, poll: Duration) -> (Counts, Counts) {
    let vol = Vol::kubelet().expect("symlinks");
    vol.publish(&tls_files(&pairs[0]));
    let index: Arc<HashMap<Vec<u8>, usize>> = Arc::new(
        pairs
            .iter()
            .enumerate()
            .map(|(i, p)| (p.der.clone(), i))
            .collect(),
    );
    let published = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));

    let (live, mut driver) = LiveCert::watch(vol.path()).start_driven(DEADLINE).unwrap();
    let naive = Arc::new(NaiveReloader {
        current: ArcSwap::from_pointee(naive_load(vol.path()).unwrap()),
    });
    let torn = Arc::new(AtomicU64::new(0));
    let read_errors = Arc::new(AtomicU64::new(0));
    let pollers = {
        let (done, naive, dir) = (done.clone(), naive.clone(), vol.path().to_owned());
        let (torn, read_errors) = (torn.clone(), read_errors.clone());
        let stop = done.clone();
        let ours = thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                driver.tick();
                thread::sleep(poll);
            }
            driver.tick();
        });
        let theirs = thread::spawn(move || {
            let ids = |d: &Path| (file_id(&d.join("tls.crt")), file_id(&d.join("tls.key")));
            let mut seen = ids(&dir);
            while !done.load(Ordering::Relaxed) {
                let now = ids(&dir);
                if now != seen {
                    match naive_load(&dir) {
                        Ok(pair) => {
                            if pair.keys_match().is_err() {
                                torn.fetch_add(1, Ordering::Relaxed);
                            }
                            naive.current.store(Arc::new(pair));
                            seen = now;
                        }
                        // Gone mid-swap: tried again on the next poll.
                        Err(_) => {
                            read_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                thread::sleep(poll);
            }
        });
        [ours, theirs]
    };
    let ours_server = Server::start(server_config(Arc::new(live.clone())), clients);
    let naive_server = Server::start(server_config(naive), clients);
    let client = ca.client_config();

    let mut workers = Vec::new();
    for (addr, checked) in [(ours_server.addr, true), (naive_server.addr, false)] {
        for _ in 0..clients {
            let (client, done, index, published, live) = (
                client.clone(),
                done.clone(),
                index.clone(),
                published.clone(),
                live.clone(),
            );
            workers.push(thread::spawn(move || {
                let mut counts = Counts::default();
                let mut last = 0;
                while !done.load(Ordering::Relaxed) {
                    let lo = index[live.certified_key().cert[0].as_ref()];
                    let result = handshake(addr, &client, "localhost");
                    let hi = published.load(Ordering::SeqCst);
                    counts.handshakes += 1;
                    match result {
                        Ok(der) if checked => {
                            let seen = index[&der];
                            assert!(
                                lo <= seen && seen <= hi,
                                "served version {seen}, current was {lo}..={hi}"
                            );
                            assert!(seen >= last, "went back from {last} to {seen}");
                            last = seen;
                        }
                        Ok(_) => {}
                        Err(e) if checked => panic!("handshake with the live resolver failed: {e}"),
                        Err(_) => counts.failures += 1,
                    }
                }
                (checked, counts)
            }));
        }
    }
    // The writer: each version announced before its swap, so that a
    // client's upper bound is never below what it can be served.
    for (i, pair) in pairs.iter().enumerate().skip(1) {
        published.store(i, Ordering::SeqCst);
        vol.publish(&tls_files(pair));
    }
    let last = pairs.len() - 1;
    wait_until("the last pair served by ours", || {
        live.certified_key().cert[0].as_ref() == pairs[last].der.as_slice()
    });
    done.store(true, Ordering::Relaxed);
    let (mut ours, mut theirs) = (Counts::default(), Counts::default());
    for w in workers {
        let (checked, c) = w.join().unwrap();
        let total = if checked { &mut ours } else { &mut theirs };
        total.handshakes += c.handshakes;
        total.failures += c.failures;
    }
    for p in pollers {
        p.join().unwrap();
    }
    theirs.torn = torn.load(Ordering::Relaxed);
    theirs.read_errors = read_errors.load(Ordering::Relaxed);
    (ours, theirs)
}

/// Leaves signed by `ca`, serials 1..=n, made on every core.
pub fn make_pairs(ca: &Arc<Ca>, n: usize) -> Vec<Pair> {
    let cores = thread::available_parallelism().map_or(2, |c| c.get());
    let next = Arc::new(AtomicUsize::new(0));
    let made: Arc<Mutex<Vec<Option<Pair>>>> = Arc::new(Mutex::new(vec![None; n]));
    let workers: Vec<_> = (0..cores)
        .map(|_| {
            let (ca, next, made) = (ca.clone(), next.clone(), made.clone());
            thread::spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    let pair = ca.leaf(i as u64 + 1);
                    made.lock().unwrap()[i] = Some(pair);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let made = std::mem::take(&mut *made.lock().unwrap());
    made.into_iter().map(Option::unwrap).collect()
}

/// 1,000 pairs rotated the kubelet's way under handshakes in a tight
/// loop: every handshake with the live resolver succeeds with a version
/// current at the time, never going backwards. The naive reloader's
/// counts beside it are printed (it tears pairs when its two reads
/// straddle a swap; how often depends on timing, so it is not asserted).
#[test]
fn rotation_under_handshakes_never_tears_a_pair() {
    if !helper::symlinks_work() {
        return helper::no_symlinks(file!(), line!());
    }
    let started = Instant::now();
    let ca = Arc::new(Ca::new("rotation CA"));
    let pairs = make_pairs(&ca, 1000);
    let made = started.elapsed();
    let (ours, naive) = rotation_run(&pairs, &ca, 2, Duration::from_micros(200));
    eprintln!(
        "rotation: {} pairs (made in {made:.1?}, rotated in {:.1?}); live resolver: {} handshakes, \
         {} failed; naive reloader: {} handshakes, {} failed, {} torn pairs installed, {} reads \
         failed mid-swap",
        pairs.len(),
        started.elapsed() - made,
        ours.handshakes,
        ours.failures,
        naive.handshakes,
        naive.failures,
        naive.torn,
        naive.read_errors
    );
    assert_eq!(ours.failures, 0);
    assert!(ours.handshakes > 0);
}
