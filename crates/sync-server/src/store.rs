//! The `IdempotencyStore` trait: where keys and their responses live, and
//! the one transition each call makes. Every store decides with
//! [`decide`](crate::record::decide) under its own lock on the key's row.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::ServerError;
use crate::fingerprint::Fingerprint;
use crate::response::StoredResponse;

/// A request's hold on its key: it runs the request, and only it may
/// complete or release the key. The token fences a holder whose lease was
/// taken over: its completion then fails with [`ServerError::KeyLost`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyClaim {
    /// The key's scope (for example the authenticated user).
    pub scope: String,
    /// The idempotency key.
    pub key: String,
    /// This holder's fencing token.
    pub token: String,
    /// The request's fingerprint.
    pub fingerprint: Fingerprint,
}

impl KeyClaim {
    /// A new claim on `(scope, key)` for a request with `fingerprint`,
    /// under a fencing token no other claim has. A store calls this when it
    /// records the key as running.
    #[must_use]
    pub fn new(scope: &str, key: &str, fingerprint: Fingerprint) -> Self {
        Self {
            scope: scope.to_owned(),
            key: key.to_owned(),
            token: new_token(),
            fingerprint,
        }
    }
}

/// What [`IdempotencyStore::begin`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Begin {
    /// The key is this request's now (new, expired, or taken over from a
    /// holder whose lease ran out): run it.
    Started(KeyClaim),
    /// The same request completed before: replay this.
    Replay(StoredResponse),
    /// The same request is running elsewhere: 409, again in this many ms.
    InProgress {
        /// Until the running holder's lease ends.
        retry_after_ms: i64,
    },
    /// The key belongs to a different request: 422.
    Mismatch,
}

/// Where idempotency keys and their responses are kept.
///
/// Implemented by [`MemoryIdempotencyStore`](crate::MemoryIdempotencyStore)
/// (tests, one process, nothing survives a restart), `SqliteIdempotencyStore`
/// (feature `sqlite`) and `PostgresIdempotencyStore` (feature `postgres`).
/// Each call is one atomic step; the durable stores have made it durable
/// when the call returns `Ok`.
#[async_trait::async_trait]
pub trait IdempotencyStore: Send + Sync + fmt::Debug + 'static {
    /// Looks up `(scope, key)` and, if the request may run, records it as
    /// running under a new token with a lease until `now_ms + lease_ms`.
    ///
    /// # Errors
    ///
    /// The store's own errors (`ServerError::Sqlite`,
    /// `ServerError::Postgres`, [`ServerError::CorruptRecord`], ...).
    async fn begin(
        &self,
        scope: &str,
        key: &str,
        fingerprint: Fingerprint,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Begin, ServerError>;

    /// Stores `response` as the key's result, replayed until
    /// `expires_at_ms`.
    ///
    /// # Errors
    ///
    /// [`ServerError::KeyLost`] if the claim's lease was taken over (nothing
    /// is written); the store's own errors.
    async fn complete(
        &self,
        claim: &KeyClaim,
        response: &StoredResponse,
        expires_at_ms: i64,
    ) -> Result<(), ServerError>;

    /// Forgets a running key, so the client's retry is processed again (a
    /// 5xx, a handler that failed). Does nothing if the claim was taken
    /// over.
    ///
    /// # Errors
    ///
    /// The store's own errors.
    async fn release(&self, claim: &KeyClaim) -> Result<(), ServerError>;

    /// Deletes completed keys that expired by `now_ms`, and running keys
    /// whose lease ended by then (their request is presumed dead); returns
    /// how many. An expired completed key is never honoured either way. A
    /// purged running key differs from one taken over in one case: a later
    /// request with the same key but a different body runs, where before it
    /// got 422. This frees room, and forgets keys whose clients never came
    /// back.
    ///
    /// # Errors
    ///
    /// The store's own errors.
    async fn purge_expired(&self, now_ms: i64) -> Result<u64, ServerError>;
}

/// A fencing token no other claim has: the process, the time, a counter.
fn new_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:x}-{nanos:x}-{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
