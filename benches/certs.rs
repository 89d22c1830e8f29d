//! What the live certificate costs a handshake: full TLS 1.3 handshakes
//! (ECDSA P-256), client and server in one thread over in-memory buffers,
//! so that the server's certificate lookup is the only difference between
//! the two runs: rustls' own static single certificate, and a [`LiveCert`]
//! on a volume written by the project's kubelet-style writer. Rounds
//! alternate between the two so that a busy machine slows both alike; the
//! median of each round's ratio is printed.
//!
//! ```text
//! cargo bench --bench certs [-- --quick]
//! ```

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use configmapwatch::{AtomicWriter, Payload, tls::LiveCert};
use rcgen::{CertificateParams, KeyPair};
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection,
    client::Resumption,
    pki_types::{PrivateKeyDer, ServerName, pem::PemObject},
};

fn handshake(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>) {
    let name = ServerName::try_from("localhost").unwrap();
    let mut c = ClientConnection::new(client.clone(), name).unwrap();
    let mut s = ServerConnection::new(server.clone()).unwrap();
    let mut buf = Vec::with_capacity(16 << 10);
    while c.is_handshaking() || s.is_handshaking() {
        buf.clear();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
        }
        s.process_new_packets().unwrap();
        buf.clear();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
        }
        c.process_new_packets().unwrap();
    }
}

fn rate(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>, n: u32) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        handshake(client, server);
    }
    f64::from(n) / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // Short rounds, many of them: on a shared machine the load drifts, and
    // a short round pair sees the same load on both sides.
    let (per_round, rounds) = if quick { (100, 11) } else { (200, 101) };

    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let mut client = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Every handshake a full one: a resumed handshake asks for no
    // certificate.
    client.resumption = Resumption::disabled();
    let client = Arc::new(client);

    let fixed = Arc::new(
        ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
            )
            .unwrap(),
    );

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vol");
    std::fs::create_dir_all(&dir).unwrap();
    let mut payload = Payload::new();
    payload.insert("tls.crt", cert.pem()).unwrap();
    payload.insert("tls.key", key.serialize_pem()).unwrap();
    AtomicWriter::new(&dir).write(&payload).unwrap();
    let live = LiveCert::watch(&dir)
        .start(Duration::from_secs(10))
        .unwrap();
    // The lookup alone, which is all that differs: the live one is an
    // ArcSwap load and an Arc clone, the static one an Arc clone.
    let lookups = 1_000_000u32;
    let held = live.certified_key();
    let start = Instant::now();
    for _ in 0..lookups {
        std::hint::black_box(std::hint::black_box(&held).clone());
    }
    let fixed_ns = start.elapsed().as_nanos() as f64 / f64::from(lookups);
    let start = Instant::now();
    for _ in 0..lookups {
        std::hint::black_box(std::hint::black_box(&live).certified_key());
    }
    let live_ns = start.elapsed().as_nanos() as f64 / f64::from(lookups);
    println!("certificate lookup: static {fixed_ns:.1} ns, LiveCert {live_ns:.1} ns");
    let live = Arc::new(
        ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(live)),
    );

    // Warm-up, then alternate.
    rate(&client, &fixed, per_round / 4);
    rate(&client, &live, per_round / 4);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which goes first, so neither always follows the other.
        if round % 2 == 0 {
            a.push(rate(&client, &fixed, per_round));
            b.push(rate(&client, &live, per_round));
        } else {
            b.push(rate(&client, &live, per_round));
            a.push(rate(&client, &fixed, per_round));
        }
    }
    let ratio = median(a.iter().zip(&b).map(|(f, l)| l / f).collect());
    let (fixed_rate, live_rate) = (median(a), median(b));
    println!(
        "handshakes/s (median of {rounds} rounds of {per_round}): static certificate {fixed_rate:.0}, \
         LiveCert {live_rate:.0}; live/static, median of the rounds' ratios: {ratio:.3}"
    );
}
