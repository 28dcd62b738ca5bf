//! The group wire format (`docs/PROTOCOL.md`, "Groups"): several operations
//! that take effect together or not at all, sent as **one** request under
//! **one** idempotency key.
//!
//! A group is one request, not a batch of separate ones, on purpose: the
//! server applies it in the one transaction that also stores the key's
//! response, so a crash, a retry, a duplicate or a batch that carries it
//! can never find it half applied; there is no per-member key to get out
//! of step.

use serde::{Deserialize, Serialize};

/// Where a client sends a group unless configured otherwise.
pub const GROUP_TARGET: &str = "/sync/group";

/// The body of a group request: `{"operations": [...]}`, the members in the
/// order the app enqueued them. Sent with `POST` to the group's target
/// ([`GROUP_TARGET`] by default) with the group's own `Idempotency-Key`.
///
/// # Examples
///
/// ```
/// use sync_protocol::{GroupOperation, GroupRequest};
///
/// let transfer = GroupRequest {
///     operations: vec![
///         GroupOperation::new("account.debit", "/accounts/a", r#"{"cents":500}"#),
///         GroupOperation::new("account.credit", "/accounts/b", r#"{"cents":500}"#),
///     ],
/// };
/// let json = serde_json::to_string(&transfer)?;
/// assert_eq!(
///     json,
///     r#"{"operations":[{"kind":"account.debit","target":"/accounts/a","payload":"{\"cents\":500}"},{"kind":"account.credit","target":"/accounts/b","payload":"{\"cents\":500}"}]}"#
/// );
/// assert_eq!(serde_json::from_str::<GroupRequest>(&json)?, transfer);
/// # Ok::<_, serde_json::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRequest {
    /// The members, in enqueue order. Never empty.
    pub operations: Vec<GroupOperation>,
}

/// One member of a [`GroupRequest`]: what a single request for it would
/// carry, without a key of its own (the group's key covers it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupOperation {
    /// What it does (`"account.debit"`).
    pub kind: String,
    /// The path a single request for it would go to.
    pub target: String,
    /// The body a single request would carry, as a string.
    pub payload: String,
}

impl GroupOperation {
    /// A member.
    pub fn new(
        kind: impl Into<String>,
        target: impl Into<String>,
        payload: impl Into<String>,
    ) -> Self {
        Self {
            kind: kind.into(),
            target: target.into(),
            payload: payload.into(),
        }
    }
}

/// The body a server answers an applied group with (`sync-server` does):
/// `{"results": [...]}`, one JSON value per member, in order (what a single
/// request for it would have answered, or `null`). A refused group is
/// answered with the refusal alone (a 4xx), and nothing of it applied.
///
/// # Examples
///
/// ```
/// let answer: sync_protocol::GroupResponse =
///     serde_json::from_str(r#"{"results":[{"balance":500},null]}"#)?;
/// assert_eq!(answer.results.len(), 2);
/// # Ok::<_, serde_json::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupResponse {
    /// One value per member, in the request's order.
    pub results: Vec<serde_json::Value>,
}
