//! `sync-outbox` on the in-memory store: enqueue -> claim -> done cycles with
//! 10,000 and 1,000,000 other operations pending, to show that the cost of a
//! cycle does not grow with the queue; and `Outbox::stats` (the counts a UI
//! shows) on the memory, WAL and SQLite stores beside counting a full
//! `load_all`, what it cost before the stores kept the counts. Run with
//! `cargo xtask bench`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sync_outbox::{MemoryOutboxStore, Operation, Outbox, OutboxConfig, OutboxStore, RetryPolicy};
use sync_store_file::{WalOutboxStore, WalOutboxStoreConfig};
use sync_store_sqlite::{SqliteOutboxStore, SqliteOutboxStoreConfig};
use sync_wal::SyncPolicy;

/// Pending filler operations are due at this time, after every cycle's
/// `now`, so claims never pick them but they sit in every index.
const FILLER_DUE: i64 = 1 << 50;

fn cycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("outbox/cycle");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(3));
    for pending in [10_000usize, 1_000_000] {
        // A max_delay_ms beyond FILLER_DUE, so the clock-jump guard (which
        // pulls in ops scheduled further than max_delay_ms ahead) leaves the
        // fillers alone.
        let retry = RetryPolicy {
            max_delay: std::time::Duration::from_millis(FILLER_DUE.unsigned_abs() * 2),
            ..RetryPolicy::default()
        };
        let outbox = Outbox::new(
            OutboxConfig {
                retry,
                ..OutboxConfig::default()
            },
            Arc::new(MemoryOutboxStore::new()),
        );
        for _ in 0..pending {
            outbox
                .enqueue(
                    Operation::new("message.send", "/api/messages", "{}"),
                    FILLER_DUE,
                )
                .expect("fill");
        }
        let op = Operation::new(
            "message.send",
            "/api/messages",
            r#"{"text":"hello offline-first"}"#,
        );
        let mut now = 1i64;
        let mut one_cycle = || {
            now += 1;
            let id = outbox.enqueue(op.clone(), now).expect("enqueue");
            let claimed = outbox
                .claim(now, 1)
                .map(sync_outbox::Claim::detach)
                .expect("claim");
            assert_eq!(claimed.len(), 1);
            outbox.mark_done(black_box(&id), now).expect("done");
        };
        // Done operations stay in the store (nothing purges them here); grow
        // its maps past their early resizes so both sizes measure the steady
        // state, not the first doublings.
        for _ in 0..500_000 {
            one_cycle();
        }
        group.bench_function(BenchmarkId::new("memory", pending), |b| {
            b.iter(&mut one_cycle);
        });
    }
    group.finish();
}

/// `stats()` with `pending` operations queued, per store, beside counting
/// `load_all()` of the same store (the baseline: what a count without the
/// stores' own counts costs).
fn stats(c: &mut Criterion) {
    let mut group = c.benchmark_group("outbox/stats");
    group.measurement_time(Duration::from_secs(3));
    group.sample_size(20);
    let dir = tempfile::tempdir().expect("temp dir");
    for pending in [1_000usize, 100_000] {
        let wal_config = {
            let mut config = WalOutboxStoreConfig::new(dir.path().join(format!("wal-{pending}")));
            config.sync = SyncPolicy::Never;
            config
        };
        let sqlite_config = {
            let mut config =
                SqliteOutboxStoreConfig::new(dir.path().join(format!("sqlite-{pending}.db")));
            config.sync = SyncPolicy::Never;
            config
        };
        let stores: [(&str, Arc<dyn OutboxStore>); 3] = [
            ("memory", Arc::new(MemoryOutboxStore::new())),
            (
                "wal",
                Arc::new(WalOutboxStore::open(wal_config).expect("wal store")),
            ),
            (
                "sqlite",
                Arc::new(SqliteOutboxStore::open(sqlite_config).expect("sqlite store")),
            ),
        ];
        for (name, store) in stores {
            let outbox = Outbox::new(OutboxConfig::default(), Arc::clone(&store));
            let ops: Vec<Operation> = (0..pending)
                .map(|_| Operation::new("message.send", "/api/messages", r#"{"text":"hi"}"#))
                .collect();
            for chunk in ops.chunks(1_000) {
                for op in chunk {
                    outbox.enqueue(op.clone(), 1).expect("fill");
                }
            }
            group.bench_function(BenchmarkId::new(format!("{name}/stats"), pending), |b| {
                b.iter(|| black_box(outbox.stats().expect("stats")));
            });
            group.bench_function(
                BenchmarkId::new(format!("{name}/baseline-load-all"), pending),
                |b| {
                    b.iter(|| black_box(store.load_all().expect("load").len()));
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, cycle, stats);
criterion_main!(benches);
