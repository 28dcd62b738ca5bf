//! [`PreparedEnqueue`]: an enqueue whose write happens in a transaction of
//! the store's own (the app's rows and its operations committed together),
//! for stores that offer one, such as `sync-store-sqlite`.

use std::fmt;
use std::sync::Arc;

use super::{Outbox, Shared};
use crate::error::OutboxError;
use crate::operation::{Operation, OperationStatus};

/// An enqueue prepared by [`Outbox::prepare_enqueue`], waiting for the
/// store's transaction that writes it.
///
/// Write [`operation`](Self::operation) in the transaction: insert it, or,
/// if [`replaces_existing`](Self::replaces_existing), update the kind,
/// target and payload of the pending, never-claimed row with its id. After
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
    /// the same `coalesce_key`: update that row's `kind`, `target`, `payload`
    /// and `updated_at_ms`. Until this is committed or dropped, that
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
        self.settled = true;
        {
            let mut state = self.shared.lock();
            state.enqueuing.remove(&self.op.id);
            state.replacing.remove(&self.op.id);
            if !self.replaces
                && let Some(key) = &self.op.coalesce_key
                && self.op.attempt == 0
            {
                state.coalescable.insert(key.clone(), self.op.id.clone());
            }
        }
        self.shared.notify_enqueue();
        std::mem::take(&mut self.op.id)
    }
}

impl Drop for PreparedEnqueue {
    /// The transaction rolled back: release the reservation.
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let unblocked = {
            let mut state = self.shared.lock();
            if self.replaces {
                state.replacing.remove(&self.op.id)
            } else {
                state.enqueuing.remove(&self.op.id);
                state.remove_from_indexes(&self.op);
                false
            }
        };
        if unblocked {
            // The target is claimable again.
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

impl Outbox {
    /// Prepares an enqueue that the store writes in a transaction of its own,
    /// with the app's rows: everything [`Outbox::enqueue`] does but the
    /// write. Does no store write (it reads, to check the id and to find a
    /// coalescing target).
    ///
    /// # Errors
    ///
    /// [`OutboxError::DuplicateId`] if the id exists or is being enqueued;
    /// [`OutboxError::Store`] if the store cannot be read.
    pub fn prepare_enqueue(
        &self,
        op: Operation,
        now_ms: i64,
    ) -> Result<PreparedEnqueue, OutboxError> {
        self.prepare(op, now_ms, true)
    }

    /// [`Outbox::prepare_enqueue`] without coalescing: always a new
    /// operation (for when the coalescing target was claimed meanwhile).
    ///
    /// # Errors
    ///
    /// As [`Outbox::prepare_enqueue`].
    pub fn prepare_enqueue_new(
        &self,
        op: Operation,
        now_ms: i64,
    ) -> Result<PreparedEnqueue, OutboxError> {
        self.prepare(op, now_ms, false)
    }

    fn prepare(
        &self,
        mut op: Operation,
        now_ms: i64,
        coalesce: bool,
    ) -> Result<PreparedEnqueue, OutboxError> {
        let mut state = self.lock_loaded()?;
        if coalesce
            && let Some(existing) = op
                .coalesce_key
                .as_ref()
                .and_then(|key| state.coalescable.get(key))
                .cloned()
            && !state.replacing.contains(&existing)
            && let Some(mut target) = self.store.get(&existing)?
            && target.status == OperationStatus::Pending
            && target.attempt == 0
        {
            state.replacing.insert(existing);
            target.kind = op.kind;
            target.target = op.target;
            target.payload = op.payload;
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
        if state.enqueuing.contains(&op.id) || self.store.get(&op.id)?.is_some() {
            return Err(OutboxError::DuplicateId { id: op.id });
        }
        self.fill_new(&mut state, &mut op, now_ms);
        // Its place in the key's queue, held from now until commit or
        // rollback; coalescing waits for the commit.
        let coalesce_key = op.coalesce_key.take();
        state.add_to_indexes(&op);
        op.coalesce_key = coalesce_key;
        state.enqueuing.insert(op.id.clone());
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
