//! [`AsyncOutbox`]: the outbox calls an async app makes, run off the
//! runtime's worker threads.

use std::fmt;
use std::sync::Arc;

use sync_outbox::{
    Completion, Correction, Operation, OperationStatus, Outbox, OutboxError, OutboxStats,
    StatsWatch,
};

use crate::clock::{Clock, SystemClock};

/// The async face of an [`Outbox`]: `enqueue`, `stats`, `list`,
/// `retry_failed` and `discard` as futures that run the store's disk I/O and
/// fsync on tokio's blocking pool (`spawn_blocking`), so an axum handler or a
/// Tauri command never blocks a runtime worker. Each takes `now_ms` from the
/// clock it was made with ([`SystemClock`] by default). Cheap to clone.
///
/// Durability is the blocking call's: `enqueue(..).await` returns `Ok` once
/// the store has persisted the operation as its `SyncPolicy` promises.
///
/// Dropping one of these futures (an axum handler whose client hung up) does
/// not cancel the store call it started: an `enqueue` may still persist.
/// Give operations an id of the app's own (the request's idempotency key,
/// say) so a retried request gets `DuplicateId` instead of a second
/// operation.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use sync_engine::AsyncOutbox;
/// use sync_outbox::{MemoryOutboxStore, Operation, Outbox, OutboxConfig};
///
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// let outbox = Arc::new(Outbox::new(OutboxConfig::default(), Arc::new(MemoryOutboxStore::new())));
/// let queue = AsyncOutbox::new(outbox);
/// let id = queue.enqueue(Operation::new("note.create", "/notes", "{}")).await?;
/// assert_eq!(queue.stats().await?.pending, 1);
/// queue.discard(&id).await?;
/// # Ok::<_, sync_outbox::OutboxError>(())
/// # })?;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct AsyncOutbox {
    outbox: Arc<Outbox>,
    clock: Arc<dyn Clock>,
    /// Store calls running at once on the blocking pool, at most. Concurrent
    /// enqueues still share a WAL store's fsync (group commit), but a burst
    /// of requests does not start a thread each to fight the runtime's
    /// workers for the CPU.
    in_store: Arc<tokio::sync::Semaphore>,
}

/// The default of [`AsyncOutbox::with_max_concurrent_calls`].
const MAX_CONCURRENT_CALLS: usize = 8;

impl fmt::Debug for AsyncOutbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncOutbox")
            .field("outbox", &self.outbox)
            .finish_non_exhaustive()
    }
}

impl AsyncOutbox {
    /// The async face of `outbox`, with times from the [`SystemClock`].
    pub fn new(outbox: Arc<Outbox>) -> Self {
        Self::with_clock(outbox, SystemClock)
    }

