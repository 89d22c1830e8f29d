//! `--webhook-url`: send the event as JSON to a URL, retrying with capped
//! exponential backoff and jitter. Credentials (URL userinfo, query string,
//! header values) never reach logs, events or error messages, by structure:
//! URLs are shown redacted, and messages are built from the error's kind,
//! never from the request. (Searching messages for each secret would mangle
//! them where a secret is short: `conn***ction fail***d`.)
//!
//! `https://` URLs need the `tls` feature (rustls): the server is verified
//! against Mozilla's roots, bundled so that a `FROM scratch` image has them,
//! or against a CA file (a cluster's own CA, say).

use std::{fmt, path::PathBuf, time::Duration};

use crate::{actions::Round, event::Event};

/// First retry delay; doubled each attempt up to [`BACKOFF_CAP`].
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(10);

/// Why a webhook call failed, by cause: the caller decides by variant
/// (nothing listening, or a 5xx, passes; a 4xx is a refusal). Every
/// message is built from the error's kind, never from the request, so it
/// holds no credentials (the URL appears only redacted).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WebhookError {
    /// No connection: refused, reset, or the host not found. `cause` is
    /// the message (`connection failed: ...`, `host not found`).
    Connect {
        /// What failed, redacted.
        cause: String,
    },
    /// No complete answer within the timeout.
    Timeout {
        /// Which timeout, as the HTTP client names it.
        cause: String,
    },
    /// The server answered with a status that is not accepted.
    Status(u16),
    /// Anything else the HTTP client refused (TLS, protocol, an invalid
    /// request), its message redacted.
    Other(String),
    /// Every attempt failed: the last attempt's error.
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        last: Box<WebhookError>,
    },
    /// Not retried: a newer config or a shutdown superseded the round.
    Superseded(Box<WebhookError>),
}

impl WebhookError {
    /// Whether a later attempt may succeed without a change of settings:
    /// no connection, a timeout, a 5xx, 408 or 429. Other statuses (a 4xx:
    /// wrong path, credentials) and the client's refusals are not.
    pub fn is_transient(&self) -> bool {
        match self {
            WebhookError::Connect { .. } | WebhookError::Timeout { .. } => true,
            WebhookError::Status(status) => *status >= 500 || matches!(status, 408 | 429),
            WebhookError::Other(_) => false,
            WebhookError::GaveUp { last, .. } | WebhookError::Superseded(last) => {
                last.is_transient()
            }
        }
    }

    /// A message for an error of the HTTP client, without the request's
    /// URL (the `display` form replaces it where the client quotes it).
    fn of(e: ureq::Error, url: &str, display: &str) -> Self {
        match e {
            ureq::Error::Io(io) => WebhookError::Connect {
                cause: format!("connection failed: {io}").replace(url, display),
            },
            ureq::Error::Timeout(t) => WebhookError::Timeout {
                cause: format!("timed out ({t})"),
            },
            ureq::Error::HostNotFound => WebhookError::Connect {
                cause: "host not found".into(),
            },
            ureq::Error::ConnectionFailed => WebhookError::Connect {
                cause: "connection failed".into(),
            },
            ureq::Error::BadUri(_) => WebhookError::Other("invalid URL".into()),
            other => WebhookError::Other(other.to_string().replace(url, display)),
        }
    }
}

impl fmt::Display for WebhookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WebhookError::Connect { cause } | WebhookError::Timeout { cause } => f.write_str(cause),
            WebhookError::Status(status) => write!(f, "status {status} not accepted"),
            WebhookError::Other(message) => f.write_str(message),
            WebhookError::GaveUp { attempts, last } => {
                write!(f, "{last} (gave up after {})", super::attempts(*attempts))
            }
            WebhookError::Superseded(last) => write!(
                f,
                "{last} (not retried: a newer config or shutdown superseded it)"
            ),
        }
    }
}

impl std::error::Error for WebhookError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WebhookError::GaveUp { last, .. } | WebhookError::Superseded(last) => Some(last),
            WebhookError::Connect { .. }
            | WebhookError::Timeout { .. }
            | WebhookError::Status(_)
            | WebhookError::Other(_) => None,
        }
    }
}

/// How webhooks are called.
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Extra headers, as (name, value).
    pub headers: Vec<(String, String)>,
    /// Per attempt, from connect to the end of the response.
    pub timeout: Duration,
    /// Accepted status codes; empty means any 2xx.
    pub accept: Vec<u16>,
    /// Retries after a failed attempt.
    pub retries: u32,
    /// How an `https://` server is verified.
    pub tls: TlsVerify,
}

