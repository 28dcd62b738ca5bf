//! [`WorkerCore`]: the two halves of a sync pass that do not touch the
//! network, shared by the threaded [`SyncWorker`](crate::SyncWorker) and the
//! tokio engine: before the send (probe, drain, claim) and after it (record
//! each result as it arrives, then what is missing, one sync, and what the
//! probe learns). Both halves do store I/O and may block.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use sync_outbox::{Claim, Operation, OperationStatus, Outbox, OutboxError};

use crate::error::{EngineError, SyncStep};
use crate::observer::{BatchReport, SyncObserver};
use crate::probe::{NetworkProbe, Permit};
use crate::transport::SendResult;
use crate::worker::WorkerStats;

/// How a transport's `send_each` ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SendEnd {
    /// It returned (perhaps without reporting every result).
    Returned,
    /// It panicked (or, for an async send, was cancelled mid-way by a panic).
    Panicked,
}

/// A claimed batch and what has been recorded of it so far: results are
/// recorded as the transport reports them, without a sync each, and
/// [`WorkerCore::finish`] records what is missing and syncs once.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) claim: Claim,
    pub(crate) progress: Progress,
}

/// What has been recorded of a batch.
#[derive(Debug)]
pub(crate) struct Progress {
    /// Whether each operation has had a result recorded (or its recording
    /// failed: then it is left to come back as an orphan).
    recorded: Vec<bool>,
    /// Every report, counting strays.
    reported: usize,
    /// Reports out of range or repeated: ignored.
    strays: usize,
    /// Whether the latest result reached the server (`Some(true)`) or got
    /// no answer (`Some(false)`).
    last_reached: Option<bool>,
    /// The longest `Retry-After` of a result without an answer (a 503).
    unreachable_hint_ms: Option<i64>,
    /// Held while the batch was sent under a `Permit::Try` (one operation
    /// while unreachable): ends the try if the batch is dropped unfinished
    /// (a stop), so the next sender may try.
    trying: Option<TryGuard>,
    /// How many results a `send_batch` returned, when that was the wrong
    /// number and none was reported.
    pub(crate) miscounted: Option<usize>,
    first_error: Option<EngineError>,
    /// When the batch was claimed (for [`SyncObserver::on_batch`]).
    started: std::time::Instant,
}

/// Ends a `Permit::Try` when a batch sent under it is dropped before
/// `finish` (a stop, a cancelled task), so the probe does not wait forever
/// for a try nobody will report.
#[derive(Debug)]
pub(crate) struct TryGuard(Option<Arc<NetworkProbe>>);

