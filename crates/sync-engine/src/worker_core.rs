//! [`WorkerCore`]: the two halves of a sync pass that do not touch the
//! network, shared by the threaded [`SyncWorker`](crate::SyncWorker) and the
//! tokio engine: before the send (probe, drain, claim) and after it (record
//! every result). Both halves do store I/O and may block.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use sync_outbox::{Claim, OperationStatus, Outbox, OutboxError, SendOutcome};

use crate::error::{EngineError, SyncStep};
use crate::observer::SyncObserver;
use crate::probe::NetworkProbe;
use crate::transport::SendResult;
use crate::worker::WorkerStats;

/// What a transport's `send_batch` came to.
#[derive(Debug)]
pub(crate) enum BatchOutcome {
    /// It returned these results (perhaps the wrong number of them).
    Results(Vec<SendResult>),
    /// It panicked (or, for an async send, was cancelled mid-way by a panic).
    Panicked,
}

/// Everything a sender needs but the transport.
pub(crate) struct WorkerCore {
    pub(crate) batch_limit: usize,
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) probe: Arc<NetworkProbe>,
    /// The probe's reconnect count already acted on.
    reconnects_seen: AtomicU64,
    /// Set by `sync_now`: the next pass makes everything in backoff due. An
    /// engine shares one flag among its senders.
    drain_requested: Arc<AtomicBool>,
    sent: AtomicU64,
    done: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    panicked: AtomicU64,
    pub(crate) observer: OnceLock<Arc<dyn SyncObserver>>,
}

impl WorkerCore {
    pub(crate) fn new(
        batch_limit: usize,
        outbox: Arc<Outbox>,
        probe: Arc<NetworkProbe>,
        drain_requested: Arc<AtomicBool>,
    ) -> Self {
        let reconnects_seen = AtomicU64::new(probe.reconnects());
        Self {
            batch_limit,
            outbox,
            probe,
            reconnects_seen,
            drain_requested,
            sent: AtomicU64::new(0),
            done: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            panicked: AtomicU64::new(0),
            observer: OnceLock::new(),
        }
    }

    pub(crate) fn share_drain_flag(&mut self, flag: Arc<AtomicBool>) {
        self.drain_requested = flag;
    }

    /// Asks the next pass to make every operation in backoff due, and the
    /// probe to check again.
    pub(crate) fn sync_now(&self) {
        self.drain_requested.store(true, Ordering::SeqCst);
        self.probe.expire();
    }

    /// Before the send: `None` if the probe says offline (nothing touched, no
    /// attempt spent); otherwise, after a reconnect (with
    /// `drain_on_reconnect`) or a `sync_now`, makes backoff due, then claims
    /// up to `batch_limit` operations, held by the returned `Claim`.
    pub(crate) fn prepare(&self, now_ms: i64) -> Result<Option<Claim>, EngineError> {
        if !self.probe.is_online(now_ms) {
            return Ok(None);
        }
        let reconnects = self.probe.reconnects();
        let reconnected = self.reconnects_seen.swap(reconnects, Ordering::AcqRel) != reconnects
            && self.probe.config().drain_on_reconnect;
        let drain_asked = self.drain_requested.swap(false, Ordering::AcqRel);
        if (drain_asked || reconnected)
            && let Err(e) = self.outbox.make_pending_due(now_ms)
        {
            if drain_asked {
                // Keep the request for the next pass.
                self.drain_requested.store(true, Ordering::SeqCst);
            }
            return Err(step_error(SyncStep::MakeDue, None, e));
        }
        let claim = self
            .outbox
            .claim(now_ms, self.batch_limit)
            .map_err(|e| step_error(SyncStep::Claim, None, e))?;
        if claim.is_empty() {
            return Ok(None);
        }
        self.sent.fetch_add(claim.len() as u64, Ordering::Relaxed);
        Ok(Some(claim))
    }

    /// After the send: records one result per operation of `claim` and
    /// releases it. With a wrong number of results or a panic, no result can
    /// be trusted to be an operation's own: each is a retryable failure,
    /// never `Done`. An operation discarded meanwhile is skipped.
    /// Returns how many operations the batch had.
    pub(crate) fn record_batch(
        &self,
        claim: Claim,
        outcome: BatchOutcome,
        now_ms: i64,
    ) -> Result<usize, EngineError> {
        let Some(first) = claim.ops().first() else {
            return Ok(0);
        };
        let n_ops = claim.len();
        let mut first_error = None;
        let (results, missing) = match outcome {
            BatchOutcome::Results(results) if results.len() == n_ops => (results, None),
            BatchOutcome::Results(results) => {
                // Which result is whose cannot be trusted: none counts.
                let got = results.len();
                first_error = Some(EngineError::BatchResultCount {
                    first_id: first.id.clone(),
                    expected: n_ops,
                    got,
                });
                let error = format!("the transport returned {got} results for {n_ops} operations");
                (Vec::new(), Some(SendResult::retryable(error)))
            }
            BatchOutcome::Panicked => {
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
        // One store write (one sync) for the whole batch.
        let mut recorded_ops = Vec::with_capacity(n_ops);
        let mut outcomes = Vec::with_capacity(n_ops);
        for (index, op) in claim.iter().enumerate() {
            if let Some(result) = results.get(index).or(missing.as_ref()) {
                recorded_ops.push((op, result));
                outcomes.push((op.id.as_str(), outcome_of(result)));
            }
        }
        match self.outbox.record_results(outcomes, now_ms) {
            Ok(statuses) => {
                for ((op, result), status) in recorded_ops.into_iter().zip(statuses) {
                    match status {
                        Ok(status) => {
                            let counter = match status {
                                OperationStatus::Done => &self.done,
                                OperationStatus::Failed => &self.failed,
                                OperationStatus::Pending | OperationStatus::InFlight => {
                                    &self.retried
                                }
                            };
                            counter.fetch_add(1, Ordering::Relaxed);
                            if let Some(observer) = self.observer.get() {
                                observer.on_result(op, result, status);
                            }
                        }
                        // Discarded meanwhile.
                        Err(OutboxError::UnknownId { .. }) => {}
                        Err(e) => {
                            first_error.get_or_insert(step_error(step_of(result), Some(&op.id), e));
                        }
                    }
                }
            }
            Err(e) => {
                if let Some((op, result)) = recorded_ops.first() {
                    first_error.get_or_insert(step_error(step_of(result), Some(&op.id), e));
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

    pub(crate) fn stats(&self) -> WorkerStats {
        WorkerStats {
            sent: self.sent.load(Ordering::Relaxed),
            done: self.done.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            panicked: self.panicked.load(Ordering::Relaxed),
        }
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

/// A transport's result as the outbox records it.
fn outcome_of(result: &SendResult) -> SendOutcome<'_> {
    if result.ok {
        SendOutcome::Acknowledged
    } else {
        SendOutcome::Failed {
            error: &result.error,
            retryable: result.retryable,
            retry_after_ms: result.retry_after_ms,
        }
    }
}

/// The step that records `result`.
fn step_of(result: &SendResult) -> SyncStep {
    if result.ok {
        SyncStep::RecordDone
    } else {
        SyncStep::RecordFailure
    }
}
