//! [`HttpTransportConfig`] and [`HttpMethod`].

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

/// The HTTP method an operation kind is sent with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HttpMethod {
    /// `POST` (the default).
    #[default]
    Post,
    /// `PUT`.
    Put,
    /// `PATCH`.
    Patch,
    /// `DELETE` (the payload is still sent as the body).
    Delete,
}

impl HttpMethod {
    /// The method's name on the wire.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }
}

/// Settings of an `HttpTransport`.
///
/// `Debug` prints header names only: values (tokens) print as `<redacted>`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sync_transport_http::{HttpMethod, HttpTransportConfig};
///
/// let config = HttpTransportConfig {
///     base_url: "https://api.example.com/v1".into(),
///     timeout: Duration::from_secs(5),
///     headers: vec![("Authorization".into(), "Bearer t0k3n".into())],
///     ..HttpTransportConfig::default()
/// }
/// .with_method("message.delete", HttpMethod::Delete);
/// assert_eq!(config.method_for("message.delete"), HttpMethod::Delete);
/// assert_eq!(config.method_for("message.send"), HttpMethod::Post);
/// assert!(!format!("{config:?}").contains("t0k3n"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct HttpTransportConfig {
    /// Prefix of every request URL; an operation goes to
    /// `{base_url}{op.target}`. An absolute `http://` or `https://` URL.
    /// Default `http://127.0.0.1:8080`.
    pub base_url: String,
    /// Limit on a whole request, from connect to the last byte of the
    /// response. A send that runs out of it is retryable. Default 30 s.
    pub timeout: Duration,
    /// Headers sent with every request (authentication, tracing, ...), in
    /// order. `Idempotency-Key`, `Content-Length`, `Host` and
    /// `traceparent` (each operation's own, [`Operation::traceparent`](sync_outbox::Operation::traceparent))
    /// are set by the transport and refused here.
    pub headers: Vec<(String, String)>,
    /// The method per operation kind; kinds not listed use `POST`.
    pub methods: HashMap<String, HttpMethod>,
    /// The body's `Content-Type`. Default `application/json`.
    pub content_type: String,
    /// Treat 401 and 403 as retryable (for tokens that are refreshed while
    /// operations wait) instead of permanent. Default `false`.
    pub retry_auth_failures: bool,
    /// Upper bound of a server's `Retry-After`. Default 5 minutes, the
    /// default `RetryPolicy::max_delay_ms`; the outbox clamps to its policy's
    /// bound again.
    pub max_retry_after: Duration,
    /// Batch mode, off by default (`None`). With a target here (`"/batch"`),
    /// [`send_batch`](sync_engine::SyncTransport::send_batch) sends the
    /// whole batch the engine claimed as one `POST {base_url}{batch_target}`
    /// in the JSON format of `docs/PROTOCOL.md`, "Batches", and reads one result per
    /// operation back; [`send`](sync_engine::SyncTransport::send) still
    /// sends one request per operation.
    pub batch_target: Option<String>,
    /// Where pulls of the server's change feed go (`GET
    /// {base_url}{pull_target}?cursor=..&limit=..`, `docs/PROTOCOL.md`,
    /// "Pulling changes"). Default `"/sync/pull"`.
    pub pull_target: String,
    /// Why a server refused an operation: with a limit here, a permanent
    /// failure's error (`Operation::last_error`) gets up to this many bytes
    /// of the response body after the status line, as one line of text
    /// (`"HTTP 422 Unprocessable Entity: {\"error\":\"title_required\"}"`),
    /// cut with `...` if longer; in batch mode, the `body` of the
    /// operation's element. `0` (the default) keeps bodies out of errors,
    /// because a body may echo private data from the payload: turn it on
    /// only for servers whose refusals you know to be safe to store and
    /// show. Retryable failures never carry a body. At most 64 KiB of a
    /// body is read.
    pub failure_body_limit: usize,
}

impl HttpTransportConfig {
    /// Sends operations of `kind` with `method`.
    #[must_use]
    pub fn with_method(mut self, kind: impl Into<String>, method: HttpMethod) -> Self {
        self.methods.insert(kind.into(), method);
        self
    }

    /// The method operations of `kind` are sent with.
    #[must_use]
    pub fn method_for(&self, kind: &str) -> HttpMethod {
        self.methods.get(kind).copied().unwrap_or_default()
    }
}

impl Default for HttpTransportConfig {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:8080".into(),
            timeout: Duration::from_secs(30),
            headers: Vec::new(),
            methods: HashMap::new(),
            content_type: "application/json".into(),
            retry_auth_failures: false,
            max_retry_after: Duration::from_secs(300),
            batch_target: None,
            pull_target: "/sync/pull".into(),
            failure_body_limit: 0,
        }
    }
}

impl fmt::Debug for HttpTransportConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(name, _)| (name.as_str(), "<redacted>"))
            .collect();
        f.debug_struct("HttpTransportConfig")
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .field("headers", &headers)
            .field("methods", &self.methods)
            .field("content_type", &self.content_type)
            .field("retry_auth_failures", &self.retry_auth_failures)
            .field("max_retry_after", &self.max_retry_after)
            .field("batch_target", &self.batch_target)
            .field("pull_target", &self.pull_target)
            .field("failure_body_limit", &self.failure_body_limit)
            .finish()
    }
}
