//! The header names both halves use, and what a valid key is.

/// The header a client sends an operation's key in (IETF httpapi draft
/// "The Idempotency-Key HTTP Header Field"). Its value is the operation's
/// id, or `"{id}.{n}"` after its `n`th correction.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Set to `true` on an answer the server did not run again: the stored
/// answer of the key's first request, replayed.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// Set to `true` (with [`IDEMPOTENT_REPLAYED`]) on the answer to a key the
/// server applied so long ago that it kept only *that* it did, not the
/// response: the first answer's status with an empty body. A client records
/// a 2xx of this kind as done, like any 2xx.
pub const IDEMPOTENT_RESPONSE_EXPIRED: &str = "idempotent-response-expired";

/// How long to wait before the next try: delay-seconds (`"30"`) or an
/// HTTP date. On `409`, `429`, `503` and the other answers a client retries.
pub const RETRY_AFTER: &str = "retry-after";

/// The longest key a server accepts, in bytes. A key is 1 to 255 visible
/// ASCII characters (no `"`); the draft's structured-field form (`"abc"`)
/// and a plain token (`abc`) are both accepted.
pub const MAX_KEY_LEN: usize = 255;
