//! [`SyncWorker`]: one deterministic pass of sending what is due.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use sync_outbox::Outbox;

use crate::error::EngineError;
use crate::observer::SyncObserver;
use crate::probe::NetworkProbe;
use crate::transport::{ResultSink, SyncTransport};
use crate::worker_core::{Batch, SendEnd, WorkerCore};

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

impl std::iter::Sum for WorkerStats {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::default(), |a, b| Self {
            sent: a.sent + b.sent,
            done: a.done + b.done,
            retried: a.retried + b.retried,
            failed: a.failed + b.failed,
            panicked: a.panicked + b.panicked,
        })
    }
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
/// use sync::prelude::*;
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
    core: WorkerCore,
    transport: Arc<dyn SyncTransport>,
}

impl std::fmt::Debug for SyncWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncWorker")
            .field("config", &self.config)
            .field("probe", &self.core.probe)
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
        let core = WorkerCore::new(
            config.batch_limit,
            outbox,
            probe,
            Arc::new(AtomicBool::new(false)),
        );
        Self {
            config,
            core,
            transport,
        }
    }

    /// Installs `observer`, once; returns `false` if one was installed already.
    pub fn set_observer(&self, observer: Arc<dyn SyncObserver>) -> bool {
        self.core.observer.set(observer).is_ok()
    }

    /// Shares `flag` as this worker's `sync_now` request, so any worker of
    /// an engine may act on it.
    pub(crate) fn with_drain_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.core.share_drain_flag(flag);
        self
    }

    /// Asks the next [`tick`](Self::tick) to make every operation waiting in
    /// backoff due at once (attempts unchanged) and the probe to check again:
    /// the pull-to-refresh button.
    pub fn sync_now(&self) {
        self.core.sync_now();
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
    /// If the transport returns a wrong number of results, or panics, no
    /// result can be trusted to be an operation's own: each operation of the
    /// batch is recorded as a retryable failure, never as `Done`. An
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
        let Some(Batch {
            claim,
            mut progress,
        }) = self.core.prepare(now_ms)?
        else {
            return Ok(0);
        };
        let ops = claim.ops();
        // Each result is recorded as the transport reports it.
        let mut record = |reports| self.core.record(ops, &mut progress, reports, now_ms);
        let sent = catch_unwind(AssertUnwindSafe(|| {
            let mut sink = ResultSink::new(&mut record);
            self.transport.send_each(ops, &mut sink);
            sink.miscounted
        }));
        let end = match sent {
            Ok(miscounted) => {
                progress.miscounted = miscounted;
                SendEnd::Returned
            }
            Err(_) => SendEnd::Panicked,
        };
        self.core.finish(Batch { claim, progress }, end, now_ms)
    }

    /// Counts of what this worker has done.
    #[must_use]
    pub fn stats(&self) -> WorkerStats {
        self.core.stats()
    }

    /// The outbox this worker sends from.
    #[must_use]
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.core.outbox
    }
}
