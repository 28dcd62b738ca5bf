//! [`PreparedEnqueue`]: an enqueue whose write happens in a transaction of
//! the store's own (the app's rows and its operations committed together),
//! for stores that offer one, such as `sync-store-sqlite`.

use std::fmt;
use std::sync::{Arc, MutexGuard};

use super::index::State;
use super::{Outbox, Shared, refuse_unsendable};
use crate::error::OutboxError;
use crate::operation::{Operation, OperationStatus};

/// An enqueue prepared by [`Outbox::prepare_enqueue`], waiting for the
/// store's transaction that writes it.
///
/// Write [`operation`](Self::operation) in the transaction: insert it, or,
/// if [`replaces_existing`](Self::replaces_existing), write it over the
/// pending, never-claimed row with its id (it is that row with the new
/// edit's kind, target, payload, needs, answer keeping and trace). After
/// the transaction commits, call [`committed`](Self::committed): the outbox
/// then knows the operation (per-key order, coalescing) and wakes its
/// senders. Dropping it instead (the transaction rolled back) leaves the
/// outbox's indexes as they were.
///
/// While it is prepared, the operation already holds its place in its
/// `ordering_key`'s queue, so an operation of the same key enqueued later
/// cannot be sent before it.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use sync_outbox::{MemoryOutboxStore, Operation, Outbox, OutboxConfig, OutboxStore};
///
/// let store = Arc::new(MemoryOutboxStore::new());
/// let outbox = Outbox::new(OutboxConfig::default(), store.clone());
/// let prepared = outbox.prepare_enqueue(Operation::new("note.create", "/notes", "{}"), 0)?;
/// // A store with transactions writes it with the app's rows; here:
/// store.put(prepared.operation())?;
/// let id = prepared.committed();
/// assert_eq!(outbox.claim(1, 10)?.ops()[0].id, id);
/// # Ok::<_, sync_outbox::OutboxError>(())
/// ```
#[must_use = "call committed() after the transaction commits; dropping it means a rollback"]
pub struct PreparedEnqueue {
    op: Operation,
    replaces: bool,
    shared: Arc<Shared>,
    settled: bool,
}

impl PreparedEnqueue {
    /// The operation to write, with its id, `seq` and times filled in.
    #[must_use]
    pub fn operation(&self) -> &Operation {
        &self.op
    }

    /// Whether this coalesces into a pending, never-claimed operation with
    /// the same `coalesce_key`: write [`operation`](Self::operation) over
    /// that row (its `kind`, `target`, `payload`, `needs`, `keep_answer`,
    /// `traceparent` and `updated_at_ms` are the new ones; the rest is the
    /// row's). Until this is committed or dropped, that
    /// operation is not claimed, so the update cannot race a send; if the row
    /// is gone (discarded meanwhile), drop this and use
    /// [`Outbox::prepare_enqueue_new`].
    #[must_use]
    pub fn replaces_existing(&self) -> bool {
        self.replaces
    }

    /// The transaction committed: the operation is durable. Registers it in
    /// the outbox's indexes, calls the enqueue and claimable listeners, and
    /// returns its id.
    #[must_use = "the id of the committed operation"]
    pub fn committed(mut self) -> String {
        let shared = Arc::clone(&self.shared);
        {
            let mut state = shared.lock();
            self.register(&mut state);
        }
        shared.notify_enqueue();
        std::mem::take(&mut self.op.id)
    }

    /// Registers the committed operation in the indexes `state` (the
    /// outbox's, locked by the caller).
    fn register(&mut self, state: &mut State) {
        self.settled = true;
        state.end_enqueue(&self.op);
        state.replacing.remove(&self.op.id);
        if !self.replaces
            && let Some(key) = super::index::coalesce_slot(&self.op)
            && self.op.attempt == 0
        {
            state
                .coalescable
                .insert(key.into_owned(), self.op.id.clone());
        }
    }

    /// Releases the reservation of a rolled-back enqueue in `state` (the
    /// outbox's, locked by the caller); returns whether that unblocked a
    /// key.
    fn release(&mut self, state: &mut State) -> bool {
        self.settled = true;
        if self.replaces {
            // The target is claimable again.
            state.replacing.remove(&self.op.id)
        } else {
            state.end_enqueue(&self.op);
            // Later operations of its key that waited behind it may go.
            state.remove_from_indexes(&self.op)
        }
    }
}

