//! Putting abandoned claims back in the queue: orphans at once, unheld
//! claims after `inflight_timeout_ms`.

use super::Outbox;
use super::index::{Abandoned, State};
use crate::error::OutboxError;
use crate::operation::OperationStatus;
use crate::outbox::RecoveryReport;
use crate::transition::transition;

impl Outbox {
    /// Start-up work: rebuilds the in-memory indexes from the store and
    /// puts back in the queue every `InFlight` operation that no sender of
    /// this outbox will record: at once for orphans (claims of a previous
    /// process, which the store's exclusive lock proves gone, and of dropped
    /// [`Claim`](crate::Claim)s), after `inflight_timeout_ms` for unheld
    /// detached claims ([`Claim::detach`](crate::Claim::detach)). They become `Pending`, due at
    /// `now_ms`, their attempt counted (`Failed` if that was their last
    /// attempt), with `last_error` saying so. Claims held by a live `Claim`
    /// are left alone. Finally brings pending operations scheduled more than
    /// `max_delay_ms` ahead (the wall clock jumped) back to
    /// `now + max_delay_ms`. Durable on `Ok`.
    ///
    /// The first claim of a new `Outbox` requeues orphans too, so a
    /// restarted app resends interrupted operations without calling this.
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`].
    pub fn recover(&self, now_ms: i64) -> Result<RecoveryReport, OutboxError> {
        let mut state = self.lock();
        state.loaded = false;
        self.load(&mut state)?;
        let (requeued, failed) = self.requeue_abandoned(&mut state, now_ms)?;
        let rescheduled = self.reschedule_far_future(&mut state, now_ms)?;
        drop(state);
        if requeued + failed + rescheduled > 0 {
            self.shared.notify_claimable();
        }
        Ok(RecoveryReport {
            requeued,
            failed,
            rescheduled,
        })
    }

    /// Returns orphans and timed-out unheld claims to `Pending` (or `Failed`
    /// after their last attempt); returns how many of each.
    pub(super) fn requeue_abandoned(
        &self,
        state: &mut State,
        now_ms: i64,
    ) -> Result<(usize, usize), OutboxError> {
        let deadline = now_ms.saturating_sub(self.config.inflight_timeout_in_ms());
        let (mut requeued, mut failed) = (0, 0);
        for (entry, why) in state.abandoned_claims(deadline) {
            let stored = self.store.get(&entry.2)?;
            let Some(mut op) = stored
                .clone()
                .filter(|op| op.status == OperationStatus::InFlight)
            else {
                // Recorded after all (a store error that still wrote), or
                // removed: a finished one must not keep blocking its key.
                state.forget_claim(&entry);
                if let Some(finished) = stored.filter(|op| op.status.is_terminal()) {
                    state.finish(&finished, self.holds_key(&finished));
                }
                continue;
            };
            // The interrupted send may have reached the server.
            if op.first_sent_at_ms.is_none() {
                op.first_sent_at_ms = Some(op.updated_at_ms);
            }
            let to = if self.config.retry.gives_up_after(op.attempt) {
                OperationStatus::Failed
            } else {
                OperationStatus::Pending
            };
            transition(&mut op, to, now_ms)?;
            op.last_error = match why {
                Abandoned::Orphaned => format!(
                    "attempt {} was interrupted: its sender stopped before the result",
                    op.attempt
                ),
                Abandoned::TimedOut => format!(
                    "no result for attempt {} within {} ms: the send was interrupted",
                    op.attempt,
                    self.config.inflight_timeout_in_ms()
                ),
            };
            op.next_retry_at_ms = now_ms;
            self.store.put(&op)?;
            state.forget_claim(&entry);
            if to == OperationStatus::Failed {
                state.finish(&op, self.holds_key(&op));
                failed += 1;
            } else {
                requeued += 1;
            }
        }
        Ok((requeued, failed))
    }
}
