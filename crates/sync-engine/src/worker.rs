//! [`SyncWorker`]: one deterministic pass of sending what is due.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use sync_outbox::{Operation, OperationStatus, Outbox, OutboxError};

use crate::error::{EngineError, SyncStep};
use crate::observer::SyncObserver;
use crate::probe::NetworkProbe;
use crate::transport::{SendResult, SyncTransport};

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
    /// Operations handed to the transport.
    pub sent: u64,
    /// Sends the server accepted.
    pub done: u64,
    /// Failed sends scheduled for another attempt.
    pub retried: u64,
    /// Operations that became `Failed`.
    pub failed: u64,
    /// Batches during which the transport panicked.
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
    /// Set by `sync_now`: the next tick makes everything in backoff due. A
    /// `SyncEngine` shares one flag among its workers.
    drain_requested: Arc<AtomicBool>,
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
            drain_requested: Arc::new(AtomicBool::new(false)),
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

    /// Shares `flag` as this worker's `sync_now` request, so any worker of
    /// an engine may act on it.
    pub(crate) fn with_drain_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.drain_requested = flag;
        self
    }

    /// Asks the next [`tick`](Self::tick) to make every operation waiting in
    /// backoff due at once (attempts unchanged) and the probe to check again:
    /// the pull-to-refresh button.
    pub fn sync_now(&self) {
        self.drain_requested.store(true, Ordering::SeqCst);
        self.probe.expire();
    }

    /// One pass at `now_ms`; returns how many operations were sent.
    ///
    /// If the probe says offline: returns 0 and touches nothing (no attempt is
    /// spent). Otherwise: if the network came back since the last tick (and
    /// `drain_on_reconnect`), or [`sync_now`](Self::sync_now) was asked,
    /// operations waiting in backoff become due now; up to `batch_limit` due
    /// operations are claimed with [`Outbox::claim`] (their attempt
    /// persisted first, and held by this pass so no other sender can take
    /// them however long the send lasts), handed to
    /// [`SyncTransport::send_batch`] at once, and each recorded as `Done`,
    /// retried with backoff (or the server's retry-after), or `Failed`.
    ///
    /// An operation the transport gave no result for (it returned too few,
    /// or panicked) is recorded as a retryable failure, never as `Done`. An
    /// operation discarded while it was being sent is skipped.
    ///
    /// # Errors
    ///
    /// The first of these; the rest of the batch is still recorded:
    /// - [`EngineError::OutboxStep`] if the store fails (naming the step and
    ///   the operation); an operation whose result could not be recorded is
    ///   put back in the queue at once (its attempt counted).
    /// - [`EngineError::TransportPanicked`] / [`EngineError::BatchPanicked`]
    ///   if the transport panicked.
    /// - [`EngineError::BatchResultCount`] if `send_batch` returned a wrong
    ///   number of results.
    pub fn tick(&self, now_ms: i64) -> Result<usize, EngineError> {
        if !self.probe.is_online(now_ms) {
            return Ok(0);
        }
        let reconnects = self.probe.reconnects();
        let reconnected = self.reconnects_seen.swap(reconnects, Ordering::AcqRel) != reconnects
            && self.probe.config().drain_on_reconnect;
        if self.drain_requested.swap(false, Ordering::AcqRel) || reconnected {
            self.outbox
                .make_pending_due(now_ms)
                .map_err(|e| step_error(SyncStep::MakeDue, None, e))?;
        }
        let claim = self
            .outbox
            .claim(now_ms, self.config.batch_limit)
            .map_err(|e| step_error(SyncStep::Claim, None, e))?;
        let Some(first) = claim.ops().first() else {
            return Ok(0);
        };
        let n_ops = claim.len();
        self.sent.fetch_add(n_ops as u64, Ordering::Relaxed);
        let mut first_error = None;
        let sent = catch_unwind(AssertUnwindSafe(|| self.transport.send_batch(claim.ops())));
        let (results, missing) = match sent {
            Ok(results) if results.len() == n_ops => (results, None),
            Ok(results) => {
                let got = results.len();
                first_error = Some(EngineError::BatchResultCount {
                    first_id: first.id.clone(),
                    expected: n_ops,
                    got,
                });
                let error = format!("the transport returned {got} results for {n_ops} operations");
                (results, Some(SendResult::retryable(error)))
            }
            Err(_) => {
                self.panicked.fetch_add(1, Ordering::Relaxed);
                first_error = Some(if n_ops == 1 {
                    EngineError::TransportPanicked {
                        id: first.id.clone(),
                    }
                } else {
                    EngineError::BatchPanicked {
                        first_id: first.id.clone(),
                        len: n_ops,
                    }
                });
                (
                    Vec::new(),
                    Some(SendResult::retryable("the transport panicked")),
                )
            }
        };
        for (index, op) in claim.iter().enumerate() {
            let Some(result) = results.get(index).or(missing.as_ref()) else {
                continue;
            };
            match self.record(op, result, now_ms) {
                Ok(Some(status)) => {
                    let counter = match status {
                        OperationStatus::Done => &self.done,
                        OperationStatus::Failed => &self.failed,
                        OperationStatus::Pending | OperationStatus::InFlight => &self.retried,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    if let Some(observer) = self.observer.get() {
                        observer.on_result(op, result, status);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        // Anything still unrecorded (a store failure) becomes an orphan here,
        // back in the queue at the next claim.
        drop(claim);
        if let (Some(error), Some(observer)) = (&first_error, self.observer.get()) {
            observer.on_error(error);
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(n_ops),
        }
    }

    /// Records one result; `None` if the operation was discarded meanwhile.
    fn record(
        &self,
        op: &Operation,
        result: &SendResult,
        now_ms: i64,
    ) -> Result<Option<OperationStatus>, EngineError> {
        let (step, recorded) = if result.ok {
            let done = self.outbox.mark_done(&op.id, now_ms);
            (SyncStep::RecordDone, done.map(|()| OperationStatus::Done))
        } else {
            let failed = self.outbox.mark_failed(
                &op.id,
                &result.error,
                result.retryable,
                result.retry_after_ms,
                now_ms,
            );
            (SyncStep::RecordFailure, failed)
        };
        match recorded {
            Ok(status) => Ok(Some(status)),
            Err(OutboxError::UnknownId { .. }) => Ok(None),
            Err(e) => Err(step_error(step, Some(&op.id), e)),
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

/// An outbox error in `step`, for operation `id` if one.
pub(crate) fn step_error(step: SyncStep, id: Option<&str>, source: OutboxError) -> EngineError {
    EngineError::OutboxStep {
        step,
        id: id.map(str::to_owned),
        source,
    }
}