impl Drop for PreparedEnqueue {
    /// The transaction rolled back: release the reservation.
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let unblocked = {
            let shared = Arc::clone(&self.shared);
            let mut state = shared.lock();
            self.release(&mut state)
        };
        if unblocked {
            self.shared.notify_claimable();
        }
    }
}

impl fmt::Debug for PreparedEnqueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedEnqueue")
            .field("id", &self.op.id)
            .field("replaces", &self.replaces)
            .finish_non_exhaustive()
    }
}

/// The outbox held exclusively for a store transaction, from
/// [`Outbox::lock_for_transaction`]: no claim, record or enqueue runs while
/// it lives, so nothing in this process waits on the store while the store
/// waits on the outbox.
///
/// A store with transactions (`sync-store-sqlite`) takes it *before* its
/// own write lock, prepares the transaction's enqueues on it, and settles
/// them with [`commit`](Self::commit) or [`rollback`](Self::rollback), which
/// release the outbox first. Do not call other outbox methods on this
/// thread while it lives (they would wait for it), and do not drop a
/// [`PreparedEnqueue`] of it before releasing it.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use sync_outbox::{MemoryOutboxStore, Operation, Outbox, OutboxConfig, OutboxStore};
///
/// let store = Arc::new(MemoryOutboxStore::new());
/// let outbox = Outbox::new(OutboxConfig::default(), store.clone());
/// let mut held = outbox.lock_for_transaction()?;
/// let prepared = held.prepare_enqueue(Operation::new("note.create", "/notes", "{}"), 0)?;
/// store.put(prepared.operation())?; // in the store's transaction
/// let ids = held.commit(vec![prepared]);
/// assert_eq!(outbox.claim(1, 10)?.ops()[0].id, ids[0]);
/// # Ok::<_, sync_outbox::OutboxError>(())
/// ```
pub struct ExclusiveOutbox<'a> {
    outbox: &'a Outbox,
    state: MutexGuard<'a, State>,
}

impl fmt::Debug for ExclusiveOutbox<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExclusiveOutbox").finish_non_exhaustive()
    }
}

impl ExclusiveOutbox<'_> {
    /// As [`Outbox::prepare_enqueue`], on the held outbox.
    ///
    /// # Errors
    ///
    /// As [`Outbox::prepare_enqueue`].
    pub fn prepare_enqueue(
        &mut self,
        op: Operation,
        now_ms: i64,
    ) -> Result<PreparedEnqueue, OutboxError> {
        self.outbox.prepare_in(&mut self.state, op, now_ms, true)
    }

    /// As [`Outbox::prepare_enqueue_new`], on the held outbox.
    ///
    /// # Errors
    ///
    /// As [`Outbox::prepare_enqueue`].
    pub fn prepare_enqueue_new(
        &mut self,
        op: Operation,
        now_ms: i64,
    ) -> Result<PreparedEnqueue, OutboxError> {
        self.outbox.prepare_in(&mut self.state, op, now_ms, false)
    }

    /// The store's transaction committed: registers each of `prepared` in
    /// the held outbox, then releases it and tells the listeners. Returns
    /// their ids, in order. The outbox is not taken again, so a store may
    /// call this while it still holds its own lock (its connection) without
    /// waiting on a thread that holds the outbox and waits for that lock.
    #[must_use = "the ids of the committed operations"]
    pub fn commit(mut self, prepared: Vec<PreparedEnqueue>) -> Vec<String> {
        let ids: Vec<String> = prepared
            .into_iter()
            .map(|mut p| {
                p.register(&mut self.state);
                std::mem::take(&mut p.op.id)
            })
            .collect();
        drop(self.state);
        for _ in &ids {
            self.outbox.shared.notify_enqueue();
        }
        ids
    }

    /// The store's transaction rolled back: releases each of `prepared`'s
    /// reservations in the held outbox (the indexes as they were), then the
    /// outbox. Like [`commit`](Self::commit), it does not take the outbox
    /// again.
    pub fn rollback(mut self, prepared: Vec<PreparedEnqueue>) {
        let mut unblocked = false;
        for mut p in prepared {
            unblocked |= p.release(&mut self.state);
        }
        drop(self.state);
        if unblocked {
            self.outbox.shared.notify_claimable();
        }
    }
}

