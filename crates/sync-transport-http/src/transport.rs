//! [`HttpTransport`]: the blocking transport, on `ureq`.

use std::fmt;
use std::io::Read;
use std::sync::Arc;

use sync_engine::{PullResult, PullTransport, ResultSink, SendResult, SyncTransport};
use sync_outbox::Operation;
use sync_protocol::PullRequest;

use crate::auth::AuthProvider;
use crate::config::HttpTransportConfig;
use crate::error::HttpTransportError;
use crate::request::{
    Answer, BATCH_RESPONSE_LIMIT_BYTES, DRAIN_LIMIT_BYTES, OneByOne, PULL_RESPONSE_LIMIT_BYTES,
    Prepared, batch_body, batch_results, credentials, pull_path, pull_result, refresh_failed,
    refresh_on, retry_after, single_result, sync_version,
};

/// A [`SyncTransport`] that sends each operation as one HTTP request.
///
/// `send` makes `{method} {base_url}{op.target}` with the payload as body,
/// `Content-Type` from the config, `Idempotency-Key: {op.idempotency_key()}` (the id, or a new key after `Outbox::correct`) (the same on
/// every retry of the operation) and the configured headers, then maps the
/// answer with [`map_status`](crate::map_status). A send without an answer
/// uses up no attempt and pauses the engine: [`SendResult::not_sent`] when
/// the request never left (connection refused, the name lookup failed),
/// [`SendResult::no_answer`] when it may have (reset, TLS, running out of
/// [`HttpTransportConfig::timeout`]). A request that cannot be built from
/// the operation (a target that makes an invalid URL, an id that is not a
/// valid header value) is permanent. Redirects are not followed.
///
/// The engine calls `send_each`: one request at a time, each result
/// reported as it arrives (a process killed mid-batch resends only the
/// request on the wire), and after a request without an answer the rest of
/// the batch is not tried.
///
/// With [`HttpTransportConfig::batch_target`] set, a whole batch goes as one
/// request (`docs/PROTOCOL.md`, "Batches") and each operation's result is
/// mapped with the same status table. A batch that gets no answer (refused,
/// reset, timeout) is unanswered for every operation.
///
/// With an [`AuthProvider`] ([`with_auth`](Self::with_auth)), every request
/// carries the provider's headers; a `401` makes the transport refresh them
/// once and send that request again at once.
///
/// Connections are pooled and reused across sends and threads; share one
/// transport as `Arc<HttpTransport>`. Feature `blocking` of this crate (on
/// by default); `http` of the `sync` facade.
///
/// # Examples
///
/// ```
/// use sync::prelude::*;
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
/// # Ok::<_, sync::http::HttpTransportError>(())
/// ```
pub struct HttpTransport {
    agent: ureq::Agent,
    config: HttpTransportConfig,
    prepared: Prepared,
    auth: Option<Arc<dyn AuthProvider>>,
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
        let prepared = Prepared::new(&config)?;
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
            prepared,
            auth: None,
        })
    }

    /// Takes each request's credentials from `auth`, refreshing them once
    /// when a request gets `401`.
    #[must_use]
    pub fn with_auth(mut self, auth: Arc<dyn AuthProvider>) -> Self {
        self.auth = Some(auth);
        self
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &HttpTransportConfig {
        &self.config
    }

    /// The URL an operation with `target` is sent to.
    #[must_use]
    pub fn url_for(&self, target: &str) -> String {
        self.prepared.url_for(target)
    }

    /// Sends `ops` as one batch request to `batch_target`.
    fn send_batch_request(&self, batch_target: &str, ops: &[Operation]) -> Vec<SendResult> {
        let body = match batch_body(ops, &self.config) {
            Ok(body) => body,
            Err(results) => return results,
        };
        let answer = self.exchange(BATCH_RESPONSE_LIMIT_BYTES, |credentials| {
            self.prepared
                .batch(batch_target, credentials, body.as_slice())
        });
        batch_results(ops, answer, &self.config)
    }

    /// Sends the request `build` makes (again once, with refreshed
    /// credentials, after a `401`), and reads at most `limit` bytes of the
    /// answer. `Err` is the send's result when there is no usable answer.
    fn exchange<'a>(
        &self,
        limit: u64,
        build: impl Fn(
            &[(http::HeaderName, http::HeaderValue)],
        ) -> Result<http::Request<&'a [u8]>, &'static str>,
    ) -> Result<Answer, SendResult> {
        let auth = self.auth.as_deref();
        let mut refreshed = false;
        loop {
            let credentials = credentials(auth)?;
            let request = build(&credentials).map_err(SendResult::permanent)?;
            let mut response = self
                .agent
                .run(request)
                .map_err(|error| unanswered(&error, &self.prepared.server))?;
            let status = response.status().as_u16();
            let retry_after = retry_after(response.headers());
            let sync_version = sync_version(response.headers());
            // Read the body (to the limit) so the connection goes back to
            // the pool; only a batch answer's is ever looked at.
            let mut body = Vec::new();
            let read = response
                .body_mut()
                .as_reader()
                .take(limit)
                .read_to_end(&mut body)
                .map(|_| body)
                .map_err(|e| format!("connection error: {}", e.kind()));
            if refresh_on(status, auth, refreshed) {
                refreshed = true;
                if auth.is_some_and(|auth| auth.refresh().is_err()) {
                    return Err(refresh_failed());
                }
                continue;
            }
            return Ok(Answer {
                status,
                retry_after,
                sync_version,
                body: read,
            });
        }
    }
}

