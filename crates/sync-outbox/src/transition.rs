//! The one function every status change goes through, so the state machine
//! is written down once.

use crate::error::OutboxError;
use crate::operation::{Operation, OperationStatus};

/// Whether the state machine allows `from -> to`.
///
/// `Pending -> InFlight` (claim); `InFlight -> Done | Pending | Failed`
/// (acknowledged, retry or recovery, permanent failure); `Failed -> Pending`
/// (`retry_failed`); `Pending | Failed -> Done` (a late acknowledgement of
/// a send whose claim was given up: the server has the operation, so it is
/// done); `Pending -> Failed` (past the resend window: the server may have
/// forgotten its key, so it is not sent again blindly). Nothing leaves
/// `Done`.
///
/// # Examples
///
/// ```
/// use sync_outbox::{OperationStatus::*, is_allowed};
///
/// assert!(is_allowed(Pending, InFlight));
/// assert!(is_allowed(Pending, Failed));
/// assert!(!is_allowed(Done, Pending));
/// ```
#[must_use]
pub fn is_allowed(from: OperationStatus, to: OperationStatus) -> bool {
    use OperationStatus::{Done, Failed, InFlight, Pending};
    matches!(
        (from, to),
        (Pending, InFlight | Done | Failed)
            | (InFlight, Done | Pending | Failed)
            | (Failed, Pending | Done)
    )
}

/// Moves `op` to `to` at `now_ms`, or refuses with
/// [`OutboxError::InvalidTransition`] and leaves `op` unchanged.
///
/// # Errors
///
/// [`OutboxError::InvalidTransition`] if [`is_allowed`] says no.
pub fn transition(op: &mut Operation, to: OperationStatus, now_ms: i64) -> Result<(), OutboxError> {
    if !is_allowed(op.status, to) {
        return Err(OutboxError::InvalidTransition {
            id: op.id.clone(),
            from: op.status,
            to,
        });
    }
    op.status = to;
    op.updated_at_ms = now_ms;
    Ok(())
}
