//! A [`SyncTransport`](sync_engine::SyncTransport) that sends each operation
//! as one HTTP request, on the blocking client [`ureq`] with rustls.
//!
//! - Request: `POST {base_url}{op.target}` (the method is configurable per
//!   operation kind), the payload as body with `Content-Type:
//!   application/json`, `Idempotency-Key: {op.id}` so the server can drop
//!   the duplicates an at-least-once delivery sends, and the configured
//!   headers (authentication, ...).
//! - Response: mapped to a [`SendResult`](sync_engine::SendResult) by
//!   [`map_status`]; the table is on [`map_status`].
//! - Privacy: this crate logs nothing. Payloads and header values never
//!   appear in a `SendResult`'s error, in an error of this crate or in a
//!   `Debug` output (header values print as `<redacted>`).
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use sync_transport_http::{HttpMethod, HttpTransport, HttpTransportConfig};
//!
//! let transport = HttpTransport::new(HttpTransportConfig {
//!     base_url: "https://api.example.com".into(),
//!     timeout: Duration::from_secs(10),
//!     headers: vec![("Authorization".into(), "Bearer secret-token".into())],
//!     ..HttpTransportConfig::default()
//! }
//! .with_method("profile.update", HttpMethod::Put))?;
//! assert!(!format!("{transport:?}").contains("secret-token"));
//! # Ok::<_, sync_transport_http::HttpTransportError>(())
//! ```
//!
//! # Crate features
//!
//! None. TLS is rustls with the Mozilla roots (`webpki-roots`), so nothing
//! has to be installed on the system.

#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]
#![doc(test(attr(deny(warnings))))]

mod batch;
mod config;
mod error;
mod status;
mod transport;

pub use batch::{BatchOperation, BatchRequest, BatchResponse, BatchResult, map_batch_response};
pub use config::{HttpMethod, HttpTransportConfig};
pub use error::HttpTransportError;
pub use status::{map_status, parse_retry_after};
pub use transport::HttpTransport;
