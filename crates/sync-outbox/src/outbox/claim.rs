//! [`Claim`]: a batch of claimed operations held by a live sender; and the
//! outbox's side of it: claiming, and recording each result.

use std::fmt;
use std::sync::Arc;

use super::dependency::Needs;
use super::index::claim_entry;
use super::{Outbox, Shared};
use crate::error::OutboxError;
use crate::operation::{Operation, OperationStatus};
#[cfg(doc)]
use crate::store::OutboxStore;
use crate::transition::transition;

/// Operations claimed by [`Outbox::claim`](crate::Outbox::claim), held by the
/// sender that owns this value.
///
/// While a `Claim` lives, its operations are `InFlight` and belong to its
/// owner: no timeout hands them to another sender, however long the send
/// takes (a hung send is bounded by the transport's own timeout). Record each
/// result with [`Outbox::mark_done`](crate::Outbox::mark_done) or
/// [`Outbox::mark_failed`](crate::Outbox::mark_failed).
///
/// Dropping the `Claim` with operations still unrecorded (the sender gave up,
/// or a store write failed) makes them orphans: the next claim puts them back
/// to `Pending`, due at once (the attempt stays counted), and the outbox's
/// [`on_claimable`](crate::Outbox::on_claimable) listeners are told. Drop does
/// no I/O.
///
/// # Examples
///
/// ```
/// use sync_outbox::{MemoryOutboxStore, Operation, Outbox, OutboxConfig};
/// use std::sync::Arc;
///
/// let outbox = Outbox::new(OutboxConfig::default(), Arc::new(MemoryOutboxStore::new()));
/// let a = outbox.enqueue(Operation::new("note.create", "/notes", "{}"), 0)?;
/// let b = outbox.enqueue(Operation::new("note.create", "/notes", "{}"), 0)?;
///
/// let claim = outbox.claim(1, 10)?;
/// assert_eq!(claim.len(), 2);
/// // However late it is, nobody else gets them while `claim` lives.
/// assert!(outbox.claim(1_000_000, 10)?.is_empty());
/// outbox.mark_done(&a, 2)?;
/// drop(claim); // `b` was never recorded: it is an orphan now
///
/// let again = outbox.claim(3, 10)?;
/// assert_eq!(again.ops()[0].id, b);
/// assert_eq!(again.ops()[0].attempt, 2, "the interrupted attempt counted");
/// # Ok::<_, sync_outbox::OutboxError>(())
/// ```
#[must_use = "dropping a Claim at once makes its operations orphans"]
pub struct Claim {
    ops: Vec<Operation>,
    token: u64,
    shared: Arc<Shared>,
}

impl Claim {
    pub(super) fn new(ops: Vec<Operation>, token: u64, shared: Arc<Shared>) -> Self {
        Self { ops, token, shared }
    }

    /// The claimed operations, `InFlight`, their attempt already counted, in
    /// claim order (oldest due first).
    #[must_use]
    pub fn ops(&self) -> &[Operation] {
        &self.ops
    }

    /// The claimed operations, in claim order.
    pub fn iter(&self) -> std::slice::Iter<'_, Operation> {
        self.ops.iter()
    }

    /// How many operations were claimed.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether nothing was claimed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The claimed operations, no longer held: from now on an unrecorded one
    /// is taken back after the outbox's `inflight_timeout_ms`, like a claim
    /// whose sender may be gone. This is what
    /// the deprecated `Outbox::claim_ready` returns.
    #[must_use]
    pub fn detach(mut self) -> Vec<Operation> {
        let ops = std::mem::take(&mut self.ops);
        {
            let mut state = self.shared.lock();
            for op in &ops {
                if state.held.get(&op.id) == Some(&self.token) {
                    state.held.remove(&op.id);
                }
            }
        }
        if !ops.is_empty() {
            // A sleeping sender must now also wake at these claims' expiry.
            self.shared.notify_claimable();
        }
        ops
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.ops.is_empty() {
            return;
        }
        let mut orphaned = 0;
        {
            let mut state = self.shared.lock();
            for op in &self.ops {
                if state.held.get(&op.id) != Some(&self.token) {
                    continue; // recorded, or discarded
                }
                state.held.remove(&op.id);
                let entry = claim_entry(op);
                if state.in_flight.remove(&entry) {
                    state.orphans.insert(entry);
                    orphaned += 1;
                }
            }
        }
        if orphaned > 0 {
            self.shared.notify_claimable();
        }
    }
}

