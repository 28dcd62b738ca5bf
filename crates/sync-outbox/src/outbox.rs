//! [`Outbox`]: enqueue, claim, complete and recover operations over an
//! [`OutboxStore`], keeping the state machine and per-key order.
//!
//! Claiming and recording results live in `claim`, putting abandoned claims
//! back in the queue in `recovery`, the in-memory indexes in `index`.

mod accounts;
mod claim;
mod completion;
mod dependency;
mod index;
mod payload_version;
mod prepared;
mod record;
mod recovery;
mod watch;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

pub use self::claim::Claim;
use self::completion::Changes;
pub use self::completion::Completion;
use self::index::{State, claim_entry};
pub use self::payload_version::PayloadUpgrade;
pub use self::prepared::{ExclusiveOutbox, PreparedEnqueue};
pub use self::record::SendOutcome;
use self::watch::StatsHub;
pub use self::watch::StatsWatch;

use crate::error::OutboxError;
use crate::id::IdGenerator;
use crate::operation::{Operation, OperationStatus, OrderingMode};
use crate::retry::{RetryPolicy, millis};
use crate::store::OutboxStore;
use crate::transition::transition;

/// What [`Outbox::correct`] replaces in a dead letter: each field that is
/// `Some`.
///
/// # Examples
///
/// ```
/// use sync_outbox::Correction;
///
/// let fix = Correction { target: Some("/v2/notes".into()), ..Correction::payload("{}") };
/// assert_eq!(fix.kind, None);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Correction {
    /// A new `kind`.
    pub kind: Option<String>,
    /// A new `target`.
    pub target: Option<String>,
    /// A new `payload`.
    pub payload: Option<String>,
}

impl Correction {
    /// A correction of the payload alone.
    #[must_use]
    pub fn payload(payload: impl Into<String>) -> Self {
        Self {
            payload: Some(payload.into()),
            ..Self::default()
        }
    }
}

/// Settings of an [`Outbox`].
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxConfig {
    /// Written into every operation's `owner`. Default `"outbox"`.
    pub owner: String,
    /// Backoff and attempt limit.
    pub retry: RetryPolicy,
    /// An `InFlight` operation that no live [`Claim`] holds and that was
    /// claimed longer ago than this is taken to belong to a send whose
    /// sender is gone: it goes back to `Pending` (or `Failed` if that was its
    /// last attempt). Only detached claims ([`Claim::detach`]) can time out:
    /// a held claim never does, and claims of a previous process or of a
    /// dropped `Claim` come back at once. Default 30 s.
    pub inflight_timeout: Duration,
    /// What a `Failed` operation does to later operations of its
    /// `ordering_key`, unless the operation sets its own
    /// [`Operation::ordering`]. Default [`OrderingMode::SkipFailed`].
    pub ordering: OrderingMode,
    /// How long after an operation's first send
    /// ([`Operation::first_sent_at_ms`]) it may still be sent again under
    /// the same key. A server remembers a key only so long (`sync-server`:
    /// `IdempotencyConfig::key_memory`, default 30 days); a resend after it
    /// forgot could apply the operation twice. So an operation past this
    /// window is not resent: the claim that finds it makes it `Failed`, a
    /// dead letter whose `last_error` says why, for the app to check whether
    /// it took effect and then [`correct`](Outbox::correct) it (a new key)
    /// or [`discard`](Outbox::discard) it. An operation never sent is not
    /// affected by age, and a send that never left the device (connection
    /// refused) does not start the window. Keep it below the server's key
    /// memory, with room for clock skew. Default 28 days
    /// ([`sync_protocol::DEFAULT_RESEND_WINDOW`], beside the server's
    /// `DEFAULT_KEY_MEMORY`); `Duration::MAX` never expires.
    pub resend_window: Duration,
    /// The old form of [`inflight_timeout`](Self::inflight_timeout), in ms:
    /// read only while `inflight_timeout` is at its default. Default 30,000.
    #[deprecated(since = "0.1.0", note = "use `inflight_timeout: Duration`")]
    pub inflight_timeout_ms: i64,
    /// At most this many [queued](OutboxStats::queued) operations (pending,
    /// in flight, failed): an enqueue past it fails at once with
    /// [`OutboxError::QueueFull`], so a device that stays offline shows the
    /// user a full queue instead of filling its disk. Done operations do
    /// not count (purge them); an enqueue that coalesces into a pending
    /// operation adds none. Counted from the store's live counts, never by
    /// loading the queue. Default `None`: no limit.
    pub max_queued: Option<usize>,
    /// At most this many payload bytes of queued operations
    /// ([`OutboxStats::queued_bytes`]), checked like
    /// [`max_queued`](Self::max_queued). Default `None`: no limit.
    pub max_queued_bytes: Option<u64>,
    /// Kinds whose operations keep the body of their success answer, as if
    /// each were enqueued with [`Operation::keeping_answer`]: set at
    /// enqueue. Default none.
    pub keep_answers_of: Vec<String>,
    /// The longest answer body kept ([`Operation::answer`]); a longer one is
    /// not kept (the operation is `Done` all the same, its `last_error`
    /// saying so), and a later operation that needs it becomes a dead
    /// letter. The HTTP transports read at most 64 KiB of a single answer.
    /// Default 16 KiB.
    pub max_answer_bytes: usize,
    /// Where the `traceparent` in effect at enqueue comes from: an
    /// operation enqueued without one gets [`TraceContext::current`](crate::TraceContext::current)'s, so
    /// its requests continue the app's trace. `AsyncOutbox` reads it on the
    /// enqueuing task, before the store write moves to the blocking pool.
    /// Default `None`: operations carry only what the app set.
    pub trace_context: Option<crate::TraceContext>,
}

