//! Live TLS for rustls (cargo feature `rustls`): a server certificate and a
//! trust store kept in step with a Secret volume, each version taken as one
//! consistent snapshot.
//!
//! cert-manager renews a Secret (`tls.crt`, `tls.key`, often `ca.crt`) and
//! the kubelet swaps the whole volume at once. A reloader that reads
//! `tls.crt` and `tls.key` separately can, during the swap, pair a new
//! certificate with an old key; every handshake then fails until the next
//! reload. Here both keys come from one snapshot of one `..data` target,
//! so a pair is never torn.
//!
//! - [`LiveCert`] implements rustls' `ResolvesServerCert` and always hands
//!   out the current certificate and key; [`SniCerts`] picks one of
//!   several (one Secret per server name) by SNI.
//! - [`LiveRoots`] is a live trust store (`ca.crt`, or any bundle key):
//!   its [`LiveRoots::server_verifier`] checks servers for a rustls client,
//!   its [`LiveRoots::client_verifier`] checks clients for an mTLS server.
//!
//! ```no_run
//! # fn main() -> configmapwatch::Result<()> {
//! use std::{sync::Arc, time::Duration};
//! use configmapwatch::tls::LiveCert;
//!
//! let cert = LiveCert::watch("/etc/tls").start(Duration::from_secs(30))?;
//! let config = rustls::ServerConfig::builder()
//!     .with_no_client_auth()
//!     .with_cert_resolver(Arc::new(cert));
//! # drop(config); Ok(()) }
//! ```
//!
//! A version is accepted only when it parses, its key matches its leaf
//! certificate, and the leaf is valid now; otherwise it is an error event
//! naming the key and the reason, and the last good version keeps serving.
//! A certificate within [`LiveCertBuilder::warn_before`] (7 days by
//! default) of its expiry is warned about when it arrives and, once, when
//! it comes within that window while serving.
//!
//! The watching is a [`crate::Watcher`] with a validator, the same way
//! [`crate::Live`] works (`Live<T>` deserializes with serde;
//! a certificate is built from bytes by rustls, so it has its own handle).
//! The read path is an `ArcSwap` load: lock-free, whatever the watching
//! thread does. Events never carry the private key: an accepted version's
//! event `config` describes the certificates instead (subject, SANs,
//! serial, validity).

mod roots;
mod server;

use std::{
    sync::{Arc, Mutex, PoisonError, mpsc},
    thread,
    time::{Duration, Instant, SystemTime},
};

use arc_swap::ArcSwap;
use log::{error, warn};
use rustls::{
    crypto::CryptoProvider,
    pki_types::{CertificateDer, pem::PemObject},
};
use serde_json::{Value, json};
use x509_cert::{
    Certificate,
    der::Decode,
    ext::pkix::{SubjectAltName, name::GeneralName},
};

pub use roots::{LiveClientVerifier, LiveRoots, LiveRootsBuilder, LiveServerVerifier, TrustBundle};
pub use server::{CertDriver, LiveCert, LiveCertBuilder, ServerCert, SniCerts, SniCertsBuilder};

use crate::{Error, Event, EventKind, Result, Snapshot, Validator, Watcher, event::rfc3339};

/// How long before a certificate's expiry it is warned about, unless told
/// otherwise: cert-manager renews at two thirds of the lifetime (30 days
/// before the end of a 90-day certificate), so a certificate this close to
/// its end means renewal has failed.
pub const DEFAULT_WARN_BEFORE: Duration = Duration::from_secs(7 * 24 * 3600);

/// What a certificate says about itself, for events, logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CertInfo {
    /// The subject, as RFC 4514 text (`CN=example.com,O=Example`).
    pub subject: String,
    /// The subject alternative names: `DNS:name`, `IP:address`,
    /// `URI:...`, `email:...`.
    pub sans: Vec<String>,
    /// The serial number, lowercase hex.
    pub serial: String,
    /// The start of the validity period.
    pub not_before: SystemTime,
    /// The end of the validity period.
    pub not_after: SystemTime,
}

