//! [`OutboxError`], the one error type of this crate.

use crate::operation::OperationStatus;

/// Everything that can go wrong in the outbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The state machine forbids this change (for example `mark_done` of a
    /// `Pending` operation, or anything out of `Done`).
    #[error("operation {id}: invalid transition from {from:?} to {to:?}")]
    InvalidTransition {
        /// The operation.
        id: String,
        /// Its status.
        from: OperationStatus,
        /// The status asked for.
        to: OperationStatus,
    },
    /// No operation has this id.
    #[error("unknown operation id {id:?}")]
    UnknownId {
        /// The id asked for.
        id: String,
    },
    /// An operation with this id exists already.
    #[error("duplicate operation id {id:?}")]
    DuplicateId {
        /// The id given to `enqueue`.
        id: String,
    },
    /// A payload could not be built from a value, or read into a type. The
    /// message names the operation, never the payload's content (it may
    /// hold private data): only what went wrong and where.
    #[error("payload of operation {id:?} ({kind}): {problem}{}", at_line(*line, *column))]
    Payload {
        /// The operation's id (empty before it is enqueued).
        id: String,
        /// The operation's kind.
        kind: String,
        /// What went wrong: "not valid JSON", "not the expected type", ...
        problem: &'static str,
        /// Line of the payload where it went wrong (1-based; 0 if unknown).
        line: usize,
        /// Column of that line (1-based; 0 if unknown).
        column: usize,
    },
    /// `enqueue` was given an operation that can never be sent: an empty
    /// `kind` or `target`, or a `target` that is not a path starting with
    /// `/` (the transport appends it to the server's base URL).
    #[error("operation {id:?} ({kind}) cannot be sent: {problem}")]
    InvalidOperation {
        /// The operation's id (empty if the outbox was to assign one).
        id: String,
        /// The operation's kind.
        kind: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The queue is at its limit ([`OutboxConfig::max_queued`] or
    /// [`max_queued_bytes`](crate::OutboxConfig::max_queued_bytes)):
    /// nothing was enqueued. Backpressure to show the user; it clears as
    /// operations are sent, or discarded.
    ///
    /// [`OutboxConfig::max_queued`]: crate::OutboxConfig::max_queued
    #[error("the queue is full: {queued} {what} queued with this one, the limit is {limit}")]
    QueueFull {
        /// `"operations"` or `"payload bytes"`.
        what: &'static str,
        /// How many there would be with the refused operation.
        queued: u64,
        /// The configured limit.
        limit: u64,
    },
    /// A pulled page does not follow what was pulled before (versions out
    /// of order, a cursor gone backwards, no cursor): nothing of it was
    /// applied and the stored download state is unchanged.
    #[error("pulled page refused: {problem}")]
    BadPage {
        /// What is wrong with it.
        problem: String,
    },
    /// The app's apply of a pulled change failed; the page is not stored
    /// (with the SQLite store, nothing of it is applied), and is pulled
    /// again.
    #[error("applying a pulled change failed")]
    Apply {
        /// The app's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The store failed; the source is the store's own error (with its file
    /// and offset).
    #[error("outbox store failed")]
    Store {
        /// The store's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

/// `" at line L, column C"`, or nothing when the position is unknown (0).
fn at_line(line: usize, column: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(" at line {line}, column {column}")
    }
}

impl OutboxError {
    /// Wraps a store implementation's error.
    pub fn store(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Store {
            source: Box::new(source),
        }
    }
}
