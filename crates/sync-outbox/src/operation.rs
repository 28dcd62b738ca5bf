//! [`Operation`], the unit the outbox persists and sends, and its
//! [`OperationStatus`].

use serde::{Deserialize, Serialize};

/// Where an operation is in its life.
///
/// ```text
/// Pending -> InFlight -> Done
///               | (retryable failure, or recovery after a crash)
///               v
///            Pending again
///               | (permanent failure, or attempts used up)
///               v
///            Failed -> (retry_failed) -> Pending
/// ```
///
/// # Examples
///
/// ```
/// use sync_outbox::OperationStatus;
///
/// assert_eq!(OperationStatus::default(), OperationStatus::Pending);
/// assert!(OperationStatus::Done.is_terminal());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationStatus {
    /// Waiting to be sent, at or after `next_retry_at_ms`.
    #[default]
    Pending,
    /// Claimed by a worker; a send has started.
    InFlight,
    /// Acknowledged by the server. Terminal.
    Done,
    /// Failed permanently or out of attempts. Terminal, except for
    /// [`Outbox::retry_failed`](crate::Outbox::retry_failed).
    Failed,
}

impl OperationStatus {
    /// Whether the operation is finished (`Done` or `Failed`).
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Done | Self::Failed)
    }
}

/// One local operation waiting to reach the server.
///
/// The application fills `kind`, `target` and `payload` (and optionally `id`,
/// `ordering_key`, `coalesce_key`); [`Outbox::enqueue`](crate::Outbox::enqueue)
/// fills the rest.
///
/// # Examples
///
/// ```
/// use sync_outbox::{Operation, OperationStatus};
///
/// let op = Operation::new("message.send", "/api/messages", r#"{"text":"hello"}"#);
/// assert_eq!(op.status, OperationStatus::Pending);
/// assert_eq!(op.attempt, 0);
/// assert!(op.id.is_empty(), "enqueue assigns an id");
/// ```
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Operation {
    /// Unique id, and the idempotency key the server dedupes on. Empty on
    /// enqueue means "assign one".
    pub id: String,
    /// What the operation does (`"message.send"`).
    pub kind: String,
    /// Where it goes (`"/api/messages"`).
    pub target: String,
    /// The body, usually JSON.
    pub payload: String,
    /// Where the operation is in its life.
    pub status: OperationStatus,
    /// Sends started so far; incremented and persisted before each send.
    pub attempt: u32,
    /// Earliest time (ms) the next send may start.
    pub next_retry_at_ms: i64,
    /// The last failure's message; empty if none.
    pub last_error: String,
    /// When it was enqueued (ms).
    pub created_at_ms: i64,
    /// When it last changed (ms). For an `InFlight` op: when it was claimed.
    pub updated_at_ms: i64,
    /// Operations with the same key are sent one at a time, in enqueue order.
    pub ordering_key: Option<String>,
    /// A pending, never-sent operation with the same key is updated in place
    /// instead of a second one being added ("latest state wins").
    pub coalesce_key: Option<String>,
    /// Which outbox enqueued it (`OutboxConfig::owner`).
    pub owner: String,
    /// Enqueue order, assigned by the outbox; breaks ties between operations
    /// due at the same time.
    pub seq: u64,
}

impl Operation {
    /// A new pending operation with no id yet.
    pub fn new(
        kind: impl Into<String>,
        target: impl Into<String>,
        payload: impl Into<String>,
    ) -> Self {
        Self {
            kind: kind.into(),
            target: target.into(),
            payload: payload.into(),
            ..Self::default()
        }
    }

    /// Whether a worker may claim it at `now_ms` (ignoring per-key order).
    #[must_use]
    pub fn is_due(&self, now_ms: i64) -> bool {
        self.status == OperationStatus::Pending && self.next_retry_at_ms <= now_ms
    }
}