impl Outbox {
    /// Holds the outbox exclusively for a store transaction (see
    /// [`ExclusiveOutbox`]).
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`] if the indexes must be loaded and cannot be.
    pub fn lock_for_transaction(&self) -> Result<ExclusiveOutbox<'_>, OutboxError> {
        Ok(ExclusiveOutbox {
            outbox: self,
            state: self.lock_loaded()?,
        })
    }

    /// Prepares an enqueue that the store writes in a transaction of its own,
    /// with the app's rows: everything [`Outbox::enqueue`] does but the
    /// write. Does no store write (it reads, to check the id and to find a
    /// coalescing target). A store whose transactions hold a write lock
    /// should use [`Outbox::lock_for_transaction`] instead, so the outbox is
    /// taken before that lock.
    ///
    /// # Errors
    ///
    /// [`OutboxError::InvalidOperation`] for an operation that can never be
    /// sent ([`Operation::unsendable`]); [`OutboxError::DuplicateId`] if the
    /// id exists or is being enqueued; [`OutboxError::QueueFull`] past a
    /// queue limit ([`OutboxConfig::max_queued`](crate::OutboxConfig::max_queued));
    /// [`OutboxError::Store`] if the store cannot be read.
    pub fn prepare_enqueue(
        &self,
        op: Operation,
        now_ms: i64,
    ) -> Result<PreparedEnqueue, OutboxError> {
        let mut state = self.lock_loaded()?;
        self.prepare_in(&mut state, op, now_ms, true)
    }

    /// [`Outbox::prepare_enqueue`] without coalescing: always a new
    /// operation.
    ///
    /// # Errors
    ///
    /// As [`Outbox::prepare_enqueue`].
    pub fn prepare_enqueue_new(
        &self,
        op: Operation,
        now_ms: i64,
    ) -> Result<PreparedEnqueue, OutboxError> {
        let mut state = self.lock_loaded()?;
        self.prepare_in(&mut state, op, now_ms, false)
    }

    fn prepare_in(
        &self,
        state: &mut State,
        mut op: Operation,
        now_ms: i64,
        coalesce: bool,
    ) -> Result<PreparedEnqueue, OutboxError> {
        refuse_unsendable(&op)?;
        if op.account.is_none() {
            op.account.clone_from(&state.account);
        }
        if coalesce
            && let Some(existing) = super::index::coalesce_slot(&op)
                .and_then(|key| state.coalescable.get(key.as_ref()))
                .cloned()
            && !state.replacing.contains(&existing)
            && let Some(mut target) = self.store.get(&existing)?
            && target.status == OperationStatus::Pending
            && !target.was_sent()
            && target.account == op.account
        {
            self.admit(state, &op, Some(&target))?;
            self.refuse_unmeetable_needs(state, &op)?;
            state.replacing.insert(existing);
            target.kind = op.kind;
            target.target = op.target;
            target.payload = op.payload;
            target.needs = op.needs;
            target.keep_answer |= op.keep_answer;
            // The latest edit's trace: it is the one the request now carries.
            target.traceparent = self.traceparent_of(op.traceparent).or(target.traceparent);
            target.updated_at_ms = now_ms;
            return Ok(PreparedEnqueue {
                op: target,
                replaces: true,
                shared: Arc::clone(&self.shared),
                settled: false,
            });
        }
        if op.id.is_empty() {
            op.id = self.ids.next(now_ms);
        }
        if state.enqueuing.contains_key(&op.id) || self.store.get(&op.id)?.is_some() {
            return Err(OutboxError::DuplicateId { id: op.id });
        }
        self.admit(state, &op, None)?;
        self.refuse_unmeetable_needs(state, &op)?;
        self.fill_new(state, &mut op, now_ms);
        // Its place in the key's queue, held from now until commit or
        // rollback; coalescing waits for the commit.
        let coalesce_key = op.coalesce_key.take();
        state.add_to_indexes(&op);
        op.coalesce_key = coalesce_key;
        state.start_enqueue(&op);
        Ok(PreparedEnqueue {
            op,
            replaces: false,
            shared: Arc::clone(&self.shared),
            settled: false,
        })
    }
}

#[cfg(test)]
mod tests;
