//! What both transports share about a request: the checked base URL and
//! headers, URL joining, building a single or a batch request as an
//! `http::Request`, the credentials of an [`AuthProvider`], and reading a
//! response's `Retry-After`. No I/O.

use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue, Request, Uri};
use sync_engine::{PullResult, SendResult};
use sync_outbox::Operation;
use sync_protocol::{PullError, PullErrorCode, PullRequest, PullResponse};

use crate::auth::AuthProvider;
use crate::batch::map_batch_response;
use crate::config::HttpTransportConfig;
use crate::error::HttpTransportError;
use crate::status::{map_status, with_failure_body};

/// Most bytes of a response body read (and dropped) so the connection can be
/// reused; a longer body closes the connection instead.
pub(crate) const DRAIN_LIMIT_BYTES: u64 = 64 * 1024;

/// Most bytes of a pull answer read; a longer one is not a page (the server
/// bounds a page's states to 4 MiB by default).
pub(crate) const PULL_RESPONSE_LIMIT_BYTES: u64 = 64 * 1024 * 1024;

/// Most bytes of a batch response read; a longer one is not a batch response
/// (every operation of the batch is then retryable).
pub(crate) const BATCH_RESPONSE_LIMIT_BYTES: u64 = 4 * 1024 * 1024;

/// Headers the transport sets itself, refused in the configuration.
const RESERVED_HEADERS: [&str; 4] = ["idempotency-key", "content-length", "host", "traceparent"];

/// A configuration checked once, at construction.
#[derive(Clone)]
pub(crate) struct Prepared {
    /// `config.base_url` without a trailing `/`.
    pub(crate) base_url: String,
    /// The server as errors name it: `host:port` of the base URL, without
    /// credentials, path or query.
    pub(crate) server: String,
    /// The configured headers, checked and marked sensitive.
    headers: Vec<(HeaderName, HeaderValue)>,
    content_type: HeaderValue,
}

impl Prepared {
    pub(crate) fn new(config: &HttpTransportConfig) -> Result<Self, HttpTransportError> {
        check_base_url(&config.base_url)?;
        let base_url = config.base_url.trim_end_matches('/').to_owned();
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
        Ok(Self {
            server: server_of(&base_url),
            base_url,
            headers,
            content_type,
        })
    }

    /// The URL an operation with `target` is sent to.
    pub(crate) fn url_for(&self, target: &str) -> String {
        join_url(&self.base_url, target)
    }

    /// `{method} {base_url}{op.target}` with `Idempotency-Key`, the content
    /// type, the configured headers, `credentials` and `body`.
    ///
    /// An error is a permanent one: the operation cannot make a request.
    pub(crate) fn single<B>(
        &self,
        config: &HttpTransportConfig,
        op: &Operation,
        credentials: &[(HeaderName, HeaderValue)],
        body: B,
    ) -> Result<Request<B>, &'static str> {
        let uri: Uri = self
            .url_for(&op.target)
            .parse()
            .map_err(|_| "invalid request URL for the operation's target")?;
        let key = HeaderValue::from_str(op.idempotency_key())
            .map_err(|_| "operation id is not a valid Idempotency-Key")?;
        let method = config.method_for(&op.kind).as_str();
        let mut request = self
            .builder(method, uri, self.content_type.clone(), credentials)
            .header("Idempotency-Key", key);
        // The trace the operation was enqueued in, for the server's trace
        // to continue (W3C Trace Context); an invalid one is not sent.
        if let Some(traceparent) = op
            .traceparent
            .as_deref()
            .filter(|value| sync_protocol::is_traceparent(value))
            .and_then(|value| HeaderValue::from_str(value).ok())
        {
            request = request.header(sync_protocol::TRACEPARENT, traceparent);
        }
        request.body(body).map_err(|_| "invalid request")
    }

    /// `GET {base_url}{path_and_query}`: a pull.
    pub(crate) fn get<B>(
        &self,
        path_and_query: &str,
        credentials: &[(HeaderName, HeaderValue)],
        body: B,
    ) -> Result<Request<B>, &'static str> {
        let uri: Uri = self
            .url_for(path_and_query)
            .parse()
            .map_err(|_| "invalid pull URL")?;
        let json = HeaderValue::from_static("application/json");
        self.builder("GET", uri, json, credentials)
            .body(body)
            .map_err(|_| "invalid pull request")
    }

    /// `POST {base_url}{batch_target}` with a JSON body.
    pub(crate) fn batch<B>(
        &self,
        batch_target: &str,
        credentials: &[(HeaderName, HeaderValue)],
        body: B,
    ) -> Result<Request<B>, &'static str> {
        let uri: Uri = self
            .url_for(batch_target)
            .parse()
            .map_err(|_| "invalid batch URL")?;
        let json = HeaderValue::from_static("application/json");
        self.builder("POST", uri, json, credentials)
            .body(body)
            .map_err(|_| "invalid batch request")
    }

    fn builder(
        &self,
        method: &str,
        uri: Uri,
        content_type: HeaderValue,
        credentials: &[(HeaderName, HeaderValue)],
    ) -> http::request::Builder {
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header("Content-Type", content_type);
        for (name, value) in self.headers.iter().chain(credentials) {
            builder = builder.header(name, value);
        }
        builder
    }
}

