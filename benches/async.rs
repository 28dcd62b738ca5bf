//! The async face, measured. Run with `cargo xtask bench`.
//!
//! - `async/enqueue-lateness`: the worst lateness of a 1 ms tokio interval
//!   while 200 tasks enqueue at once into a WAL store with
//!   `SyncPolicy::Always`, on a 2-worker runtime. `async-outbox` enqueues
//!   through `AsyncOutbox` (store I/O on the blocking pool, at most 8 calls
//!   at once, the default); `async-outbox-unbounded` lets all 200 run at
//!   once;
//!   `baseline-blocking-in-task` calls the blocking `Outbox::enqueue` inside
//!   the tasks, as an app without the async face would. The "time" criterion
//!   reports is that worst lateness, not a duration of work (`iter_custom`).
//! - `async/engine`: 2,000 operations enqueued, then delivered through a
//!   no-op transport on a WAL store with `SyncPolicy::Never`, by
//!   `AsyncSyncEngine` and by the threaded `SyncEngine`
//!   (`baseline-threaded-engine`), 2 senders each; throughput in ops/s.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sync::engine::{AsyncSyncTransport, SyncObserver, async_trait};
use sync::prelude::*;

const ENQUEUERS: usize = 200;
const OPS: usize = 2_000;

fn wal_outbox(dir: &std::path::Path, sync: SyncPolicy) -> Arc<Outbox> {
    let mut config = WalOutboxStoreConfig::new(dir.join("outbox-wal"));
    config.sync = sync;
    let store = Arc::new(WalOutboxStore::open(config).expect("open wal store"));
    Arc::new(Outbox::new(OutboxConfig::default(), store))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs `enqueue_all` beside a 1 ms interval; returns the interval's worst
/// lateness.
fn worst_lateness(
    runtime: &tokio::runtime::Runtime,
    enqueue_all: impl Future<Output = ()> + Send + 'static,
) -> Duration {
    runtime.block_on(async move {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watching = Arc::clone(&done);
        let watcher = tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            let mut next = tokio::time::Instant::now() + Duration::from_millis(1);
            while !watching.load(SeqCst) {
                tokio::time::sleep_until(next).await;
                worst = worst.max(tokio::time::Instant::now() - next);
                next += Duration::from_millis(1);
            }
            worst
        });
        // Let the watcher start ticking first.
        tokio::time::sleep(Duration::from_millis(3)).await;
        enqueue_all.await;
        done.store(true, SeqCst);
        watcher.await.expect("watcher")
    })
}

fn enqueue_lateness(c: &mut Criterion) {
    let mut group = c.benchmark_group("async/enqueue-lateness");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    let op = Operation::new("note.create", "/notes", r#"{"text":"hello offline-first"}"#);
    for name in [
        "async-outbox",
        "async-outbox-unbounded",
        "baseline-blocking-in-task",
    ] {
        group.bench_function(BenchmarkId::new(name, ENQUEUERS), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let outbox = wal_outbox(dir.path(), SyncPolicy::Always);
                    let runtime = runtime();
                    let op = op.clone();
                    let blocking = name.starts_with("baseline");
                    let unbounded = name.ends_with("unbounded");
                    total += worst_lateness(&runtime, async move {
                        let mut queue = AsyncOutbox::new(Arc::clone(&outbox));
                        if unbounded {
                            queue = queue.with_max_concurrent_calls(ENQUEUERS);
                        }
                        let tasks: Vec<_> = (0..ENQUEUERS)
                            .map(|_| {
                                let (queue, outbox, op) =
                                    (queue.clone(), Arc::clone(&outbox), op.clone());
                                tokio::spawn(async move {
                                    if blocking {
                                        outbox.enqueue(op, SystemClock.now_ms()).expect("enqueue");
                                    } else {
                                        queue.enqueue(op).await.expect("enqueue");
                                    }
                                })
                            })
                            .collect();
                        for task in tasks {
                            task.await.expect("enqueuer");
                        }
                    });
                }
                total
            });
        });
    }
    group.finish();
}

/// Counts `Done` results and wakes a waiter when all are in.
#[derive(Default)]
struct DoneCounter {
    done: AtomicUsize,
    all_in: Mutex<bool>,
    changed: Condvar,
}

impl DoneCounter {
    fn wait_for(&self, n: usize) {
        let mut all_in = self.all_in.lock().expect("lock");
        while !*all_in && self.done.load(SeqCst) < n {
            all_in = self.changed.wait(all_in).expect("wait");
        }
    }
}

impl SyncObserver for DoneCounter {
    fn on_result(&self, _op: &Operation, _result: &SendResult, status: OperationStatus) {
        if status == OperationStatus::Done && self.done.fetch_add(1, SeqCst) + 1 == OPS {
            *self.all_in.lock().expect("lock") = true;
            self.changed.notify_all();
        }
    }
}

struct NoOp;

impl SyncTransport for NoOp {
    fn send(&self, op: &Operation) -> SendResult {
        std::hint::black_box(op);
        SendResult::ok()
    }
}

#[async_trait]
impl AsyncSyncTransport for NoOp {
    async fn send(&self, op: &Operation) -> SendResult {
        std::hint::black_box(op);
        SendResult::ok()
    }
}

fn engines(c: &mut Criterion) {
    let mut group = c.benchmark_group("async/engine");
    group.throughput(Throughput::Elements(OPS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    let config = SyncEngineConfig {
        worker_count: 2,
        ..SyncEngineConfig::default()
    };
    let op = Operation::new("note.create", "/notes", r#"{"text":"hello offline-first"}"#);
    for name in ["async-engine", "baseline-threaded-engine"] {
        group.bench_function(BenchmarkId::new(name, OPS), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let outbox = wal_outbox(dir.path(), SyncPolicy::Never);
                    for _ in 0..OPS {
                        outbox.enqueue(op.clone(), 1).expect("enqueue");
                    }
                    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
                    let counter = Arc::new(DoneCounter::default());
                    if name.starts_with("baseline") {
                        let engine = SyncEngine::new(config.clone(), outbox, probe, Arc::new(NoOp));
                        engine.set_observer(counter.clone());
                        let started = Instant::now();
                        engine.start(SystemClock).expect("start");
                        counter.wait_for(OPS);
                        total += started.elapsed();
                        engine.stop().expect("stop");
                    } else {
                        let runtime = runtime();
                        let engine =
                            AsyncSyncEngine::new(config.clone(), outbox, probe, Arc::new(NoOp));
                        engine.set_observer(counter.clone());
                        let started = Instant::now();
                        runtime.block_on(engine.start()).expect("start");
                        counter.wait_for(OPS);
                        total += started.elapsed();
                        runtime.block_on(engine.stop()).expect("stop");
                    }
                }
                total
            });
        });
    }
    group.finish();
}

criterion_group!(benches, enqueue_lateness, engines);
criterion_main!(benches);
