//! [`Outbox`]: enqueue, claim, complete and recover operations over an
//! [`OutboxStore`], keeping the state machine and per-key order.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::error::OutboxError;
use crate::id::IdGenerator;
use crate::operation::{Operation, OperationStatus};
use crate::retry::RetryPolicy;
use crate::store::OutboxStore;
use crate::transition::transition;

/// Settings of an [`Outbox`].
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxConfig {
    /// Written into every operation's `owner`. Default `"outbox"`.
    pub owner: String,
    /// Backoff and attempt limit.
    pub retry: RetryPolicy,
    /// An `InFlight` operation claimed longer ago than this (ms) is taken to
    /// belong to a send that died with its process: it goes back to `Pending`
    /// (or `Failed` if that was its last attempt). Default 30,000.
    pub inflight_timeout_ms: i64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            owner: "outbox".into(),
            retry: RetryPolicy::default(),
            inflight_timeout_ms: 30_000,
        }
    }
}

/// Counts per status and the oldest pending operation, from [`Outbox::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Operations waiting to be sent.
    pub pending: usize,
    /// Operations being sent.
    pub in_flight: usize,
    /// Acknowledged operations not yet purged.
    pub done: usize,
    /// Operations parked as failed.
    pub failed: usize,
    /// `created_at_ms` of the oldest pending operation.
    pub oldest_pending_created_at_ms: Option<i64>,
}

impl OutboxStats {
    /// How long the oldest pending operation has waited at `now_ms`.
    #[must_use]
    pub fn oldest_pending_age_ms(&self, now_ms: i64) -> Option<i64> {
        self.oldest_pending_created_at_ms
            .map(|created| now_ms.saturating_sub(created))
    }
}

/// What [`Outbox::recover`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Stale `InFlight` operations returned to `Pending`.
    pub requeued: usize,
    /// Stale `InFlight` operations whose attempt was the last, now `Failed`.
    pub failed: usize,
    /// Pending operations scheduled implausibly far ahead (the wall clock
    /// jumped), now due at `now + max_delay_ms`.
    pub rescheduled: usize,
}

/// The durable queue of operations waiting to reach the server.
///
/// Every method that changes an operation returns only after the store has
/// persisted the change (see the store's durability contract). `Outbox` is
/// `Send + Sync`; share it as `Arc<Outbox>`. Use one `Outbox` per store: it
/// keeps per-key and in-flight indexes in memory, built from the store on
/// first use (or by [`Outbox::recover`]).
///
/// Times are always the caller's `now_ms`; the outbox never reads a clock.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use sync_outbox::{MemoryOutboxStore, Operation, OperationStatus, Outbox, OutboxConfig, OutboxStore, RetryPolicy};
///
/// let retry = RetryPolicy { max_attempts: 3, base_delay_ms: 500, factor: 2.0, ..RetryPolicy::default() };
/// let store = Arc::new(MemoryOutboxStore::new());
/// let outbox = Outbox::new(OutboxConfig { owner: "app".into(), retry, ..OutboxConfig::default() }, store.clone());
///
/// let id = outbox.enqueue(Operation::new("message.send", "/api/messages", r#"{"text":"hello"}"#), 1_000)?;
/// let batch = outbox.claim_ready(1_001, 10)?;                  // -> InFlight, attempt 1
/// assert_eq!(batch[0].attempt, 1);
/// let next = outbox.mark_failed(&id, "network offline", true, None, 1_002)?;
/// assert_eq!(next, OperationStatus::Pending);
/// assert_eq!(store.get(&id)?.map(|op| op.next_retry_at_ms), Some(1_502));
///
/// assert!(outbox.claim_ready(1_501, 10)?.is_empty());           // not due yet
/// outbox.claim_ready(1_502, 10)?;
/// outbox.mark_done(&id, 1_503)?;
/// assert_eq!(store.get(&id)?.map(|op| op.status), Some(OperationStatus::Done));
/// # Ok::<_, sync_outbox::OutboxError>(())
/// ```
pub struct Outbox {
    config: OutboxConfig,
    store: Arc<dyn OutboxStore>,
    ids: IdGenerator,
    state: Mutex<State>,
    /// Called after every successful `enqueue` (a background sender wakes).
    listeners: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("config", &self.config)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// In-memory indexes of the store, rebuilt from it on first use.
#[derive(Debug, Default)]
struct State {
    loaded: bool,
    next_seq: u64,
    /// `ordering_key` -> `(seq, id)` of its `Pending` and `InFlight` operations.
    /// Only the first may be claimed.
    keys: HashMap<String, BTreeSet<(u64, String)>>,
    /// `coalesce_key` -> id of a `Pending` operation never claimed.
    coalescable: HashMap<String, String>,
    /// `(claimed_at_ms, seq, id)` of `InFlight` operations.
    in_flight: BTreeSet<(i64, u64, String)>,
    /// Ids being enqueued right now (their `put` is running outside the lock).
    enqueuing: HashSet<String>,
    /// The latest `next_retry_at_ms` of any pending operation: if it is more
    /// than `max_delay_ms` past `now`, the clock jumped back and a rescan is due.
    max_scheduled_at: i64,
}

impl Outbox {
    /// An outbox over `store`. Does no I/O: the store is read on first use or
    /// by [`Outbox::recover`].
    pub fn new(config: OutboxConfig, store: Arc<dyn OutboxStore>) -> Self {
        Self {
            config,
            store,
            ids: IdGenerator::default(),
            state: Mutex::new(State::default()),
            listeners: Mutex::new(Vec::new()),
        }
    }