/// The credentials for the next request, checked and marked sensitive;
/// none without a provider. A provider that fails makes the send
/// `not_sent` (an offline device whose token cannot be refreshed must not
/// use up its operations' attempts); one that gives a header that is not
/// valid HTTP makes it retryable (a bug, so the attempts count).
pub(crate) fn credentials(
    auth: Option<&dyn AuthProvider>,
) -> Result<Vec<(HeaderName, HeaderValue)>, SendResult> {
    let Some(auth) = auth else {
        return Ok(Vec::new());
    };
    let pairs = auth
        .headers()
        .map_err(|_| SendResult::not_sent("the auth provider gave no credentials"))?;
    pairs
        .iter()
        .map(|(name, value)| {
            header(name, value).map_err(|_| {
                SendResult::retryable("the auth provider gave a header that is not valid HTTP")
            })
        })
        .collect()
}

/// A batch sent one request at a time: once a request gets no answer (the
/// server is unreachable), the rest are not tried but reported `not_sent`.
#[derive(Debug, Default)]
pub(crate) struct OneByOne {
    unreachable: bool,
}

impl OneByOne {
    /// The result of an operation not tried, once a request got no answer.
    pub(crate) fn skipped(&self) -> Option<SendResult> {
        self.unreachable.then(|| {
            SendResult::not_sent("not tried: an earlier request of the batch got no answer")
        })
    }

    /// Notes a request's result.
    pub(crate) fn saw(&mut self, result: &SendResult) {
        self.unreachable |= result.is_unanswered();
    }
}

/// Whether a `401` should be answered by one refresh and one resend.
pub(crate) fn refresh_on(status: u16, auth: Option<&dyn AuthProvider>, refreshed: bool) -> bool {
    status == 401 && auth.is_some() && !refreshed
}

/// What a failed refresh makes of the send.
pub(crate) fn refresh_failed() -> SendResult {
    SendResult::retryable("HTTP 401 Unauthorized; refreshing the credentials failed")
}

/// A response: its status, `Retry-After`, and body (or, if reading it
/// failed, a short description of why).
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<String>,
    /// The `sync-version` header: where the operation's changes are in the
    /// server's change feed.
    pub(crate) sync_version: Option<i64>,
    pub(crate) body: Result<Vec<u8>, String>,
}

/// What a single send came to: its answer's status through `map_status`,
/// or the result that stood for no usable answer. `keep_answer`: the
/// operation keeps its success answer's body (read up to
/// `DRAIN_LIMIT_BYTES`; one not UTF-8 is not kept).
pub(crate) fn single_result(
    answer: Result<Answer, SendResult>,
    config: &HttpTransportConfig,
    keep_answer: bool,
) -> SendResult {
    match answer {
        Ok(answer) => {
            let mut result = map_status(
                answer.status,
                answer.retry_after.as_deref(),
                SystemTime::now(),
                config,
            );
            if result.ok {
                result.server_version = answer.sync_version;
                if keep_answer && let Ok(body) = &answer.body {
                    result.answer = String::from_utf8(body.clone()).ok();
                }
            }
            match &answer.body {
                Ok(body) => with_failure_body(result, body, config),
                Err(_) => result,
            }
        }
        Err(result) => result,
    }
}

