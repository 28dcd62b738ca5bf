//! [`SyncObserver`]: hooks for logs and metrics on what the worker does.

use sync_outbox::{Operation, OperationStatus, RecoveryReport};

use crate::error::EngineError;
use crate::transport::SendResult;

/// Called by workers as they go; every method has a no-op default. Keep
/// implementations short: they run on the sending thread. Never log payloads.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use sync_engine::{SendResult, SyncObserver};
/// use sync_outbox::{Operation, OperationStatus};
///
/// #[derive(Default)]
/// struct Retries(AtomicUsize);
/// impl SyncObserver for Retries {
///     fn on_result(&self, _op: &Operation, _result: &SendResult, status: OperationStatus) {
///         if status == OperationStatus::Pending {
///             self.0.fetch_add(1, Ordering::Relaxed);
///         }
///     }
/// }
///
/// let observer = Retries::default();
/// observer.on_result(&Operation::default(), &SendResult::retryable("timeout"), OperationStatus::Pending);
/// assert_eq!(observer.0.load(Ordering::Relaxed), 1);
/// ```
pub trait SyncObserver: Send + Sync {
    /// A send finished and its result was recorded: `status` is `Done`,
    /// `Pending` (retried) or `Failed`.
    fn on_result(&self, op: &Operation, result: &SendResult, status: OperationStatus) {
        let _ = (op, result, status);
    }

    /// Start-up recovery returned interrupted sends to the queue.
    fn on_recovered(&self, report: &RecoveryReport) {
        let _ = report;
    }

    /// A tick failed (the store, or a panicking transport).
    fn on_error(&self, error: &EngineError) {
        let _ = error;
    }
}