/// How an `https://` webhook's server certificate is verified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsVerify {
    /// Against Mozilla's root certificates (bundled).
    #[default]
    PublicRoots,
    /// Against the CA certificates in this PEM file only.
    CaFile(PathBuf),
    /// Not at all: anyone on the path can read and change the request.
    /// For a test setup only.
    InsecureSkipVerify,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        WebhookOptions {
            method: "POST".into(),
            headers: Vec::new(),
            timeout: Duration::from_secs(5),
            accept: Vec::new(),
            retries: 5,
            tls: TlsVerify::default(),
        }
    }
}

/// One webhook target.
#[derive(Clone)]
pub struct Webhook {
    url: String,
    display: String,
    options: WebhookOptions,
    agent: ureq::Agent,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the raw URL or header values.
        f.debug_struct("Webhook")
            .field("url", &self.display)
            .field("method", &self.options.method)
            .field(
                "headers",
                &self
                    .options
                    .headers
                    .iter()
                    .map(|(n, _)| n)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// A webhook for `url`; checks the URL, method and headers now so that
    /// mistakes are startup errors, not failed reloads later.
    pub fn new(url: &str, options: WebhookOptions) -> Result<Self, String> {
        let display = redact_url(url);
        // Parsed now with the parser the request itself goes through, so
        // that a URL it would refuse (a space in the host, a port past
        // 65535) is a usage error at startup, not a round retried forever.
        let uri: ureq::http::Uri = url
            .parse()
            .map_err(|e| format!("{display}: not a valid URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("{display}: not an http:// or https:// URL")),
        };
        if uri.host().is_none_or(str::is_empty) {
            return Err(format!("{display}: no host"));
        }
        // The parser keeps a port it cannot read as "no port": look.
        let port_text = uri
            .authority()
            .and_then(|a| a.as_str().rsplit_once(':'))
            .map(|(_, p)| p)
            .filter(|p| !p.contains(']'));
        if port_text.is_some_and(|p| !p.is_empty() && p.parse::<u16>().is_err()) {
            return Err(format!(
                "{display}: the port is not a number from 0 to 65535"
            ));
        }
        ureq::http::Method::from_bytes(options.method.as_bytes())
            .map_err(|_| format!("invalid HTTP method {:?}", options.method))?;
        for (name, value) in &options.headers {
            ureq::http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("invalid header name {name:?}"))?;
            ureq::http::HeaderValue::from_str(value)
                .map_err(|_| format!("header {name}: invalid value"))?;
        }
        let config = ureq::Agent::config_builder();
        #[cfg(feature = "tls")]
        let config = config.tls_config(tls_config(&options.tls)?);
        #[cfg(not(feature = "tls"))]
        if https {
            return Err(format!(
                "{display}: https needs a build with the `tls` feature (this one has plain HTTP only)"
            ));
        }
        let _ = https;
        let agent = config
            .timeout_global(Some(options.timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("configmapwatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Webhook {
            url: url.to_owned(),
            display,
            options,
            agent,
        })
    }

    /// The URL with credentials replaced by `***`.
    pub fn display_url(&self) -> &str {
        &self.display
    }

    /// What a command must never be shown in clear: the URL and its
    /// credentials, the header values (as [`Secrets`](super::Secrets)
    /// hides them).
    pub fn secrets(&self) -> Vec<String> {
        let mut secrets = super::Secrets::default();
        secrets.add(super::SecretKind::Url, &self.url);
        for (name, value) in &self.options.headers {
            secrets.add(super::SecretKind::Header, &format!("{name}: {value}"));
        }
        secrets.values().to_vec()
    }

    /// Attempts until accepted, out of retries, or superseded by a newer
    /// config. Returns the number of attempts and the result.
    pub(crate) fn run(&self, event: &Event, round: &Round<'_>) -> (u32, Result<(), WebhookError>) {
        let body = event.to_json_string();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let error = match self.attempt(&body) {
                Ok(()) => return (attempts, Ok(())),
                Err(e) => e,
            };
            if attempts > self.options.retries {
                return (
                    attempts,
                    Err(WebhookError::GaveUp {
                        attempts,
                        last: Box::new(error),
                    }),
                );
            }
            let delay = backoff(attempts);
            log::info!(
                "webhook {}: attempt {attempts} failed: {error}; retrying in {}",
                self.display,
                humantime::format_duration(Duration::from_millis(delay.as_millis() as u64))
            );
            if round.superseded() || !round.pause(delay) {
                return (attempts, Err(WebhookError::Superseded(Box::new(error))));
            }
        }
    }

    /// One GET of the URL, its body parsed as JSON (at most 1 MiB): a
    /// confirmation's look at the target.
    pub(crate) fn get_json(&self) -> Result<serde_json::Value, String> {
        let mut request = ureq::http::Request::builder().method("GET").uri(&self.url);
        for (name, value) in &self.options.headers {
            request = request.header(name, value);
        }
        let request = request.body(()).map_err(|_| "invalid request".to_owned())?;
        let response = self
            .agent
            .run(request)
            .map_err(|e| self.error(e).to_string())?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(format!("status {status}"));
        }
        let text = response
            .into_body()
            .with_config()
            .limit(1 << 20)
            .read_to_string()
            .map_err(|e| format!("cannot read the answer: {}", self.error(e)))?;
        serde_json::from_str(&text).map_err(|e| format!("the answer is not JSON: {e}"))
    }

