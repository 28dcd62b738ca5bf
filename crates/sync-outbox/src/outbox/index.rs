//! The outbox's in-memory indexes of its store: per-key queues, coalescable
//! operations, and which `InFlight` operations have a live sender.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};

/// The maps keyed by ids and keys: foldhash's seeded hasher, several
/// times faster than `SipHash` on short strings.
pub(super) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

use crate::operation::{Operation, OperationStatus};

/// `(claimed_at_ms, seq, id)` of an `InFlight` operation: ordered by claim
/// time, so the stalest claims come first.
pub(super) type ClaimEntry = (i64, u64, String);

/// The entry of `op`, which must be `InFlight` (its `updated_at_ms` is the
/// claim time).
pub(super) fn claim_entry(op: &Operation) -> ClaimEntry {
    (op.updated_at_ms, op.seq, op.id.clone())
}

/// The queue `op`'s ordering key names: per account, so one account's
/// operations never wait behind another's (a signed-out user's pending
/// edit of `note/1` does not hold the next user's).
pub(super) fn queue_key(op: &Operation) -> Option<Cow<'_, str>> {
    Some(per_account(op, op.ordering_key.as_deref()?))
}

/// The slot `op`'s coalesce key names: per account, so two users' edits
/// never merge.
pub(super) fn coalesce_slot(op: &Operation) -> Option<Cow<'_, str>> {
    Some(per_account(op, op.coalesce_key.as_deref()?))
}

fn per_account<'a>(op: &'a Operation, key: &'a str) -> Cow<'a, str> {
    match &op.account {
        None => Cow::Borrowed(key),
        Some(account) => Cow::Owned(format!("{account}\u{1f}{key}")),
    }
}

/// In-memory indexes of the store, rebuilt from it on first use.
///
/// Every `InFlight` operation of the store is in exactly one of `in_flight`
/// (handed out by this outbox; in `held` too while its `Claim` lives) or
/// `orphans` (no sender in this process will record it).
#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) loaded: bool,
    pub(super) next_seq: u64,
    /// `ordering_key` -> `(seq, id)` of its `Pending` and `InFlight` operations.
    /// Only the first may be claimed.
    pub(super) keys: HashMap<String, BTreeSet<(u64, String)>>,
    /// `coalesce_key` -> id of a `Pending` operation never claimed.
    pub(super) coalescable: HashMap<String, String>,
    /// Claims this outbox handed out and that are not recorded yet.
    pub(super) in_flight: BTreeSet<ClaimEntry>,
    /// id -> token of the live `Claim` that holds it. A held claim never
    /// expires: its sender is alive, and a hung send is bounded by the
    /// transport's own timeout.
    pub(super) held: HashMap<String, u64>,
    /// `InFlight` operations nobody will record: found in the store at open
    /// (their process is gone), or left in a dropped `Claim`. The next pass
    /// sends them back to `Pending` at once.
    pub(super) orphans: BTreeSet<ClaimEntry>,
    /// The token of the next `Claim`.
    pub(super) next_token: u64,
    /// Operations being enqueued right now (their write runs outside the
    /// lock, or in a store transaction not yet committed): id -> `(seq,
    /// ordering_key)`, so a reload of the indexes keeps their place in their
    /// key's queue and never hands their `seq` out again.
    pub(super) enqueuing: HashMap<String, (u64, Option<String>)>,
    /// Payload bytes of `enqueuing`, for the queue limits.
    pub(super) enqueuing_bytes: u64,
    /// Pending operations a prepared enqueue will coalesce into, in a store
    /// transaction still open: not claimable until it commits or rolls back,
    /// so a claim cannot write back their old payload over the new one.
    pub(super) replacing: HashSet<String>,
    /// The account whose operations are sent ([`Outbox::set_account`]);
    /// `None`: operations made without an account.
    ///
    /// [`Outbox::set_account`]: crate::Outbox::set_account
    pub(super) account: Option<String>,
    /// The latest `next_retry_at_ms` of any pending operation: if it is more
    /// than `max_delay_ms` past `now`, the clock jumped back and a rescan is due.
    pub(super) max_scheduled_at: i64,
}

impl State {
    /// A state to be filled from the store, keeping what only this process
    /// knows: which claims it handed out, which of them are held, and the
    /// enqueues in progress.
    pub(super) fn reset_for_load(&mut self) -> HashSet<String> {
        let known_claims = std::mem::take(&mut self.in_flight)
            .into_iter()
            .map(|(_, _, id)| id)
            .collect();
        *self = Self {
            held: std::mem::take(&mut self.held),
            enqueuing: std::mem::take(&mut self.enqueuing),
            enqueuing_bytes: self.enqueuing_bytes,
            account: self.account.take(),
            replacing: std::mem::take(&mut self.replacing),
            next_token: self.next_token,
            // Never hand out a seq twice, even one of a purged operation.
            next_seq: self.next_seq,
            ..Self::default()
        };
        // What is still being enqueued keeps its place and its seq.
        for (id, (seq, key)) in &self.enqueuing {
            self.next_seq = self.next_seq.max(seq.saturating_add(1));
            if let Some(key) = key {
                self.keys
                    .entry(key.clone())
                    .or_default()
                    .insert((*seq, id.clone()));
            }
        }
        known_claims
    }