    /// The async face of `outbox`, with times from `clock` (a
    /// [`TokioClock`](crate::TokioClock) in tests with paused time).
    pub fn with_clock(outbox: Arc<Outbox>, clock: impl Clock) -> Self {
        Self {
            outbox,
            clock: Arc::new(clock),
            in_store: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_CALLS)),
        }
    }

    /// At most `n` (at least 1) store calls of this outbox (and its clones)
    /// run at once on the blocking pool; the others wait, without a
    /// thread. Default 8: enough for group commit to share an fsync, few
    /// enough that a burst does not crowd the runtime off the CPU.
    #[must_use]
    pub fn with_max_concurrent_calls(mut self, n: usize) -> Self {
        self.in_store = Arc::new(tokio::sync::Semaphore::new(n.max(1)));
        self
    }

    /// The outbox, for the blocking calls.
    #[must_use]
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// [`Outbox::enqueue`] at the clock's now, off the runtime's threads.
    ///
    /// # Errors
    ///
    /// As [`Outbox::enqueue`].
    pub async fn enqueue(&self, mut op: Operation) -> Result<String, OutboxError> {
        // The trace in effect is this task's, not the blocking thread's.
        let own = op
            .traceparent
            .as_deref()
            .is_some_and(sync_protocol::is_traceparent);
        if !own && let Some(context) = &self.outbox.config().trace_context {
            op.traceparent = context.current();
        }
        self.run(move |outbox, now| outbox.enqueue(op, now)).await
    }

    /// [`Outbox::stats`], off the runtime's threads.
    ///
    /// # Errors
    ///
    /// As [`Outbox::stats`].
    pub async fn stats(&self) -> Result<OutboxStats, OutboxError> {
        self.run(|outbox, _| outbox.stats()).await
    }

    /// A subscription to the counts, [`Outbox::watch_stats`], made off the
    /// runtime's threads (it reads the store once). `.await` its
    /// [`changed`](StatsWatch::changed) to be told of every change, without
    /// polling; the wait itself never blocks a thread.
    ///
    /// # Errors
    ///
    /// As [`Outbox::watch_stats`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use sync_engine::AsyncOutbox;
    /// use sync_outbox::{MemoryOutboxStore, Operation, Outbox, OutboxConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), sync_outbox::OutboxError> {
    /// let outbox = AsyncOutbox::new(Arc::new(Outbox::new(OutboxConfig::default(), Arc::new(MemoryOutboxStore::new()))));
    /// let mut watch = outbox.watch_stats().await?;
    /// let badge = tokio::spawn(async move {
    ///     // e.g. emit a Tauri event or update a signal on each change
    ///     watch.changed().await.map(|stats| stats.unsent())
    /// });
    /// outbox.enqueue(Operation::new("note.edit", "/notes/1", "{}")).await?;
    /// assert_eq!(badge.await.ok().flatten(), Some(1));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn watch_stats(&self) -> Result<StatsWatch, OutboxError> {
        self.run(|outbox, _| outbox.watch_stats()).await
    }

    /// [`Outbox::correct`] at the clock's now, off the runtime's threads:
    /// fixes a dead letter and sends it again; returns the idempotency key
    /// its next send carries.
    ///
    /// # Errors
    ///
    /// As [`Outbox::correct`].
    pub async fn correct(&self, id: &str, correction: Correction) -> Result<String, OutboxError> {
        let id = id.to_owned();
        self.run(move |outbox, now| outbox.correct(&id, correction, now))
            .await
    }

    /// [`Outbox::list`], off the runtime's threads.
    ///
    /// # Errors
    ///
    /// As [`Outbox::list`].
    pub async fn list(
        &self,
        status: Option<OperationStatus>,
        limit: usize,
    ) -> Result<Vec<Operation>, OutboxError> {
        self.run(move |outbox, _| outbox.list(status, limit)).await
    }

    /// [`Outbox::retry_failed`] at the clock's now, off the runtime's threads.
    ///
    /// # Errors
    ///
    /// As [`Outbox::retry_failed`].
    pub async fn retry_failed(&self, id: &str) -> Result<(), OutboxError> {
        let id = id.to_owned();
        self.run(move |outbox, now| outbox.retry_failed(&id, now))
            .await
    }

    /// [`Outbox::discard`], off the runtime's threads.
    ///
    /// # Errors
    ///
    /// As [`Outbox::discard`].
    pub async fn discard(&self, id: &str) -> Result<(), OutboxError> {
        let id = id.to_owned();
        self.run(move |outbox, _| outbox.discard(&id)).await
    }

    /// Waits until operation `id` is done, a dead letter, or gone, and
    /// returns which ([`Outbox::wait`] for async code): each look at the
    /// operation is a store read off the runtime's threads, and between
    /// looks it awaits the outbox's next status change, never blocking a
    /// thread. Bound it with `tokio::time::timeout`; dropping it is safe.
    ///
    /// # Examples
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
    /// use std::sync::Arc;
    /// use sync_engine::{AsyncOutbox, Clock, SystemClock};
    /// use sync_outbox::{Completion, MemoryOutboxStore, Operation, Outbox, OutboxConfig};
    ///
    /// let outbox = Arc::new(Outbox::new(OutboxConfig::default(), Arc::new(MemoryOutboxStore::new())));
    /// let queue = AsyncOutbox::new(Arc::clone(&outbox));
    /// let id = queue.enqueue(Operation::new("note.save", "/notes/1", "{}")).await?;
    /// // An engine would send it; here a task acknowledges it.
    /// tokio::spawn(async move {
    ///     let now = SystemClock.now_ms();
    ///     for claimed in outbox.claim(now, 1)?.detach() {
    ///         outbox.mark_done(&claimed.id, now)?;
    ///     }
    ///     Ok::<(), sync_outbox::OutboxError>(())
    /// });
    /// let ended = tokio::time::timeout(std::time::Duration::from_secs(5), queue.wait(&id)).await?;
    /// assert!(matches!(ended?, Completion::Done(_)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`].
    pub async fn wait(&self, id: &str) -> Result<Completion, OutboxError> {
        loop {
            // The count before the read: a change landing in between is
            // not slept through.
            let seen = self.outbox.change_count();
            let id = id.to_owned();
            if let Some(ended) = self.run(move |outbox, _| outbox.completion(&id)).await? {
                return Ok(ended);
            }
            // This handle keeps the outbox alive: the change will come.
            self.outbox.changed_since(seen).await;
        }
    }

    /// Runs `call` on the blocking pool with the clock's now. A panic in the
    /// call is resumed here, as if the call had been made directly.
    async fn run<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Outbox, i64) -> T + Send + 'static,
    ) -> T {
        // The semaphore is never closed, so acquiring cannot fail. The permit
        // moves into the blocking call: if this future is dropped (a client
        // hung up), the call still runs to its end and keeps its place.
        let permit = Arc::clone(&self.in_store).acquire_owned().await.ok();
        let outbox = Arc::clone(&self.outbox);
        let now = self.clock.now_ms();
        run_blocking(move || {
            let result = call(&outbox, now);
            drop(permit);
            result
        })
        .await
    }
}

/// Runs `work` on tokio's blocking pool; a panic in it is resumed in the
/// caller, as if the work had run inline.
pub(crate) async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