    /// The HTTP client's error, typed, its message redacted.
    fn error(&self, e: ureq::Error) -> WebhookError {
        WebhookError::of(e, &self.url, &self.display)
    }

    fn attempt(&self, body: &str) -> Result<(), WebhookError> {
        let mut request = ureq::http::Request::builder()
            .method(self.options.method.as_str())
            .uri(&self.url)
            .header("content-type", "application/json");
        for (name, value) in &self.options.headers {
            request = request.header(name, value);
        }
        let request = request
            .body(body.to_owned())
            .map_err(|_| WebhookError::Other("invalid request".into()))?;
        let response = self.agent.run(request).map_err(|e| self.error(e))?;
        let status = response.status().as_u16();
        let accepted = if self.options.accept.is_empty() {
            (200..300).contains(&status)
        } else {
            self.options.accept.contains(&status)
        };
        if accepted {
            Ok(())
        } else {
            Err(WebhookError::Status(status))
        }
    }
}

/// The TLS settings for `verify`; a CA file is read now, so that a wrong
/// path is a startup error.
#[cfg(feature = "tls")]
fn tls_config(verify: &TlsVerify) -> Result<ureq::tls::TlsConfig, String> {
    use ureq::tls::{PemItem, RootCerts, TlsConfig};
    let builder = TlsConfig::builder();
    Ok(match verify {
        TlsVerify::PublicRoots => builder.root_certs(RootCerts::WebPki),
        TlsVerify::InsecureSkipVerify => builder.disable_verification(true),
        TlsVerify::CaFile(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("webhook CA file {}: {e}", path.display()))?;
            let mut certs = Vec::new();
            for item in ureq::tls::parse_pem(&pem) {
                match item {
                    Ok(PemItem::Certificate(cert)) => certs.push(cert),
                    Ok(_) => {}
                    Err(e) => {
                        return Err(format!("webhook CA file {}: {e}", path.display()));
                    }
                }
            }
            if certs.is_empty() {
                return Err(format!(
                    "webhook CA file {}: no PEM certificate in it",
                    path.display()
                ));
            }
            builder.root_certs(RootCerts::new_with_certs(&certs))
        }
    }
    .build())
}

/// `base * 2^(attempt-1)`, capped, with jitter: uniform in [d/2, d].
fn backoff(attempt: u32) -> Duration {
    let d = BACKOFF_BASE
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(BACKOFF_CAP);
    d / 2 + d.mul_f64(fastrand::f64() / 2.0)
}

/// The URL with any userinfo and query string replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (auth, path) = rest.split_at(host_end);
    let host = match auth.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => auth.to_owned(),
    };
    let path = match path.split_once('?') {
        Some((p, _)) => format!("{p}?***"),
        None => path.to_owned(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{host}{path}"),
        None => format!("{host}{path}"),
    }
}