/// What a batch send came to, one result per operation of `ops`.
pub(crate) fn batch_results(
    ops: &[Operation],
    answer: Result<Answer, SendResult>,
    config: &HttpTransportConfig,
) -> Vec<SendResult> {
    match answer {
        Ok(Answer {
            status,
            retry_after,
            body: Ok(body),
            ..
        }) => map_batch_response(
            ops,
            status,
            retry_after.as_deref(),
            &body,
            SystemTime::now(),
            config,
        ),
        // Cut mid-answer: nothing says which operations applied.
        Ok(Answer { body: Err(e), .. }) => vec![SendResult::no_answer(e); ops.len()],
        Err(result) => vec![result; ops.len()],
    }
}

/// The body of a batch request for `ops`, or the result that stands for
/// every operation when it cannot be made.
pub(crate) fn batch_body(
    ops: &[Operation],
    config: &HttpTransportConfig,
) -> Result<Vec<u8>, Vec<SendResult>> {
    serde_json::to_vec(&crate::batch::batch_request(ops, config))
        .map_err(|_| vec![SendResult::permanent("cannot encode the batch"); ops.len()])
}

/// The response's `sync-version` header, if it is an integer.
pub(crate) fn sync_version(headers: &HeaderMap) -> Option<i64> {
    headers
        .get(sync_protocol::SYNC_VERSION)
        .and_then(|v| v.to_str().ok()?.trim().parse().ok())
}

/// The response's `Retry-After` header, if it is text.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<String> {
    headers
        .get("Retry-After")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// `host[:port]` of an absolute URL: what an error may name (never the
/// user info, the path or the query, which can hold secrets).
fn server_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
        .to_owned()
}

/// `target` after `base_url` (which has no trailing `/`), with one `/` between.
fn join_url(base_url: &str, target: &str) -> String {
    if target.is_empty() || target.starts_with('/') {
        format!("{base_url}{target}")
    } else {
        format!("{base_url}/{target}")
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

/// The path and query of a pull for `request`.
pub(crate) fn pull_path(config: &HttpTransportConfig, request: &PullRequest) -> String {
    let query = request.to_query();
    if query.is_empty() {
        config.pull_target.clone()
    } else {
        format!("{}?{query}", config.pull_target)
    }
}

/// What a pull came to: its answer read as `docs/PROTOCOL.md` says
/// ("Pulling changes"), or the result that stood for no usable answer.
pub(crate) fn pull_result(
    answer: Result<Answer, SendResult>,
    config: &HttpTransportConfig,
) -> PullResult {
    let answer = match answer {
        Ok(answer) => answer,
        Err(result) if result.is_unanswered() => {
            return PullResult::Unanswered {
                error: result.error,
            };
        }
        Err(result) => {
            return PullResult::Failed {
                error: result.error,
                retry_after_ms: result.retry_after_ms,
            };
        }
    };
    let body = match answer.body {
        Ok(body) => body,
        // Cut mid-answer: as if none came.
        Err(error) => return PullResult::Unanswered { error },
    };
    if (200..300).contains(&answer.status) {
        return match serde_json::from_slice::<PullResponse>(&body) {
            Ok(page) => PullResult::Page(page),
            Err(_) => PullResult::Failed {
                error: format!("HTTP {} with a body that is not a page", answer.status),
                retry_after_ms: None,
            },
        };
    }
    let refusal = serde_json::from_slice::<PullError>(&body).ok();
    match (answer.status, &refusal) {
        (410, _) => {
            return PullResult::Restart {
                reason: refusal
                    .and_then(|r| r.reason)
                    .map_or_else(|| "HTTP 410 Gone".to_owned(), |r| format!("{r:?}")),
            };
        }
        // A cursor this server never issued (a device restored from an
        // old backup, another server): only a new start can help.
        (
            400,
            Some(PullError {
                error: PullErrorCode::BadCursor,
                ..
            }),
        ) => {
            return PullResult::Restart {
                reason: "the server does not know the cursor (bad_cursor)".to_owned(),
            };
        }
        _ => {}
    }
    let mapped = map_status(
        answer.status,
        answer.retry_after.as_deref(),
        SystemTime::now(),
        config,
    );
    let error = match refusal {
        Some(refusal) => format!("{} ({})", mapped.error, refusal.error),
        None => mapped.error.clone(),
    };
    if mapped.is_unanswered() {
        PullResult::Unanswered { error }
    } else {
        PullResult::Failed {
            error,
            retry_after_ms: mapped.retry_after_ms,
        }
    }
}
