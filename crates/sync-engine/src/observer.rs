//! [`SyncObserver`]: hooks for logs and metrics on what the worker does.

use sync_outbox::{Operation, OperationStatus, RecoveryReport};

use crate::download::PullReport;
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

    /// A tick failed (the store, or a panicking transport). `error` names
    /// the step and the operation; its cause is its `source()`, and
    /// [`EngineError::report`] gives the whole chain on one line.
    fn on_error(&self, error: &EngineError) {
        let _ = error;
    }

    /// A batch's send is over and its results are recorded (and synced):
    /// how many operations it had and how long it took.
    fn on_batch(&self, report: &BatchReport) {
        let _ = report;
    }

    /// A run of pulls applied what the server's change feed had (the
    /// download half, when the engine has a `Downloader`).
    fn on_pull(&self, report: &PullReport) {
        let _ = report;
    }

    /// A pull failed ([`EngineError::Pull`], or a page refused or not
    /// applied); it is tried again after a backoff.
    fn on_pull_error(&self, error: &EngineError) {
        let _ = error;
    }
}

/// One batch sent, for [`SyncObserver::on_batch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchReport {
    /// Operations in the batch.
    pub operations: usize,
    /// From the claim to the last result recorded and synced.
    pub elapsed: std::time::Duration,
}

impl BatchReport {
    /// A report of `operations` sent in `elapsed`.
    #[must_use]
    pub fn new(operations: usize, elapsed: std::time::Duration) -> Self {
        Self {
            operations,
            elapsed,
        }
    }
}

/// Emits the worker's events as `tracing` events (feature `tracing`): target
/// `sync_engine`, with the operation's id, kind, attempt and status as fields;
/// never its payload.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use sync_engine::{NetworkProbe, NetworkProbeConfig, SendResult, SyncTransport, SyncWorker, SyncWorkerConfig, TracingObserver};
/// use sync_outbox::{MemoryOutboxStore, Operation, Outbox, OutboxConfig};
///
/// struct Ok;
/// impl SyncTransport for Ok {
///     fn send(&self, _op: &Operation) -> SendResult { SendResult::ok() }
/// }
/// let outbox = Arc::new(Outbox::new(OutboxConfig::default(), Arc::new(MemoryOutboxStore::new())));
/// let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
/// let worker = SyncWorker::new(SyncWorkerConfig::default(), outbox, probe, Arc::new(Ok));
/// assert!(worker.set_observer(Arc::new(TracingObserver)));
/// ```
#[cfg(feature = "tracing")]
#[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
#[derive(Clone, Copy, Debug, Default)]
pub struct TracingObserver;

#[cfg(feature = "tracing")]
impl SyncObserver for TracingObserver {
    fn on_result(&self, op: &Operation, result: &SendResult, status: OperationStatus) {
        match status {
            OperationStatus::Done => {
                tracing::debug!(target: "sync_engine", id = %op.id, kind = %op.kind, attempt = op.attempt, "sent");
            }
            OperationStatus::Failed => tracing::warn!(
                target: "sync_engine", id = %op.id, kind = %op.kind, attempt = op.attempt, error = %result.error, "failed"
            ),
            OperationStatus::Pending | OperationStatus::InFlight => tracing::info!(
                target: "sync_engine", id = %op.id, kind = %op.kind, attempt = op.attempt, error = %result.error,
                retry_after_ms = ?result.retry_after_ms, "retrying"
            ),
        }
    }

    fn on_recovered(&self, report: &RecoveryReport) {
        tracing::info!(
            target: "sync_engine", requeued = report.requeued, failed = report.failed,
            rescheduled = report.rescheduled, "recovered"
        );
    }

    fn on_error(&self, error: &EngineError) {
        tracing::error!(target: "sync_engine", error = %error.report(), "sync pass failed");
    }

    fn on_pull(&self, report: &PullReport) {
        tracing::debug!(
            target: "sync_engine", pages = report.pages, applied = report.applied,
            released = report.released, held = report.held, restarts = report.restarts,
            covers_below = report.covers_below, "pulled"
        );
    }

    fn on_pull_error(&self, error: &EngineError) {
        tracing::warn!(target: "sync_engine", error = %error.report(), "pull failed");
    }
}
