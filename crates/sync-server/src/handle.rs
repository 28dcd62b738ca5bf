//! `Idempotency`, what a handler behind the layer gets: its request's claim
//! on its key, for the transactional form, where the handler's effect and
//! the key's response commit in one database transaction.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;

use crate::store::{KeyClaim, KeyExpiry};

/// The request's hold on its idempotency key, put in the request's
/// extensions by [`IdempotencyLayer`](crate::IdempotencyLayer) and taken by
/// a handler as an extractor. Pass it to a store's transaction
/// (`SqliteIdempotencyStore::transaction`,
/// `PostgresIdempotencyStore::transaction`): the effect and the response
/// then commit together, and the layer leaves the key alone.
///
/// A handler that does not use it still gets the layer's protection, but
/// not atomicity: the layer stores the response after the handler returns,
/// so a crash between the two runs the handler again on the retry.
///
/// # Examples
///
/// ```
/// use sync_server::Idempotency;
///
/// async fn handler(idem: Idempotency) -> String {
///     format!("running under key {}", idem.key())
/// }
/// # let _ = handler;
/// ```
#[derive(Clone, Debug)]
pub struct Idempotency {
    pub(crate) claim: KeyClaim,
    pub(crate) expiry: KeyExpiry,
    pub(crate) committed: Arc<AtomicBool>,
    pub(crate) traceparent: Option<String>,
}

impl Idempotency {
    /// A handle for `claim` (from [`IdempotencyStore::begin`]), whose
    /// response and memory last as `expiry` says: for servers that drive a
    /// store without the layer.
    ///
    /// [`IdempotencyStore::begin`]: crate::IdempotencyStore::begin
    #[must_use]
    pub fn from_claim(claim: KeyClaim, expiry: KeyExpiry) -> Self {
        Self {
            claim,
            expiry,
            committed: Arc::new(AtomicBool::new(false)),
            traceparent: None,
        }
    }

    /// The W3C `traceparent` the request came with (a valid one: the
    /// trace the client enqueued the operation in), for the handler's own
    /// spans to continue. The layer also records it on its `sync.request`
    /// span around the handler.
    #[must_use]
    pub fn traceparent(&self) -> Option<&str> {
        self.traceparent.as_deref()
    }

    /// The idempotency key.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.claim.key
    }

    /// The key's scope.
    #[must_use]
    pub fn scope(&self) -> &str {
        &self.claim.scope
    }

    /// The claim a store's transaction completes.
    #[must_use]
    pub fn claim(&self) -> &KeyClaim {
        &self.claim
    }

    /// When the stored response expires (ms since the Unix epoch).
    #[must_use]
    pub fn expires_at_ms(&self) -> i64 {
        self.expiry.response_until_ms
    }

    /// How long the key's response and its memory last.
    #[must_use]
    pub fn expiry(&self) -> KeyExpiry {
        self.expiry
    }

    /// Whether a transaction already stored this request's response.
    #[must_use]
    pub fn is_committed(&self) -> bool {
        self.committed.load(Ordering::Acquire)
    }

    /// Called by a store once its transaction holding the response has
    /// committed: the layer then stores nothing itself.
    pub fn mark_committed(&self) {
        self.committed.store(true, Ordering::Release);
    }
}

/// The rejection when a handler asks for [`Idempotency`] but the request
/// has none: `400 Bad Request`, the endpoint needs an `Idempotency-Key`
/// (or the layer is missing in front of it).
#[derive(Debug)]
pub struct MissingIdempotency;

impl IntoResponse for MissingIdempotency {
    fn into_response(self) -> Response {
        (
            StatusCode::BAD_REQUEST,
            "this endpoint needs an Idempotency-Key header",
        )
            .into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Idempotency {
    type Rejection = MissingIdempotency;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Self>()
            .cloned()
            .ok_or(MissingIdempotency)
    }
}
