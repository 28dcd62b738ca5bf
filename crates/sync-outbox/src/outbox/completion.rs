//! Waiting for one operation's end: [`Completion`], [`Outbox::wait`], and
//! the change counter async waits are built on.
//!
//! The outbox bumps a counter after every write that changes an
//! operation's status (the same writes that call `on_change` listeners).
//! A wait reads the operation, and if it has not ended sleeps until the
//! counter moves past what it saw before reading: a change that lands
//! between the read and the sleep is never slept through.

use std::future::poll_fn;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use super::Outbox;
use crate::error::OutboxError;
use crate::operation::{Operation, OperationStatus};

/// How an operation ended, for [`Outbox::wait`].
#[derive(Clone, Debug, PartialEq)]
pub enum Completion {
    /// The server acknowledged it; the operation as stored (its
    /// `server_version`, when the answer named one).
    Done(Operation),
    /// A dead letter: the server refused it, or it ran out of attempts or
    /// of its resend window; `last_error` says why. It ends here unless the
    /// app retries, corrects or discards it.
    Failed(Operation),
    /// Not in the store: discarded, or purged after it was done.
    Gone,
}

/// The counter and who waits on it.
#[derive(Default)]
pub(super) struct Changes {
    latest: Mutex<Latest>,
    moved: Condvar,
}

#[derive(Default)]
struct Latest {
    count: u64,
    /// The outbox is gone: nothing will change any more.
    closed: bool,
    wakers: Vec<Waker>,
    /// Threads blocked in `wait_past`: a bump with none skips the notify,
    /// whose futex wake is a syscall even with nobody waiting (three per
    /// send cycle otherwise).
    sleepers: usize,
}

impl Changes {
    fn lock(&self) -> MutexGuard<'_, Latest> {
        self.latest.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// After a write that changed a status.
    pub(super) fn bump(&self) {
        let (wakers, sleepers) = {
            let mut latest = self.lock();
            latest.count = latest.count.wrapping_add(1);
            (std::mem::take(&mut latest.wakers), latest.sleepers)
        };
        if sleepers > 0 {
            self.moved.notify_all();
        }
        wakers.into_iter().for_each(Waker::wake);
    }

    /// The outbox is dropped: every wait ends.
    pub(super) fn close(&self) {
        let wakers = {
            let mut latest = self.lock();
            latest.closed = true;
            std::mem::take(&mut latest.wakers)
        };
        self.moved.notify_all();
        wakers.into_iter().for_each(Waker::wake);
    }

    fn count(&self) -> u64 {
        self.lock().count
    }

    /// Sleeps until the count is past `seen`, the outbox is gone, or
    /// `deadline`; `false` on the deadline.
    fn wait_past(&self, seen: u64, deadline: Instant) -> bool {
        let mut latest = self.lock();
        while latest.count == seen && !latest.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            latest.sleepers += 1;
            latest = self
                .moved
                .wait_timeout(latest, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            latest.sleepers -= 1;
        }
        true
    }
}

/// What `op` (or its absence) says about how it ended; `None` while it has
/// not.
fn completion_of(op: Option<Operation>) -> Option<Completion> {
    match op {
        None => Some(Completion::Gone),
        Some(op) => match op.status {
            OperationStatus::Done => Some(Completion::Done(op)),
            OperationStatus::Failed => Some(Completion::Failed(op)),
            OperationStatus::Pending | OperationStatus::InFlight => None,
        },
    }
}

impl Outbox {
    /// How operation `id` ended, or `None` while it is still `Pending` or
    /// `InFlight`. One store read.
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`].
    pub fn completion(&self, id: &str) -> Result<Option<Completion>, OutboxError> {
        Ok(completion_of(self.store.get(id)?))
    }

    /// Blocks until operation `id` is done, a dead letter, or gone, and
    /// returns which; `None` if `timeout` passes first (or the outbox is
    /// dropped meanwhile). Wakes on every status change of this outbox's
    /// operations, without polling the store; someone must be sending (an
    /// engine, a worker's `tick`). For a UI's "saved to the server" on one
    /// item. From async code use `AsyncOutbox::wait` (sync-engine), which
    /// reads the store off the runtime's threads.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use sync_outbox::{Completion, MemoryOutboxStore, Operation, Outbox, OutboxConfig};
    ///
    /// let outbox = Arc::new(Outbox::new(OutboxConfig::default(), Arc::new(MemoryOutboxStore::new())));
    /// let id = outbox.enqueue(Operation::new("note.save", "/notes/1", "{}"), 0)?;
    /// let sender = {
    ///     let outbox = Arc::clone(&outbox);
    ///     std::thread::spawn(move || -> Result<(), sync_outbox::OutboxError> {
    ///         for claimed in outbox.claim(0, 1)?.detach() {
    ///             outbox.mark_done(&claimed.id, 1)?;
    ///         }
    ///         Ok(())
    ///     })
    /// };
    /// let ended = outbox.wait(&id, Duration::from_secs(5))?;
    /// assert!(matches!(ended, Some(Completion::Done(_))));
    /// # sender.join().expect("sender")?;
    /// # Ok::<(), sync_outbox::OutboxError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`].
    pub fn wait(&self, id: &str, timeout: Duration) -> Result<Option<Completion>, OutboxError> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.shared.changes.count();
            if let Some(ended) = self.completion(id)? {
                return Ok(Some(ended));
            }
            if !self.shared.changes.wait_past(seen, deadline) || self.shared.changes.lock().closed {
                return Ok(None);
            }
        }
    }

    /// How many status changes this outbox has made (a counter that only
    /// moves forward). With [`changed_since`](Self::changed_since), the
    /// building block of waits that must not block a thread: read the
    /// count, then the store, then await the change.
    #[must_use]
    pub fn change_count(&self) -> u64 {
        self.shared.changes.count()
    }

    /// Resolves once [`change_count`](Self::change_count) is past `seen`,
    /// or the outbox is dropped. Runtime-agnostic, never blocks a thread,
    /// cancel-safe.
    pub fn changed_since(&self, seen: u64) -> impl Future<Output = ()> + Send + 'static {
        let changes: Arc<Changes> = Arc::clone(&self.shared.changes);
        async move {
            poll_fn(|cx| {
                let mut latest = changes.lock();
                if latest.count != seen || latest.closed {
                    return Poll::Ready(());
                }
                if !latest.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    latest.wakers.push(cx.waker().clone());
                }
                Poll::Pending
            })
            .await;
        }
    }
}

#[cfg(test)]
mod tests;