    /// After a load: forgets holds on operations that are no longer
    /// `InFlight` in the store.
    pub(super) fn drop_holds_not_in_flight(&mut self) {
        let in_flight: HashSet<&str> = self
            .in_flight
            .iter()
            .map(|(_, _, id)| id.as_str())
            .collect();
        self.held.retain(|id, _| in_flight.contains(id.as_str()));
    }

    /// Marks `op` as being enqueued (see `enqueuing`).
    pub(super) fn start_enqueue(&mut self, op: &Operation) {
        self.enqueuing
            .insert(op.id.clone(), (op.seq, queue_key(op).map(Cow::into_owned)));
        self.enqueuing_bytes += crate::outbox::payload_bytes(op);
    }

    /// `op`'s write is over (stored, failed, committed or rolled back).
    pub(super) fn end_enqueue(&mut self, op: &Operation) {
        if self.enqueuing.remove(&op.id).is_some() {
            self.enqueuing_bytes = self
                .enqueuing_bytes
                .saturating_sub(crate::outbox::payload_bytes(op));
        }
    }

    /// Registers a `Pending` (or, on load, `InFlight`) operation's keys.
    pub(super) fn add_to_indexes(&mut self, op: &Operation) {
        if let Some(key) = queue_key(op) {
            self.keys
                .entry(key.into_owned())
                .or_default()
                .insert((op.seq, op.id.clone()));
        }
        if let Some(key) = coalesce_slot(op)
            && op.status == OperationStatus::Pending
            && !op.was_sent()
        {
            self.coalescable.insert(key.into_owned(), op.id.clone());
        }
    }

    /// Forgets a finished or discarded operation's keys. Returns whether
    /// another operation of its `ordering_key` is still queued: that one may
    /// have just become claimable.
    pub(super) fn remove_from_indexes(&mut self, op: &Operation) -> bool {
        let mut unblocked = false;
        if let Some(key) = queue_key(op)
            && let Some(queue) = self.keys.get_mut(key.as_ref())
        {
            queue.remove(&(op.seq, op.id.clone()));
            if queue.is_empty() {
                self.keys.remove(key.as_ref());
            } else {
                unblocked = true;
            }
        }
        if let Some(key) = coalesce_slot(op)
            && self.coalescable.get(key.as_ref()) == Some(&op.id)
        {
            self.coalescable.remove(key.as_ref());
        }
        unblocked
    }

    /// Forgets a finished operation's keys, like
    /// [`remove_from_indexes`](Self::remove_from_indexes), except that a
    /// `Failed` one that must stop the line (`holds_key`) keeps its place at
    /// the head of its key. Returns whether its key was unblocked.
    pub(super) fn finish(&mut self, op: &Operation, holds_key: bool) -> bool {
        if !holds_key {
            return self.remove_from_indexes(op);
        }
        if let Some(key) = coalesce_slot(op)
            && self.coalescable.get(key.as_ref()) == Some(&op.id)
        {
            self.coalescable.remove(key.as_ref());
        }
        false
    }

    /// Forgets the claim of an operation that was `InFlight` with `entry`:
    /// its result is recorded, or it was requeued or discarded.
    pub(super) fn forget_claim(&mut self, entry: &ClaimEntry) {
        self.in_flight.remove(entry);
        self.orphans.remove(entry);
        self.held.remove(&entry.2);
    }

    /// Whether `op` may be claimed: no earlier operation with the same
    /// `ordering_key` is pending or in flight, and no open transaction is
    /// coalescing into it.
    pub(super) fn is_head_of_key(&self, op: &Operation) -> bool {
        if self.replacing.contains(&op.id) {
            return false;
        }
        let Some(key) = queue_key(op) else {
            return true;
        };
        self.keys
            .get(key.as_ref())
            .and_then(BTreeSet::first)
            .is_none_or(|(seq, id)| *seq == op.seq && *id == op.id)
    }

    /// Claims nobody will record (orphans), then claims not held by a live
    /// `Claim` that were made at or before `deadline`.
    pub(super) fn abandoned_claims(&self, deadline: i64) -> Vec<(ClaimEntry, Abandoned)> {
        let orphans = self
            .orphans
            .iter()
            .map(|entry| (entry.clone(), Abandoned::Orphaned));
        let stale = self
            .in_flight
            .iter()
            .take_while(|(claimed_at, _, _)| *claimed_at <= deadline)
            .filter(|(_, _, id)| !self.held.contains_key(id))
            .map(|entry| (entry.clone(), Abandoned::TimedOut));
        orphans.chain(stale).collect()
    }

    /// When the earliest claim not held by a live `Claim` times out.
    pub(super) fn next_expiry_at_ms(&self, timeout_ms: i64) -> Option<i64> {
        self.in_flight
            .iter()
            .find(|(_, _, id)| !self.held.contains_key(id))
            .map(|(claimed_at, _, _)| claimed_at.saturating_add(timeout_ms))
    }
}

/// Why an `InFlight` operation goes back to the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Abandoned {
    /// Its sender is known to be gone.
    Orphaned,
    /// Not held by a live `Claim`, and older than `inflight_timeout_ms`.
    TimedOut,
}
