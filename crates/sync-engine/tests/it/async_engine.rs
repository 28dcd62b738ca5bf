//! Guards the tokio engine: it delivers on paused time, wakes for
//! `sync_now`, isolates a panicking send future, stops gracefully (a send in
//! flight finishes) or with a deadline (a hung send is cancelled and its
//! operation is `Pending` at once), and never runs store I/O on the
//! runtime's thread.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::ThreadId;
use std::time::Duration;

use sync_engine::{
    AsyncOutbox, AsyncSyncEngine, AsyncSyncTransport, Clock, NetworkProbe, NetworkProbeConfig,
    SendResult, SyncEngineConfig, TokioClock, async_trait,
};
use sync_outbox::{
    MemoryOutboxStore, Operation, OperationStatus, Outbox, OutboxConfig, OutboxError, OutboxStore,
    RetryPolicy,
};

use crate::TestResult;

/// A scripted async upstream: per payload, answer ok, fail, panic, hang
/// forever, or take `slow_ms` of tokio time.
#[derive(Debug, Default)]
struct Upstream {
    sends: AtomicUsize,
    fail_first: AtomicUsize,
    slow_ms: u64,
    panicked_once: AtomicBool,
}

#[async_trait]
impl AsyncSyncTransport for Upstream {
    async fn send(&self, op: &Operation) -> SendResult {
        self.sends.fetch_add(1, SeqCst);
        if self.slow_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.slow_ms)).await;
        }
        match op.payload.as_str() {
            "hang" => std::future::pending().await,
            "panic-once" if !self.panicked_once.swap(true, SeqCst) => panic!("upstream bug"),
            _ => {}
        }
        if self
            .fail_first
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return SendResult::retryable("503");
        }
        SendResult::ok()
    }
}

/// An engine of 2 senders and its async outbox, both on one `TokioClock`;
/// start it with `start_with_clock(clock)`.
fn engine(
    store: Arc<dyn OutboxStore>,
    upstream: Arc<Upstream>,
    retry: RetryPolicy,
) -> (AsyncSyncEngine, AsyncOutbox, TokioClock) {
    let clock = TokioClock::starting_at(1_000_000);
    let outbox = Arc::new(Outbox::new(
        OutboxConfig {
            retry,
            ..OutboxConfig::default()
        },
        store,
    ));
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    let engine = AsyncSyncEngine::new(
        SyncEngineConfig {
            worker_count: 2,
            ..SyncEngineConfig::default()
        },
        outbox.clone(),
        probe,
        upstream,
    );
    (engine, AsyncOutbox::with_clock(outbox, clock), clock)
}

/// Waits on tokio's (paused) clock, a millisecond at a time, for `done`.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..100_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("never happened: {what}");
}

fn status(store: &dyn OutboxStore, id: &str) -> Option<OperationStatus> {
    store.get(id).ok().flatten().map(|op| op.status)
}

