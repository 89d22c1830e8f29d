//! The server side: [`LiveCert`], a certificate and private key from a
//! Secret volume as rustls' `ResolvesServerCert`, and [`SniCerts`], several
//! of them chosen by server name.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, mpsc},
    time::{Duration, SystemTime},
};

use rustls::{
    crypto::CryptoProvider,
    pki_types::{PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use super::{
    CertInfo, Common, Driver, Handle, Material, bytes, pem_certs, provider, refused, spawn_ticking,
};
use crate::{Error, Event, Format, Result, Selector, Snapshot, WatchOptions, Watcher};

/// One accepted certificate pair: what rustls serves, and what the leaf
/// says about itself.
#[derive(Debug)]
#[non_exhaustive]
pub struct ServerCert {
    /// The chain and signing key, as rustls takes them.
    pub certified_key: Arc<CertifiedKey>,
    /// The leaf certificate's subject, SANs, serial and validity.
    pub leaf: CertInfo,
}

impl Material for ServerCert {
    fn certs(&self) -> &[CertInfo] {
        std::slice::from_ref(&self.leaf)
    }
}

impl ServerCert {
    /// Builds and checks a pair from PEM: the chain (leaf first) and the
    /// key (PKCS#1, PKCS#8 or SEC1; RSA, ECDSA or Ed25519). Refused when
    /// either does not parse, the key does not match the leaf, or the leaf
    /// is not valid at `now`. `cert_key` and `key_key` name the keys in
    /// messages.
    pub fn from_pem(
        cert_key: &str,
        chain_pem: &[u8],
        key_key: &str,
        key_pem: &[u8],
        provider: &CryptoProvider,
        now: SystemTime,
    ) -> Result<ServerCert> {
        let chain = pem_certs(cert_key, chain_pem)?;
        let leaf = CertInfo::from_der(&chain[0]).map_err(|e| refused(cert_key, e))?;
        let der = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
            refused(
                key_key,
                match e {
                    rustls::pki_types::pem::Error::NoItemsFound => {
                        "holds no PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE \
                         KEY; encrypted keys are not supported)"
                            .to_owned()
                    }
                    e => format!("bad PEM: {e}"),
                },
            )
        })?;
        let signing = provider
            .key_provider
            .load_private_key(der)
            .map_err(|e| refused(key_key, format!("unusable private key: {e}")))?;
        let certified = CertifiedKey::new(chain, signing);
        // rustls' own comparison of the key's public half with the leaf's
        // SubjectPublicKeyInfo. A key that cannot tell its public half
        // (some hardware-backed providers) cannot be checked, so it is
        // refused rather than trusted.
        certified.keys_match().map_err(|e| {
            refused(
                key_key,
                format!(
                    "does not match the certificate {} in {cert_key}: {e}",
                    leaf.name()
                ),
            )
        })?;
        leaf.check_valid_at(now).map_err(|e| refused(cert_key, e))?;
        Ok(ServerCert {
            certified_key: Arc::new(certified),
            leaf,
        })
    }
}

/// A server certificate kept in step with a Secret volume: rustls asks it
/// for the certificate on each handshake and gets the current pair, read
/// without a lock. Cheap to clone; the watching thread stops when the last
/// clone (and the last rustls config holding one) is dropped.
///
/// ```no_run
/// # fn main() -> configmapwatch::Result<()> {
/// use std::{sync::Arc, time::Duration};
/// use configmapwatch::tls::LiveCert;
///
/// let cert = LiveCert::watch("/etc/tls").start(Duration::from_secs(30))?;
/// let config = rustls::ServerConfig::builder()
///     .with_no_client_auth()
///     .with_cert_resolver(Arc::new(cert));
/// # drop(config); Ok(()) }
/// ```
#[derive(Clone)]
pub struct LiveCert(Handle<ServerCert>);

impl std::fmt::Debug for LiveCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let current = self.0.current();
        f.debug_struct("LiveCert")
            .field("version", &current.version)
            .field("leaf", &current.value.leaf)
            .finish_non_exhaustive()
    }
}

impl LiveCert {
    /// A builder watching `dir` for `tls.crt` and `tls.key` (the
    /// `kubernetes.io/tls` Secret type), every second.
    pub fn watch(dir: impl Into<PathBuf>) -> LiveCertBuilder {
        LiveCertBuilder::new(WatchOptions::new(dir))
    }

    /// A builder over complete watch options (the selector is set from
    /// the key names).
    pub fn builder(options: WatchOptions) -> LiveCertBuilder {
        LiveCertBuilder::new(options)
    }