/// An operation's payload size, as the queue limits count it.
pub(crate) fn payload_bytes(op: &Operation) -> u64 {
    u64::try_from(op.payload.len()).unwrap_or(u64::MAX)
}

const DEFAULT_INFLIGHT_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for OutboxConfig {
    #[expect(deprecated, reason = "the old field keeps its default for one release")]
    fn default() -> Self {
        Self {
            owner: "outbox".into(),
            retry: RetryPolicy::default(),
            inflight_timeout: DEFAULT_INFLIGHT_TIMEOUT,
            ordering: OrderingMode::SkipFailed,
            resend_window: sync_protocol::DEFAULT_RESEND_WINDOW,
            inflight_timeout_ms: millis(DEFAULT_INFLIGHT_TIMEOUT),
            max_queued: None,
            max_queued_bytes: None,
            keep_answers_of: Vec::new(),
            trace_context: None,
            max_answer_bytes: 16 * 1024,
        }
    }
}

impl OutboxConfig {
    /// How long an unheld claim lives, in ms: `inflight_timeout`, or the
    /// deprecated `inflight_timeout_ms` when only that was set.
    #[must_use]
    pub fn inflight_timeout_in_ms(&self) -> i64 {
        #[expect(deprecated, reason = "the old field is honoured for one release")]
        let old = self.inflight_timeout_ms;
        if self.inflight_timeout == DEFAULT_INFLIGHT_TIMEOUT {
            old
        } else {
            millis(self.inflight_timeout)
        }
    }

    /// The resend window in ms.
    pub(crate) fn resend_window_in_ms(&self) -> i64 {
        millis(self.resend_window)
    }
}

/// Counts per status and the oldest pending operation, from [`Outbox::stats`]
/// (or a store's [`OutboxStore::stats`]), and what a [`StatsWatch`] is told
/// when it changes.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use sync_outbox::{MemoryOutboxStore, Operation, Outbox, OutboxConfig};
///
/// let outbox = Outbox::new(OutboxConfig::default(), Arc::new(MemoryOutboxStore::new()));
/// outbox.enqueue(Operation::new("note.edit", "/notes/1", "{}"), 1_000)?;
/// let stats = outbox.stats()?;
/// assert_eq!((stats.pending, stats.unsent(), stats.total()), (1, 1, 1));
/// assert_eq!(stats.oldest_pending_age_ms(1_500), Some(500));
/// # Ok::<_, sync_outbox::OutboxError>(())
/// ```
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
    /// Payload bytes of the [`queued`](Self::queued) operations (pending,
    /// in flight and failed): what the queue holds of the user's data until
    /// the server has it or the app gives up on it.
    pub queued_bytes: u64,
}

impl OutboxStats {
    /// Operations not yet acknowledged by the server and not given up on:
    /// `pending + in_flight`. Zero means "everything is synced" (failed ones
    /// aside).
    #[must_use]
    pub fn unsent(&self) -> usize {
        self.pending + self.in_flight
    }

