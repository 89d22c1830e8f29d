//! The trust side: [`LiveRoots`], a CA bundle from a volume (`ca.crt` by
//! default) as a rustls root store, with verifiers that always check
//! against the current bundle: [`LiveServerVerifier`] for clients,
//! [`LiveClientVerifier`] for servers that ask for client certificates.
//!
//! rustls builds its WebPKI verifiers over a fixed `RootCertStore`. So each
//! accepted bundle gets its own verifiers, built once, and the live ones
//! delegate every call to the current pair: a handshake uses one bundle
//! from start to end, and a rotation costs no handshake anything.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use log::warn;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime},
    server::{
        WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};

use super::{CertInfo, Common, Driver, Handle, Material, bytes, pem_certs, provider, refused};
use crate::{Event, Format, Result, Selector, Snapshot, WatchOptions, Watcher};

/// One accepted CA bundle: the root store and the verifiers built on it.
#[non_exhaustive]
pub struct TrustBundle {
    /// The trust anchors.
    pub roots: Arc<RootCertStore>,
    /// Each CA certificate of the bundle, in order.
    pub certs: Vec<CertInfo>,
    server: Arc<WebPkiServerVerifier>,
    client: Arc<dyn ClientCertVerifier>,
}

impl std::fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustBundle")
            .field("certs", &self.certs)
            .finish_non_exhaustive()
    }
}

impl Material for TrustBundle {
    fn certs(&self) -> &[CertInfo] {
        &self.certs
    }
}

impl TrustBundle {
    /// Builds a bundle from PEM (`key` names it in messages). Refused when
    /// it holds no certificate, one does not parse or cannot be a trust
    /// anchor, or none is valid at `now`. An expired or not-yet-valid CA
    /// beside valid ones is kept with a warning: bundles carry the old CA
    /// beside the new one while a CA rotates.
    pub fn from_pem(
        key: &str,
        pem: &[u8],
        provider: &Arc<CryptoProvider>,
        now: SystemTime,
    ) -> Result<TrustBundle> {
        let ders = pem_certs(key, pem)?;
        let mut roots = RootCertStore::empty();
        let mut certs = Vec::with_capacity(ders.len());
        for (n, der) in ders.into_iter().enumerate() {
            let info = CertInfo::from_der(&der)
                .map_err(|e| refused(key, format!("certificate {}: {e}", n + 1)))?;
            roots.add(der).map_err(|e| {
                refused(
                    key,
                    format!(
                        "certificate {} {} is not a usable trust anchor: {e}",
                        n + 1,
                        info.name()
                    ),
                )
            })?;
            certs.push(info);
        }
        let invalid: Vec<String> = certs
            .iter()
            .filter_map(|c| c.check_valid_at(now).err())
            .collect();
        if invalid.len() == certs.len() {
            return Err(refused(
                key,
                format!("no CA is valid now: {}", invalid.join("; ")),
            ));
        }
        for why in &invalid {
            warn!("key {key}: {why}; kept beside the valid CA(s) of the bundle");
        }
        let roots = Arc::new(roots);
        let server = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| refused(key, format!("no server verifier: {e}")))?;
        let client = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| refused(key, format!("no client verifier: {e}")))?;
        Ok(TrustBundle {
            roots,
            certs,
            server,
            client,
        })
    }
}

/// A CA bundle kept in step with a volume. Cheap to clone; the watching
/// thread stops when the last clone (and the last verifier) is dropped.
///
/// ```no_run
/// # fn main() -> configmapwatch::Result<()> {
/// use std::{sync::Arc, time::Duration};
/// use configmapwatch::tls::{LiveCert, LiveRoots};
///
/// // A client that trusts whatever ca.crt holds now.
/// let roots = LiveRoots::watch("/etc/ca").start(Duration::from_secs(30))?;
/// let client = rustls::ClientConfig::builder()
///     .dangerous() // how rustls takes a verifier of one's own
///     .with_custom_certificate_verifier(roots.server_verifier())
///     .with_no_client_auth();
///
/// // A server that asks clients for a certificate signed by it (mTLS).
/// let cert = LiveCert::watch("/etc/tls").start(Duration::from_secs(30))?;
/// let server = rustls::ServerConfig::builder()
///     .with_client_cert_verifier(roots.client_verifier())
///     .with_cert_resolver(Arc::new(cert));
/// # drop((client, server)); Ok(()) }
/// ```
#[derive(Clone)]
pub struct LiveRoots(Handle<TrustBundle>);

impl std::fmt::Debug for LiveRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let current = self.0.current();
        f.debug_struct("LiveRoots")
            .field("version", &current.version)
            .field("certs", &current.value.certs)
            .finish_non_exhaustive()
    }
}

