//! [`MemoryOutboxStore`]: an indexed in-memory store, for tests, simulations
//! and apps that accept losing the queue with the process.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::error::OutboxError;
use crate::operation::{Operation, OperationStatus};
use crate::outbox::{OutboxStats, payload_bytes};
use crate::store::{OutboxStore, status_index};

/// An [`OutboxStore`] in memory. Nothing survives the process.
///
/// `ready` is O(limit * log n): pending operations are kept in a
/// `BTreeSet` ordered by `(next_retry_at_ms, seq)`. `stats` is O(log n):
/// counts per status are kept on every write, and pending operations are
/// indexed by age too.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use sync_outbox::{MemoryOutboxStore, Operation, Outbox, OutboxConfig};
///
/// let store = Arc::new(MemoryOutboxStore::new());
/// let outbox = Outbox::new(OutboxConfig::default(), store.clone());
/// let id = outbox.enqueue(Operation::new("message.send", "/api/messages", "{}"), 1_000)?;
/// assert_eq!(outbox.claim(1_000, 10)?.len(), 1);
/// outbox.mark_done(&id, 1_001)?;
/// # Ok::<_, sync_outbox::OutboxError>(())
/// ```
#[derive(Debug, Default)]
pub struct MemoryOutboxStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Boxed: growing the map moves a pointer per operation, not the
    /// whole (~350-byte) operation.
    ops: HashMap<String, Box<Operation>, foldhash::fast::RandomState>,
    /// `(next_retry_at_ms, seq, id)` of every pending operation.
    pending: BTreeSet<(i64, u64, String)>,
    /// `(created_at_ms, seq)` of every pending operation -> how many share
    /// it (operations of other outboxes may), for the oldest pending one.
    pending_by_age: BTreeMap<(i64, u64), usize>,
    counts: [usize; 4],
    /// Payload bytes of the operations not done.
    queued_bytes: u64,
}

impl MemoryOutboxStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` on the stored operation with `id`, without copying it;
    /// `None` if there is none. `f` runs under the store's lock: keep it
    /// short, and do not call the store from it.
    ///
    /// # Examples
    ///
    /// ```
    /// use sync_outbox::{MemoryOutboxStore, Operation, OutboxStore};
    ///
    /// let store = MemoryOutboxStore::new();
    /// let mut op = Operation::new("note.create", "/notes", "{}");
    /// op.id = "op_1".into();
    /// store.put(&op)?;
    /// assert_eq!(store.inspect("op_1", |op| op.payload.len()), Some(2));
    /// # Ok::<_, sync_outbox::OutboxError>(())
    /// ```
    pub fn inspect<R>(&self, id: &str, f: impl FnOnce(&Operation) -> R) -> Option<R> {
        self.lock().ops.get(id).map(|op| f(op))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn unindex(&mut self, op: &Operation) {
        if op.status == OperationStatus::Pending {
            self.pending
                .remove(&(op.next_retry_at_ms, op.seq, op.id.clone()));
            let age = (op.created_at_ms, op.seq);
            if let Some(n) = self.pending_by_age.get_mut(&age) {
                *n -= 1;
                if *n == 0 {
                    self.pending_by_age.remove(&age);
                }
            }
        }
        if let Some(count) = self.counts.get_mut(status_index(op.status)) {
            *count = count.saturating_sub(1);
        }
        if op.status != OperationStatus::Done {
            self.queued_bytes = self.queued_bytes.saturating_sub(payload_bytes(op));
        }
    }

    fn index(&mut self, op: &Operation) {
        if op.status == OperationStatus::Pending {
            self.pending
                .insert((op.next_retry_at_ms, op.seq, op.id.clone()));
            *self
                .pending_by_age
                .entry((op.created_at_ms, op.seq))
                .or_default() += 1;
        }
        if let Some(count) = self.counts.get_mut(status_index(op.status)) {
            *count += 1;
        }
        if op.status != OperationStatus::Done {
            self.queued_bytes += payload_bytes(op);
        }
    }

    fn put(&mut self, op: &Operation) {
        let old = if let Some(slot) = self.ops.get_mut(op.id.as_str()) {
            // The box is reused: a replacement allocates only the copy.
            Some(std::mem::replace(&mut **slot, op.clone()))
        } else {
            self.ops.insert(op.id.clone(), Box::new(op.clone()));
            None
        };
        // Old index entries go before new ones are added: they may be equal.
        if let Some(old) = old {
            self.unindex(&old);
        }
        self.index(op);
    }
}

impl OutboxStore for MemoryOutboxStore {
    /// Stores `op` in memory; "durable" only for the life of the process.
    fn put(&self, op: &Operation) -> Result<(), OutboxError> {
        self.lock().put(op);
        Ok(())
    }

    fn put_batch(&self, ops: &[Operation]) -> Result<(), OutboxError> {
        let mut inner = self.lock();
        for op in ops {
            inner.put(op);
        }
        Ok(())
    }

    fn get(&self, id: &str) -> Result<Option<Operation>, OutboxError> {
        Ok(self.lock().ops.get(id).map(|op| Operation::clone(op)))
    }

    fn remove(&self, id: &str) -> Result<bool, OutboxError> {
        let mut inner = self.lock();
        let Some(old) = inner.ops.remove(id) else {
            return Ok(false);
        };
        inner.unindex(&old);
        Ok(true)
    }

    fn load_all(&self) -> Result<Vec<Operation>, OutboxError> {
        Ok(self
            .lock()
            .ops
            .values()
            .map(|op| Operation::clone(op))
            .collect())
    }

    fn ready(&self, now_ms: i64, limit: usize) -> Result<Vec<Operation>, OutboxError> {
        let inner = self.lock();
        Ok(inner
            .pending
            .iter()
            .take_while(|(due, _, _)| *due <= now_ms)
            .take(limit)
            .filter_map(|(_, _, id)| inner.ops.get(id).map(|op| Operation::clone(op)))
            .collect())
    }

    fn next_due_ms(&self) -> Result<Option<i64>, OutboxError> {
        Ok(self.lock().pending.first().map(|(due, _, _)| *due))
    }

    fn stats(&self) -> Result<OutboxStats, OutboxError> {
        let inner = self.lock();
        let [pending, in_flight, done, failed] = inner.counts;
        Ok(OutboxStats {
            pending,
            in_flight,
            done,
            failed,
            oldest_pending_created_at_ms: inner.pending_by_age.keys().next().map(|(at, _)| *at),
            queued_bytes: inner.queued_bytes,
        })
    }
}