impl TryGuard {
    /// The batch was finished: its result ends the try instead.
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TryGuard {
    fn drop(&mut self) {
        if let Some(probe) = self.0.take() {
            probe.end_try();
        }
    }
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

    /// Before the send: `None` if the probe says offline or sending is
    /// paused while the server is unreachable (nothing touched, no attempt
    /// spent); otherwise, after a reconnect (with `drain_on_reconnect`) or a
    /// `sync_now`, makes backoff due, then claims up to `batch_limit`
    /// operations (one, to try whether an unreachable server is back), held
    /// by the returned batch.
    pub(crate) fn prepare(&self, now_ms: i64) -> Result<Option<Batch>, EngineError> {
        if !self.probe.is_online(now_ms) {
            return Ok(None);
        }
        let (limit, trying) = match self.probe.permit(now_ms) {
            Permit::Wait => return Ok(None),
            Permit::Try => (1, true),
            Permit::Send => (self.batch_limit, false),
        };
        let claimed = self.claim(now_ms, limit);
        if trying && !matches!(claimed, Ok(Some(_))) {
            self.probe.end_try();
        }
        Ok(claimed?.map(|claim| Batch {
            progress: Progress {
                recorded: vec![false; claim.len()],
                reported: 0,
                strays: 0,
                last_reached: None,
                unreachable_hint_ms: None,
                trying: trying.then(|| TryGuard(Some(Arc::clone(&self.probe)))),
                miscounted: None,
                first_error: None,
                started: std::time::Instant::now(),
            },
            claim,
        }))
    }

    /// Drains if asked, then claims up to `limit` operations; `None` if
    /// nothing is due.
    fn claim(&self, now_ms: i64, limit: usize) -> Result<Option<Claim>, EngineError> {
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
            .claim(now_ms, limit)
            .map_err(|e| step_error(SyncStep::Claim, None, e))?;
        if claim.is_empty() {
            return Ok(None);
        }
        self.sent.fetch_add(claim.len() as u64, Ordering::Relaxed);
        Ok(Some(claim))
    }

    /// Records results the transport reported for `batch`, as they come:
    /// one unsynced store write for the lot (durable against a process
    /// crash; [`finish`](Self::finish) syncs once for the batch). A report
    /// out of range, or for an operation already recorded, is ignored.
    pub(crate) fn record(
        &self,
        ops: &[Operation],
        batch: &mut Progress,
        reports: Vec<(usize, SendResult)>,
        now_ms: i64,
    ) {
        batch.reported += reports.len();
        let mut taken = Vec::with_capacity(reports.len());
        for (index, result) in reports {
            match batch.recorded.get_mut(index) {
                Some(done @ false) => {
                    *done = true;
                    batch.last_reached = Some(!result.is_unanswered());
                    if result.is_unanswered() && result.retry_after_ms.is_some() {
                        batch.unreachable_hint_ms =
                            batch.unreachable_hint_ms.max(result.retry_after_ms);
                    }
                    taken.push((index, result));
                }
                _ => batch.strays += 1,
            }
        }
        if taken.is_empty() {
            return;
        }
        let outcomes = taken.iter().filter_map(|(index, result)| {
            ops.get(*index).map(|op| (op.id.as_str(), result.outcome()))
        });
        let recorded = self.outbox.record_results_unsynced(outcomes, now_ms);
        self.count(ops, &taken, recorded, &mut batch.first_error);
    }

    /// After the send: records a retryable failure for every operation
    /// without a result (the transport panicked, or left it out), makes the
    /// batch's results durable with one sync, tells the probe whether the
    /// server was reached, and releases the claim. An operation discarded
    /// meanwhile is skipped; one whose result could not be stored is put
    /// back in the queue (its attempt counted). Returns how many operations
    /// the batch had.
    pub(crate) fn finish(
        &self,
        batch: Batch,
        end: SendEnd,
        now_ms: i64,
    ) -> Result<usize, EngineError> {
        let Batch {
            claim,
            progress: mut batch,
        } = batch;
        let n_ops = claim.len();
        let Some(first_id) = claim.ops().first().map(|op| op.id.clone()) else {
            return Ok(0);
        };
        let missing: Vec<usize> = (0..n_ops)
            .filter(|&i| !batch.recorded.get(i).copied().unwrap_or(true))
            .collect();
        let mut error = match end {
            SendEnd::Panicked => {
                self.panicked.fetch_add(1, Ordering::Relaxed);
                Some(if n_ops == 1 {
                    EngineError::TransportPanicked {
                        id: first_id.clone(),
                    }
                } else {
                    EngineError::BatchPanicked {
                        first_id: first_id.clone(),
                        len: n_ops,
                    }
                })
            }
            SendEnd::Returned if !missing.is_empty() || batch.strays > 0 => {
                Some(EngineError::BatchResultCount {
                    first_id: first_id.clone(),
                    expected: n_ops,
                    got: batch.miscounted.unwrap_or(batch.reported),
                })
            }
            SendEnd::Returned => None,
        };
        if !missing.is_empty() {
            let why = match end {
                SendEnd::Panicked => "the transport panicked".to_owned(),
                SendEnd::Returned => format!(
                    "the transport returned {} results for {n_ops} operations",
                    batch.miscounted.unwrap_or(batch.reported)
                ),
            };
            let taken: Vec<(usize, SendResult)> = missing
                .iter()
                .map(|&i| (i, SendResult::retryable(why.clone())))
                .collect();
            let ops = claim.ops();
            let outcomes = taken.iter().filter_map(|(index, result)| {
                ops.get(*index).map(|op| (op.id.as_str(), result.outcome()))
            });
            let recorded = self.outbox.record_results(outcomes, now_ms);
            self.count(ops, &taken, recorded, &mut batch.first_error);
        }
        // One sync for every result recorded as it arrived.
        if let Err(e) = self.outbox.sync() {
            batch
                .first_error
                .get_or_insert(step_error(SyncStep::SyncResults, Some(&first_id), e));
        }
        // Reported, the try is over: the guard has nothing left to end.
        let trying = batch.trying.take().map(TryGuard::disarm).is_some();
        match (batch.last_reached, trying) {
            (Some(true), _) => self.probe.report_reached(now_ms),
            (Some(false), _) => self
                .probe
                .report_unreachable_for(now_ms, batch.unreachable_hint_ms),
            (None, true) => self.probe.end_try(),
            (None, false) => {}
        }
        // Anything still unrecorded (a store failure) becomes an orphan here,
        // back in the queue at the next claim.
        drop(claim);
        if let Some(observer) = self.observer.get() {
            observer.on_batch(&BatchReport::new(n_ops, batch.started.elapsed()));
        }
        if let Some(e) = batch.first_error.take() {
            error.get_or_insert(e);
        }
        if let (Some(error), Some(observer)) = (&error, self.observer.get()) {
            observer.on_error(error);
        }
        match error {
            Some(e) => Err(e),
            None => Ok(n_ops),
        }
    }

    /// Counts and tells the observer what `record_results` said of `taken`.
    fn count(
        &self,
        ops: &[Operation],
        taken: &[(usize, SendResult)],
        recorded: Result<Vec<Result<OperationStatus, OutboxError>>, OutboxError>,
        first_error: &mut Option<EngineError>,
    ) {
        let statuses = match recorded {
            Ok(statuses) => statuses,
            Err(e) => {
                if let Some(op) = taken.first().and_then(|(i, _)| ops.get(*i)) {
                    first_error.get_or_insert(step_error(step_of(&taken[0].1), Some(&op.id), e));
                }
                return;
            }
        };
        for ((index, result), status) in taken.iter().zip(statuses) {
            let Some(op) = ops.get(*index) else { continue };
            match status {
                Ok(status) => {
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
                // Discarded meanwhile.
                Err(OutboxError::UnknownId { .. }) => {}
                Err(e) => {
                    first_error.get_or_insert(step_error(step_of(result), Some(&op.id), e));
                }
            }
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

/// The step that records `result`.
fn step_of(result: &SendResult) -> SyncStep {
    if result.ok {
        SyncStep::RecordDone
    } else {
        SyncStep::RecordFailure
    }
}

#[cfg(test)]
mod tests;