/// Parses `Name: value`.
pub fn parse_header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| "expected 'Name: value'".to_owned())?;
    let name = name.trim();
    if name.is_empty() {
        return Err("expected 'Name: value'".into());
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("http://u:p@h:1/x?token=t#f"),
            "http://***@h:1/x?***"
        );
        assert_eq!(redact_url("http://h/-/reload"), "http://h/-/reload");
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        for attempt in 1..40 {
            let full = BACKOFF_BASE
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(BACKOFF_CAP);
            let d = backoff(attempt);
            assert!(d >= full / 2 && d <= full, "{attempt}: {d:?}");
        }
    }

    #[test]
    fn bad_urls_methods_and_headers_fail_early() {
        let o = WebhookOptions::default;
        assert!(Webhook::new("ftp://h/", o()).is_err());
        // Without the tls feature, https is refused at startup, saying why.
        assert_eq!(
            Webhook::new("https://h/", o()).is_ok(),
            cfg!(feature = "tls")
        );
        #[cfg(feature = "tls")]
        {
            let missing = WebhookOptions {
                tls: TlsVerify::CaFile("/nonexistent/ca.pem".into()),
                ..o()
            };
            let e = Webhook::new("https://h/", missing).unwrap_err();
            assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        }
        assert!(Webhook::new("http:///x", o()).is_err());
        for bad in [
            "http://exa mple/",
            "http://h:99999/",
            "http://h/a b",
            "http://",
        ] {
            let e = Webhook::new(bad, o()).unwrap_err();
            assert!(e.starts_with("http://"), "{bad}: {e}");
        }
        assert!(Webhook::new("http://[::1]:8080/-/reload?x=1", o()).is_ok());
        let bad_method = WebhookOptions {
            method: "BAD METHOD".into(),
            ..o()
        };
        assert!(Webhook::new("http://h/", bad_method).is_err());
        assert!(parse_header("NoColon").is_err());
        assert_eq!(parse_header("A: b: c"), Ok(("A".into(), "b: c".into())));
    }

    #[test]
    fn short_secrets_do_not_mangle_messages() {
        let hook = Webhook::new("http://app:e@127.0.0.1:1/x", WebhookOptions::default()).unwrap();
        let error = hook.attempt("{}").unwrap_err();
        assert!(matches!(error, WebhookError::Connect { .. }), "{error:?}");
        assert!(error.is_transient(), "{error:?}");
        let message = error.to_string();
        assert!(message.starts_with("connection"), "{message}");
        assert!(!message.contains("***"), "{message}");
        assert!(!format!("{hook:?}").contains("app:e"));
    }

    /// A server on 127.0.0.1 answering each request with the next status.
    fn answering(statuses: &'static [u16]) -> String {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let url = format!("http://{}/-/reload", server.server_addr());
        std::thread::spawn(move || {
            for &status in statuses {
                let Ok(request) = server.recv() else { return };
                let _ = request.respond(tiny_http::Response::empty(status));
            }
        });
        url
    }

    #[test]
    fn a_status_is_a_refusal_or_a_passing_fault_by_its_code() {
        let url = answering(&[404, 503, 429]);
        let hook = Webhook::new(&url, WebhookOptions::default()).unwrap();
        let errors: Vec<_> = (0..3).map(|_| hook.attempt("{}").unwrap_err()).collect();
        assert_eq!(
            errors,
            [
                WebhookError::Status(404),
                WebhookError::Status(503),
                WebhookError::Status(429)
            ]
        );
        assert_eq!(
            errors
                .iter()
                .map(WebhookError::is_transient)
                .collect::<Vec<_>>(),
            [false, true, true]
        );
        assert_eq!(errors[0].to_string(), "status 404 not accepted");
        let gave_up = WebhookError::GaveUp {
            attempts: 1,
            last: Box::new(errors[1].clone()),
        };
        assert_eq!(
            gave_up.to_string(),
            "status 503 not accepted (gave up after 1 attempt)"
        );
        assert!(gave_up.is_transient());
        let superseded = WebhookError::Superseded(Box::new(errors[0].clone()));
        assert!(
            superseded
                .to_string()
                .ends_with("(not retried: a newer config or shutdown superseded it)")
        );
        assert!(!superseded.is_transient());
    }

    #[test]
    fn a_server_that_never_answers_is_a_timeout() {
        // Accepted by the kernel's backlog, never answered.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://user:secret@{}/x", silent.local_addr().unwrap());
        let options = WebhookOptions {
            timeout: Duration::from_millis(200),
            ..WebhookOptions::default()
        };
        let error = Webhook::new(&url, options)
            .unwrap()
            .attempt("{}")
            .unwrap_err();
        assert!(matches!(error, WebhookError::Timeout { .. }), "{error:?}");
        assert!(error.is_transient());
        let message = error.to_string();
        assert!(message.starts_with("timed out ("), "{message}");
        assert!(!message.contains("secret"), "{message}");
    }
}
