//! [`StatsWatch`]: being told when the outbox's counts change, on a blocking
//! thread or in async code, without polling the store.
//!
//! The outbox publishes after each of its writes, on the writing thread, but
//! only while a watch exists: an outbox nobody watches pays one atomic load
//! per write. Publishing reads [`OutboxStore::stats`] (cheap on every store
//! of this workspace) under the hub's lock, so two writers publishing at once
//! cannot leave an older count as the last word.

use std::fmt;
use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::OutboxError;
use crate::outbox::OutboxStats;
use crate::store::OutboxStore;

/// Where the outbox publishes its stats and watches wait for them.
pub(super) struct StatsHub {
    /// Weak: a `Claim` keeps the hub alive (through the outbox's shared
    /// state), and must not keep the store, and its file lock, alive too.
    store: Weak<dyn OutboxStore>,
    /// Live [`StatsWatch`]es; nothing is published while there are none.
    watchers: AtomicUsize,
    latest: Mutex<Latest>,
    changed: Condvar,
}

#[derive(Default)]
struct Latest {
    /// Bumped on every published change; a watch remembers the one it saw.
    version: u64,
    stats: OutboxStats,
    /// The outbox is gone: nothing will change any more.
    closed: bool,
    /// Async waiters to wake on the next change.
    wakers: Vec<Waker>,
}