    /// The current pair. Lock-free, as `Live::get`.
    pub fn get(&self) -> Arc<ServerCert> {
        self.0.value()
    }

    /// The current chain and key, as rustls takes them. Lock-free.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.0.current().value.certified_key.clone()
    }

    /// The version (`..data` target) the current pair came from.
    pub fn version(&self) -> String {
        self.0.version()
    }
}

impl ResolvesServerCert for LiveCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certified_key())
    }
}

/// Configures and starts a [`LiveCert`].
#[must_use = "a LiveCertBuilder does nothing until start()"]
pub struct LiveCertBuilder {
    options: WatchOptions,
    cert_key: String,
    key_key: String,
    provider: Option<Arc<CryptoProvider>>,
    common: Common<ServerCert>,
}

impl LiveCertBuilder {
    fn new(options: WatchOptions) -> Self {
        LiveCertBuilder {
            options,
            cert_key: "tls.crt".into(),
            key_key: "tls.key".into(),
            provider: None,
            common: Common::default(),
        }
    }

    /// The key holding the PEM chain, leaf first (default `tls.crt`).
    pub fn certificate(mut self, key: impl Into<String>) -> Self {
        self.cert_key = key.into();
        self
    }

    /// The key holding the PEM private key (default `tls.key`).
    pub fn private_key(mut self, key: impl Into<String>) -> Self {
        self.key_key = key.into();
        self
    }

    /// Time between checks (default 1 s). An idle check is one `readlink`.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.options.interval = interval;
        self
    }

    /// Warn when the certificate is this close to its expiry (default
    /// [`DEFAULT_WARN_BEFORE`](super::DEFAULT_WARN_BEFORE), 7 days).
    pub fn warn_before(mut self, window: Duration) -> Self {
        self.common.warn_before = window;
        self
    }

    /// The crypto provider that loads keys (default: the process default,
    /// else ring).
    pub fn provider(mut self, provider: Arc<CryptoProvider>) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Called on the watching thread after each accepted pair (the first
    /// included), with the pair and its event (whose `config` describes the
    /// certificate). Keep it short: the next check waits for it.
    pub fn on_change(mut self, f: impl FnMut(&Arc<ServerCert>, &Event) + Send + 'static) -> Self {
        self.common.on_change = Some(Box::new(f));
        self
    }

    /// Called on the watching thread for each refused version; the event
    /// names the key and the reason.
    pub fn on_error(mut self, f: impl FnMut(&Event) + Send + 'static) -> Self {
        self.common.on_error = Some(Box::new(f));
        self
    }

    /// Reads the volume until the first good pair (up to `first_within`;
    /// [`Error::NoConfig`] naming the last refusal otherwise), then keeps
    /// it current on a thread of its own.
    pub fn start(self, first_within: Duration) -> Result<LiveCert> {
        let driver = self.driver(first_within)?;
        let mut handle = Handle::of(&driver);
        handle.keep_current("configmapwatch-cert", driver)?;
        Ok(LiveCert(handle))
    }

    /// The first good pair and its driver, without a thread: call
    /// [`CertDriver::tick`] every interval from your own loop.
    pub fn start_driven(self, first_within: Duration) -> Result<(LiveCert, CertDriver)> {
        let driver = self.driver(first_within)?;
        Ok((LiveCert(Handle::of(&driver)), CertDriver(driver)))
    }

    fn driver(self, first_within: Duration) -> Result<Driver<ServerCert>> {
        let (cert_key, key_key) = (self.cert_key, self.key_key);
        let options = self.options.with_selector(
            Selector::keys([cert_key.clone(), key_key.clone()]).with_format(Format::Text),
        );
        let provider = provider(self.provider);
        let parse = Box::new(move |snapshot: &Snapshot| {
            ServerCert::from_pem(
                &cert_key,
                bytes(snapshot, &cert_key)?,
                &key_key,
                bytes(snapshot, &key_key)?,
                &provider,
                SystemTime::now(),
            )
        });
        Driver::start(Watcher::new(options), parse, self.common, first_within)
    }
}

/// The watching side of a [`LiveCert`] from
/// [`LiveCertBuilder::start_driven`].
pub struct CertDriver(Driver<ServerCert>);

impl std::fmt::Debug for CertDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CertDriver").field(&self.0.watcher).finish()
    }
}

impl CertDriver {
    /// One check: an idle tick is the watcher's (one `readlink`, no
    /// allocation) and a clock comparison for the expiry warning; a new
    /// good pair becomes current at once. Returns the event, if any, after
    /// the callbacks have seen it.
    pub fn tick(&mut self) -> Option<Event> {
        self.0.tick()
    }

