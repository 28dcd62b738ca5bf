//! [`SyncWorker`]: one deterministic pass of sending what is due.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use sync_outbox::{OperationStatus, Outbox};

use crate::error::EngineError;
use crate::observer::SyncObserver;
use crate::probe::NetworkProbe;
use crate::transport::SyncTransport;

/// Settings of a [`SyncWorker`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncWorkerConfig {
    /// Most operations claimed and sent per tick. Default 10.
    pub batch_limit: usize,
}

impl Default for SyncWorkerConfig {
    fn default() -> Self {
        Self { batch_limit: 10 }
    }
}

/// What a worker has done so far, from [`SyncWorker::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Sends started.
    pub sent: u64,
    /// Sends the server accepted.
    pub done: u64,
    /// Failed sends scheduled for another attempt.
    pub retried: u64,
    /// Operations that became `Failed`.
    pub failed: u64,
    /// Sends during which the transport panicked.
    pub panicked: u64,
}

/// Sends due operations from an [`Outbox`] through a [`SyncTransport`].
///
/// Each [`tick`](Self::tick) is one deterministic pass at the caller's time:
/// no clock, no thread, no sleep.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use sync_engine::{NetworkProbe, NetworkProbeConfig, SendResult, SyncTransport, SyncWorker, SyncWorkerConfig};
/// use sync_outbox::{MemoryOutboxStore, Operation, OperationStatus, Outbox, OutboxConfig, OutboxStore};
///
/// struct AlwaysOk;
/// impl SyncTransport for AlwaysOk {
///     fn send(&self, _op: &Operation) -> SendResult {
///         SendResult::ok()
///     }
/// }
///
/// let store = Arc::new(MemoryOutboxStore::new());
/// let outbox = Arc::new(Outbox::new(OutboxConfig::default(), store.clone()));
/// let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
/// let worker = SyncWorker::new(SyncWorkerConfig::default(), outbox.clone(), probe, Arc::new(AlwaysOk));
///
/// let id = outbox.enqueue(Operation::new("message.send", "/api/messages", "{}"), 0)?;
/// assert_eq!(worker.tick(1)?, 1);
/// assert_eq!(store.get(&id)?.map(|op| op.status), Some(OperationStatus::Done));
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
pub struct SyncWorker {
    config: SyncWorkerConfig,
    outbox: Arc<Outbox>,
    probe: Arc<NetworkProbe>,
    transport: Arc<dyn SyncTransport>,
    /// The probe's reconnect count already acted on.
    reconnects_seen: AtomicU64,
    sent: AtomicU64,
    done: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    panicked: AtomicU64,
    observer: OnceLock<Arc<dyn SyncObserver>>,
}

impl std::fmt::Debug for SyncWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncWorker")
            .field("config", &self.config)
            .field("probe", &self.probe)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl SyncWorker {
    /// A worker over `outbox`, asking `probe` before sending through `transport`.
    pub fn new(
        config: SyncWorkerConfig,
        outbox: Arc<Outbox>,
        probe: Arc<NetworkProbe>,
        transport: Arc<dyn SyncTransport>,
    ) -> Self {
        let reconnects_seen = AtomicU64::new(probe.reconnects());
        Self {
            config,
            outbox,
            probe,
            transport,
            reconnects_seen,
            sent: AtomicU64::new(0),
            done: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            panicked: AtomicU64::new(0),
            observer: OnceLock::new(),
        }
    }

    /// Installs `observer`, once; returns `false` if one was installed already.
    pub fn set_observer(&self, observer: Arc<dyn SyncObserver>) -> bool {
        self.observer.set(observer).is_ok()
    }

    /// One pass at `now_ms`; returns how many operations were sent.
    ///
    /// If the probe says offline: returns 0 and touches nothing (no attempt is
    /// spent). Otherwise: if the network came back since the last tick (and
    /// `drain_on_reconnect`), operations waiting in backoff become due now;
    /// stale `InFlight` operations are recovered; up to `batch_limit` due
    /// operations are claimed (their attempt persisted first), sent, and
    /// recorded as `Done`, retried with backoff (or the server's retry-after),
    /// or `Failed`.
    ///
    /// # Errors
    ///
    /// - [`EngineError::Outbox`] if the store fails; an operation whose result
    ///   could not be recorded stays `InFlight` and comes back through recovery.
    /// - [`EngineError::TransportPanicked`] if the transport panicked; that
    ///   operation stays `InFlight` likewise. The rest of the batch is still
    ///   sent and recorded; the first error is returned.
    pub fn tick(&self, now_ms: i64) -> Result<usize, EngineError> {
        if !self.probe.is_online(now_ms) {
            return Ok(0);
        }
        let reconnects = self.probe.reconnects();
        if self.reconnects_seen.swap(reconnects, Ordering::AcqRel) != reconnects
            && self.probe.config().drain_on_reconnect
        {
            self.outbox.make_pending_due(now_ms)?;
        }
        let batch = self.outbox.claim_ready(now_ms, self.config.batch_limit)?;
        let mut first_error = None;
        for op in &batch {
            self.sent.fetch_add(1, Ordering::Relaxed);
            let Ok(result) = catch_unwind(AssertUnwindSafe(|| self.transport.send(op))) else {
                self.panicked.fetch_add(1, Ordering::Relaxed);
                first_error.get_or_insert(EngineError::TransportPanicked { id: op.id.clone() });
                continue;
            };
            let recorded = if result.ok {
                self.outbox
                    .mark_done(&op.id, now_ms)
                    .map(|()| OperationStatus::Done)
            } else {
                self.outbox.mark_failed(
                    &op.id,
                    &result.error,
                    result.retryable,
                    result.retry_after_ms,
                    now_ms,
                )
            };
            match recorded {
                Ok(status) => {
                    let counter = match status {
                        OperationStatus::Done => &self.done,
                        OperationStatus::Failed => &self.failed,
                        OperationStatus::Pending | OperationStatus::InFlight => &self.retried,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    if let Some(observer) = self.observer.get() {
                        observer.on_result(op, &result, status);
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e.into());
                }
            }
        }
        if let (Some(error), Some(observer)) = (&first_error, self.observer.get()) {
            observer.on_error(error);
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(batch.len()),
        }
    }

    /// Counts of what this worker has done.
    #[must_use]
    pub fn stats(&self) -> WorkerStats {
        WorkerStats {
            sent: self.sent.load(Ordering::Relaxed),
            done: self.done.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            panicked: self.panicked.load(Ordering::Relaxed),
        }
    }

    /// The outbox this worker sends from.
    #[must_use]
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }
}