impl CertInfo {
    /// Reads a DER certificate. The message says what did not parse.
    pub fn from_der(der: &[u8]) -> std::result::Result<Self, String> {
        let cert =
            Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let tbs = cert.tbs_certificate();
        let sans = match tbs.get_extension::<SubjectAltName>() {
            Ok(Some((_, san))) => san.0.iter().map(general_name).collect(),
            Ok(None) => Vec::new(),
            Err(e) => return Err(format!("unreadable subjectAltName: {e}")),
        };
        Ok(CertInfo {
            subject: tbs.subject().to_string(),
            sans,
            serial: hex(tbs.serial_number().as_bytes()),
            not_before: tbs.validity().not_before.to_system_time(),
            not_after: tbs.validity().not_after.to_system_time(),
        })
    }

    /// Seconds until `not_after` from `now`; negative once expired.
    pub fn seconds_left(&self, now: SystemTime) -> f64 {
        match self.not_after.duration_since(now) {
            Ok(left) => left.as_secs_f64(),
            Err(past) => -past.duration().as_secs_f64(),
        }
    }

    /// Why the certificate cannot be used at `now`, if it cannot.
    pub fn check_valid_at(&self, now: SystemTime) -> std::result::Result<(), String> {
        if now < self.not_before {
            return Err(format!(
                "certificate {} is not valid yet (not before {})",
                self.name(),
                rfc3339(self.not_before)
            ));
        }
        if now >= self.not_after {
            return Err(format!(
                "certificate {} expired at {}",
                self.name(),
                rfc3339(self.not_after)
            ));
        }
        Ok(())
    }

    /// The certificate as JSON: subject, sans, serial, not_before, not_after.
    pub fn to_json(&self) -> Value {
        json!({
            "subject": self.subject,
            "sans": self.sans,
            "serial": self.serial,
            "not_before": rfc3339(self.not_before),
            "not_after": rfc3339(self.not_after),
        })
    }

    /// Subject and serial, for messages.
    fn name(&self) -> String {
        format!("\"{}\" (serial {})", self.subject, self.serial)
    }
}

