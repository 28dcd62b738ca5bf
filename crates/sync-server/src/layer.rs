//! `IdempotencyLayer` and its service: the IETF httpapi "Idempotency-Key"
//! rules in front of any axum / tower service.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, Request, StatusCode};
use sync_protocol::{IDEMPOTENCY_KEY, is_storable};
use tower_layer::Layer;
use tower_service::Service;

use crate::config::{IdempotencyConfig, KeyRequirement};
use crate::fingerprint::Fingerprint;
use crate::handle::Idempotency;
use crate::key::parse_key;
use crate::response::StoredResponse;
use crate::store::{Begin, IdempotencyStore};

/// A tower layer that applies each `Idempotency-Key` once.
///
/// For a request with a key (scoped by [`IdempotencyConfig::scope`]):
///
/// | stored for the key | the request gets |
/// | --- | --- |
/// | nothing, or a key past its `key_memory` | runs; its final response is stored (unless 5xx) |
/// | the response of the same request (method, path, body) | that response replayed, with `Idempotent-Replayed: true` |
/// | the same request, whose response expired (after `ttl`, within `key_memory`) | its status, an empty body, `Idempotent-Replayed: true` and `Idempotent-Response-Expired: true`; never a second run |
/// | the same request, still running | `409 Conflict` with `Retry-After` |
/// | the same request, running past its lease (its server died) | runs again under a new claim |
/// | a different request | `422 Unprocessable Entity` |
///
/// A response the client retries (5xx, 408, 409, 425, 429) is not stored:
/// the key is released, so the retry is processed again. A request without a key passes through, or
/// gets `400` with [`KeyRequirement::Required`]; GET, HEAD, OPTIONS and
/// TRACE always pass. A store that cannot be reached gives `503` with
/// `Retry-After: 1`, never a run without the check.
///
/// The layer alone stores the response after the handler has returned, so
/// a crash in between runs the handler again on the retry. For exactly-once
/// effects, the handler takes [`Idempotency`] and writes its effect through
/// its store's transaction, which stores the response in the same commit.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use axum::{Router, routing::post};
/// use sync_server::{IdempotencyConfig, IdempotencyLayer, MemoryIdempotencyStore};
///
/// let store = Arc::new(MemoryIdempotencyStore::default());
/// let app: Router = Router::new()
///     .route("/notes", post(|| async { "created" }))
///     .layer(IdempotencyLayer::new(store, IdempotencyConfig::default()));
/// # let _ = app;
/// ```
#[derive(Clone)]
pub struct IdempotencyLayer {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn IdempotencyStore>,
    config: IdempotencyConfig,
}

impl IdempotencyLayer {
    /// A layer keeping its keys in `store`.
    #[must_use]
    pub fn new<S: IdempotencyStore>(store: Arc<S>, config: IdempotencyConfig) -> Self {
        let store: Arc<dyn IdempotencyStore> = store;
        Self {
            shared: Arc::new(Shared { store, config }),
        }
    }
}

impl fmt::Debug for IdempotencyLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyLayer")
            .field("store", &self.shared.store)
            .field("config", &self.shared.config)
            .finish()
    }
}

impl<S> Layer<S> for IdempotencyLayer {
    type Service = IdempotencyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IdempotencyService {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service [`IdempotencyLayer`] wraps around an inner service.
#[derive(Clone)]
pub struct IdempotencyService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> fmt::Debug for IdempotencyService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyService").finish_non_exhaustive()
    }
}

impl<S> Service<Request<Body>> for IdempotencyService<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The clone that was made ready is the one that serves (tower's rule).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        Box::pin(async move { Ok(shared.serve(request, inner).await) })
    }
}