/// Pulls the server's change feed: `GET {base_url}{pull_target}` with the
/// request's cursor and limit, the same headers, credentials (and one
/// refresh on `401`) and timeout as a send. A page is a page; `410`, and a
/// `400 bad_cursor`, start again; a `502`/`503`/`504` or no connection is no
/// answer; any other status, or a body that is not a page, is a failure
/// (tried again after a backoff).
impl PullTransport for HttpTransport {
    fn pull(&self, request: &PullRequest) -> PullResult {
        let path = pull_path(&self.config, request);
        let answer = self.exchange(PULL_RESPONSE_LIMIT_BYTES, |credentials| {
            self.prepared.get(&path, credentials, &[][..])
        });
        pull_result(answer, &self.config)
    }
}

impl SyncTransport for HttpTransport {
    fn send_batch(&self, ops: &[Operation]) -> Vec<SendResult> {
        match &self.config.batch_target {
            Some(batch_target) if !ops.is_empty() => self.send_batch_request(batch_target, ops),
            _ => ops.iter().map(|op| self.send(op)).collect(),
        }
    }

    /// In batch mode, the batch's results together. Otherwise one request
    /// at a time, each result reported as it arrives; after a request that
    /// got no answer, the rest are not tried (reported `not_sent`): the
    /// server is unreachable, and the engine pauses.
    fn send_each(&self, ops: &[Operation], results: &mut ResultSink<'_>) {
        if let Some(batch_target) = &self.config.batch_target {
            if !ops.is_empty() {
                results.report_all(self.send_batch_request(batch_target, ops));
            }
            return;
        }
        let mut walk = OneByOne::default();
        for (index, op) in ops.iter().enumerate() {
            let result = walk.skipped().unwrap_or_else(|| self.send(op));
            walk.saw(&result);
            results.report(index, result);
        }
    }

    fn send(&self, op: &Operation) -> SendResult {
        let answer = self.exchange(DRAIN_LIMIT_BYTES, |credentials| {
            self.prepared
                .single(&self.config, op, credentials, op.payload.as_bytes())
        });
        single_result(answer, &self.config, op.keep_answer)
    }
}

impl fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The config's Debug redacts header values; the provider is not shown.
        f.debug_struct("HttpTransport")
            .field("config", &self.config)
            .field("auth", &self.auth.is_some())
            .finish_non_exhaustive()
    }
}

/// A short description of a send that got no answer. ureq's messages name
/// the failure (and at most the host), never the body or header values.
/// A send that got no answer: `not_sent` when the request certainly never
/// left (the name lookup failed, the connection could not be made), else
/// `no_answer` (it may have reached the server).
fn unanswered(error: &ureq::Error, server: &str) -> SendResult {
    let never_left = match error {
        ureq::Error::HostNotFound
        | ureq::Error::ConnectionFailed
        | ureq::Error::Timeout(ureq::Timeout::Resolve | ureq::Timeout::Connect) => true,
        ureq::Error::Io(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::AddrNotAvailable
                | std::io::ErrorKind::NetworkUnreachable
                | std::io::ErrorKind::HostUnreachable
        ),
        _ => false,
    };
    if never_left {
        SendResult::not_sent(describe_failure(error, server))
    } else {
        SendResult::no_answer(describe_failure(error, server))
    }
}

/// What happened, naming the server (`host:port`), never a path or query.
fn describe_failure(error: &ureq::Error, server: &str) -> String {
    match error {
        ureq::Error::Timeout(_) => format!("timeout: no complete answer from {server} in time"),
        ureq::Error::HostNotFound => format!("host not found: {server}"),
        ureq::Error::ConnectionFailed => format!("connection to {server} failed"),
        ureq::Error::Io(e) => format!("connection error with {server}: {}", e.kind()),
        other => format!("request to {server} failed: {other}"),
    }
}
