//! `IdempotencyConfig`: how long keys live, how long a running request may
//! hold its key, what is stored, and how a key's scope is found.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderName;
use http::request::Parts;

/// Whether requests must carry an `Idempotency-Key`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyRequirement {
    /// A request without a key passes through to the handler unchanged
    /// (the default).
    #[default]
    Optional,
    /// A request without a key (other than GET, HEAD, OPTIONS and TRACE,
    /// which always pass) gets `400 Bad Request`.
    Required,
}

/// Finds a request's scope: keys are unique per scope.
pub type ScopeFn = Arc<dyn Fn(&Parts) -> String + Send + Sync>;

/// The clock keys expire by, in ms since the Unix epoch.
pub type ClockFn = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Settings of an [`IdempotencyLayer`](crate::IdempotencyLayer).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sync_server::{IdempotencyConfig, KeyRequirement};
///
/// let config = IdempotencyConfig::default()
///     .with_ttl(Duration::from_secs(7 * 24 * 3600))
///     .with_requirement(KeyRequirement::Required)
///     // Keys of different users never meet.
///     .with_scope(|parts| {
///         parts.headers.get("authorization")
///             .and_then(|v| v.to_str().ok())
///             .unwrap_or("")
///             .to_owned()
///     });
/// assert_eq!(config.ttl, Duration::from_secs(604_800));
/// ```
#[derive(Clone)]
pub struct IdempotencyConfig {
    /// How long a completed key's response is replayed whole. Default 24 h
    /// ([`sync_protocol::DEFAULT_RESPONSE_TTL`]).
    pub ttl: Duration,
    /// How long a completed key is remembered as applied, after its
    /// response has expired: a repeat gets the first answer's status with
    /// an empty body and `Idempotent-Response-Expired: true`, never a second
    /// run. Default 30 days ([`sync_protocol::DEFAULT_KEY_MEMORY`]), above
    /// the client's default resend window of 28 days
    /// (`OutboxConfig::resend_window`,
    /// [`sync_protocol::DEFAULT_RESEND_WINDOW`]): a client must never resend
    /// a key longer than its server remembers it. Never shorter than `ttl`.
    /// Costs one small row per key (scope, key, fingerprint, status).
    pub key_memory: Duration,
    /// How long a running request holds its key before a retry may take it
    /// over (its server presumed dead). A request still running then loses
    /// the key: its completion fails with
    /// [`ServerError::KeyLost`](crate::ServerError::KeyLost), and in the
    /// transactional form its effect is rolled back. Leases are set and
    /// checked by each instance's own clock, so a fleet's clocks must agree
    /// to well within this. Default 30 s.
    pub lease: Duration,
    /// Whether a key is required.
    pub requirement: KeyRequirement,
    /// Longest request body read (a longer one gets 413). Default 1 MiB.
    pub max_request_bytes: usize,
    /// Longest response body stored for replay. A longer one is returned to
    /// the first request but stored without its body. Default 1 MiB.
    pub max_stored_body_bytes: usize,
    /// The response headers stored and replayed. Default `content-type`,
    /// `location`, `etag`, `last-modified`.
    pub stored_headers: Vec<HeaderName>,
    /// The key's scope; default `""` for every request (one key space).
    pub scope: ScopeFn,
    /// The clock; default the system clock.
    pub clock: ClockFn,
}

impl IdempotencyConfig {
    /// Sets [`ttl`](Self::ttl).
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets [`key_memory`](Self::key_memory).
    #[must_use]
    pub fn with_key_memory(mut self, key_memory: Duration) -> Self {
        self.key_memory = key_memory;
        self
    }

    /// Sets [`lease`](Self::lease).
    #[must_use]
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Sets [`requirement`](Self::requirement).
    #[must_use]
    pub fn with_requirement(mut self, requirement: KeyRequirement) -> Self {
        self.requirement = requirement;
        self
    }

    /// Sets how a request's scope is found (for example the authenticated
    /// user, from a header or an extension an auth layer set).
    #[must_use]
    pub fn with_scope(mut self, scope: impl Fn(&Parts) -> String + Send + Sync + 'static) -> Self {
        self.scope = Arc::new(scope);
        self
    }

    /// Sets the clock (ms since the Unix epoch), for tests.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    pub(crate) fn ttl_ms(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// The expiry of a key completed at `now_ms`.
    pub(crate) fn expiry_at(&self, now_ms: i64) -> crate::store::KeyExpiry {
        let memory_ms = i64::try_from(self.key_memory.as_millis()).unwrap_or(i64::MAX);
        crate::store::KeyExpiry::after(now_ms, self.ttl_ms(), memory_ms)
    }

    pub(crate) fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX)
    }
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            ttl: sync_protocol::DEFAULT_RESPONSE_TTL,
            key_memory: sync_protocol::DEFAULT_KEY_MEMORY,
            lease: Duration::from_secs(30),
            requirement: KeyRequirement::Optional,
            max_request_bytes: 1 << 20,
            max_stored_body_bytes: 1 << 20,
            stored_headers: vec![
                http::header::CONTENT_TYPE,
                http::header::LOCATION,
                http::header::ETAG,
                http::header::LAST_MODIFIED,
            ],
            scope: Arc::new(|_| String::new()),
            clock: Arc::new(system_now_ms),
        }
    }
}

impl fmt::Debug for IdempotencyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyConfig")
            .field("ttl", &self.ttl)
            .field("key_memory", &self.key_memory)
            .field("lease", &self.lease)
            .field("requirement", &self.requirement)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("max_stored_body_bytes", &self.max_stored_body_bytes)
            .field("stored_headers", &self.stored_headers)
            .finish_non_exhaustive()
    }
}

/// Now, in ms since the Unix epoch.
pub(crate) fn system_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
