//! The [`OutboxStore`] trait: what the outbox needs from storage, and the
//! durability each method promises.

use std::fmt::Debug;

use crate::error::OutboxError;
use crate::operation::{Operation, OperationStatus};
use crate::outbox::OutboxStats;

/// Storage for operations, keyed by id.
///
/// The outbox calls a store from several threads (`Send + Sync`), but only
/// one [`Outbox`](crate::Outbox) should use a store at a time: the outbox
/// keeps indexes of it in memory.
///
/// # Durability contract
///
/// A method that changes the store (`put`, `put_batch`, `remove`) returns `Ok`
/// only when the change is as durable as the store promises in its own docs
/// (for a file store: on disk, surviving a crash). Before it returns `Err`,
/// the store is either unchanged or fully changed for each operation: never a
/// half-written operation. Reads see every change that returned `Ok`.
///
/// # Examples
///
/// ```
/// use sync_outbox::{MemoryOutboxStore, Operation, OutboxStore};
///
/// let store = MemoryOutboxStore::new();
/// let mut op = Operation::new("message.send", "/api/messages", "{}");
/// op.id = "op_1".into();
/// store.put(&op)?;
/// assert_eq!(store.get("op_1")?, Some(op));
/// assert!(store.remove("op_1")?);
/// # Ok::<_, sync_outbox::OutboxError>(())
/// ```
pub trait OutboxStore: Send + Sync + Debug {
    /// Inserts `op`, or replaces the operation with the same id. Durable on `Ok`.
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`] if the store cannot persist it; the previous
    /// version, if any, is then still stored.
    fn put(&self, op: &Operation) -> Result<(), OutboxError>;

    /// Stores several operations; durable on `Ok`. A store may make them
    /// durable together (one fsync); the default calls [`put`](Self::put) for
    /// each. On `Err`, any prefix of them may have been stored.
    ///
    /// # Errors
    ///
    /// As [`put`](Self::put).
    fn put_batch(&self, ops: &[Operation]) -> Result<(), OutboxError> {
        ops.iter().try_for_each(|op| self.put(op))
    }

    /// Stores operations without waiting for a sync: durable on `Ok`
    /// against a crash of the process, and against power loss after the
    /// next [`sync`](Self::sync) or synced write (a sync covers every write
    /// before it). Used for changes whose loss on power failure only means
    /// a resend: a claim, and results recorded as they arrive before the
    /// batch's one sync. The default calls [`put_batch`](Self::put_batch),
    /// which is durable at once.
    ///
    /// # Errors
    ///
    /// As [`put_batch`](Self::put_batch).
    fn put_unsynced(&self, ops: &[Operation]) -> Result<(), OutboxError> {
        self.put_batch(ops)
    }

    /// Makes every write that returned `Ok` before it as durable as the
    /// store's synced writes are ([`put`](Self::put)): the sync that
    /// [`put_unsynced`](Self::put_unsynced) left out. The default does
    /// nothing, for stores whose every write is durable at once.
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`] if the sync fails.
    fn sync(&self) -> Result<(), OutboxError> {
        Ok(())
    }

    /// Stores operations [`Outbox::claim`](crate::Outbox::claim) has just
    /// claimed (`InFlight`, their `attempt` counted).
    ///
    /// Durable on `Ok` at least against a crash of the process. A store may
    /// defer the sync to its next durable write (the WAL store does, under
    /// `SyncPolicy::Always`): all a claim protects is the attempt counter. If
    /// a power loss drops it, the operation comes back `Pending` with its
    /// previous attempt and is sent again, which at-least-once delivery
    /// allows; nothing acknowledged is lost, because the record of an
    /// acknowledgement (`Done`) is written after the claim and its sync
    /// covers the claim too. The default calls
    /// [`put_unsynced`](Self::put_unsynced).
    ///
    /// # Errors
    ///
    /// As [`put_batch`](Self::put_batch).
    fn put_claimed(&self, ops: &[Operation]) -> Result<(), OutboxError> {
        self.put_unsynced(ops)
    }

    /// The operation with this id, if any.
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`] if it cannot be read.
    fn get(&self, id: &str) -> Result<Option<Operation>, OutboxError>;

    /// Removes the operation with this id; returns whether there was one.
    /// Durable on `Ok`.
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`] if the removal cannot be persisted.
    fn remove(&self, id: &str) -> Result<bool, OutboxError>;

    /// Every stored operation, in no particular order.
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`] if they cannot be read.
    fn load_all(&self) -> Result<Vec<Operation>, OutboxError>;

    /// Up to `limit` `Pending` operations with `next_retry_at_ms <= now_ms`,
    /// ordered by `next_retry_at_ms`, then `seq`. The default filters
    /// [`load_all`](Self::load_all) (O(n)); a store should do better.
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`] if they cannot be read.
    fn ready(&self, now_ms: i64, limit: usize) -> Result<Vec<Operation>, OutboxError> {
        let mut due: Vec<Operation> = self
            .load_all()?
            .into_iter()
            .filter(|op| op.is_due(now_ms))
            .collect();
        due.sort_by_key(|op| (op.next_retry_at_ms, op.seq));
        due.truncate(limit);
        Ok(due)
    }

    /// The earliest `next_retry_at_ms` of any `Pending` operation, if any. The
    /// default scans [`load_all`](Self::load_all); a store should do better.
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`] if they cannot be read.
    fn next_due_ms(&self) -> Result<Option<i64>, OutboxError> {
        Ok(self
            .load_all()?
            .iter()
            .filter(|op| op.status == OperationStatus::Pending)
            .map(|op| op.next_retry_at_ms)
            .min())
    }

    /// How many operations have each status, as `[pending, in_flight, done,
    /// failed]`, from [`stats`](Self::stats).
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`] if they cannot be read.
    #[deprecated(
        since = "0.1.0",
        note = "use `stats()`: the same counts by name (`stats.pending`, `stats.unsent()`, ...)"
    )]
    fn count_by_status(&self) -> Result<[usize; 4], OutboxError> {
        let stats = self.stats()?;
        Ok([stats.pending, stats.in_flight, stats.done, stats.failed])
    }

    /// How many operations have each status, and when the oldest pending one
    /// was created: what a UI shows ("3 changes not yet synced") and what
    /// [`Outbox::stats`](crate::Outbox::stats) returns. The stores of this
    /// workspace keep it as they write, so it is cheap to call often (O(log
    /// n) in memory and in the file stores, two index lookups in SQLite).
    /// The default counts [`load_all`](Self::load_all) (O(n)).
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`] if they cannot be read.
    fn stats(&self) -> Result<OutboxStats, OutboxError> {
        let mut stats = OutboxStats::default();
        for op in self.load_all()? {
            stats.add(&op);
        }
        Ok(stats)
    }
}

/// The index of `status` in the deprecated `OutboxStore::count_by_status`'s
/// array (and in `synctl`'s tables): 0 pending, 1 in flight, 2 done, 3
/// failed.
#[must_use]
pub fn status_index(status: OperationStatus) -> usize {
    match status {
        OperationStatus::Pending => 0,
        OperationStatus::InFlight => 1,
        OperationStatus::Done => 2,
        OperationStatus::Failed => 3,
    }
}
