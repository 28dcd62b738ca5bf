//! End to end through `SyncWorker::tick`: enqueue 100 operations, then tick
//! them through an in-process transport that always succeeds, on the memory
//! store and the WAL store (`Never` and `Always`). Run with `cargo xtask bench`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sync::prelude::*;

const BATCH: usize = 100;

struct AlwaysOk;

impl SyncTransport for AlwaysOk {
    fn send(&self, op: &Operation) -> SendResult {
        black_box(op);
        SendResult::ok()
    }
}

fn store(kind: &str, dir: &std::path::Path) -> Arc<dyn OutboxStore> {
    if kind == "memory" {
        return Arc::new(MemoryOutboxStore::new());
    }
    let mut config = WalOutboxStoreConfig::new(dir.join("outbox-wal"));
    config.sync = if kind == "wal-always" {
        SyncPolicy::Always
    } else {
        SyncPolicy::Never
    };
    Arc::new(WalOutboxStore::open(config).expect("open wal store"))
}

/// A worker sending batches of `BATCH` over `outbox` to a server that
/// acknowledges everything, and the operation each cycle enqueues.
fn worker_on(outbox: &Arc<Outbox>) -> (SyncWorker, Operation) {
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    let worker = SyncWorker::new(
        SyncWorkerConfig { batch_limit: BATCH },
        outbox.clone(),
        probe,
        Arc::new(AlwaysOk),
    );
    let op = Operation::new(
        "message.send",
        "/api/messages",
        r#"{"text":"hello offline-first"}"#,
    );
    (worker, op)
}

fn tick(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine/tick");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    for kind in ["memory", "wal-never", "wal-always"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = Arc::new(Outbox::new(
            OutboxConfig::default(),
            store(kind, dir.path()),
        ));
        let (worker, op) = worker_on(&outbox);
        let mut now = 1i64;
        group.bench_function(BenchmarkId::new(kind, BATCH), |b| {
            b.iter(|| {
                now += 1;
                for _ in 0..BATCH {
                    outbox.enqueue(op.clone(), now).expect("enqueue");
                }
                assert_eq!(worker.tick(now).expect("tick"), BATCH);
            });
        });
    }
    group.finish();
}

/// `engine/metrics`: the `memory` tick above (batches of 100), without an
/// observer and with `MetricsObserver` but no recorder installed (the
/// facade's no-op): what turning the metrics on costs an app that does not
/// collect them. Each sample starts from a fresh outbox, so neither side
/// pays for the other's done operations.
fn metrics_cost(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine/metrics");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(4));
    for observed in [false, true] {
        let name = if observed {
            "metrics-observer-no-recorder"
        } else {
            "baseline-no-observer"
        };
        group.bench_function(BenchmarkId::new(name, BATCH), |b| {
            b.iter_custom(|iters| {
                let outbox = Arc::new(Outbox::new(
                    OutboxConfig::default(),
                    Arc::new(sync::outbox::MemoryOutboxStore::new()),
                ));
                let (worker, op) = worker_on(&outbox);
                if observed {
                    worker
                        .set_observer(Arc::new(sync::engine::MetricsObserver::new(outbox.clone())));
                }
                let started = std::time::Instant::now();
                for now in 1..=i64::try_from(iters).unwrap_or(i64::MAX) {
                    for _ in 0..BATCH {
                        outbox.enqueue(op.clone(), now).expect("enqueue");
                    }
                    assert_eq!(worker.tick(now).expect("tick"), BATCH);
                }
                started.elapsed()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, tick, metrics_cost);
criterion_main!(benches);
