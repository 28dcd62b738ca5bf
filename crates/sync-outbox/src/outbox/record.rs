//! Recording what the server said: [`Outbox::mark_done`],
//! [`Outbox::mark_failed`], [`Outbox::record_results`], which records a
//! whole batch with one store write (one sync in a file store), and
//! [`Outbox::record_results_unsynced`] with [`Outbox::sync`], which record
//! each result as it arrives and sync once for the batch.

use std::collections::HashMap;

use super::Outbox;
use super::index::{ClaimEntry, State, claim_entry};
use crate::error::OutboxError;
use crate::operation::{Delivery, Operation, OperationStatus};
use crate::transition::transition;

/// What the server said about one sent operation, for
/// [`Outbox::record_results`].
///
/// # Examples
///
/// ```
/// use sync_outbox::SendOutcome;
///
/// let refused = SendOutcome::Failed { error: "HTTP 422", retryable: false, retry_after_ms: None };
/// assert_ne!(refused, SendOutcome::Acknowledged);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOutcome<'a> {
    /// The server has the operation: it becomes `Done`.
    Acknowledged,
    /// The server has the operation, and its answer named the version its
    /// changes committed at in the server's change feed (the `sync-version`
    /// header): it becomes `Done`, with
    /// [`Operation::server_version`](crate::Operation::server_version) set,
    /// and its effect is in downloaded data once a pull covers that
    /// version.
    AcknowledgedAt {
        /// The version.
        version: i64,
    },
    /// The server has the operation and answered with `answer` (the body of
    /// its success answer), and perhaps a version as in
    /// [`AcknowledgedAt`](Self::AcknowledgedAt): it becomes `Done`, and an
    /// operation that [keeps its answer](crate::Operation::keep_answer)
    /// stores it in [`Operation::answer`](crate::Operation::answer), for
    /// [`Completion::Done`](crate::Completion::Done) and for later
    /// operations that [need](crate::Need) it. One that keeps none ignores
    /// it.
    AcknowledgedWith {
        /// The version, if the answer named one.
        version: Option<i64>,
        /// The answer's body.
        answer: &'a str,
    },
    /// The server answered with a failure; see [`Outbox::mark_failed`] for
    /// what each field does.
    Failed {
        /// Becomes the operation's `last_error`.
        error: &'a str,
        /// Whether another attempt may succeed.
        retryable: bool,
        /// The server's hint for the earliest retry, in ms from now.
        retry_after_ms: Option<i64>,
    },
    /// No answer came: the server or the network was unreachable. The
    /// operation goes back to `Pending`, its attempt **not** used up (an
    /// outage is not a failure), backed off by its `unanswered_sends` with
    /// the retry policy's delays (or `retry_after_ms`, when longer); with
    /// [`Delivery::Unknown`] its `first_sent_at_ms` is set, starting the
    /// resend window. A late one (the operation is no longer `InFlight`)
    /// changes nothing.
    Unanswered {
        /// Becomes the operation's `last_error`.
        error: &'a str,
        /// Whether the request may have reached the server.
        delivery: Delivery,
        /// A gateway's hint for the earliest retry (a 503's `Retry-After`),
        /// in ms from now.
        retry_after_ms: Option<i64>,
    },
}

/// How a batch of results is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Write {
    /// `put` / `put_batch`: durable as the store promises on `Ok`.
    Synced,
    /// `put_unsynced`: durable against a process crash; a later sync makes
    /// it durable against power loss.
    Unsynced,
}

impl<'a> SendOutcome<'a> {
    /// The server refused the operation for good (a 422, a 400): it becomes
    /// `Failed`.
    ///
    /// # Examples
    ///
    /// ```
    /// use sync_outbox::SendOutcome;
    ///
    /// assert_eq!(
    ///     SendOutcome::refused("HTTP 422"),
    ///     SendOutcome::Failed { error: "HTTP 422", retryable: false, retry_after_ms: None }
    /// );
    /// ```
    #[must_use]
    pub const fn refused(error: &'a str) -> Self {
        Self::Failed {
            error,
            retryable: false,
            retry_after_ms: None,
        }
    }

    /// The server answered "not now" (a 429, a 500): retried after the
    /// backoff, or after `retry_after_ms` when longer; the attempt counts.
    #[must_use]
    pub const fn retry_later(error: &'a str, retry_after_ms: Option<i64>) -> Self {
        Self::Failed {
            error,
            retryable: true,
            retry_after_ms,
        }
    }
}

