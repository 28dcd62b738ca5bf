//! `BatchService`: the client's batch format (`docs/PROTOCOL.md`, "Batches") served
//! by running each element through the app's own (layered) service as the
//! single request it stands for, so each is deduped on its own key by the
//! same layer and handlers.

use std::convert::Infallible;
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, Request, StatusCode};
use sync_protocol::{
    BatchOperation, BatchRequest, BatchResponse, BatchResult, IDEMPOTENCY_KEY, SYNC_VERSION,
};
use tower_service::Service;

use crate::response::StoredResponse;

/// The longest batch request body read (a longer one gets 413).
const MAX_BATCH_BYTES: usize = 16 << 20;

/// Serves `POST {batch_target}`: each element of a [`BatchRequest`] is sent
/// to the inner service as its own request (the element's method, target
/// and payload, its `idempotency_key` as the `Idempotency-Key` header, and
/// the batch request's other headers and extensions, so auth and scope are
/// the same), and
/// its status, `Retry-After` and body become its [`BatchResult`].
///
/// Give it the app's routes with [`IdempotencyLayer`](crate::IdempotencyLayer)
/// applied, and route the batch endpoint outside that layer (a batch carries
/// no key of its own), on a path without parameters (axum would hand the
/// batch route's parameters to each element's handler too).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use axum::{Router, routing::post};
/// use sync_server::{BatchService, IdempotencyConfig, IdempotencyLayer, MemoryIdempotencyStore};
///
/// let store = Arc::new(MemoryIdempotencyStore::default());
/// let api: Router = Router::new()
///     .route("/notes", post(|| async { "created" }))
///     .layer(IdempotencyLayer::new(store, IdempotencyConfig::default()));
/// let app: Router = Router::new()
///     .route_service("/sync/batch", BatchService::new(api.clone()))
///     .merge(api);
/// # let _ = app;
/// ```
#[derive(Clone)]
pub struct BatchService<S> {
    inner: S,
}

impl<S> BatchService<S> {
    /// Serves batches by calling `inner` once per element.
    #[must_use]
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S> fmt::Debug for BatchService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchService").finish_non_exhaustive()
    }
}

impl<S> Service<Request<Body>> for BatchService<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Each element waits for the inner service's readiness itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move { Ok(serve_batch(inner, request).await) })
    }
}

async fn serve_batch<S>(mut inner: S, request: Request<Body>) -> Response
where
    S: Service<Request<Body>, Response = Response, Error = Infallible>,
{
    if request.method() != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BATCH_BYTES).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let Ok(batch) = serde_json::from_slice::<BatchRequest>(&body) else {
        return StoredResponse::json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({ "error": "not_a_batch" }),
        )
        .into_response();
    };
    let mut results = Vec::with_capacity(batch.operations.len());
    for element in batch.operations {
        let Some(single) = element_request(&parts, &element) else {
            results.push(BatchResult {
                idempotency_key: element.idempotency_key,
                status: StatusCode::BAD_REQUEST.as_u16(),
                retry_after: None,
                body: None,
                sync_version: None,
            });
            continue;
        };
        if poll_fn(|cx| inner.poll_ready(cx)).await.is_err() {
            break;
        }
        let Ok(response) = inner.call(single).await;
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let status = response.status().as_u16();
        let sync_version = response
            .headers()
            .get(SYNC_VERSION)
            .and_then(|v| v.to_str().ok()?.parse::<i64>().ok());
        // An element whose answer cannot be read whole gets no result: the
        // client retries it.
        let Ok(bytes) = axum::body::to_bytes(response.into_body(), MAX_BATCH_BYTES).await else {
            continue;
        };
        results.push(BatchResult {
            idempotency_key: element.idempotency_key,
            status,
            retry_after,
            body: (!bytes.is_empty()).then(|| String::from_utf8_lossy(&bytes).into_owned()),
            sync_version,
        });
    }
    StoredResponse::json(StatusCode::OK, &BatchResponse { results }).into_response()
}

/// The single request a batch element stands for, or `None` if its method,
/// target or key cannot be one.
fn element_request(
    parts: &http::request::Parts,
    element: &BatchOperation,
) -> Option<Request<Body>> {
    let method = Method::from_bytes(element.method.as_bytes()).ok()?;
    let key = HeaderValue::from_str(&element.idempotency_key).ok()?;
    let mut request = Request::builder()
        .method(method)
        .uri(&element.target)
        .body(Body::from(element.payload.clone()))
        .ok()?;
    // The batch request's headers (auth, content type) and extensions (what
    // an auth layer in front put there, which a scope may read), so each
    // element is the same caller's request; not its framing headers.
    for (name, value) in &parts.headers {
        let framing = [
            http::header::CONTENT_LENGTH,
            http::header::TRANSFER_ENCODING,
            http::header::CONNECTION,
            http::header::TE,
            http::header::UPGRADE,
            http::header::EXPECT,
        ]
        .contains(name);
        if !framing && name != IDEMPOTENCY_KEY {
            request.headers_mut().append(name, value.clone());
        }
    }
    let extensions = request.extensions_mut();
    *extensions = parts.extensions.clone();
    // Not the batch request's routing or key: the inner router sets its own
    // matched path, and the element gets its own key's claim.
    extensions.remove::<axum::extract::MatchedPath>();
    extensions.remove::<axum::extract::OriginalUri>();
    extensions.remove::<crate::Idempotency>();
    request.headers_mut().insert(IDEMPOTENCY_KEY, key);
    // The element's own trace, as a single request would carry it.
    if let Some(traceparent) = element
        .traceparent
        .as_deref()
        .filter(|value| sync_protocol::is_traceparent(value))
        .and_then(|value| http::HeaderValue::from_str(value).ok())
    {
        request
            .headers_mut()
            .insert(sync_protocol::TRACEPARENT, traceparent);
    }
    Some(request)
}
