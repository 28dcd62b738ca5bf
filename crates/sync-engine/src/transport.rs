//! [`SyncTransport`], the trait an application implements to reach its
//! server, and [`SendResult`], what one send came to.

use sync_outbox::Operation;

/// What one send came to.
///
/// # Examples
///
/// ```
/// use sync_engine::SendResult;
///
/// assert!(SendResult::ok().ok);
/// let offline = SendResult::retryable("network offline");
/// assert!(!offline.ok && offline.retryable);
/// let bad = SendResult::permanent("bad request");
/// assert!(!bad.ok && !bad.retryable);
/// assert_eq!(SendResult::retry_after(30_000, "429").retry_after_ms, Some(30_000));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendResult {
    /// The server accepted the operation.
    pub ok: bool,
    /// On failure: whether trying again later may succeed (timeouts, 503),
    /// rather than never (400, invalid payload).
    pub retryable: bool,
    /// On failure: a short description, stored as the operation's
    /// `last_error`. Never put payloads or credentials here.
    pub error: String,
    /// On failure: the server's hint of how long to wait (ms), used when it is
    /// longer than the backoff.
    pub retry_after_ms: Option<i64>,
}

impl SendResult {
    /// Accepted by the server.
    #[must_use]
    pub fn ok() -> Self {
        Self {
            ok: true,
            ..Self::default()
        }
    }

    /// A temporary failure: try again after the backoff.
    pub fn retryable(error: impl Into<String>) -> Self {
        Self {
            ok: false,
            retryable: true,
            error: error.into(),
            retry_after_ms: None,
        }
    }

    /// A permanent failure: the operation becomes `Failed` at once.
    pub fn permanent(error: impl Into<String>) -> Self {
        Self {
            ok: false,
            retryable: false,
            error: error.into(),
            retry_after_ms: None,
        }
    }

    /// A temporary failure with the server's hint to wait `ms` (a 429 or 503
    /// with `Retry-After`).
    pub fn retry_after(ms: i64, error: impl Into<String>) -> Self {
        Self {
            ok: false,
            retryable: true,
            error: error.into(),
            retry_after_ms: Some(ms),
        }
    }
}

/// Sends operations to the server. Implemented by the application.
///
/// Delivery is at least once: an operation whose send was interrupted (a
/// crash, a timeout without answer) is sent again, so the server should
/// dedupe on the operation's `id`.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
/// use sync_engine::{SendResult, SyncTransport};
/// use sync_outbox::Operation;
///
/// struct MyTransport {
///     online: AtomicBool,
/// }
///
/// impl SyncTransport for MyTransport {
///     fn send(&self, _op: &Operation) -> SendResult {
///         if !self.online.load(SeqCst) {
///             return SendResult::retryable("network offline");
///         }
///         SendResult::ok()
///     }
/// }
///
/// let transport = MyTransport { online: AtomicBool::new(true) };
/// assert!(transport.send(&Operation::default()).ok);
/// ```
pub trait SyncTransport: Send + Sync {
    /// Sends one operation and says how it went.
    fn send(&self, op: &Operation) -> SendResult;

    /// Sends several operations; returns one result per operation, in order.
    /// The default calls [`send`](Self::send) for each; a transport with a
    /// batch endpoint can do better.
    fn send_batch(&self, ops: &[Operation]) -> Vec<SendResult> {
        ops.iter().map(|op| self.send(op)).collect()
    }
}