/// Up to this many changes, duplicates are found by a linear search.
const SMALL_BATCH: usize = 16;

/// One planned change of [`Outbox::record_results`]: the operation as it will
/// be stored, and the claim entry it had before.
struct Change {
    op: Operation,
    entry: ClaimEntry,
}

impl Outbox {
    /// Records that the server acknowledged the operation:
    /// `InFlight -> Done`. Durable on `Ok` (as the store's `put` promises).
    ///
    /// A late acknowledgement is never lost: an operation that was sent and
    /// has since gone back to `Pending` or `Failed` (its claim timed out or
    /// was orphaned, then the answer came) becomes `Done` too, because the
    /// server has it. One that is `Done` already is left as it is, without an
    /// error.
    ///
    /// # Errors
    ///
    /// [`OutboxError::UnknownId`]; [`OutboxError::InvalidTransition`] if it
    /// was never sent ([`Operation::was_sent`]: no send exists to
    /// acknowledge); [`OutboxError::Store`].
    pub fn mark_done(&self, id: &str, now_ms: i64) -> Result<(), OutboxError> {
        self.record_one(id, SendOutcome::Acknowledged, now_ms)
            .map(drop)
    }

    /// Records what the server said about one sent operation and returns
    /// the operation's new status: [`SendOutcome::Acknowledged`] as
    /// [`Outbox::mark_done`]; [`SendOutcome::Failed`]: not `retryable`, or
    /// its `attempt` was the policy's last, `Failed`, otherwise `Pending`
    /// after the backoff (or `retry_after_ms`, when longer), `error` as
    /// `last_error`; [`SendOutcome::Unanswered`]: `Pending`, no attempt used.
    /// Durable on `Ok`.
    ///
    /// A late failure (the operation is no longer `InFlight`: its claim timed
    /// out and it was requeued, or it is `Done` or `Failed` already) changes
    /// nothing and returns the status the operation has: a stale answer never
    /// undoes a newer state.
    ///
    /// # Errors
    ///
    /// [`OutboxError::UnknownId`]; [`OutboxError::InvalidTransition`] if it
    /// was never sent; [`OutboxError::Store`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use sync_outbox::{MemoryOutboxStore, Operation, OperationStatus, Outbox, OutboxConfig, SendOutcome};
    ///
    /// let outbox = Outbox::new(OutboxConfig::default(), Arc::new(MemoryOutboxStore::new()));
    /// let id = outbox.enqueue(Operation::new("note.create", "/notes", "{}"), 0)?;
    /// let claim = outbox.claim(1, 10)?;
    /// let busy = SendOutcome::retry_later("HTTP 429", Some(30_000));
    /// assert_eq!(outbox.record(&id, busy, 2)?, OperationStatus::Pending);
    /// # drop(claim);
    /// # Ok::<_, sync_outbox::OutboxError>(())
    /// ```
    pub fn record(
        &self,
        id: &str,
        outcome: SendOutcome<'_>,
        now_ms: i64,
    ) -> Result<OperationStatus, OutboxError> {
        self.record_one(id, outcome, now_ms)
    }