    /// Calls `listener` after every successful [`Outbox::enqueue`], on the
    /// enqueuing thread. A background sender uses it to wake at once; keep it
    /// short and non-blocking.
    pub fn on_enqueue(&self, listener: impl Fn() + Send + Sync + 'static) {
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::new(listener));
    }

    /// The earliest time a `Pending` operation is due, if any (it may be in
    /// the past). Cheap on the stores of this workspace.
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`].
    pub fn next_due_ms(&self) -> Result<Option<i64>, OutboxError> {
        self.store.next_due_ms()
    }

    /// The earliest time an operation could be claimed: the due time of the
    /// first `Pending` operation that no earlier operation of its key blocks.
    /// `None` if nothing is pending or everything pending waits behind an
    /// `InFlight` key. A background sender sleeps until then.
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`].
    pub fn next_claimable_at_ms(&self) -> Result<Option<i64>, OutboxError> {
        let state = self.lock_loaded()?;
        let mut window = 16usize;
        loop {
            // Every pending op, earliest due first.
            let candidates = self.store.ready(i64::MAX, window)?;
            if let Some(op) = candidates.iter().find(|op| state.is_head_of_key(op)) {
                return Ok(Some(op.next_retry_at_ms));
            }
            if candidates.len() < window {
                return Ok(None);
            }
            window = window.saturating_mul(2);
        }
    }

    /// Whether any operation is `InFlight` (claimed and not yet recorded).
    #[must_use]
    pub fn has_in_flight(&self) -> bool {
        !self.lock().in_flight.is_empty()
    }

    fn notify_enqueue(&self) {
        for listener in self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            listener();
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &OutboxConfig {
        &self.config
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn OutboxStore> {
        &self.store
    }

    /// Persists `op` as `Pending`, due at `now_ms`, and returns its id.
    ///
    /// An empty `op.id` gets a unique id that sorts by `now_ms`; a given id is
    /// kept (it is the idempotency key the server dedupes on). `status`,
    /// `attempt`, the times, `seq` and an empty `owner` are filled in.
    ///
    /// With a `coalesce_key` that matches a pending operation never claimed,
    /// that operation's `kind`, `target` and `payload` are replaced instead and
    /// its id is returned: the latest state wins, and nothing that may have
    /// been sent is touched.
    ///
    /// Durable when it returns `Ok`, as the store promises. Concurrent
    /// enqueues run their store writes in parallel (a WAL store shares one
    /// fsync between them).
    ///
    /// # Errors
    ///
    /// [`OutboxError::DuplicateId`] if the id exists;
    /// [`OutboxError::Store`] if the store fails (nothing is enqueued).
    pub fn enqueue(&self, mut op: Operation, now_ms: i64) -> Result<String, OutboxError> {
        let mut state = self.lock_loaded()?;
        if let Some(existing) = op
            .coalesce_key
            .as_ref()
            .and_then(|key| state.coalescable.get(key))
            .cloned()
            && let Some(mut target) = self.store.get(&existing)?
            && target.status == OperationStatus::Pending
            && target.attempt == 0
        {
            target.kind = op.kind;
            target.target = op.target;
            target.payload = op.payload;
            target.updated_at_ms = now_ms;
            self.store.put(&target)?;
            drop(state);
            self.notify_enqueue();
            return Ok(target.id);
        }
        if op.id.is_empty() {
            op.id = self.ids.next(now_ms);
        }
        if state.enqueuing.contains(&op.id) || self.store.get(&op.id)?.is_some() {
            return Err(OutboxError::DuplicateId { id: op.id });
        }
        op.status = OperationStatus::Pending;
        op.attempt = 0;
        op.next_retry_at_ms = now_ms;
        op.last_error.clear();
        op.created_at_ms = now_ms;
        op.updated_at_ms = now_ms;
        if op.owner.is_empty() {
            op.owner.clone_from(&self.config.owner);
        }
        op.seq = state.next_seq;
        state.next_seq += 1;
        state.max_scheduled_at = state.max_scheduled_at.max(now_ms);
        state.add_to_indexes(&op);
        state.enqueuing.insert(op.id.clone());
        drop(state);

        // Outside the lock, so concurrent enqueuers share the store's sync.
        let stored = self.store.put(&op);
        let mut state = self.lock();
        state.enqueuing.remove(&op.id);
        if let Err(e) = stored {
            state.remove_from_indexes(&op);
            return Err(e);
        }
        drop(state);
        self.notify_enqueue();
        Ok(op.id)
    }

    /// Claims up to `limit` operations that are due at `now_ms` for sending:
    /// marks them `InFlight`, increments their `attempt`, persists that, and
    /// only then returns them.
    ///
    /// Oldest first (by `next_retry_at_ms`, then enqueue order). Per-key FIFO:
    /// while an operation with an `ordering_key` is `Pending` or `InFlight`,
    /// no later operation with the same key is claimed. First, `InFlight`
    /// operations older than `inflight_timeout_ms` are recovered (see
    /// [`Outbox::recover`]).
    ///
    /// Durable on `Ok`: a process that dies during the send finds the claim,
    /// and its attempt, on restart.
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`] if the store fails; no operation is handed out
    /// then (some may have been stored `InFlight`: they come back after
    /// `inflight_timeout_ms`, like any interrupted send).
    pub fn claim_ready(&self, now_ms: i64, limit: usize) -> Result<Vec<Operation>, OutboxError> {
        let mut state = self.lock_loaded()?;
        self.expire_stale(&mut state, now_ms)?;
        self.reschedule_far_future(&mut state, now_ms)?;
        let mut window = limit;
        let claimed = loop {
            let candidates = self.store.ready(now_ms, window)?;
            let exhausted = candidates.len() < window;
            let claimable: Vec<Operation> = candidates
                .into_iter()
                .filter(|op| state.is_head_of_key(op))
                .take(limit)
                .collect();
            if claimable.len() == limit || exhausted {
                break claimable;
            }
            // Blocked operations took places in the window: look further.
            window = window.saturating_mul(2);
        };
        let mut claimed = claimed;
        for op in &mut claimed {
            transition(op, OperationStatus::InFlight, now_ms)?;
            op.attempt = op.attempt.saturating_add(1);
        }
        if let Err(e) = self.store.put_batch(&claimed) {
            // Some claims may have been stored: rebuild the indexes from the
            // store on the next call, so those become stale claims that
            // expire instead of being lost to the in-flight index.
            state.loaded = false;
            return Err(e);
        }
        for op in &claimed {
            if let Some(key) = &op.coalesce_key
                && state.coalescable.get(key) == Some(&op.id)
            {
                state.coalescable.remove(key);
            }
            state.in_flight.insert((now_ms, op.seq, op.id.clone()));
        }
        Ok(claimed)
    }

    /// Records that the server acknowledged the operation: `InFlight -> Done`.
    /// Durable on `Ok`.
    ///
    /// # Errors
    ///
    /// [`OutboxError::UnknownId`]; [`OutboxError::InvalidTransition`] if it is
    /// not `InFlight`; [`OutboxError::Store`].
    pub fn mark_done(&self, id: &str, now_ms: i64) -> Result<(), OutboxError> {
        let mut state = self.lock_loaded()?;
        let mut op = self.get_known(id)?;
        let claimed_at = op.updated_at_ms;
        transition(&mut op, OperationStatus::Done, now_ms)?;
        self.store.put(&op)?;
        state.in_flight.remove(&(claimed_at, op.seq, op.id.clone()));
        state.remove_from_indexes(&op);
        Ok(())
    }

    /// Records a failed send and returns the operation's new status.
    ///
    /// Not `retryable`, or its `attempt` was the policy's last: `Failed`.
    /// Otherwise `Pending`, due after the backoff for its attempt, or after
    /// `retry_after_ms` (a server's hint) when that is longer; either is capped
    /// at `max_delay_ms`. `error` becomes `last_error`. Durable on `Ok`.
    ///
    /// # Errors
    ///
    /// [`OutboxError::UnknownId`]; [`OutboxError::InvalidTransition`] if it is
    /// not `InFlight`; [`OutboxError::Store`].
    pub fn mark_failed(
        &self,
        id: &str,
        error: &str,
        retryable: bool,
        retry_after_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<OperationStatus, OutboxError> {
        let mut state = self.lock_loaded()?;
        let mut op = self.get_known(id)?;
        let claimed_at = op.updated_at_ms;
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
                .clamp(0, retry.max_delay_ms.max(0));
            let delay = retry.delay_ms(&op.id, op.attempt).max(hint);
            op.next_retry_at_ms = now_ms.saturating_add(delay);
            state.max_scheduled_at = state.max_scheduled_at.max(op.next_retry_at_ms);
        }
        self.store.put(&op)?;
        state.in_flight.remove(&(claimed_at, op.seq, op.id.clone()));
        if to == OperationStatus::Failed {
            state.remove_from_indexes(&op);
        }
        Ok(to)
    }

    /// Puts a `Failed` operation back to `Pending`, due at `now_ms`, with its
    /// attempts reset. It rejoins its key's queue at its original place.
    /// Durable on `Ok`.
    ///
    /// # Errors
    ///
    /// [`OutboxError::UnknownId`]; [`OutboxError::InvalidTransition`] if it is
    /// not `Failed`; [`OutboxError::Store`].
    pub fn retry_failed(&self, id: &str, now_ms: i64) -> Result<(), OutboxError> {
        let mut state = self.lock_loaded()?;
        let mut op = self.get_known(id)?;
        transition(&mut op, OperationStatus::Pending, now_ms)?;
        op.attempt = 0;
        op.next_retry_at_ms = now_ms;
        self.store.put(&op)?;
        state.max_scheduled_at = state.max_scheduled_at.max(now_ms);
        if let Some(key) = &op.ordering_key {
            state
                .keys
                .entry(key.clone())
                .or_default()
                .insert((op.seq, op.id.clone()));
        }
        Ok(())
    }

    /// Removes an operation whatever its status (a dead letter the app gives
    /// up on). Durable on `Ok`.
    ///
    /// # Errors
    ///
    /// [`OutboxError::UnknownId`]; [`OutboxError::Store`].
    pub fn discard(&self, id: &str) -> Result<(), OutboxError> {
        let mut state = self.lock_loaded()?;
        let op = self.get_known(id)?;
        self.store.remove(id)?;
        state
            .in_flight
            .remove(&(op.updated_at_ms, op.seq, op.id.clone()));
        state.remove_from_indexes(&op);
        Ok(())
    }

    /// Removes `Done` operations last updated before `older_than_ms` (a
    /// timestamp) and returns how many. Durable on `Ok`. Costs one
    /// [`OutboxStore::load_all`].
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`]; operations removed before the failure stay removed.
    pub fn purge_done(&self, older_than_ms: i64) -> Result<usize, OutboxError> {
        let _state = self.lock_loaded()?;
        let mut n_removed = 0;
        for op in self.store.load_all()? {
            if op.status == OperationStatus::Done
                && op.updated_at_ms < older_than_ms
                && self.store.remove(&op.id)?
            {
                n_removed += 1;
            }
        }
        Ok(n_removed)
    }

    /// Up to `limit` operations with `status` (all statuses for `None`), in
    /// enqueue order. Costs one [`OutboxStore::load_all`].
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`].
    pub fn list(
        &self,
        status: Option<OperationStatus>,
        limit: usize,
    ) -> Result<Vec<Operation>, OutboxError> {
        let mut ops: Vec<Operation> = self
            .store
            .load_all()?
            .into_iter()
            .filter(|op| status.is_none_or(|s| op.status == s))
            .collect();
        ops.sort_by_key(|op| op.seq);
        ops.truncate(limit);
        Ok(ops)
    }

    /// Counts per status and the oldest pending operation's creation time.
    /// Counts come from [`OutboxStore::count_by_status`]; the oldest pending
    /// operation costs one [`OutboxStore::load_all`].
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`].
    pub fn stats(&self) -> Result<OutboxStats, OutboxError> {
        let [pending, in_flight, done, failed] = self.store.count_by_status()?;
        let oldest_pending_created_at_ms = if pending == 0 {
            None
        } else {
            self.store
                .load_all()?
                .iter()
                .filter(|op| op.status == OperationStatus::Pending)
                .map(|op| op.created_at_ms)
                .min()
        };
        Ok(OutboxStats {
            pending,
            in_flight,
            done,
            failed,
            oldest_pending_created_at_ms,
        })
    }

    /// Makes every `Pending` operation waiting in backoff due at `now_ms` and
    /// returns how many: when the network comes back, the queue should drain
    /// at once. Attempts are unchanged. Durable on `Ok`. Costs one
    /// [`OutboxStore::load_all`].
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`]; operations changed before the failure stay changed.
    pub fn make_pending_due(&self, now_ms: i64) -> Result<usize, OutboxError> {
        let _state = self.lock_loaded()?;
        let mut n = 0;
        for mut op in self.store.load_all()? {
            if op.status == OperationStatus::Pending && op.next_retry_at_ms > now_ms {
                op.next_retry_at_ms = now_ms;
                self.store.put(&op)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Start-up work: rebuilds the in-memory indexes from the store, returns
    /// `InFlight` operations claimed more than `inflight_timeout_ms` before
    /// `now_ms` to `Pending` (due now; `Failed` if that was their last
    /// attempt, `last_error` saying so), and brings pending operations
    /// scheduled more than `max_delay_ms` ahead (the wall clock jumped) back to
    /// `now + max_delay_ms`. Durable on `Ok`.
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`].
    pub fn recover(&self, now_ms: i64) -> Result<RecoveryReport, OutboxError> {
        let mut state = self.lock();
        state.loaded = false;
        self.load(&mut state)?;
        let (requeued, failed) = self.expire_stale(&mut state, now_ms)?;
        let rescheduled = self.reschedule_far_future(&mut state, now_ms)?;
        Ok(RecoveryReport {
            requeued,
            failed,
            rescheduled,
        })
    }

    /// Returns stale `InFlight` operations to `Pending` or `Failed`.
    fn expire_stale(&self, state: &mut State, now_ms: i64) -> Result<(usize, usize), OutboxError> {
        let deadline = now_ms.saturating_sub(self.config.inflight_timeout_ms);
        let expired: Vec<(i64, u64, String)> = state
            .in_flight
            .iter()
            .take_while(|(claimed_at, _, _)| *claimed_at <= deadline)
            .cloned()
            .collect();
        let (mut requeued, mut failed) = (0, 0);
        for entry in expired {
            let Some(mut op) = self.store.get(&entry.2)? else {
                state.in_flight.remove(&entry);
                continue;
            };
            let to = if self.config.retry.gives_up_after(op.attempt) {
                OperationStatus::Failed
            } else {
                OperationStatus::Pending
            };
            transition(&mut op, to, now_ms)?;
            op.last_error = format!(
                "no result for attempt {} within {} ms: the send was interrupted",
                op.attempt, self.config.inflight_timeout_ms
            );
            op.next_retry_at_ms = now_ms;
            self.store.put(&op)?;
            state.in_flight.remove(&entry);
            if to == OperationStatus::Failed {
                state.remove_from_indexes(&op);
                failed += 1;
            } else {
                requeued += 1;
            }
        }
        Ok((requeued, failed))
    }

    /// Clamps pending operations due more than `max_delay_ms` after `now_ms`:
    /// no policy schedules that far, so the wall clock must have jumped back.
    fn reschedule_far_future(&self, state: &mut State, now_ms: i64) -> Result<usize, OutboxError> {
        let horizon = now_ms.saturating_add(self.config.retry.max_delay_ms.max(0));
        if state.max_scheduled_at <= horizon {
            return Ok(0);
        }
        let mut n = 0;
        for mut op in self.store.load_all()? {
            if op.status == OperationStatus::Pending && op.next_retry_at_ms > horizon {
                op.next_retry_at_ms = horizon;
                self.store.put(&op)?;
                n += 1;
            }
        }
        state.max_scheduled_at = horizon;
        Ok(n)
    }

    fn get_known(&self, id: &str) -> Result<Operation, OutboxError> {
        self.store
            .get(id)?
            .ok_or_else(|| OutboxError::UnknownId { id: id.to_owned() })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_loaded(&self) -> Result<MutexGuard<'_, State>, OutboxError> {
        let mut state = self.lock();
        self.load(&mut state)?;
        Ok(state)
    }

    /// Builds the indexes from the store, once.
    fn load(&self, state: &mut State) -> Result<(), OutboxError> {
        if state.loaded {
            return Ok(());
        }
        let enqueuing = std::mem::take(&mut state.enqueuing);
        *state = State {
            enqueuing,
            ..State::default()
        };
        for op in self.store.load_all()? {
            state.next_seq = state.next_seq.max(op.seq.saturating_add(1));
            match op.status {
                OperationStatus::Pending => {
                    state.max_scheduled_at = state.max_scheduled_at.max(op.next_retry_at_ms);
                    state.add_to_indexes(&op);
                }
                OperationStatus::InFlight => {
                    state
                        .in_flight
                        .insert((op.updated_at_ms, op.seq, op.id.clone()));
                    state.add_to_indexes(&op);
                }
                OperationStatus::Done | OperationStatus::Failed => {}
            }
        }
        state.loaded = true;
        Ok(())
    }
}

