//! A sidecar's window for production: `/metrics` in the Prometheus text
//! format, `/healthz` (the poll loop is ticking), `/readyz` (the pod can
//! serve with a known good config: see [`Status`]'s module docs) and
//! `/status` (JSON: per directory, the version on disk and the one applied,
//! the last error and the retry pending), on a small HTTP listener of its
//! own.
//!
//! Nothing here is on the poll path: the loop only bumps its
//! [`Heartbeat`](crate::Heartbeat) atomics; events and action results are
//! recorded by the handler that already receives them, and the heartbeats
//! are read when someone scrapes.

#[cfg(feature = "rustls")]
mod certs;
mod http;
mod status;

pub use http::{Server, ServerOptions};
pub use status::{Health, Readiness, Status};