impl fmt::Debug for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.ops.iter().map(|op| op.id.as_str()).collect();
        f.debug_struct("Claim")
            .field("token", &self.token)
            .field("ids", &ids)
            .finish_non_exhaustive()
    }
}

impl<'a> IntoIterator for &'a Claim {
    type Item = &'a Operation;
    type IntoIter = std::slice::Iter<'a, Operation>;

    fn into_iter(self) -> Self::IntoIter {
        self.ops.iter()
    }
}

impl Outbox {
    /// Claims up to `limit` operations that are due at `now_ms` for sending,
    /// held by the returned [`Claim`]: marks them `InFlight`, increments
    /// their `attempt`, persists that, and only then returns them.
    ///
    /// Oldest first (by `next_retry_at_ms`, then enqueue order). Per-key FIFO:
    /// while an operation with an `ordering_key` is `Pending` or `InFlight`,
    /// no later operation with the same key is claimed. First, orphans (and
    /// timed-out claims nobody holds) go back to `Pending` (see
    /// [`Outbox::recover`]). A due operation first sent longer than
    /// [`OutboxConfig::resend_window`](crate::OutboxConfig::resend_window)
    /// ago is not claimed but made `Failed` (durably, before the claim),
    /// its `last_error` saying why. An operation that [needs](crate::Need)
    /// an earlier one's answer waits until that one is `Done`; then it is
    /// filled in and stored (synced) before it is claimed, or made `Failed`
    /// if it never can be.
    ///
    /// While the `Claim` lives its operations belong to its owner alone,
    /// however long the send takes. Dropping it with operations unrecorded
    /// puts them back in the queue at once.
    ///
    /// Durable on `Ok` against a process crash: a process that dies during
    /// the send finds the claim, and its attempt, on restart. Against power
    /// loss, as the store's [`OutboxStore::put_claimed`] says: the WAL store
    /// syncs a claim with the next synced write, so a power loss may undo the
    /// claim (the operation is `Pending` again, its attempt not counted) but
    /// never an acknowledged enqueue or result.
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`] if the store fails; no operation is handed out
    /// then (some may have been stored `InFlight`: they are orphans, back in
    /// the queue on the next call).
    pub fn claim(&self, now_ms: i64, limit: usize) -> Result<Claim, OutboxError> {
        let mut state = self.lock_loaded()?;
        let (requeued, failed) = self.requeue_abandoned(&mut state, now_ms)?;
        let rescheduled = self.reschedule_far_future(&mut state, now_ms)?;
        let mut window = limit;
        let mut expired: Vec<Operation> = Vec::new();
        let mut broken: Vec<Operation> = Vec::new();
        let (mut claimed, filled) = loop {
            let candidates = self.store.ready(now_ms, window)?;
            let exhausted = candidates.len() < window;
            let mut claimable = Vec::new();
            // Dependents filled in from their dependencies' answers: stored
            // before they are claimed.
            let mut filled = Vec::new();
            for op in candidates {
                // Expired operations are failed only up to the last one
                // claimed, so what a claim does depends on the order alone.
                if claimable.len() >= limit {
                    break;
                }
                // Another account's operations wait for it to sign in
                // again: never sent with this one's credentials.
                if op.account != state.account || !state.is_head_of_key(&op) {
                    continue;
                }
                if self.past_resend_window(&op, now_ms) {
                    if !expired.iter().any(|e| e.id == op.id) {
                        expired.push(op);
                    }
                } else if op.needs.is_empty() {
                    claimable.push(op);
                } else {
                    match self.resolve_needs(&op)? {
                        Needs::Ready(op) => {
                            filled.push((*op).clone());
                            claimable.push(*op);
                        }
                        Needs::Waiting => {}
                        Needs::Broken(why) => {
                            if !broken.iter().any(|b| b.id == op.id) {
                                let mut op = op;
                                op.last_error = why;
                                broken.push(op);
                            }
                        }
                    }
                }
            }
            if claimable.len() == limit || exhausted {
                break (claimable, filled);
            }
            // Blocked or expired operations took places in the window: look
            // further.
            window = window.saturating_mul(2);
        };
        // Dead letters made here end their operations: waiters must hear.
        self.explain_expired(&mut expired, now_ms);
        expired.append(&mut broken);
        let made_dead = !expired.is_empty();
        let dead_unblocked = self.fail_durably(&mut state, expired, now_ms)?;
        if !filled.is_empty() {
            // The rewrite is durable before any send: a crash after it
            // finds the filled operation, a crash before it fills it in
            // again from the same stored answers.
            self.store.put_batch(&filled)?;
        }
        for op in &mut claimed {
            transition(op, OperationStatus::InFlight, now_ms)?;
            op.attempt = op.attempt.saturating_add(1);
        }
        if let Err(e) = self.store.put_claimed(&claimed) {
            // Some claims may have been stored: rebuild the indexes from the
            // store on the next call, where those show up as orphans instead
            // of being lost to the in-flight index.
            state.loaded = false;
            return Err(e);
        }
        let token = state.next_token;
        state.next_token += 1;
        for op in &claimed {
            if let Some(key) = super::index::coalesce_slot(op)
                && state.coalescable.get(key.as_ref()) == Some(&op.id)
            {
                state.coalescable.remove(key.as_ref());
            }
            state.in_flight.insert(claim_entry(op));
            state.held.insert(op.id.clone(), token);
        }
        drop(state);
        if requeued > claimed.len() || failed + rescheduled > 0 || dead_unblocked {
            // Requeued operations this claim had no room for, a key unblocked
            // by a failed one, or new due times: tell the others.
            self.shared.notify_claimable();
        } else if !claimed.is_empty() || requeued > 0 || made_dead {
            self.shared.publish();
        }
        Ok(Claim::new(claimed, token, Arc::clone(&self.shared)))
    }

    /// Says in `last_error` why each operation past the resend window
    /// becomes a dead letter (made so by [`Outbox::fail_durably`]).
    fn explain_expired(&self, expired: &mut [Operation], now_ms: i64) {
        #[expect(clippy::cast_precision_loss, reason = "days, for a message")]
        let days = |ms: i64| ms as f64 / 86_400_000.0;
        let window_days = days(self.config.resend_window_in_ms());
        for op in expired {
            let first = op.first_sent_at_ms.unwrap_or(now_ms);
            let days = days(now_ms.saturating_sub(first));
            op.last_error = format!(
                "not resent: first sent {days:.1} days ago, past the resend window of \
                 {window_days:.1} days, so the server may have forgotten its key and would \
                 apply it twice; check whether it took effect, then correct it (a new key) \
                 or discard it"
            );
        }
    }

    /// Makes `ops` (pending, their `last_error` saying why) dead letters,
    /// durably, in one write, and returns whether that unblocked a key: the
    /// expired and the dependents that can never be filled in.
    fn fail_durably(
        &self,
        state: &mut super::index::State,
        mut ops: Vec<Operation>,
        now_ms: i64,
    ) -> Result<bool, OutboxError> {
        if ops.is_empty() {
            return Ok(false);
        }
        for op in &mut ops {
            transition(op, OperationStatus::Failed, now_ms)?;
        }
        self.store.put_batch(&ops)?;
        let mut unblocked = false;
        for op in &ops {
            unblocked |= state.finish(op, self.holds_key(op));
        }
        Ok(unblocked)
    }

    /// Claims like [`Outbox::claim`], but the claims are not held: one left
    /// unrecorded is taken back after `inflight_timeout_ms`, as if its sender
    /// had died, and may then be claimed again while the first send still
    /// runs. Prefer [`Outbox::claim`] for a sender that lives in this
    /// process; this is for callers that cannot keep a [`Claim`].
    ///
    /// # Errors
    ///
    /// As [`Outbox::claim`].
    #[deprecated(
        since = "0.1.0",
        note = "use `Outbox::claim` and keep the `Claim` while sending (no timeout takes it back); `claim(..)?.detach()` gives claims that time out"
    )]
    pub fn claim_ready(&self, now_ms: i64, limit: usize) -> Result<Vec<Operation>, OutboxError> {
        Ok(self.claim(now_ms, limit)?.detach())
    }
}

#[cfg(test)]
mod tests;
