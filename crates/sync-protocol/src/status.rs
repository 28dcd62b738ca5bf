//! The status table: what each HTTP status means for the operation that
//! got it, on the client (done, retried, paused, dead-lettered) and on the
//! server (stored for replay or not). One table, so the halves agree.

/// What an answer's status means for the operation, from [`map_status`].
///
/// # Examples
///
/// ```
/// use sync_protocol::{StatusClass, map_status};
///
/// assert_eq!(map_status(201), StatusClass::Done);
/// assert_eq!(map_status(429), StatusClass::Retry);
/// assert_eq!(map_status(503), StatusClass::Unavailable);
/// assert_eq!(map_status(422), StatusClass::Permanent);
/// assert!(!StatusClass::Unavailable.counts_attempt());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StatusClass {
    /// 2xx: the operation took effect (now, or before: a replay).
    Done,
    /// The server answered "not now": 408, 409 (the key is being processed),
    /// 425, 429, 500 and the other 5xx not listed below. Retried after a
    /// backoff (or `Retry-After`), counting an attempt.
    Retry,
    /// 502, 503, 504: the server, or the gateway in front of it, could not
    /// take the request. An outage, not an answer about the operation:
    /// retried without counting an attempt, and the client pauses sending
    /// as it does offline.
    Unavailable,
    /// Never succeeds as sent: every other 4xx (401 and 403 too, unless the
    /// client is told to retry them), 501, 505, and 1xx / 3xx (redirects are
    /// not followed: a `POST` must not silently become a `GET`). The
    /// operation becomes a dead letter.
    Permanent,
}

impl StatusClass {
    /// Whether a try that got this answer uses up one of the operation's
    /// attempts: only answers about the operation do (not `Unavailable`).
    #[must_use]
    pub fn counts_attempt(self) -> bool {
        !matches!(self, Self::Unavailable)
    }

    /// Whether the client sends the operation again after this answer.
    #[must_use]
    pub fn is_retried(self) -> bool {
        matches!(self, Self::Retry | Self::Unavailable)
    }
}

/// The class of an answer with `status`: the table both halves follow.
///
/// | status | class |
/// | --- | --- |
/// | 2xx | [`Done`](StatusClass::Done) |
/// | 408, 409, 425, 429, 500, other 5xx (but 501-505) | [`Retry`](StatusClass::Retry) |
/// | 502, 503, 504 | [`Unavailable`](StatusClass::Unavailable) |
/// | every other 4xx, 501, 505, 1xx, 3xx | [`Permanent`](StatusClass::Permanent) |
#[must_use]
pub fn map_status(status: u16) -> StatusClass {
    match status {
        200..=299 => StatusClass::Done,
        502..=504 => StatusClass::Unavailable,
        501 | 505 => StatusClass::Permanent,
        408 | 409 | 425 | 429 | 500..=599 => StatusClass::Retry,
        _ => StatusClass::Permanent,
    }
}

/// Whether a server stores an answer with `status` under its key and
/// replays it to repeats: yes for answers the client will not send again
/// ([`Done`](StatusClass::Done), [`Permanent`](StatusClass::Permanent)), no
/// for those it retries (storing "try again" would replay it until the key
/// expired), and never for a 5xx (a server error is not remembered).
///
/// # Examples
///
/// ```
/// assert!(sync_protocol::is_storable(201));
/// assert!(sync_protocol::is_storable(422));
/// assert!(!sync_protocol::is_storable(429));
/// assert!(!sync_protocol::is_storable(501));
/// ```
#[must_use]
pub fn is_storable(status: u16) -> bool {
    status < 500 && !map_status(status).is_retried()
}