impl Shared {
    async fn serve<S>(&self, request: Request<Body>, mut inner: S) -> Response
    where
        S: Service<Request<Body>, Response = Response, Error = Infallible>,
    {
        let exempt = matches!(
            *request.method(),
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        );
        let key = match request.headers().get(IDEMPOTENCY_KEY) {
            _ if exempt => return call(&mut inner, request).await,
            None if self.config.requirement == KeyRequirement::Optional => {
                return call(&mut inner, request).await;
            }
            None => return problem(StatusCode::BAD_REQUEST, "idempotency_key_required", None),
            Some(value) => match parse_key(value.as_bytes()) {
                Some(key) => key,
                None => return problem(StatusCode::BAD_REQUEST, "idempotency_key_invalid", None),
            },
        };
        let (mut parts, body) = request.into_parts();
        let Ok(body) = axum::body::to_bytes(body, self.config.max_request_bytes).await else {
            return problem(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large", None);
        };
        let path = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path(), |p| p.as_str());
        let fingerprint = Fingerprint::of(parts.method.as_str(), path, &body);
        let scope = (self.config.scope)(&parts);
        let now = (self.config.clock)();
        let begun = self
            .store
            .begin(&scope, &key, fingerprint, now, self.config.lease_ms())
            .await;
        let claim = match begun {
            Ok(Begin::Started(claim)) => claim,
            Ok(Begin::Replay(stored)) => {
                count("replayed");
                return stored.replay();
            }
            Ok(Begin::Remembered { status }) => {
                count("remembered");
                return StoredResponse::remembered(status);
            }
            Ok(Begin::InProgress { retry_after_ms }) => {
                count("in_progress");
                let seconds = (retry_after_ms.max(1) + 999) / 1000;
                return problem(StatusCode::CONFLICT, "request_in_progress", Some(seconds));
            }
            Ok(Begin::Mismatch) => {
                count("mismatch");
                return problem(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    None,
                );
            }
            Err(e) => {
                count("unavailable");
                tracing::warn!(error = %e, "idempotency store unavailable");
                return problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    Some(1),
                );
            }
        };
        let mut handle = Idempotency::from_claim(claim, self.config.expiry_at(now));
        handle.traceparent = parts
            .headers
            .get(sync_protocol::TRACEPARENT)
            .and_then(|value| value.to_str().ok())
            .filter(|value| sync_protocol::is_traceparent(value))
            .map(str::to_owned);
        parts.extensions.insert(handle.clone());
        // The client's trace, for a subscriber (tracing-opentelemetry, ...)
        // to continue: the handler runs inside this span.
        let span = tracing::info_span!(
            "sync.request",
            idempotency_key = %key,
            traceparent = handle.traceparent().unwrap_or(""),
        );
        let started = std::time::Instant::now();
        let response = tracing::Instrument::instrument(
            call(&mut inner, Request::from_parts(parts, Body::from(body))),
            span,
        )
        .await;
        handler_time(started);
        if handle.is_committed() {
            // The handler's transaction stored the response with its effect.
            count("applied");
            return response;
        }
        if !is_storable(response.status().as_u16()) {
            count("released");
            if let Err(e) = self.store.release(&handle.claim).await {
                tracing::warn!(error = %e, "could not release an idempotency key after a retryable answer");
            }
            return response;
        }
        count("applied");
        self.store_response(&handle, response).await
    }

    /// Stores a plain handler's response (the non-atomic path) and returns
    /// it to the client.
    async fn store_response(&self, handle: &Idempotency, response: Response) -> Response {
        let (parts, body) = response.into_parts();
        let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
            // The body failed mid-stream: nothing whole to store or send.
            let _ = self.store.release(&handle.claim).await;
            return problem(StatusCode::INTERNAL_SERVER_ERROR, "response_failed", None);
        };
        let mut stored = StoredResponse::new(parts.status);
        for name in &self.config.stored_headers {
            for value in parts.headers.get_all(name) {
                if let Ok(value) = value.to_str() {
                    stored = stored.with_header(name.as_str(), value);
                }
            }
        }
        if body.len() <= self.config.max_stored_body_bytes {
            stored.body = body.to_vec();
        }
        if let Err(e) = self
            .store
            .complete(&handle.claim, &stored, handle.expiry)
            .await
        {
            tracing::warn!(error = %e, "could not store an idempotent response");
        }
        Response::from_parts(parts, Body::from(body))
    }
}

/// Counts a keyed request by what the layer did with it (feature
/// `metrics`; `docs/metrics.md`): `applied` (the handler ran and its answer
/// is stored), `replayed`, `remembered`, `in_progress`, `mismatch`,
/// `released` (a retryable answer: the key is free again), `unavailable`.
#[cfg(feature = "metrics")]
fn count(outcome: &'static str) {
    metrics::counter!("sync.server.requests", "outcome" => outcome).increment(1);
}

#[cfg(not(feature = "metrics"))]
fn count(_outcome: &'static str) {}

/// The handler's time for a keyed request it ran (OpenTelemetry's
/// `messaging.process.duration`, in seconds).
#[cfg(feature = "metrics")]
fn handler_time(started: std::time::Instant) {
    metrics::histogram!("messaging.process.duration", "messaging.operation.name" => "process")
        .record(started.elapsed().as_secs_f64());
}

#[cfg(not(feature = "metrics"))]
fn handler_time(_started: std::time::Instant) {}

async fn call<S>(inner: &mut S, request: Request<Body>) -> Response
where
    S: Service<Request<Body>, Response = Response, Error = Infallible>,
{
    match inner.call(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// A small JSON problem answer: `{"error": code}`, with `Retry-After`.
fn problem(status: StatusCode, code: &str, retry_after_s: Option<i64>) -> Response {
    let mut response =
        StoredResponse::json(status, &serde_json::json!({ "error": code })).into_response();
    if let Some(seconds) = retry_after_s
        && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
    {
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, value);
    }
    response
}