impl StatsHub {
    pub(super) fn new(store: &Arc<dyn OutboxStore>) -> Self {
        Self {
            store: Arc::downgrade(store),
            watchers: AtomicUsize::new(0),
            latest: Mutex::new(Latest::default()),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Latest> {
        self.latest.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the store's stats and tells the watches if they changed. A no-op
    /// while nobody watches. A store that cannot be read publishes nothing:
    /// the next write publishes again.
    pub(super) fn publish(&self) {
        if self.watchers.load(Ordering::Acquire) == 0 {
            return;
        }
        let Some(store) = self.store.upgrade() else {
            return;
        };
        let mut latest = self.lock();
        if let Ok(stats) = store.stats() {
            self.set(&mut latest, stats);
        }
    }

    fn set(&self, latest: &mut Latest, stats: OutboxStats) {
        if latest.stats == stats && latest.version > 0 {
            return;
        }
        latest.stats = stats;
        latest.version += 1;
        for waker in latest.wakers.drain(..) {
            waker.wake();
        }
        self.changed.notify_all();
    }

    /// The outbox was dropped: wake every waiter for the last time.
    pub(super) fn close(&self) {
        let mut latest = self.lock();
        latest.closed = true;
        for waker in latest.wakers.drain(..) {
            waker.wake();
        }
        self.changed.notify_all();
    }

    /// A new watch, starting from the store's stats now.
    pub(super) fn watch(self: &Arc<Self>) -> Result<StatsWatch, OutboxError> {
        let mut latest = self.lock();
        let store = self.store.upgrade().ok_or_else(|| {
            OutboxError::store(std::io::Error::other("the outbox's store is gone"))
        })?;
        let stats = store.stats()?;
        self.set(&mut latest, stats);
        self.watchers.fetch_add(1, Ordering::AcqRel);
        Ok(StatsWatch {
            hub: Arc::clone(self),
            seen: latest.version,
            stats,
        })
    }
}

/// A subscription to an outbox's [`OutboxStats`], from
/// [`Outbox::watch_stats`](crate::Outbox::watch_stats): the way to keep a
/// "3 changes not synced yet" badge current without polling.
///
/// Each wait returns once the counts differ from the last ones this watch
/// returned (changes in between are merged: a watch sees the latest counts,
/// not every step). Block a thread on [`wait_changed`](Self::wait_changed)
/// (or iterate the watch), or `.await` [`changed`](Self::changed) on any
/// async runtime. Waits end with `None` when the outbox is dropped.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use sync_outbox::{MemoryOutboxStore, Operation, Outbox, OutboxConfig};
///
/// let outbox = Arc::new(Outbox::new(OutboxConfig::default(), Arc::new(MemoryOutboxStore::new())));
/// let watch = outbox.watch_stats()?;
/// assert_eq!(watch.current().unsent(), 0);
///
/// let ui = std::thread::spawn(move || {
///     // A UI thread: redraw the badge on every change, until the outbox goes.
///     let mut shown = Vec::new();
///     for stats in watch {
///         shown.push(stats.unsent());
///         if stats.unsent() == 0 && stats.done == 1 {
///             break;
///         }
///     }
///     shown
/// });
/// let id = outbox.enqueue(Operation::new("note.edit", "/notes/1", "{}"), 1)?;
/// let claim = outbox.claim(2, 10)?;
/// outbox.mark_done(&id, 3)?;
/// drop(claim);
/// let shown = ui.join().expect("the UI thread ends");
/// assert_eq!(shown.last(), Some(&0));
/// # Ok::<_, sync_outbox::OutboxError>(())
/// ```
pub struct StatsWatch {
    hub: Arc<StatsHub>,
    /// The version of `stats`.
    seen: u64,
    stats: OutboxStats,
}

impl StatsWatch {
    /// The counts this watch last returned (or started with).
    #[must_use]
    pub fn current(&self) -> OutboxStats {
        self.stats
    }

    /// Whether counts newer than [`current`](Self::current) are waiting.
    #[must_use]
    pub fn has_changed(&self) -> bool {
        self.hub.lock().version != self.seen
    }

    /// Blocks until the counts change, and returns them; `None` once the
    /// outbox is dropped.
    pub fn wait_changed(&mut self) -> Option<OutboxStats> {
        // A handle of its own, so `self` can be updated while it is locked.
        let hub = Arc::clone(&self.hub);
        let mut latest = hub.lock();
        loop {
            if let Wait::Over(result) = self.take(&latest) {
                return result;
            }
            latest = hub
                .changed
                .wait(latest)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Like [`wait_changed`](Self::wait_changed), giving up after `timeout`
    /// (then `None`, as when the outbox is dropped: see
    /// [`is_closed`](Self::is_closed)).
    pub fn wait_changed_timeout(&mut self, timeout: Duration) -> Option<OutboxStats> {
        let deadline = Instant::now() + timeout;
        // A handle of its own, so `self` can be updated while it is locked.
        let hub = Arc::clone(&self.hub);
        let mut latest = hub.lock();
        loop {
            if let Wait::Over(result) = self.take(&latest) {
                return result;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            latest = hub
                .changed
                .wait_timeout(latest, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits (asynchronously, on any runtime) until the counts change, and
    /// returns them; `None` once the outbox is dropped. Cancel-safe: a
    /// change not returned because the future was dropped is returned by
    /// the next call.
    pub async fn changed(&mut self) -> Option<OutboxStats> {
        poll_fn(|cx| self.poll_changed(cx)).await
    }

    /// The poll behind [`changed`](Self::changed), for hand-written futures
    /// and streams.
    pub fn poll_changed(&mut self, cx: &mut Context<'_>) -> Poll<Option<OutboxStats>> {
        let hub = Arc::clone(&self.hub);
        let mut latest = hub.lock();
        if let Wait::Over(result) = self.take(&latest) {
            return Poll::Ready(result);
        }
        if !latest.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            latest.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Whether the outbox is gone (no change will come).
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.hub.lock().closed
    }

    /// What a wait returns now, if it is over.
    fn take(&mut self, latest: &Latest) -> Wait {
        if latest.version != self.seen {
            self.seen = latest.version;
            self.stats = latest.stats;
            return Wait::Over(Some(latest.stats));
        }
        if latest.closed {
            Wait::Over(None)
        } else {
            Wait::On
        }
    }
}

/// Whether a wait of a [`StatsWatch`] is over, and with what.
enum Wait {
    /// With new stats, or `None`: the outbox is gone.
    Over(Option<OutboxStats>),
    /// Nothing new yet.
    On,
}

impl Iterator for StatsWatch {
    type Item = OutboxStats;

    /// [`wait_changed`](StatsWatch::wait_changed): every change, until the
    /// outbox is dropped.
    fn next(&mut self) -> Option<OutboxStats> {
        self.wait_changed()
    }
}

impl Drop for StatsWatch {
    fn drop(&mut self) {
        self.hub.watchers.fetch_sub(1, Ordering::AcqRel);
    }
}

impl fmt::Debug for StatsWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatsWatch")
            .field("current", &self.stats)
            .finish_non_exhaustive()
    }
}
