//! [`HttpTransport`]: one operation, one HTTP request.

use std::fmt;
use std::io::Read;
use std::time::SystemTime;

use sync_engine::{SendResult, SyncTransport};
use sync_outbox::Operation;
use ureq::http::{HeaderName, HeaderValue, Request, Uri};

use crate::batch::{BatchRequest, map_batch_response};
use crate::config::HttpTransportConfig;
use crate::error::HttpTransportError;
use crate::status::map_status;

/// Most bytes of a response body read (and dropped) so the connection can be
/// reused; a longer body closes the connection instead.
const DRAIN_LIMIT_BYTES: u64 = 64 * 1024;

/// Most bytes of a batch response read; a longer one is not a batch response
/// (every operation of the batch is then retryable).
const BATCH_RESPONSE_LIMIT_BYTES: u64 = 4 * 1024 * 1024;

/// Headers the transport sets itself, refused in the configuration.
const RESERVED_HEADERS: [&str; 3] = ["idempotency-key", "content-length", "host"];

/// A [`SyncTransport`] that sends each operation as one HTTP request.
///
/// `send` makes `{method} {base_url}{op.target}` with the payload as body,
/// `Content-Type` from the config, `Idempotency-Key: {op.id}` (the same on
/// every retry of the operation) and the configured headers, then maps the
/// answer with [`map_status`](crate::map_status). Failures without an answer
/// are retryable: connection refused or reset, DNS, TLS, and running out of
/// [`HttpTransportConfig::timeout`]. A request that cannot be built from the
/// operation (a target that makes an invalid URL, an id that is not a valid
/// header value) is permanent. Redirects are not followed.
///
/// With [`HttpTransportConfig::batch_target`] set, `send_batch` sends a
/// whole batch as one request (`docs/HTTP-BATCH.md`) and maps each
/// operation's result with the same status table. A batch that gets no
/// answer (refused, reset, timeout) is retryable for every operation.
///
/// Connections are pooled and reused across sends and threads; share one
/// transport as `Arc<HttpTransport>`.
///
/// # Examples
///
/// ```
/// use sync_engine::SyncTransport;
/// use sync_outbox::Operation;
/// use sync_transport_http::{HttpTransport, HttpTransportConfig};
///
/// // Nothing listens on port 9 (discard) here: the send is retryable.
/// let transport = HttpTransport::new(HttpTransportConfig {
///     base_url: "http://127.0.0.1:9".into(),
///     ..HttpTransportConfig::default()
/// })?;
/// let mut op = Operation::new("message.send", "/api/messages", r#"{"text":"hi"}"#);
/// op.id = "op_1".into();
/// let result = transport.send(&op);
/// assert!(!result.ok && result.retryable, "{}", result.error);
/// # Ok::<_, sync_transport_http::HttpTransportError>(())
/// ```
pub struct HttpTransport {
    agent: ureq::Agent,
    config: HttpTransportConfig,
    /// `config.base_url` without a trailing `/`.
    base_url: String,
    /// The configured headers, checked and marked sensitive.
    headers: Vec<(HeaderName, HeaderValue)>,
    content_type: HeaderValue,
}

impl HttpTransport {
    /// A transport with `config`. Opens no connection yet.
    ///
    /// # Errors
    ///
    /// - [`HttpTransportError::InvalidBaseUrl`] unless `base_url` is an
    ///   absolute `http://` or `https://` URL without query or fragment.
    /// - [`HttpTransportError::InvalidHeader`] for a header (or the content
    ///   type) that is not valid HTTP, or one the transport sets itself.
    /// - [`HttpTransportError::InvalidBatchTarget`] if `batch_target` does
    ///   not make a valid URL.
    pub fn new(config: HttpTransportConfig) -> Result<Self, HttpTransportError> {
        let base_url = config.base_url.trim_end_matches('/').to_owned();
        check_base_url(&config.base_url)?;
        let headers = config
            .headers
            .iter()
            .map(|(name, value)| header(name, value))
            .collect::<Result<Vec<_>, _>>()?;
        let (_, content_type) = header("Content-Type", &config.content_type)?;
        if let Some(target) = &config.batch_target
            && join_url(&base_url, target).parse::<Uri>().is_err()
        {
            return Err(HttpTransportError::InvalidBatchTarget {
                target: target.clone(),
            });
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("sync-transport-http/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Self {
            agent,
            config,
            base_url,
            headers,
            content_type,
        })
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &HttpTransportConfig {
        &self.config
    }

    /// The URL an operation with `target` is sent to.
    #[must_use]
    pub fn url_for(&self, target: &str) -> String {
        join_url(&self.base_url, target)
    }

    fn request<'a>(&self, op: &'a Operation) -> Result<Request<&'a [u8]>, String> {
        let method = self.config.method_for(&op.kind).as_str();
        let uri: Uri = self
            .url_for(&op.target)
            .parse()
            .map_err(|_| format!("invalid request URL for target {:?}", op.target))?;
        let key = HeaderValue::from_str(&op.id)
            .map_err(|_| "operation id is not a valid Idempotency-Key".to_owned())?;
        let builder = self
            .request_builder(method, uri, self.content_type.clone())
            .header("Idempotency-Key", key);
        // The error would only come from parts checked above; say so briefly.
        builder
            .body(op.payload.as_bytes())
            .map_err(|_| "invalid request".to_owned())
    }
}

