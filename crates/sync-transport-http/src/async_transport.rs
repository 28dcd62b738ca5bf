//! [`AsyncHttpTransport`]: the async transport, on `reqwest`.

use std::fmt;
use std::sync::Arc;

use sync_engine::{AsyncPullTransport, AsyncSyncTransport, PullResult, ResultSink, SendResult};
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

/// An [`AsyncSyncTransport`] over HTTP(S) on `reqwest` (rustls), for
/// [`AsyncSyncEngine`](sync_engine::AsyncSyncEngine). Feature `async` of
/// this crate; `http-async` of the `sync` facade.
///
/// The same requests, status table ([`map_status`](crate::map_status)), batch format,
/// `Retry-After` handling, redaction and [`AuthProvider`] refresh as the
/// blocking `HttpTransport`, from the same
/// [`HttpTransportConfig`]; only the client differs. The provider's
/// `refresh` runs on tokio's blocking pool.
///
/// # Examples
///
/// ```
/// use sync::prelude::*;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
/// // Nothing listens on port 9 (discard) here: the send is retryable.
/// let transport = AsyncHttpTransport::new(HttpTransportConfig {
///     base_url: "http://127.0.0.1:9".into(),
///     ..HttpTransportConfig::default()
/// })?;
/// let mut op = Operation::new("message.send", "/api/messages", r#"{"text":"hi"}"#);
/// op.id = "op_1".into();
/// let result = transport.send(&op).await;
/// assert!(!result.ok && result.retryable, "{}", result.error);
/// # Ok::<_, sync::http::HttpTransportError>(())
/// # })?;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct AsyncHttpTransport {
    client: reqwest::Client,
    config: HttpTransportConfig,
    prepared: Prepared,
    auth: Option<Arc<dyn AuthProvider>>,
}

impl AsyncHttpTransport {
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
    /// - [`HttpTransportError::Client`] if the HTTP client cannot be built.
    pub fn new(config: HttpTransportConfig) -> Result<Self, HttpTransportError> {
        let prepared = Prepared::new(&config)?;
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("sync-transport-http/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|_| HttpTransportError::Client)?;
        Ok(Self {
            client,
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

    /// Sends the request `build` makes (again once, with refreshed
    /// credentials, after a `401`), and reads at most `limit` bytes of the
    /// answer. `Err` is the send's result when there is no usable answer.
    async fn exchange(
        &self,
        limit: u64,
        build: impl Fn(
            &[(http::HeaderName, http::HeaderValue)],
        ) -> Result<http::Request<Vec<u8>>, &'static str>,
    ) -> Result<Answer, SendResult> {
        let auth = self.auth.as_deref();
        let mut refreshed = false;
        loop {
            let credentials = credentials(auth)?;
            let request = build(&credentials)
                .and_then(|r| reqwest::Request::try_from(r).map_err(|_| "invalid request"))
                .map_err(SendResult::permanent)?;
            let mut response = self
                .client
                .execute(request)
                .await
                .map_err(|error| unanswered(&error, &self.prepared.server))?;
            let status = response.status().as_u16();
            let retry_after = retry_after(response.headers());
            let sync_version = sync_version(response.headers());
            let body = read_limited(&mut response, limit).await;
            if refresh_on(status, auth, refreshed) {
                refreshed = true;
                if let Some(auth) = &self.auth {
                    let auth = Arc::clone(auth);
                    let renewed = tokio::task::spawn_blocking(move || auth.refresh().is_ok())
                        .await
                        .unwrap_or(false);
                    if !renewed {
                        return Err(refresh_failed());
                    }
                }
                continue;
            }
            return Ok(Answer {
                status,
                retry_after,
                sync_version,
                body,
            });
        }
    }

    async fn send_batch_request(&self, batch_target: &str, ops: &[Operation]) -> Vec<SendResult> {
        let body = match batch_body(ops, &self.config) {
            Ok(body) => body,
            Err(results) => return results,
        };
        let answer = self
            .exchange(BATCH_RESPONSE_LIMIT_BYTES, |credentials| {
                self.prepared.batch(batch_target, credentials, body.clone())
            })
            .await;
        batch_results(ops, answer, &self.config)
    }
}

/// Reads at most `limit` bytes of the body; more are left unread.
async fn read_limited(response: &mut reqwest::Response, limit: u64) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(error) => return Err(describe_failure(&error)),
        }
    }
    Ok(body)
}

/// Pulls as `HttpTransport` does (its `PullTransport` impl), on reqwest.
#[sync_engine::async_trait]
impl AsyncPullTransport for AsyncHttpTransport {
    async fn pull(&self, request: &PullRequest) -> PullResult {
        let path = pull_path(&self.config, request);
        let answer = self
            .exchange(PULL_RESPONSE_LIMIT_BYTES, |credentials| {
                self.prepared.get(&path, credentials, Vec::new())
            })
            .await;
        pull_result(answer, &self.config)
    }
}

#[sync_engine::async_trait]
impl AsyncSyncTransport for AsyncHttpTransport {
    async fn send(&self, op: &Operation) -> SendResult {
        let answer = self
            .exchange(DRAIN_LIMIT_BYTES, |credentials| {
                let body = op.payload.as_bytes().to_vec();
                self.prepared.single(&self.config, op, credentials, body)
            })
            .await;
        single_result(answer, &self.config, op.keep_answer)
    }

    async fn send_batch(&self, ops: &[Operation]) -> Vec<SendResult> {
        match &self.config.batch_target {
            Some(batch_target) if !ops.is_empty() => {
                self.send_batch_request(batch_target, ops).await
            }
            _ => {
                let mut results = Vec::with_capacity(ops.len());
                for op in ops {
                    results.push(self.send(op).await);
                }
                results
            }
        }
    }

    /// In batch mode, the batch's results together. Otherwise one request
    /// at a time, each result reported as it arrives; after a request that
    /// got no answer, the rest are not tried (reported `not_sent`).
    async fn send_each(&self, ops: &[Operation], results: &mut ResultSink<'_>) {
        if let Some(batch_target) = &self.config.batch_target {
            if !ops.is_empty() {
                results.report_all(self.send_batch_request(batch_target, ops).await);
            }
            return;
        }
        let mut walk = OneByOne::default();
        for (index, op) in ops.iter().enumerate() {
            let result = match walk.skipped() {
                Some(skipped) => skipped,
                None => self.send(op).await,
            };
            walk.saw(&result);
            results.report(index, result);
        }
    }
}

impl fmt::Debug for AsyncHttpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The config's Debug redacts header values; the provider is not shown.
        f.debug_struct("AsyncHttpTransport")
            .field("config", &self.config)
            .field("auth", &self.auth.is_some())
            .finish_non_exhaustive()
    }
}

/// A send that got no answer: `not_sent` when the connection could not be
/// made (the request never left), else `no_answer`.
fn unanswered(error: &reqwest::Error, server: &str) -> SendResult {
    let what = format!("{} ({server})", describe_failure(error));
    if error.is_connect() {
        SendResult::not_sent(what)
    } else {
        SendResult::no_answer(what)
    }
}

/// A short description of a send that got no answer: the kind of failure,
/// never a URL with its query, a body or a header value.
fn describe_failure(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timeout: no complete answer in time".to_owned()
    } else if error.is_connect() {
        "connection failed".to_owned()
    } else if error.is_body() || error.is_decode() {
        "connection error: the answer was cut".to_owned()
    } else {
        "request failed".to_owned()
    }
}
