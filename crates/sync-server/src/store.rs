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

/// How long a completed key lives: its whole response is replayed until
/// `response_until_ms`; after that only *that* it was applied (and its
/// status) is remembered, until `remembered_until_ms`. Both in ms since the
/// Unix epoch; the layer sets them from [`IdempotencyConfig::ttl`] and
/// [`IdempotencyConfig::key_memory`].
///
/// [`IdempotencyConfig::ttl`]: crate::IdempotencyConfig::ttl
/// [`IdempotencyConfig::key_memory`]: crate::IdempotencyConfig::key_memory
///
/// # Examples
///
/// ```
/// use sync_server::KeyExpiry;
///
/// let day = 86_400_000;
/// let expiry = KeyExpiry::after(1_000, day, 30 * day);
/// assert_eq!((expiry.response_until_ms, expiry.remembered_until_ms), (1_000 + day, 1_000 + 30 * day));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyExpiry {
    /// Until when the response is replayed whole.
    pub response_until_ms: i64,
    /// Until when the key is remembered as applied; never before
    /// `response_until_ms`.
    pub remembered_until_ms: i64,
}

impl KeyExpiry {
    /// The expiry of a key completed at `now_ms` whose response lives
    /// `ttl_ms` and whose memory lives `memory_ms` (at least as long as the
    /// response).
    #[must_use]
    pub fn after(now_ms: i64, ttl_ms: i64, memory_ms: i64) -> Self {
        let response_until_ms = now_ms.saturating_add(ttl_ms);
        Self {
            response_until_ms,
            remembered_until_ms: now_ms.saturating_add(memory_ms).max(response_until_ms),
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
    /// The same request completed before, so long ago that only its status
    /// is remembered: answer it with an empty body, never run it again.
    Remembered {
        /// The first response's status.
        status: u16,
    },
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
    /// `expiry.response_until_ms` and remembered until
    /// `expiry.remembered_until_ms`.
    ///
    /// # Errors
    ///
    /// [`ServerError::KeyLost`] if the claim's lease was taken over (nothing
    /// is written); the store's own errors.
    async fn complete(
        &self,
        claim: &KeyClaim,
        response: &StoredResponse,
        expiry: KeyExpiry,
    ) -> Result<(), ServerError>;

    /// Forgets a running key, so the client's retry is processed again (a
    /// 5xx, a handler that failed). Does nothing if the claim was taken
    /// over.
    ///
    /// # Errors
    ///
    /// The store's own errors.
    async fn release(&self, claim: &KeyClaim) -> Result<(), ServerError>;

    /// Frees room at `now_ms`: drops the headers and body of responses
    /// that expired (keeping the status, remembered until the key's memory
    /// ends), deletes completed keys whose memory ended, and running keys
    /// whose lease ended (their request is presumed dead); returns how many
    /// keys it forgot (trimmed responses are not counted). Nothing it removes would have been
    /// honoured anyway. A purged running key differs from one taken over in
    /// one case: a later request with the same key but a different body
    /// runs, where before it got 422.
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