fn general_name(name: &GeneralName) -> String {
    match name {
        GeneralName::DnsName(n) => format!("DNS:{}", n.as_str()),
        GeneralName::IpAddress(ip) => match ip.as_bytes() {
            &[a, b, c, d] => format!("IP:{}", std::net::Ipv4Addr::new(a, b, c, d)),
            bytes => match <[u8; 16]>::try_from(bytes) {
                Ok(v6) => format!("IP:{}", std::net::Ipv6Addr::from(v6)),
                Err(_) => format!("IP:{}", hex(bytes)),
            },
        },
        GeneralName::UniformResourceIdentifier(u) => format!("URI:{}", u.as_str()),
        GeneralName::Rfc822Name(m) => format!("email:{}", m.as_str()),
        GeneralName::DirectoryName(n) => format!("DirName:{n}"),
        other => format!("{other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A certificate refused, naming the key and the reason; a content error,
/// so it sticks to the version (the last good one keeps serving).
fn refused(key: &str, reason: impl Into<String>) -> Error {
    Error::Certificate {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// The bytes of `key` in `snapshot`. The watcher's selector has already
/// refused a version that lacks it, so a miss here is the same refusal.
fn bytes<'a>(snapshot: &'a Snapshot, key: &str) -> Result<&'a [u8]> {
    match snapshot.get(key) {
        Some(Ok(bytes)) => Ok(bytes),
        Some(Err(e)) => Err(refused(key, e.to_string())),
        None => Err(refused(key, format!("not in {}", snapshot.version))),
    }
}

/// Every `CERTIFICATE` block of a PEM key, in order; at least one.
fn pem_certs(key: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| refused(key, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(refused(key, "holds no PEM CERTIFICATE block"));
    }
    Ok(certs)
}

/// The crypto provider: the one given, else the process default, else
/// ring (the one this feature builds).
fn provider(given: Option<Arc<CryptoProvider>>) -> Arc<CryptoProvider> {
    given
        .or_else(|| CryptoProvider::get_default().cloned())
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// What a watched TLS item (a certificate pair, a trust bundle) offers the
/// shared watching code.
trait Material: Send + Sync + 'static {
    /// The certificates whose expiry is watched and reported.
    fn certs(&self) -> &[CertInfo];
}

type Parse<X> = Box<dyn Fn(&Snapshot) -> Result<X> + Send>;
type OnChange<X> = Box<dyn FnMut(&Arc<X>, &Event) + Send>;
type OnError = Box<dyn FnMut(&Event) + Send>;

/// The current item and the version it came from, swapped as one.
struct Current<X> {
    value: Arc<X>,
    version: String,
}

/// The reading side shared by [`LiveCert`] and [`LiveRoots`]: the current
/// item, and the sender whose drop (with the last clone) stops the
/// watching thread.
struct Handle<X> {
    shared: Arc<ArcSwap<Current<X>>>,
    /// Never sent on: its disconnection stops the watching thread.
    _alive: Arc<mpsc::SyncSender<()>>,
}

impl<X> Clone for Handle<X> {
    fn clone(&self) -> Self {
        Handle {
            shared: self.shared.clone(),
            _alive: self._alive.clone(),
        }
    }
}

impl<X: Material> Handle<X> {
    /// A handle on what `driver` makes current. No thread keeps it current
    /// yet: [`Handle::keep_current`] starts one, or the caller ticks the
    /// driver itself (its channel is then never read).
    fn of(driver: &Driver<X>) -> Self {
        let (alive, _) = mpsc::sync_channel::<()>(0);
        Handle {
            shared: driver.shared.clone(),
            _alive: Arc::new(alive),
        }
    }

    /// Ticks `driver` every interval on a thread named `name`, until the
    /// last clone of this handle is dropped.
    fn keep_current(&mut self, name: &str, mut driver: Driver<X>) -> Result<()> {
        let dir = driver.watcher.dir().to_owned();
        let interval = driver.watcher.interval();
        self._alive = spawn_ticking(name, interval, move || {
            driver.tick();
        })
        .map_err(|e| Error::io(dir, "cannot start the watching thread", e))?;
        Ok(())
    }
}

impl<X> Handle<X> {
    /// The current item and its version, as one. Lock-free.
    fn current(&self) -> arc_swap::Guard<Arc<Current<X>>> {
        self.shared.load()
    }

    /// The current item. Lock-free, as `Live::get`.
    fn value(&self) -> Arc<X> {
        self.current().value.clone()
    }

    /// The version (`..data` target) the current item came from.
    fn version(&self) -> String {
        self.current().version.clone()
    }
}

/// Options shared by the certificate and trust-store builders.
struct Common<X> {
    warn_before: Duration,
    on_change: Option<OnChange<X>>,
    on_error: Option<OnError>,
}

impl<X> Default for Common<X> {
    fn default() -> Self {
        Common {
            warn_before: DEFAULT_WARN_BEFORE,
            on_change: None,
            on_error: None,
        }
    }
}

/// The watching side: a watcher whose validator parses each version into
/// `X`, and the slot it leaves the parsed item in for this tick.
struct Driver<X> {
    watcher: Watcher,
    accepted: Arc<Mutex<Option<X>>>,
    shared: Arc<ArcSwap<Current<X>>>,
    common: Common<X>,
    /// When the current item comes within `warn_before` of its expiry,
    /// and when it expires: each logged once per version. A tick compares
    /// the clock with these and makes no system call (the clock is read
    /// through the vDSO).
    warn_at: Option<SystemTime>,
    expires_at: Option<SystemTime>,
}

impl<X: Material> Driver<X> {
    /// Reads until the first good version (or `first_within` passes).
    fn start(
        watcher: Watcher,
        parse: Parse<X>,
        mut common: Common<X>,
        first_within: Duration,
    ) -> Result<Driver<X>> {
        let accepted: Arc<Mutex<Option<X>>> = Arc::default();
        let slot = accepted.clone();
        let validator: Validator = Box::new(move |snapshot, _config| {
            let item = parse(snapshot)?;
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(item);
            Ok(())
        });
        let mut watcher = watcher.with_validator(validator);
        let deadline = Instant::now() + first_within;
        let mut last_error = None;
        let (value, mut event) = loop {
            match watcher.check() {
                Some(event) if event.kind != EventKind::Error => {
                    let value = take(&accepted).expect("an accepted version passed the validator");
                    break (Arc::new(value), event);
                }
                Some(mut event) => {
                    last_error = event.error.clone();
                    event.config = None;
                    if let Some(f) = &mut common.on_error {
                        f(&event);
                    }
                }
                None => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::NoConfig {
                    path: watcher.dir().to_owned(),
                    waited: first_within,
                    last_error,
                });
            }
            thread::sleep(left.min(watcher.interval()));
        };
        event.config = Some(Arc::new(describe(&*value)));
        let shared = Arc::new(ArcSwap::from_pointee(Current {
            value: value.clone(),
            version: event.version.clone(),
        }));
        let mut driver = Driver {
            watcher,
            accepted,
            shared,
            common,
            warn_at: None,
            expires_at: None,
        };
        driver.accept(&value, &event);
        Ok(driver)
    }

    /// One check; see [`CertDriver::tick`].
    fn tick(&mut self) -> Option<Event> {
        let event = self.watcher.check();
        let event = event.map(|mut event| {
            // The watcher's config is the keys' text, private key included:
            // never hand it out. An accepted version is described instead.
            event.config = None;
            match (event.kind, take(&self.accepted)) {
                (EventKind::Error, _) => {
                    if let Some(f) = &mut self.common.on_error {
                        f(&event);
                    }
                }
                (_, Some(value)) => {
                    let value = Arc::new(value);
                    event.config = Some(Arc::new(describe(&*value)));
                    self.shared.store(Arc::new(Current {
                        value: value.clone(),
                        version: event.version.clone(),
                    }));
                    self.accept(&value, &event);
                }
                // Not reachable: every good event passed the validator.
                (_, None) => {}
            }
            event
        });
        self.watch_expiry();
        event
    }

    /// After a version became current: its expiry is watched anew, and the
    /// change callback runs.
    fn accept(&mut self, value: &Arc<X>, event: &Event) {
        let not_after = value.certs().iter().map(|c| c.not_after).min();
        self.expires_at = not_after;
        self.warn_at = not_after.map(|t| t.checked_sub(self.common.warn_before).unwrap_or(t));
        self.watch_expiry();
        if let Some(f) = &mut self.common.on_change {
            f(value, event);
        }
    }

    /// Warns once when the current item comes within `warn_before` of its
    /// expiry, and logs an error once when it expires: it keeps serving (a
    /// server with no certificate serves nobody), but renewal has failed.
    fn watch_expiry(&mut self) {
        let (Some(warn_at), Some(expires_at)) = (self.warn_at, self.expires_at) else {
            return;
        };
        let now = SystemTime::now();
        if now < warn_at {
            return;
        }
        let current = self.shared.load();
        let soonest = current
            .value
            .certs()
            .iter()
            .min_by_key(|c| c.not_after)
            .map(|c| c.name())
            .unwrap_or_default();
        if now >= expires_at {
            error!(
                "{}: certificate {soonest} in {} has expired; still serving it until a valid \
                 version arrives",
                self.watcher.dir().display(),
                current.version
            );
            self.expires_at = None;
            self.warn_at = None;
        } else {
            warn!(
                "{}: certificate {soonest} in {} expires at {} (in {}); has renewal failed?",
                self.watcher.dir().display(),
                current.version,
                rfc3339(expires_at),
                humantime::format_duration(Duration::from_secs(
                    expires_at.duration_since(now).unwrap_or_default().as_secs()
                ))
            );
            // Next: the error at expiry.
            self.warn_at = Some(expires_at);
        }
    }
}

fn take<X>(slot: &Mutex<Option<X>>) -> Option<X> {
    slot.lock().unwrap_or_else(PoisonError::into_inner).take()
}

/// An accepted version's event `config`: its certificates, never its key.
fn describe<X: Material>(value: &X) -> Value {
    json!({ "certificates": value.certs().iter().map(CertInfo::to_json).collect::<Vec<_>>() })
}

/// Runs `tick` every `interval` on a thread of its own until every handle
/// holding the returned sender is dropped (its channel then disconnects;
/// nothing is ever sent on it).
fn spawn_ticking(
    name: &str,
    interval: Duration,
    mut tick: impl FnMut() + Send + 'static,
) -> std::io::Result<Arc<mpsc::SyncSender<()>>> {
    let (alive, stopped) = mpsc::sync_channel::<()>(0);
    thread::Builder::new().name(name.into()).spawn(move || {
        while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
            tick();
        }
    })?;
    Ok(Arc::new(alive))
}
