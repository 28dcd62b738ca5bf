//! HTTP(S) transports for the sync engine: `HttpTransport` (blocking, on
//! `ureq`) for the threaded `SyncEngine`, and `AsyncHttpTransport` (on
//! `reqwest`) for the tokio `AsyncSyncEngine`. Both use rustls, the same
//! [`HttpTransportConfig`], the same status table ([`map_status`]), the same
//! batch format (`docs/PROTOCOL.md`, "Batches") and the same [`AuthProvider`].
//!
//! - Request: `POST {base_url}{op.target}` (the method is configurable per
//!   operation kind), the payload as body with `Content-Type:
//!   application/json`, `Idempotency-Key: {op.idempotency_key()}` (the id, or a new key after `Outbox::correct`) so the server can drop
//!   the duplicates an at-least-once delivery sends, and the configured
//!   headers and the provider's credentials. With
//!   [`HttpTransportConfig::batch_target`], one request per batch instead.
//! - Response: mapped to a [`SendResult`](sync_engine::SendResult) by
//!   [`map_status`], on the protocol's table (`sync_protocol::map_status`):
//!   done, retried, permanent, or an outage (502, 503, 504) that uses up no
//!   attempt. No answer at all is `not_sent` (the request never left:
//!   refused, name lookup) or `no_answer` (it may have: reset, timeout).
//! - Results are reported as they arrive (`send_each`), so the engine
//!   records each at once; after a request that got no answer, the rest of
//!   the batch is not tried.
//! - Privacy: this crate logs nothing. Payloads and header values never
//!   appear in a `SendResult`'s error, in an error of this crate or in a
//!   `Debug` output (header values print as `<redacted>`).
//!
//! # Examples
//!
//! ```
//! # #[cfg(feature = "blocking")] {
//! use std::time::Duration;
//! use sync::http::{HttpMethod, HttpTransport, HttpTransportConfig};
//!
//! let transport = HttpTransport::new(HttpTransportConfig {
//!     base_url: "https://api.example.com".into(),
//!     timeout: Duration::from_secs(10),
//!     headers: vec![("Authorization".into(), "Bearer secret-token".into())],
//!     ..HttpTransportConfig::default()
//! }
//! .with_method("profile.update", HttpMethod::Put))?;
//! assert!(!format!("{transport:?}").contains("secret-token"));
//! # }
//! # Ok::<_, sync::http::HttpTransportError>(())
//! ```
//!
//! # Crate features
//!
//! - `blocking` (on by default): `HttpTransport`, on `ureq`.
//! - `async` (off by default): `AsyncHttpTransport`, on `reqwest` and
//!   tokio; turns on `sync-engine`'s `tokio` feature.
//!
//! An async-only application sets `default-features = false, features =
//! ["async"]` and compiles no `ureq`. TLS is rustls with the Mozilla roots
//! (`webpki-roots`), so nothing has to be installed on the system.

#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "async")]
mod async_transport;
mod auth;
mod batch;
mod config;
mod error;
#[cfg(any(feature = "blocking", feature = "async"))]
mod request;
mod status;
#[cfg(feature = "blocking")]
mod transport;

#[cfg(feature = "async")]
#[cfg_attr(docsrs, doc(cfg(feature = "async")))]
pub use async_transport::AsyncHttpTransport;
pub use auth::AuthProvider;
pub use batch::{batch_request, map_batch_response};
pub use config::{HttpMethod, HttpTransportConfig};
pub use error::HttpTransportError;
pub use status::{map_status, parse_retry_after, with_failure_body};
/// The batch wire types (`docs/PROTOCOL.md`, "Batches"), shared with `sync-server`.
pub use sync_protocol::{BatchOperation, BatchRequest, BatchResponse, BatchResult};
#[cfg(feature = "blocking")]
#[cfg_attr(docsrs, doc(cfg(feature = "blocking")))]
pub use transport::HttpTransport;