    /// Operations the server does not have yet and the app has not given
    /// up on, dead letters included: `pending + in_flight + failed`. What
    /// [`OutboxConfig::max_queued`] limits.
    #[must_use]
    pub fn queued(&self) -> usize {
        self.pending + self.in_flight + self.failed
    }

    /// Every stored operation.
    #[must_use]
    pub fn total(&self) -> usize {
        self.pending + self.in_flight + self.done + self.failed
    }

    /// How many have `status`.
    #[must_use]
    pub fn count(&self, status: OperationStatus) -> usize {
        match status {
            OperationStatus::Pending => self.pending,
            OperationStatus::InFlight => self.in_flight,
            OperationStatus::Done => self.done,
            OperationStatus::Failed => self.failed,
        }
    }

    /// Counts `op` in (for stores that count by scanning).
    pub fn add(&mut self, op: &Operation) {
        if op.status != OperationStatus::Done {
            self.queued_bytes += payload_bytes(op);
        }
        match op.status {
            OperationStatus::Pending => {
                self.pending += 1;
                self.oldest_pending_created_at_ms = Some(
                    self.oldest_pending_created_at_ms
                        .map_or(op.created_at_ms, |oldest| oldest.min(op.created_at_ms)),
                );
            }
            OperationStatus::InFlight => self.in_flight += 1,
            OperationStatus::Done => self.done += 1,
            OperationStatus::Failed => self.failed += 1,
        }
    }

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
    /// Orphaned or timed-out `InFlight` operations returned to `Pending`.
    pub requeued: usize,
    /// Orphaned or timed-out `InFlight` operations whose attempt was the
    /// last, now `Failed`.
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
/// use sync::outbox::{MemoryOutboxStore, Operation, OperationStatus, Outbox, OutboxConfig, OutboxStore, RetryPolicy, SendOutcome};
///
/// let retry = RetryPolicy { max_attempts: 3, base_delay: std::time::Duration::from_millis(500), factor: 2.0, ..RetryPolicy::default() };
/// let store = Arc::new(MemoryOutboxStore::new());
/// let outbox = Outbox::new(OutboxConfig { owner: "app".into(), retry, ..OutboxConfig::default() }, store.clone());
///
/// let id = outbox.enqueue(Operation::new("message.send", "/api/messages", r#"{"text":"hello"}"#), 1_000)?;
/// let claim = outbox.claim(1_001, 10)?;                  // -> InFlight, attempt 1, held by this sender
/// assert_eq!(claim.ops()[0].attempt, 1);
/// let busy = SendOutcome::retry_later("HTTP 429", None);
/// assert_eq!(outbox.record(&id, busy, 1_002)?, OperationStatus::Pending);
/// assert_eq!(store.get(&id)?.map(|op| op.next_retry_at_ms), Some(1_502));
/// drop(claim);
///
/// assert!(outbox.claim(1_501, 10)?.is_empty());          // not due yet
/// let retry = outbox.claim(1_502, 10)?;                  // the retry
/// outbox.mark_done(&retry.ops()[0].id, 1_503)?;
/// assert_eq!(store.get(&id)?.map(|op| op.status), Some(OperationStatus::Done));
/// # Ok::<_, sync::outbox::OutboxError>(())
/// ```
pub struct Outbox {
    config: OutboxConfig,
    store: Arc<dyn OutboxStore>,
    ids: IdGenerator,
    shared: Arc<Shared>,
}

type Listener = Box<dyn Fn() + Send + Sync>;

/// What the outbox shares with its live [`Claim`]s, which release their
/// operations when dropped.
struct Shared {
    state: Mutex<State>,
    /// Where the stats are published after every write, for [`StatsWatch`]es.
    stats: Arc<StatsHub>,
    /// Called after every successful `enqueue`.
    on_enqueue: Mutex<Vec<Listener>>,
    /// Called after every change that may make an operation claimable sooner.
    on_claimable: Mutex<Vec<Listener>>,
    /// Called after every write that changes an operation's status.
    on_change: Mutex<Vec<Listener>>,
    /// Bumped after every write that changes an operation's status, for
    /// [`Outbox::wait`].
    changes: Arc<Changes>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Calls the claimable listeners. Never called with the state locked, so
    /// a listener may call into the outbox.
    fn notify_claimable(&self) {
        self.publish();
        for listener in self
            .on_claimable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            listener();
        }
    }

