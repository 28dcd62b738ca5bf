//! [`HttpTransportError`], the one error type of this crate: a configuration
//! that cannot work. Failed sends are not errors but
//! [`SendResult`](sync_engine::SendResult)s.

/// A configuration `HttpTransport::new` or `AsyncHttpTransport::new` refuses.
/// Never contains a header value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpTransportError {
    /// `base_url` is not an absolute `http://` or `https://` URL.
    #[error("invalid base_url {url:?}: {reason}")]
    InvalidBaseUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A configured header has an invalid name or value, or is one this
    /// transport sets itself.
    #[error("invalid header {name:?}: {reason}")]
    InvalidHeader {
        /// The header's name (its value is never shown).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The async HTTP client could not be built (its TLS setup failed).
    #[error("cannot build the HTTP client")]
    Client,
    /// `batch_target` does not make a valid URL after `base_url`.
    #[error("invalid batch_target {target:?}: not a valid URL after base_url")]
    InvalidBatchTarget {
        /// The target given.
        target: String,
    },
}