impl HttpTransport {
    /// A request with `method`, `uri`, `content_type` and the configured headers.
    fn request_builder(
        &self,
        method: &str,
        uri: Uri,
        content_type: HeaderValue,
    ) -> ureq::http::request::Builder {
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header("Content-Type", content_type);
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        builder
    }

    /// Sends `ops` as one batch request to `batch_target`.
    fn send_batch_request(&self, batch_target: &str, ops: &[Operation]) -> Vec<SendResult> {
        let all = |result: SendResult| vec![result; ops.len()];
        let Ok(body) = serde_json::to_vec(&BatchRequest::new(ops, &self.config)) else {
            return all(SendResult::permanent("cannot encode the batch"));
        };
        let Ok(uri) = self.url_for(batch_target).parse::<Uri>() else {
            return all(SendResult::permanent("invalid batch URL"));
        };
        let builder =
            self.request_builder("POST", uri, HeaderValue::from_static("application/json"));
        let Ok(request) = builder.body(body.as_slice()) else {
            return all(SendResult::permanent("invalid batch request"));
        };
        match self.agent.run(request) {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let retry_after = retry_after(&response);
                let mut answer = Vec::new();
                let read = response
                    .body_mut()
                    .as_reader()
                    .take(BATCH_RESPONSE_LIMIT_BYTES)
                    .read_to_end(&mut answer);
                if let Err(e) = read {
                    // Cut mid-answer: nothing says which operations applied.
                    return all(SendResult::retryable(format!(
                        "connection error: {}",
                        e.kind()
                    )));
                }
                map_batch_response(
                    ops,
                    status,
                    retry_after.as_deref(),
                    &answer,
                    SystemTime::now(),
                    &self.config,
                )
            }
            Err(error) => all(SendResult::retryable(describe_failure(&error))),
        }
    }
}

impl SyncTransport for HttpTransport {
    fn send_batch(&self, ops: &[Operation]) -> Vec<SendResult> {
        match &self.config.batch_target {
            Some(batch_target) if !ops.is_empty() => self.send_batch_request(batch_target, ops),
            _ => ops.iter().map(|op| self.send(op)).collect(),
        }
    }

    fn send(&self, op: &Operation) -> SendResult {
        let request = match self.request(op) {
            Ok(request) => request,
            Err(error) => return SendResult::permanent(error),
        };
        match self.agent.run(request) {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let retry_after = retry_after(&response);
                // Read a short body to the end so the connection goes back to
                // the pool; its content is never used (it may echo the payload).
                let mut sink = Vec::new();
                let _ = response
                    .body_mut()
                    .as_reader()
                    .take(DRAIN_LIMIT_BYTES)
                    .read_to_end(&mut sink);
                map_status(
                    status,
                    retry_after.as_deref(),
                    SystemTime::now(),
                    &self.config,
                )
            }
            Err(error) => SendResult::retryable(describe_failure(&error)),
        }
    }
}

impl fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The config's Debug redacts header values.
        f.debug_struct("HttpTransport")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// `target` after `base_url` (which has no trailing `/`), with one `/` between.
fn join_url(base_url: &str, target: &str) -> String {
    if target.is_empty() || target.starts_with('/') {
        format!("{base_url}{target}")
    } else {
        format!("{base_url}/{target}")
    }
}

/// The response's `Retry-After` header, if it is text.
fn retry_after<B>(response: &ureq::http::Response<B>) -> Option<String> {
    response
        .headers()
        .get("Retry-After")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A short description of a send that got no answer. ureq's messages name
/// the failure (and at most the host), never the body or header values.
fn describe_failure(error: &ureq::Error) -> String {
    match error {
        ureq::Error::Timeout(_) => "timeout: no complete answer in time".to_owned(),
        ureq::Error::HostNotFound => "host not found".to_owned(),
        ureq::Error::ConnectionFailed => "connection failed".to_owned(),
        ureq::Error::Io(e) => format!("connection error: {}", e.kind()),
        other => format!("request failed: {other}"),
    }
}

fn check_base_url(url: &str) -> Result<(), HttpTransportError> {
    let invalid = |reason| HttpTransportError::InvalidBaseUrl {
        url: url.to_owned(),
        reason,
    };
    let uri: Uri = url.parse().map_err(|_| invalid("not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(invalid("the scheme must be http or https")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    if uri.query().is_some() || url.contains('#') {
        return Err(invalid("a query or fragment cannot prefix a target"));
    }
    Ok(())
}

fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), HttpTransportError> {
    let invalid = |reason| HttpTransportError::InvalidHeader {
        name: name.to_owned(),
        reason,
    };
    let parsed_name =
        HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid("invalid name"))?;
    if RESERVED_HEADERS.contains(&parsed_name.as_str()) {
        return Err(invalid("set by the transport"));
    }
    let mut parsed_value = HeaderValue::from_str(value).map_err(|_| invalid("invalid value"))?;
    parsed_value.set_sensitive(true);
    Ok((parsed_name, parsed_value))
}