    /// Publishes the stats and calls the change listeners. Never called
    /// with the state locked.
    fn publish(&self) {
        self.stats.publish();
        self.changes.bump();
        for listener in self
            .on_change
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            listener();
        }
    }

    fn notify_enqueue(&self) {
        for listener in self
            .on_enqueue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            listener();
        }
        self.notify_claimable();
    }
}

impl Drop for Outbox {
    /// Ends the waits of every [`StatsWatch`]: no change will come.
    fn drop(&mut self) {
        self.shared.stats.close();
        self.shared.changes.close();
    }
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("config", &self.config)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Outbox {
    /// An outbox over `store`. Does no I/O: the store is read on first use or
    /// by [`Outbox::recover`].
    pub fn new(config: OutboxConfig, store: Arc<dyn OutboxStore>) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            stats: Arc::new(StatsHub::new(&store)),
            on_enqueue: Mutex::default(),
            on_claimable: Mutex::default(),
            on_change: Mutex::default(),
            changes: Arc::default(),
        });
        Self {
            config,
            store,
            ids: IdGenerator::default(),
            shared,
        }
    }

    /// Calls `listener` after every successful [`Outbox::enqueue`], on the
    /// enqueuing thread. Keep it short and non-blocking.
    pub fn on_enqueue(&self, listener: impl Fn() + Send + Sync + 'static) {
        self.shared
            .on_enqueue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::new(listener));
    }

    /// Calls `listener` after every change that may make an operation
    /// claimable sooner than a sleeping sender expects: an enqueue (new or
    /// coalesced), [`retry_failed`](Self::retry_failed),
    /// [`make_pending_due`](Self::make_pending_due), a
    /// [`discard`](Self::discard), a recorded result that unblocks the next
    /// operation of its `ordering_key`, a dropped [`Claim`] that leaves
    /// orphans, and operations requeued by recovery or expiry. Called on the
    /// thread that made the change, never with the outbox locked; keep it
    /// short and non-blocking. A background sender wakes on it.
    pub fn on_claimable(&self, listener: impl Fn() + Send + Sync + 'static) {
        self.shared
            .on_claimable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::new(listener));
    }

    /// Calls `listener` after every write that changes an operation's
    /// status or removes one (a recorded result, a claim, a discard, a
    /// purge, an enqueue), on the thread that made it, never with the outbox
    /// locked; keep it short and non-blocking. The download half wakes on
    /// it: an operation that became `Done` may release pulled changes.
    pub fn on_change(&self, listener: impl Fn() + Send + Sync + 'static) {
        self.shared
            .on_change
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::new(listener));
    }

    /// A subscription to [`Outbox::stats`]: told after every write of this
    /// outbox that changes the counts, on a blocking thread or in async
    /// code. See [`StatsWatch`]. While a watch lives, each write reads the
    /// store's stats once more (cheap on the stores of this workspace).
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`] if the first stats cannot be read.
    pub fn watch_stats(&self) -> Result<StatsWatch, OutboxError> {
        self.shared.stats.watch()
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
    /// first `Pending` operation that no earlier operation of its key blocks,
    /// or the claim time of an orphan waiting to be requeued (both may be in
    /// the past). `None` if nothing is pending or everything pending waits
    /// behind an `InFlight` key or for an operation it
    /// [needs](crate::Need). A background sender sleeps until then.
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`].
    pub fn next_claimable_at_ms(&self) -> Result<Option<i64>, OutboxError> {
        let state = self.lock_loaded()?;
        let orphan_at = state.orphans.first().map(|(claimed_at, _, _)| *claimed_at);
        let mut window = 16usize;
        let pending_at = loop {
            // Every pending op, earliest due first.
            let candidates = self.store.ready(i64::MAX, window)?;
            let mut first = None;
            for op in &candidates {
                if state.is_head_of_key(op) && !self.waits_for_needs(op)? {
                    first = Some(op.next_retry_at_ms);
                    break;
                }
            }
            if first.is_some() {
                break first;
            }
            if candidates.len() < window {
                break None;
            }
            window = window.saturating_mul(2);
        };
        Ok(match (orphan_at, pending_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Whether any operation is `InFlight` (claimed and not yet recorded).
    #[must_use]
    pub fn has_in_flight(&self) -> bool {
        let state = self.lock();
        !state.in_flight.is_empty() || !state.orphans.is_empty()
    }

    /// When the earliest claim that no live [`Claim`] holds times out (see
    /// [`OutboxConfig::inflight_timeout`]); `None` if there is none. A
    /// background sender looks again then.
    #[must_use]
    pub fn next_expiry_at_ms(&self) -> Option<i64> {
        self.lock()
            .next_expiry_at_ms(self.config.inflight_timeout_in_ms())
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
    /// [`OutboxError::InvalidOperation`] for an operation that can never be
    /// sent ([`Operation::unsendable`]: an empty kind or target, a target
    /// that is not a path starting with `/`); [`OutboxError::DuplicateId`]
    /// if the id exists; [`OutboxError::Store`] if the store fails (nothing
    /// is enqueued); [`OutboxError::QueueFull`] past
    /// [`OutboxConfig::max_queued`] or `max_queued_bytes` (nothing is
    /// enqueued).
    pub fn enqueue(&self, mut op: Operation, now_ms: i64) -> Result<String, OutboxError> {
        refuse_unsendable(&op)?;
        let mut state = self.lock_loaded()?;
        if op.account.is_none() {
            op.account.clone_from(&state.account);
        }
        if let Some(existing) = index::coalesce_slot(&op)
            .and_then(|key| state.coalescable.get(key.as_ref()))
            .cloned()
            && let Some(mut target) = self.store.get(&existing)?
            && target.status == OperationStatus::Pending
            && !target.was_sent()
            && target.account == op.account
        {
            self.admit(&state, &op, Some(&target))?;
            self.refuse_unmeetable_needs(&state, &op)?;
            target.kind = op.kind;
            target.target = op.target;
            target.payload = op.payload;
            target.needs = op.needs;
            target.keep_answer |= op.keep_answer;
            // The latest edit's trace: it is the one the request now carries.
            target.traceparent = self.traceparent_of(op.traceparent).or(target.traceparent);
            target.updated_at_ms = now_ms;
            self.store.put(&target)?;
            drop(state);
            self.shared.notify_enqueue();
            return Ok(target.id);
        }
        if op.id.is_empty() {
            op.id = self.ids.next(now_ms);
        }
        if state.enqueuing.contains_key(&op.id) || self.store.get(&op.id)?.is_some() {
            return Err(OutboxError::DuplicateId { id: op.id });
        }
        self.admit(&state, &op, None)?;
        self.refuse_unmeetable_needs(&state, &op)?;
        self.fill_new(&mut state, &mut op, now_ms);
        state.add_to_indexes(&op);
        state.start_enqueue(&op);
        drop(state);

        // Outside the lock, so concurrent enqueuers share the store's sync.
        let stored = self.store.put(&op);
        let mut state = self.lock();
        state.end_enqueue(&op);
        if let Err(e) = stored {
            let unblocked = state.remove_from_indexes(&op);
            drop(state);
            if unblocked {
                // Operations of its key that waited behind it may go now.
                self.shared.notify_claimable();
            }
            return Err(e);
        }
        drop(state);
        self.shared.notify_enqueue();
        Ok(op.id)
    }

    /// Refuses `op` if the queue would pass a limit with it. `replacing`:
    /// the pending operation it coalesces into (no new operation, only its
    /// payload swapped). Operations being enqueued right now (their write
    /// outside the lock, or in an open store transaction) count too, so
    /// concurrent enqueuers cannot pass the limit together.
    fn admit(
        &self,
        state: &State,
        op: &Operation,
        replacing: Option<&Operation>,
    ) -> Result<(), OutboxError> {
        if self.config.max_queued.is_none() && self.config.max_queued_bytes.is_none() {
            return Ok(());
        }
        let counts = self.store.stats()?;
        let bytes = (counts.queued_bytes + state.enqueuing_bytes + payload_bytes(op))
            .saturating_sub(replacing.map_or(0, payload_bytes));
        let count = counts.queued() + state.enqueuing.len() + usize::from(replacing.is_none());
        let full = |what, queued: u64, limit: u64| {
            Err(OutboxError::QueueFull {
                what,
                queued,
                limit,
            })
        };
        let as_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        if let Some(limit) = self.config.max_queued
            && replacing.is_none()
            && count > limit
        {
            return full("operations", as_u64(count), as_u64(limit));
        }
        if let Some(limit) = self.config.max_queued_bytes
            && bytes > limit
        {
            return full("payload bytes", bytes, limit);
        }
        Ok(())
    }

    /// Puts a `Failed` operation back to `Pending`, due at `now_ms`, with its
    /// attempts reset. It rejoins its key's queue at its original place.
    /// Durable on `Ok`.
    ///
    /// It is sent again under the **same key**. One that failed because it
    /// was past the resend window fails again at its next claim: the server
    /// may have forgotten that key. Check whether it took effect, then
    /// [`correct`](Outbox::correct) it (a new key) or
    /// [`discard`](Outbox::discard) it.
    ///
    /// # Errors
    ///
    /// [`OutboxError::UnknownId`]; [`OutboxError::InvalidTransition`] if it is
    /// not `Failed`; [`OutboxError::Store`].
    pub fn retry_failed(&self, id: &str, now_ms: i64) -> Result<(), OutboxError> {
        let state = self.lock_loaded()?;
        let mut op = self.get_known(id)?;
        transition(&mut op, OperationStatus::Pending, now_ms)?;
        op.attempt = 0;
        op.unanswered_sends = 0;
        op.next_retry_at_ms = now_ms;
        self.store_requeued(state, &op)
    }

    /// Fixes a dead letter and sends it again: replaces the fields
    /// `correction` sets (kind, target, payload) of a `Failed` operation, or
    /// of a `Pending` one never sent, and returns the idempotency key its
    /// next send carries. Durable on `Ok`.
    ///
    /// A `Failed` operation goes back to `Pending`, due at `now_ms`, its
    /// attempts reset, at its original place in its key's order (as
    /// [`Outbox::retry_failed`]). Since it was sent, it gets a **new
    /// idempotency key**, `"{id}.{n}"` for its `n`th correction: a server
    /// that stores responses per key would otherwise answer the corrected
    /// request with the stored refusal. The old key is appended to
    /// [`Operation::replaced_keys`]; the id, which the app knows it by,
    /// stays. A `Pending` operation never sent keeps its key: no server has
    /// seen it.
    ///
    /// # Errors
    ///
    /// [`OutboxError::UnknownId`]; [`OutboxError::InvalidTransition`] for
    /// an operation that is `InFlight`, `Done`, or `Pending` after a send
    /// (wait for its result, or let it fail); [`OutboxError::Store`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use sync_outbox::{Correction, MemoryOutboxStore, Operation, OperationStatus, Outbox, OutboxConfig, OutboxStore, SendOutcome};
    ///
    /// let store = Arc::new(MemoryOutboxStore::new());
    /// let outbox = Outbox::new(OutboxConfig::default(), store.clone());
    /// let id = outbox.enqueue(Operation::new("note.create", "/notes", r#"{"title":""}"#), 0)?;
    /// let claim = outbox.claim(1, 1)?;
    /// outbox.record(&id, SendOutcome::refused("HTTP 422: title must not be empty"), 2)?;
    /// drop(claim);
    ///
    /// let key = outbox.correct(&id, Correction::payload(r#"{"title":"Groceries"}"#), 3)?;
    /// assert_eq!(key, format!("{id}.1"));
    /// let op = store.get(&id)?.expect("still there, same id");
    /// assert_eq!((op.status, op.idempotency_key(), op.replaced_keys.clone()), (OperationStatus::Pending, key.as_str(), vec![id.clone()]));
    /// # Ok::<_, sync_outbox::OutboxError>(())
    /// ```
    pub fn correct(
        &self,
        id: &str,
        correction: Correction,
        now_ms: i64,
    ) -> Result<String, OutboxError> {
        let state = self.lock_loaded()?;
        let mut op = self.get_known(id)?;
        let never_sent = op.status == OperationStatus::Pending && !op.was_sent();
        if op.status != OperationStatus::Failed && !never_sent {
            return Err(OutboxError::InvalidTransition {
                id: op.id,
                from: op.status,
                to: OperationStatus::Pending,
            });
        }
        let Correction {
            kind,
            target,
            payload,
        } = correction;
        op.kind = kind.unwrap_or(op.kind);
        op.target = target.unwrap_or(op.target);
        op.payload = payload.unwrap_or(op.payload);
        if op.status == OperationStatus::Failed {
            if op.was_sent() {
                let old = op.idempotency_key().to_owned();
                op.replaced_keys.push(old);
                op.idempotency_key = format!("{}.{}", op.id, op.replaced_keys.len());
            }
            transition(&mut op, OperationStatus::Pending, now_ms)?;
            op.attempt = 0;
            // A new key: no server has seen it, so no resend window yet.
            op.first_sent_at_ms = None;
            op.unanswered_sends = 0;
            op.next_retry_at_ms = now_ms;
            op.last_error.clear();
        }
        op.updated_at_ms = now_ms;
        self.store_requeued(state, &op)?;
        Ok(op.idempotency_key().to_owned())
    }

    /// Stores `op`, `Pending` again, puts it back at its place in its key's
    /// queue and wakes the senders.
    fn store_requeued(
        &self,
        mut state: MutexGuard<'_, State>,
        op: &Operation,
    ) -> Result<(), OutboxError> {
        self.store.put(op)?;
        state.max_scheduled_at = state.max_scheduled_at.max(op.next_retry_at_ms);
        if let Some(key) = index::queue_key(op) {
            state
                .keys
                .entry(key.into_owned())
                .or_default()
                .insert((op.seq, op.id.clone()));
        }
        drop(state);
        self.shared.notify_claimable();
        Ok(())
    }

    /// Removes an operation whatever its status (a dead letter the app gives
    /// up on). Durable on `Ok`. A send of it still running is not stopped;
    /// its result is then for an unknown id.
    ///
    /// # Errors
    ///
    /// [`OutboxError::UnknownId`]; [`OutboxError::Store`].
    pub fn discard(&self, id: &str) -> Result<(), OutboxError> {
        let mut state = self.lock_loaded()?;
        let op = self.get_known(id)?;
        self.store.remove(id)?;
        if op.status == OperationStatus::InFlight {
            state.forget_claim(&claim_entry(&op));
        }
        state.remove_from_indexes(&op);
        drop(state);
        self.shared.notify_claimable();
        Ok(())
    }

    /// Removes `Done` operations last updated before `older_than_ms` (a
    /// timestamp) and returns how many, except those whose answer a queued
    /// operation still [needs](crate::Need). Durable on `Ok`. Costs one
    /// [`OutboxStore::load_all`].
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`]; operations removed before the failure stay removed.
    pub fn purge_done(&self, older_than_ms: i64) -> Result<usize, OutboxError> {
        let _state = self.lock_loaded()?;
        let ops = self.store.load_all()?;
        let needed: std::collections::HashSet<&str> = ops
            .iter()
            .flat_map(|op| op.needs.iter().map(|need| need.op.as_str()))
            .collect();
        let mut n_removed = 0;
        for op in &ops {
            if op.status == OperationStatus::Done
                && op.updated_at_ms < older_than_ms
                && !needed.contains(op.id.as_str())
                && self.store.remove(&op.id)?
            {
                n_removed += 1;
            }
        }
        if n_removed > 0 {
            self.shared.publish();
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

    /// Counts per status and the oldest pending operation's creation time,
    /// from [`OutboxStore::stats`]: kept by the stores of this workspace as
    /// they write, so cheap enough for every UI refresh. To be told when it
    /// changes instead of asking, use [`Outbox::watch_stats`].
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`].
    pub fn stats(&self) -> Result<OutboxStats, OutboxError> {
        self.store.stats()
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
        let state = self.lock_loaded()?;
        let mut n = 0;
        for mut op in self.store.load_all()? {
            if op.status == OperationStatus::Pending && op.next_retry_at_ms > now_ms {
                op.next_retry_at_ms = now_ms;
                self.store.put(&op)?;
                n += 1;
            }
        }
        drop(state);
        if n > 0 {
            self.shared.notify_claimable();
        }
        Ok(n)
    }

    /// Clamps pending operations due more than `max_delay_ms` after `now_ms`:
    /// no policy schedules that far, so the wall clock must have jumped back.
    fn reschedule_far_future(&self, state: &mut State, now_ms: i64) -> Result<usize, OutboxError> {
        let horizon = now_ms.saturating_add(self.config.retry.max_delay_in_ms().max(0));
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

    /// Fills in what `enqueue` owns of a new operation: status, attempt,
    /// times, owner and `seq`.
    fn fill_new(&self, state: &mut State, op: &mut Operation, now_ms: i64) {
        op.status = OperationStatus::Pending;
        op.attempt = 0;
        op.next_retry_at_ms = now_ms;
        op.last_error.clear();
        op.created_at_ms = now_ms;
        op.updated_at_ms = now_ms;
        if op.owner.is_empty() {
            op.owner.clone_from(&self.config.owner);
        }
        op.keep_answer |= self.config.keep_answers_of.contains(&op.kind);
        op.answer = None;
        op.traceparent = self.traceparent_of(op.traceparent.take());
        op.seq = state.next_seq;
        state.next_seq += 1;
        state.max_scheduled_at = state.max_scheduled_at.max(now_ms);
    }

    /// The `traceparent` an operation is stored with: its own if valid,
    /// else the current one from [`OutboxConfig::trace_context`].
    pub(crate) fn traceparent_of(&self, own: Option<String>) -> Option<String> {
        match own {
            Some(value) if sync_protocol::is_traceparent(&value) => Some(value),
            _ => self
                .config
                .trace_context
                .as_ref()
                .and_then(crate::TraceContext::current),
        }
    }

    /// Whether `op`'s key may have been forgotten by the server: first sent
    /// longer than the resend window ago.
    fn past_resend_window(&self, op: &Operation, now_ms: i64) -> bool {
        op.first_sent_at_ms
            .is_some_and(|first| now_ms.saturating_sub(first) > self.config.resend_window_in_ms())
    }

    /// Whether `op`, `Failed`, keeps blocking later operations of its
    /// `ordering_key` ([`OrderingMode::StopOnFailure`]).
    fn holds_key(&self, op: &Operation) -> bool {
        op.status == OperationStatus::Failed
            && op.ordering_key.is_some()
            && op.ordering.unwrap_or(self.config.ordering) == OrderingMode::StopOnFailure
    }

    fn get_known(&self, id: &str) -> Result<Operation, OutboxError> {
        self.store
            .get(id)?
            .ok_or_else(|| OutboxError::UnknownId { id: id.to_owned() })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    fn lock_loaded(&self) -> Result<MutexGuard<'_, State>, OutboxError> {
        let mut state = self.lock();
        self.load(&mut state)?;
        Ok(state)
    }

    /// Builds the indexes from the store, once (again after a failed claim
    /// write or on `recover`). An `InFlight` operation that this outbox did
    /// not hand out is an orphan: its sender was in a process that is gone,
    /// or its claim failed to be written whole.
    fn load(&self, state: &mut State) -> Result<(), OutboxError> {
        if state.loaded {
            return Ok(());
        }
        // Read first: a failed read must not forget which claims this
        // process handed out (they would come back as orphans and be sent
        // twice at once).
        let ops = self.store.load_all()?;
        let mut known_claims = state.reset_for_load();
        known_claims.extend(state.held.keys().cloned());
        for op in ops {
            state.next_seq = state.next_seq.max(op.seq.saturating_add(1));
            match op.status {
                OperationStatus::Pending => {
                    state.max_scheduled_at = state.max_scheduled_at.max(op.next_retry_at_ms);
                    state.add_to_indexes(&op);
                }
                OperationStatus::InFlight => {
                    if known_claims.contains(&op.id) {
                        state.in_flight.insert(claim_entry(&op));
                    } else {
                        state.orphans.insert(claim_entry(&op));
                    }
                    state.add_to_indexes(&op);
                }
                // A failed head that stops the line still holds its key.
                OperationStatus::Failed if self.holds_key(&op) => state.add_to_indexes(&op),
                OperationStatus::Done | OperationStatus::Failed => {}
            }
        }
        state.drop_holds_not_in_flight();
        state.loaded = true;
        Ok(())
    }
}

/// Refuses, before anything is stored, an operation no server could take.
pub(crate) fn refuse_unsendable(op: &Operation) -> Result<(), OutboxError> {
    match op.unsendable() {
        Some(problem) => Err(OutboxError::InvalidOperation {
            id: op.id.clone(),
            kind: op.kind.clone(),
            problem,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