impl LiveRoots {
    /// A builder watching `dir` for `ca.crt`, every second.
    pub fn watch(dir: impl Into<PathBuf>) -> LiveRootsBuilder {
        LiveRootsBuilder::new(WatchOptions::new(dir))
    }

    /// A builder over complete watch options.
    pub fn builder(options: WatchOptions) -> LiveRootsBuilder {
        LiveRootsBuilder::new(options)
    }

    /// The current bundle. Lock-free, as `Live::get`.
    pub fn get(&self) -> Arc<TrustBundle> {
        self.0.value()
    }

    /// The current root store: a snapshot, for APIs that take a fixed one
    /// (it does not follow later versions; the verifiers do).
    pub fn roots(&self) -> Arc<RootCertStore> {
        self.get().roots.clone()
    }

    /// The version (`..data` target) the current bundle came from.
    pub fn version(&self) -> String {
        self.0.version()
    }

    /// Verifies servers against the current bundle, for a rustls client
    /// (`ClientConfig::builder().dangerous().with_custom_certificate_verifier`).
    /// It keeps the watching going while a config holds it.
    pub fn server_verifier(&self) -> Arc<LiveServerVerifier> {
        Arc::new(LiveServerVerifier(self.clone()))
    }

    /// Verifies client certificates against the current bundle, for an
    /// mTLS server (`ServerConfig::builder().with_client_cert_verifier`):
    /// every client must present one.
    pub fn client_verifier(&self) -> Arc<LiveClientVerifier> {
        Arc::new(LiveClientVerifier(self.clone()))
    }
}

/// The [`ServerCertVerifier`] of a [`LiveRoots`]: rustls' WebPKI checks
/// against whichever bundle is current.
#[derive(Debug, Clone)]
pub struct LiveServerVerifier(LiveRoots);

impl ServerCertVerifier for LiveServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        self.0.get().server.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .get()
            .server
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .get()
            .server
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.get().server.supported_verify_schemes()
    }
}

/// The [`ClientCertVerifier`] of a [`LiveRoots`]: rustls' WebPKI checks of
/// client certificates against whichever bundle is current. It sends no
/// CA names in its certificate request (they would have to outlive a
/// rotation); clients then offer the certificate they have.
#[derive(Debug, Clone)]
pub struct LiveClientVerifier(LiveRoots);

impl ClientCertVerifier for LiveClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        self.0
            .get()
            .client
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .get()
            .client
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .get()
            .client
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.get().client.supported_verify_schemes()
    }
}

/// Configures and starts a [`LiveRoots`].
#[must_use = "a LiveRootsBuilder does nothing until start()"]
pub struct LiveRootsBuilder {
    options: WatchOptions,
    key: String,
    provider: Option<Arc<CryptoProvider>>,
    common: Common<TrustBundle>,
}

impl LiveRootsBuilder {
    fn new(options: WatchOptions) -> Self {
        LiveRootsBuilder {
            options,
            key: "ca.crt".into(),
            provider: None,
            common: Common::default(),
        }
    }

    /// The key holding the PEM bundle (default `ca.crt`).
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = key.into();
        self
    }

    /// Time between checks (default 1 s).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.options.interval = interval;
        self
    }

    /// Warn when a CA of the bundle is this close to its expiry (default 7
    /// days).
    pub fn warn_before(mut self, window: Duration) -> Self {
        self.common.warn_before = window;
        self
    }

    /// The crypto provider the verifiers use (default: the process
    /// default, else ring).
    pub fn provider(mut self, provider: Arc<CryptoProvider>) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Called on the watching thread after each accepted bundle (the first
    /// included).
    pub fn on_change(mut self, f: impl FnMut(&Arc<TrustBundle>, &Event) + Send + 'static) -> Self {
        self.common.on_change = Some(Box::new(f));
        self
    }

    /// Called on the watching thread for each refused version.
    pub fn on_error(mut self, f: impl FnMut(&Event) + Send + 'static) -> Self {
        self.common.on_error = Some(Box::new(f));
        self
    }

    /// Reads the volume until the first good bundle (up to
    /// `first_within`), then keeps it current on a thread of its own.
    pub fn start(self, first_within: Duration) -> Result<LiveRoots> {
        let driver = self.driver(first_within)?;
        let mut handle = Handle::of(&driver);
        handle.keep_current("configmapwatch-roots", driver)?;
        Ok(LiveRoots(handle))
    }

    fn driver(self, first_within: Duration) -> Result<Driver<TrustBundle>> {
        let key = self.key;
        let options = self
            .options
            .with_selector(Selector::key(key.clone()).with_format(Format::Text));
        let provider = provider(self.provider);
        let parse = Box::new(move |snapshot: &Snapshot| {
            TrustBundle::from_pem(&key, bytes(snapshot, &key)?, &provider, SystemTime::now())
        });
        Driver::start(Watcher::new(options), parse, self.common, first_within)
    }
}