    /// Records a failed send and returns the operation's new status.
    ///
    /// Not `retryable`, or its `attempt` was the policy's last: `Failed`.
    /// Otherwise `Pending`, due after the backoff for its attempt, or after
    /// `retry_after_ms` (a server's hint) when that is longer; either is capped
    /// at `max_delay_ms`. `error` becomes `last_error`. Durable on `Ok`.
    ///
    /// A late failure (the operation is no longer `InFlight`: its claim timed
    /// out and it was requeued, or it is `Done` or `Failed` already) changes
    /// nothing and returns the status the operation has: a stale answer never
    /// undoes a newer state.
    ///
    /// # Errors
    ///
    /// [`OutboxError::UnknownId`]; [`OutboxError::InvalidTransition`] if it
    /// was never sent; [`OutboxError::Store`].
    #[deprecated(
        since = "0.1.0",
        note = "use `Outbox::record(id, SendOutcome::refused(error) or SendOutcome::retry_later(error, retry_after_ms), now)`: no positional flags"
    )]
    pub fn mark_failed(
        &self,
        id: &str,
        error: &str,
        retryable: bool,
        retry_after_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<OperationStatus, OutboxError> {
        let outcome = SendOutcome::Failed {
            error,
            retryable,
            retry_after_ms,
        };
        self.record_one(id, outcome, now_ms)
    }

    /// Records the results of a batch, each as [`Outbox::mark_done`] or
    /// [`Outbox::mark_failed`] would, with **one** store write for all of
    /// them: one appended batch and one sync in the WAL store, one
    /// transaction in SQLite. Durable on `Ok` (the outer one) for every
    /// result that is `Ok`.
    ///
    /// Returns one result per input, in order: the operation's new status,
    /// or the error `mark_done` / `mark_failed` would have returned for it
    /// alone ([`OutboxError::UnknownId`] for one discarded meanwhile,
    /// [`OutboxError::InvalidTransition`] for one never claimed). Those
    /// errors do not stop the others.
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`] (the outer one) if the store write fails: then
    /// any prefix of the batch may have been stored, and the rest is still
    /// `InFlight`, taken back when its [`Claim`](crate::Claim) is dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use sync_outbox::{MemoryOutboxStore, Operation, OperationStatus, Outbox, OutboxConfig, SendOutcome};
    ///
    /// let outbox = Outbox::new(OutboxConfig::default(), Arc::new(MemoryOutboxStore::new()));
    /// outbox.enqueue(Operation::new("note.create", "/notes", "{}"), 0)?;
    /// outbox.enqueue(Operation::new("note.create", "/notes", "{}"), 0)?;
    /// let claim = outbox.claim(1, 10)?;
    /// let refused = SendOutcome::Failed { error: "HTTP 422", retryable: false, retry_after_ms: None };
    /// let results = outbox.record_results(
    ///     [(claim.ops()[0].id.as_str(), SendOutcome::Acknowledged), (claim.ops()[1].id.as_str(), refused)],
    ///     2,
    /// )?;
    /// assert_eq!(results[0].as_ref().ok(), Some(&OperationStatus::Done));
    /// assert_eq!(results[1].as_ref().ok(), Some(&OperationStatus::Failed));
    /// # Ok::<_, sync_outbox::OutboxError>(())
    /// ```
    pub fn record_results<'a>(
        &self,
        results: impl IntoIterator<Item = (&'a str, SendOutcome<'a>)>,
        now_ms: i64,
    ) -> Result<Vec<Result<OperationStatus, OutboxError>>, OutboxError> {
        self.record_with(results, now_ms, Write::Synced)
    }

    /// Records results like [`Outbox::record_results`], but with the
    /// store's [`put_unsynced`](crate::OutboxStore::put_unsynced): for a
    /// sender that records each result as it arrives and then calls
    /// [`Outbox::sync`] once for the batch.
    ///
    /// Durable on `Ok` against a crash of the process (a WAL store has
    /// handed the record to the OS; the other stores of this workspace
    /// sync it anyway). Against power loss only after the next
    /// [`Outbox::sync`] or synced write: a power loss before may undo it, so
    /// the operation is sent again (the server answers a repeat from its
    /// key), never lost.
    ///
    /// # Errors
    ///
    /// As [`Outbox::record_results`].
    pub fn record_results_unsynced<'a>(
        &self,
        results: impl IntoIterator<Item = (&'a str, SendOutcome<'a>)>,
        now_ms: i64,
    ) -> Result<Vec<Result<OperationStatus, OutboxError>>, OutboxError> {
        self.record_with(results, now_ms, Write::Unsynced)
    }

    /// Makes every change recorded so far as durable as the store's policy
    /// promises for a synced write ([`OutboxStore::sync`](crate::OutboxStore::sync)):
    /// under the WAL store's `SyncPolicy::Always`, one `fdatasync` for every
    /// result recorded with [`Outbox::record_results_unsynced`] before it.
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`] if the sync fails.
    pub fn sync(&self) -> Result<(), OutboxError> {
        self.store.sync()
    }

    fn record_with<'a>(
        &self,
        results: impl IntoIterator<Item = (&'a str, SendOutcome<'a>)>,
        now_ms: i64,
        write: Write,
    ) -> Result<Vec<Result<OperationStatus, OutboxError>>, OutboxError> {
        let mut state = self.lock_loaded()?;
        let mut statuses = Vec::new();
        let mut changes: Vec<Change> = Vec::new();
        // An id twice in one batch sees its own earlier change. Small
        // batches search `changes`; an index is built only for big ones, so
        // recording one result allocates nothing for it.
        let mut changed_at: HashMap<String, usize> = HashMap::new();
        let find = |changes: &[Change], index: &HashMap<String, usize>, id: &str| {
            if changes.len() <= SMALL_BATCH {
                changes.iter().position(|c| c.op.id == id)
            } else {
                index.get(id).copied()
            }
        };
        for (id, outcome) in results {
            let earlier = find(&changes, &changed_at, id);
            let current = match earlier {
                Some(i) => changes.get(i).map(|c| c.op.clone()),
                None => self.store.get(id)?,
            };
            let Some(op) = current else {
                statuses.push(Err(OutboxError::UnknownId { id: id.to_owned() }));
                continue;
            };
            match self.plan(&mut state, op, outcome, now_ms) {
                Ok((status, Some(change))) => {
                    statuses.push(Ok(status));
                    if let Some(slot) = earlier.and_then(|i| changes.get_mut(i)) {
                        slot.op = change.op;
                    } else {
                        changes.push(change);
                        if changes.len() > SMALL_BATCH {
                            if changed_at.is_empty() {
                                for (i, c) in changes.iter().enumerate() {
                                    changed_at.insert(c.op.id.clone(), i);
                                }
                            } else {
                                changed_at.insert(id.to_owned(), changes.len() - 1);
                            }
                        }
                    }
                }
                Ok((status, None)) => statuses.push(Ok(status)),
                Err(e) => statuses.push(Err(e)),
            }
        }
        match (changes.as_slice(), write) {
            ([], _) => {}
            ([one], Write::Synced) => self.store.put(&one.op)?,
            (many, Write::Synced) => {
                let ops: Vec<Operation> = many.iter().map(|c| c.op.clone()).collect();
                self.store.put_batch(&ops)?;
            }
            (some, Write::Unsynced) => {
                let ops: Vec<Operation> = some.iter().map(|c| c.op.clone()).collect();
                self.store.put_unsynced(&ops)?;
            }
        }
        let mut unblocked = false;
        for Change { op, entry } in &changes {
            state.forget_claim(entry);
            if op.status != OperationStatus::Pending {
                unblocked |= state.finish(op, self.holds_key(op));
            }
            // Operations that need its answer may go now.
            unblocked |= op.status == OperationStatus::Done && op.keep_answer;
        }
        drop(state);
        if unblocked {
            self.shared.notify_claimable();
        } else if !changes.is_empty() {
            self.shared.publish();
        }
        Ok(statuses)
    }

    fn record_one(
        &self,
        id: &str,
        outcome: SendOutcome<'_>,
        now_ms: i64,
    ) -> Result<OperationStatus, OutboxError> {
        self.record_results([(id, outcome)], now_ms)?
            .pop()
            .unwrap_or_else(|| Err(OutboxError::UnknownId { id: id.to_owned() }))
    }

    /// What `outcome` does to `op`: its new status, and the change to store
    /// (`None` when the outcome changes nothing: a repeated ack, a late
    /// failure).
    fn plan(
        &self,
        state: &mut State,
        mut op: Operation,
        outcome: SendOutcome<'_>,
        now_ms: i64,
    ) -> Result<(OperationStatus, Option<Change>), OutboxError> {
        let entry = claim_entry(&op);
        // For an `InFlight` operation, `updated_at_ms` is when its send began.
        let sent_at = (op.status == OperationStatus::InFlight).then_some(op.updated_at_ms);
        match outcome {
            SendOutcome::Acknowledged
            | SendOutcome::AcknowledgedAt { .. }
            | SendOutcome::AcknowledgedWith { .. } => {
                let (version, answer) = match outcome {
                    SendOutcome::AcknowledgedAt { version } => (Some(version), None),
                    SendOutcome::AcknowledgedWith { version, answer } => (version, Some(answer)),
                    _ => (None, None),
                };
                if op.status == OperationStatus::Done {
                    // A repeated ack (a replay) names the same version and
                    // answer; the first one that named any is kept.
                    let mut changed = false;
                    if op.server_version.is_none() && version.is_some() {
                        op.server_version = version;
                        changed = true;
                    }
                    if op.keep_answer && op.answer.is_none() && answer.is_some() {
                        changed |= self.keep_answer(&mut op, answer);
                    }
                    let change = changed.then_some(Change { op, entry });
                    return Ok((OperationStatus::Done, change));
                }
                if !op.was_sent() {
                    return Err(never_claimed(op, OperationStatus::Done));
                }
                if op.first_sent_at_ms.is_none() {
                    op.first_sent_at_ms = sent_at;
                }
                op.server_version = version;
                transition(&mut op, OperationStatus::Done, now_ms)?;
                if op.keep_answer {
                    self.keep_answer(&mut op, answer);
                }
            }
            SendOutcome::Unanswered {
                error,
                delivery,
                retry_after_ms,
            } => {
                if op.status != OperationStatus::InFlight {
                    if !op.was_sent() {
                        return Err(never_claimed(op, OperationStatus::Pending));
                    }
                    return Ok((op.status, None));
                }
                transition(&mut op, OperationStatus::Pending, now_ms)?;
                // No answer: the attempt the claim counted is given back.
                op.attempt = op.attempt.saturating_sub(1);
                op.unanswered_sends = op.unanswered_sends.saturating_add(1);
                if delivery == Delivery::Unknown && op.first_sent_at_ms.is_none() {
                    op.first_sent_at_ms = sent_at;
                }
                error.clone_into(&mut op.last_error);
                let retry = &self.config.retry;
                let hint = retry_after_ms
                    .unwrap_or(0)
                    .clamp(0, retry.max_delay_in_ms().max(0));
                let delay = retry.delay_ms(&op.id, op.unanswered_sends).max(hint);
                op.next_retry_at_ms = now_ms.saturating_add(delay);
                state.max_scheduled_at = state.max_scheduled_at.max(op.next_retry_at_ms);
            }
            SendOutcome::Failed {
                error,
                retryable,
                retry_after_ms,
            } => {
                if op.status != OperationStatus::InFlight {
                    if !op.was_sent() {
                        return Err(never_claimed(op, OperationStatus::Failed));
                    }
                    return Ok((op.status, None));
                }
                if op.first_sent_at_ms.is_none() {
                    op.first_sent_at_ms = sent_at;
                }
                op.unanswered_sends = 0;
                let retry = &self.config.retry;
                let to = if retryable && !retry.gives_up_after(op.attempt) {
                    OperationStatus::Pending
                } else {
                    OperationStatus::Failed
                };
                transition(&mut op, to, now_ms)?;
                error.clone_into(&mut op.last_error);
                if to == OperationStatus::Pending {
                    let hint = retry_after_ms
                        .unwrap_or(0)
                        .clamp(0, retry.max_delay_in_ms().max(0));
                    let delay = retry.delay_ms(&op.id, op.attempt).max(hint);
                    op.next_retry_at_ms = now_ms.saturating_add(delay);
                    state.max_scheduled_at = state.max_scheduled_at.max(op.next_retry_at_ms);
                }
            }
        }
        Ok((op.status, Some(Change { op, entry })))
    }
}

impl Outbox {
    /// Keeps `answer` in `op` if it fits [`OutboxConfig::max_answer_bytes`];
    /// otherwise says in `last_error` why it was not kept. Returns whether
    /// `op` changed.
    ///
    /// [`OutboxConfig::max_answer_bytes`]: crate::OutboxConfig::max_answer_bytes
    fn keep_answer(&self, op: &mut Operation, answer: Option<&str>) -> bool {
        let Some(answer) = answer else {
            "its acknowledgement carried no answer to keep".clone_into(&mut op.last_error);
            return true;
        };
        let limit = self.config.max_answer_bytes;
        if answer.len() <= limit {
            op.answer = Some(answer.to_owned());
            op.last_error.clear();
        } else {
            op.last_error = format!(
                "its answer of {} bytes was not kept: longer than max_answer_bytes ({limit})",
                answer.len()
            );
        }
        true
    }
}

/// The error for a result of an operation no send exists for.
fn never_claimed(op: Operation, to: OperationStatus) -> OutboxError {
    OutboxError::InvalidTransition {
        id: op.id,
        from: op.status,
        to,
    }
}

#[cfg(test)]
mod tests;