impl State {
    /// Registers a `Pending` (or, on load, `InFlight`) operation's keys.
    fn add_to_indexes(&mut self, op: &Operation) {
        if let Some(key) = &op.ordering_key {
            self.keys
                .entry(key.clone())
                .or_default()
                .insert((op.seq, op.id.clone()));
        }
        if let Some(key) = &op.coalesce_key
            && op.status == OperationStatus::Pending
            && op.attempt == 0
        {
            self.coalescable.insert(key.clone(), op.id.clone());
        }
    }

    /// Forgets a finished or discarded operation's keys.
    fn remove_from_indexes(&mut self, op: &Operation) {
        if let Some(key) = &op.ordering_key
            && let Some(queue) = self.keys.get_mut(key)
        {
            queue.remove(&(op.seq, op.id.clone()));
            if queue.is_empty() {
                self.keys.remove(key);
            }
        }
        if let Some(key) = &op.coalesce_key
            && self.coalescable.get(key) == Some(&op.id)
        {
            self.coalescable.remove(key);
        }
    }

    /// Whether no earlier operation with the same `ordering_key` is pending or
    /// in flight.
    fn is_head_of_key(&self, op: &Operation) -> bool {
        let Some(key) = &op.ordering_key else {
            return true;
        };
        self.keys
            .get(key)
            .and_then(BTreeSet::first)
            .is_none_or(|(seq, id)| *seq == op.seq && *id == op.id)
    }
}

#[cfg(test)]
mod tests;