#[tokio::test(start_paused = true)]
async fn delivers_retries_and_counts_on_paused_time() -> TestResult {
    let store = Arc::new(MemoryOutboxStore::new());
    let upstream = Arc::new(Upstream {
        fail_first: AtomicUsize::new(2),
        ..Upstream::default()
    });
    let (engine, queue, clock) = engine(store.clone(), upstream.clone(), RetryPolicy::default());
    engine.start_with_clock(clock).await?;
    let ids = [
        queue.enqueue(Operation::new("k", "/t", "a")).await?,
        queue.enqueue(Operation::new("k", "/t", "b")).await?,
    ];
    until("both done", || {
        ids.iter()
            .all(|id| status(&*store, id) == Some(OperationStatus::Done))
    })
    .await;
    engine.stop().await?;
    assert!(!engine.running());
    assert_eq!(upstream.sends.load(SeqCst), 4, "2 failures, 2 successes");
    let stats = engine.stats();
    assert_eq!((stats.done, stats.retried), (2, 2));
    assert_eq!(engine.last_error(), None);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn sync_now_sends_what_waits_in_a_long_backoff() -> TestResult {
    let store = Arc::new(MemoryOutboxStore::new());
    let upstream = Arc::new(Upstream {
        fail_first: AtomicUsize::new(1),
        ..Upstream::default()
    });
    let hour = RetryPolicy {
        base_delay: std::time::Duration::from_secs(3600),
        max_delay: std::time::Duration::from_secs(3600),
        ..RetryPolicy::default()
    };
    let (engine, queue, clock) = engine(store.clone(), upstream, hour);
    engine.start_with_clock(clock).await?;
    let id = queue.enqueue(Operation::new("k", "/t", "{}")).await?;
    until("in backoff", || {
        store
            .get(&id)
            .ok()
            .flatten()
            .is_some_and(|op| op.attempt == 1 && op.status == OperationStatus::Pending)
    })
    .await;
    let due = store.get(&id)?.ok_or("lost")?.next_retry_at_ms;
    engine.sync_now();
    until("sent after sync_now", || {
        status(&*store, &id) == Some(OperationStatus::Done)
    })
    .await;
    assert!(clock.now_ms() < due, "sent long before the backoff ended");
    engine.stop().await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_panicking_send_future_is_isolated() -> TestResult {
    let store = Arc::new(MemoryOutboxStore::new());
    let upstream = Arc::new(Upstream::default());
    let (engine, queue, clock) = engine(store.clone(), upstream, RetryPolicy::default());
    engine.start_with_clock(clock).await?;
    let id = queue
        .enqueue(Operation::new("k", "/t", "panic-once"))
        .await?;
    until("done after the panic", || {
        status(&*store, &id) == Some(OperationStatus::Done)
    })
    .await;
    assert_eq!(store.get(&id)?.ok_or("lost")?.attempt, 2);
    assert_eq!(engine.stats().panicked, 1);
    assert!(
        engine
            .last_error()
            .is_some_and(|e| e.contains("transport panicked"))
    );
    engine.stop().await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn stop_waits_for_the_send_in_flight() -> TestResult {
    let store = Arc::new(MemoryOutboxStore::new());
    let upstream = Arc::new(Upstream {
        slow_ms: 5_000,
        ..Upstream::default()
    });
    let (engine, queue, clock) = engine(store.clone(), upstream.clone(), RetryPolicy::default());
    engine.start_with_clock(clock).await?;
    let id = queue.enqueue(Operation::new("k", "/t", "{}")).await?;
    until("on the wire", || upstream.sends.load(SeqCst) == 1).await;
    engine.stop().await?;
    assert_eq!(
        status(&*store, &id),
        Some(OperationStatus::Done),
        "the send finished and was recorded before stop returned"
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn stop_with_a_deadline_cancels_a_hung_send_and_requeues_it() -> TestResult {
    let store = Arc::new(MemoryOutboxStore::new());
    let upstream = Arc::new(Upstream::default());
    let (engine, queue, clock) = engine(store.clone(), upstream.clone(), RetryPolicy::default());
    engine.start_with_clock(clock).await?;
    let id = queue.enqueue(Operation::new("k", "/t", "hang")).await?;
    until("on the wire", || upstream.sends.load(SeqCst) == 1).await;
    engine.stop_with_timeout(Duration::from_secs(2)).await?;
    assert!(!engine.running());
    let op = store.get(&id)?.ok_or("lost")?;
    assert_eq!(
        (op.status, op.attempt),
        (OperationStatus::Pending, 1),
        "back in the queue at once, the attempt counted"
    );
    assert!(op.next_retry_at_ms <= clock.now_ms(), "due now");
    assert!(op.last_error.contains("interrupted"), "{}", op.last_error);
    Ok(())
}

/// A memory store that notes the thread of every call.
#[derive(Debug, Default)]
struct ThreadNotingStore {
    inner: MemoryOutboxStore,
    threads: Mutex<HashSet<ThreadId>>,
}

impl ThreadNotingStore {
    fn note(&self) {
        self.threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(std::thread::current().id());
    }
}

impl OutboxStore for ThreadNotingStore {
    fn put(&self, op: &Operation) -> Result<(), OutboxError> {
        self.note();
        self.inner.put(op)
    }
    fn put_batch(&self, ops: &[Operation]) -> Result<(), OutboxError> {
        self.note();
        self.inner.put_batch(ops)
    }
    fn get(&self, id: &str) -> Result<Option<Operation>, OutboxError> {
        self.note();
        self.inner.get(id)
    }
    fn remove(&self, id: &str) -> Result<bool, OutboxError> {
        self.note();
        self.inner.remove(id)
    }
    fn load_all(&self) -> Result<Vec<Operation>, OutboxError> {
        self.note();
        self.inner.load_all()
    }
    fn ready(&self, now_ms: i64, limit: usize) -> Result<Vec<Operation>, OutboxError> {
        self.note();
        self.inner.ready(now_ms, limit)
    }
    fn next_due_ms(&self) -> Result<Option<i64>, OutboxError> {
        self.note();
        self.inner.next_due_ms()
    }
}

#[test]
fn no_store_call_runs_on_the_runtime_thread() -> TestResult {
    // A current-thread runtime runs every task on this thread; the store
    // must only ever be called from the blocking pool's threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let store = Arc::new(ThreadNotingStore::default());
    let upstream = Arc::new(Upstream {
        fail_first: AtomicUsize::new(1),
        ..Upstream::default()
    });
    runtime.block_on(async {
        let retry = RetryPolicy {
            base_delay: std::time::Duration::from_millis(5),
            ..RetryPolicy::default()
        };
        let (engine, queue, clock) = engine(store.clone(), upstream, retry);
        engine.start_with_clock(clock).await?;
        let id = queue.enqueue(Operation::new("k", "/t", "{}")).await?;
        queue.stats().await?;
        queue.list(None, 10).await?;
        loop {
            if let Some(done) = queue.list(Some(OperationStatus::Done), 10).await?.first() {
                assert_eq!(done.id, id);
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        engine.stop().await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    let threads = store.threads.lock().map_err(|_| "poisoned")?;
    assert!(!threads.is_empty());
    assert!(
        !threads.contains(&std::thread::current().id()),
        "a store call ran on the runtime's thread"
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_stop_during_start_wins() -> TestResult {
    let store = Arc::new(MemoryOutboxStore::new());
    let upstream = Arc::new(Upstream::default());
    let (engine, queue, clock) = engine(store.clone(), upstream.clone(), RetryPolicy::default());
    // Both at once: whichever order they interleave in, no sender is left
    // running unseen.
    let (started, stopped) = tokio::join!(engine.start_with_clock(clock), engine.stop());
    started?;
    stopped?;
    if engine.running() {
        engine.stop().await?;
    }
    assert!(!engine.running());
    let id = queue.enqueue(Operation::new("k", "/t", "{}")).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        status(&*store, &id),
        Some(OperationStatus::Pending),
        "nobody sends"
    );
    assert_eq!(upstream.sends.load(SeqCst), 0);

    engine.start_with_clock(clock).await?;
    until("sent", || {
        status(&*store, &id) == Some(OperationStatus::Done)
    })
    .await;
    engine.stop().await?;
    Ok(())
}

/// A memory store whose `load_all` waits at a gate until it is opened.
#[derive(Debug, Default)]
struct GatedStore {
    inner: MemoryOutboxStore,
    open: Mutex<bool>,
    opened: std::sync::Condvar,
    entered: AtomicBool,
}

impl OutboxStore for GatedStore {
    fn put(&self, op: &Operation) -> Result<(), OutboxError> {
        self.inner.put(op)
    }
    fn get(&self, id: &str) -> Result<Option<Operation>, OutboxError> {
        self.inner.get(id)
    }
    fn remove(&self, id: &str) -> Result<bool, OutboxError> {
        self.inner.remove(id)
    }
    fn load_all(&self) -> Result<Vec<Operation>, OutboxError> {
        self.entered.store(true, SeqCst);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        while !*open {
            open = self
                .opened
                .wait(open)
                .unwrap_or_else(PoisonError::into_inner);
        }
        drop(open);
        self.inner.load_all()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_dropped_during_recovery_leaves_the_engine_startable() -> TestResult {
    let store = Arc::new(GatedStore::default());
    let upstream = Arc::new(Upstream::default());
    let (engine, _, _) = engine(store.clone(), upstream, RetryPolicy::default());
    let engine = Arc::new(engine);
    let starting = {
        let engine = Arc::clone(&engine);
        tokio::spawn(async move { engine.start().await })
    };
    while !store.entered.load(SeqCst) {
        tokio::task::yield_now().await;
    }
    // Recovery is parked at the gate: drop the start future there.
    starting.abort();
    assert!(starting.await.is_err_and(|e| e.is_cancelled()));
    *store.open.lock().map_err(|_| "poisoned")? = true;
    store.opened.notify_all();
    engine.start().await?;
    assert!(engine.running());
    engine.stop().await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_ui_task_awaits_every_change_of_the_counts_until_all_is_synced() -> TestResult {
    let store = Arc::new(MemoryOutboxStore::new());
    let upstream = Arc::new(Upstream {
        fail_first: AtomicUsize::new(1),
        ..Upstream::default()
    });
    let (engine, queue, clock) = engine(store.clone(), upstream, RetryPolicy::default());
    let mut watch = queue.watch_stats().await?;
    assert_eq!(watch.current().total(), 0);
    // The "N changes not synced" badge: redrawn on each change, no polling.
    let badge = tokio::spawn(async move {
        let mut shown = Vec::new();
        while let Some(stats) = watch.changed().await {
            shown.push(stats.unsent());
            if stats.done == 3 {
                break;
            }
        }
        shown
    });
    for payload in ["a", "b", "c"] {
        queue.enqueue(Operation::new("k", "/t", payload)).await?;
    }
    engine.start_with_clock(clock).await?;
    let shown = tokio::time::timeout(Duration::from_secs(600), badge).await??;
    engine.stop().await?;
    assert_eq!(shown.last(), Some(&0), "the last change shows all synced");
    assert!(
        shown.iter().any(|n| *n > 0),
        "the unsent ones were shown: {shown:?}"
    );
    assert_eq!(queue.stats().await?.done, 3);
    Ok(())
}
