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

/// W3C Trace Context's header: the trace an operation was enqueued in,
/// sent with it (and with each of its retries), so the server's trace of
/// the request continues the app's. Its value is
/// `{version}-{trace-id}-{parent-id}-{flags}` ([`is_traceparent`]).
pub const TRACEPARENT: &str = "traceparent";

/// Whether `value` is a W3C `traceparent` this library carries: version
/// `00` (or a later one, whose first four fields read the same, at most
/// 128 visible ASCII characters in all), a 32-hex trace id and a 16-hex
/// parent id, neither all zeros, and 2-hex flags, in lowercase. Anything
/// else is dropped rather than sent (the spec's rule for a receiver:
/// restart the trace).
///
/// # Examples
///
/// ```
/// use sync_protocol::is_traceparent;
///
/// assert!(is_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
/// assert!(!is_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"));
/// assert!(!is_traceparent("not a trace"));
/// ```
#[must_use]
pub fn is_traceparent(value: &str) -> bool {
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let mut fields = value.split('-');
    let (Some(version), Some(trace), Some(parent), Some(flags)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return false;
    };
    // A later version may append fields: bounded, and safe in a header.
    let rest_ok = match version {
        "00" => fields.next().is_none(),
        "ff" => false,
        _ => value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic()),
    };
    rest_ok
        && hex(version, 2)
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0')
}
