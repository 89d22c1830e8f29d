//! `configmapwatch_certificate_expiry_seconds{dir,key,subject,serial}`
//! (features `serve` and `rustls`): the end of validity, in Unix seconds,
//! of every certificate in a watched text key, so that Prometheus can
//! alert on `configmapwatch_certificate_expiry_seconds - time() < 7 * 86400`
//! before a renewal that failed turns into an outage.
//!
//! A program reloaded by the tool (nginx, HAProxy, a Go server) says
//! nothing about the certificate it serves; the tool has the same bytes in
//! hand when it accepts a version, so it can. Which keys: any text key
//! (`--format text`, or `--all-keys` for keys of no known format) holding
//! a PEM `CERTIFICATE` block: `tls.crt`, `ca.crt`, a bundle (one series
//! per certificate in it). Nothing here refuses a version: an unreadable
//! certificate is logged and has no series; refusing is `--validate-exec`'s
//! job.

use std::sync::Mutex;

use log::warn;
use prometheus::{GaugeVec, Opts, Registry};
use rustls::pki_types::{CertificateDer, pem::PemObject};
use serde_json::Value;

use crate::tls::CertInfo;

/// What a text key must hold to be read as certificates.
const PEM_CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----";

/// The gauge, and the label sets each directory last exported.
#[derive(Debug)]
pub(super) struct CertExpiry {
    gauge: GaugeVec,
}

/// The label values of one series: dir, key, subject, serial.
pub(super) type Labels = [String; 4];

impl CertExpiry {
    pub(super) fn register(registry: &Registry) -> Self {
        let gauge = GaugeVec::new(
            Opts::new(
                "configmapwatch_certificate_expiry_seconds",
                "When a certificate in a watched key stops being valid (its notAfter, Unix time), for the version accepted last.",
            ),
            &["dir", "key", "subject", "serial"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(gauge.clone()))
            .expect("unique metric");
        CertExpiry { gauge }
    }

    /// Replaces `dir`'s series (in `exported`) with those of the
    /// certificates in `config`, the config of a version just accepted.
    /// `single_key` names a config that is one key's text (one `--file`).
    pub(super) fn update(
        &self,
        dir: &str,
        single_key: Option<&str>,
        config: &Value,
        exported: &Mutex<Vec<Labels>>,
    ) {
        let mut exported = exported.lock().unwrap_or_else(|e| e.into_inner());
        // A certificate gone from the volume (rotated, its key removed)
        // must not linger: an alert would fire on one no longer served.
        for labels in exported.drain(..) {
            let _ = self
                .gauge
                .remove_label_values(&labels.each_ref().map(String::as_str));
        }
        for (key, text) in text_keys(config, single_key) {
            if !text.contains(PEM_CERTIFICATE) {
                continue;
            }
            for (n, der) in CertificateDer::pem_slice_iter(text.as_bytes()).enumerate() {
                let info = der
                    .map_err(|e| format!("bad PEM: {e}"))
                    .and_then(|der| CertInfo::from_der(&der));
                let info = match info {
                    Ok(info) => info,
                    Err(e) => {
                        warn!(
                            "{dir}: key {key}: certificate {}: {e} (no expiry metric for it)",
                            n + 1
                        );
                        continue;
                    }
                };
                let labels: Labels = [dir.to_owned(), key.to_owned(), info.subject, info.serial];
                let seconds = info
                    .not_after
                    .duration_since(std::time::SystemTime::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                self.gauge
                    .with_label_values(&labels.each_ref().map(String::as_str))
                    .set(seconds);
                exported.push(labels);
            }
        }
    }
}

/// The text keys of a config: each string of an object of keys (several
/// `--file`, or `--all-keys`), or the string that is the one key's text.
fn text_keys<'a>(config: &'a Value, single_key: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    match (config, single_key) {
        (Value::String(text), Some(key)) => vec![(key, text.as_str())],
        (Value::Object(keys), None) => keys
            .iter()
            .filter_map(|(key, value)| Some((key.as_str(), value.as_str()?)))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_text_keys_are_candidates() {
        let config = json!({"tls.crt": "pem", "app.json": {"a": 1}, "n": 2});
        assert_eq!(text_keys(&config, None), [("tls.crt", "pem")]);
        assert_eq!(
            text_keys(&json!("pem"), Some("ca.crt")),
            [("ca.crt", "pem")]
        );
        // One key parsed as JSON that happens to be an object: no key names.
        assert!(text_keys(&json!({"a": "b"}), Some("config.json")).is_empty());
    }
}