    /// The time between checks the options asked for.
    pub fn interval(&self) -> Duration {
        self.0.watcher.interval()
    }
}

/// Several certificates in one resolver, chosen by the name the client
/// asks for (SNI): one Secret volume per name, all watched by one thread.
///
/// ```no_run
/// # fn main() -> configmapwatch::Result<()> {
/// use std::{sync::Arc, time::Duration};
/// use configmapwatch::tls::{LiveCert, SniCerts};
///
/// let certs = SniCerts::builder()
///     .name("api.example.com", LiveCert::watch("/etc/tls/api"))
///     .name("*.apps.example.com", LiveCert::watch("/etc/tls/apps"))
///     .fallback(LiveCert::watch("/etc/tls/default"))
///     .start(Duration::from_secs(30))?;
/// let config = rustls::ServerConfig::builder()
///     .with_no_client_auth()
///     .with_cert_resolver(Arc::new(certs));
/// # drop(config); Ok(()) }
/// ```
#[derive(Clone)]
pub struct SniCerts {
    by_name: Arc<HashMap<String, LiveCert>>,
    fallback: Option<LiveCert>,
    _alive: Arc<mpsc::SyncSender<()>>,
}

impl std::fmt::Debug for SniCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniCerts")
            .field("names", &self.by_name.keys().collect::<Vec<_>>())
            .field("fallback", &self.fallback.is_some())
            .finish_non_exhaustive()
    }
}

impl SniCerts {
    /// An empty builder.
    pub fn builder() -> SniCertsBuilder {
        SniCertsBuilder::default()
    }

    /// The certificate for `name`: an exact match, else a `*.` wildcard
    /// for its parent domain, else the fallback.
    pub fn get(&self, name: Option<&str>) -> Option<&LiveCert> {
        let found = name.and_then(|name| {
            // DNS names are case-insensitive; rustls hands SNI over as
            // sent. No allocation when it is already lowercase.
            let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
                std::borrow::Cow::Owned(name.to_ascii_lowercase())
            } else {
                std::borrow::Cow::Borrowed(name)
            };
            self.by_name.get(name.as_ref()).or_else(|| {
                let parent = name.split_once('.')?.1;
                self.by_name.get(&format!("*.{parent}"))
            })
        });
        found.or(self.fallback.as_ref())
    }
}

impl ResolvesServerCert for SniCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.get(hello.server_name()).map(LiveCert::certified_key)
    }
}

/// Configures and starts [`SniCerts`].
#[derive(Default)]
#[must_use = "an SniCertsBuilder does nothing until start()"]
pub struct SniCertsBuilder {
    names: Vec<(String, LiveCertBuilder)>,
    fallback: Option<LiveCertBuilder>,
}

impl SniCertsBuilder {
    /// Serves `cert` to clients asking for `name` (case-insensitive; `*.`
    /// for any one label under a domain).
    pub fn name(mut self, name: impl Into<String>, cert: LiveCertBuilder) -> Self {
        self.names.push((name.into().to_ascii_lowercase(), cert));
        self
    }

    /// Serves `cert` to clients asking for no name, or one not listed.
    /// Without it, such handshakes are refused.
    pub fn fallback(mut self, cert: LiveCertBuilder) -> Self {
        self.fallback = Some(cert);
        self
    }

    /// Reads each volume until its first good pair (all within
    /// `first_within`), then watches them all on one thread, checking at
    /// the shortest of their intervals.
    pub fn start(self, first_within: Duration) -> Result<SniCerts> {
        let deadline = std::time::Instant::now() + first_within;
        let left = || deadline.saturating_duration_since(std::time::Instant::now());
        let mut drivers = Vec::new();
        let mut by_name = HashMap::new();
        for (name, builder) in self.names {
            let (live, driver) = builder.start_driven(left())?;
            drivers.push(driver);
            by_name.insert(name, live);
        }
        let fallback = match self.fallback {
            Some(builder) => {
                let (live, driver) = builder.start_driven(left())?;
                drivers.push(driver);
                Some(live)
            }
            None => None,
        };
        let interval = drivers
            .iter()
            .map(CertDriver::interval)
            .min()
            .unwrap_or(Duration::from_secs(1));
        let alive = spawn_ticking("configmapwatch-sni", interval, move || {
            for driver in &mut drivers {
                driver.tick();
            }
        })
        .map_err(|e| Error::io(PathBuf::new(), "cannot start the watching thread", e))?;
        Ok(SniCerts {
            by_name: Arc::new(by_name),
            fallback,
            _alive: alive,
        })
    }
}
