//! The durable stores under one workload: enqueue -> claim -> done cycles
//! through an `Outbox`, with 100, 10,000 and 100,000 other operations pending.
//! `baseline-memory` is the same cycle on `MemoryOutboxStore` (no durability);
//! the WAL and SQLite stores run under `SyncPolicy::Never` and `Always`; the
//! JSON store's whole-file rewrite shows its O(n) growth. Concurrent enqueues
//! under `Always` on both; and `store/transactional-enqueue`, an app row plus
//! its operation in one SQLite transaction beside a plain enqueue; and
//! `store/encryption`, the same cycle on the WAL and JSON stores with and
//! without encryption at rest. Run with `cargo xtask bench`.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sync_outbox::{MemoryOutboxStore, Operation, Outbox, OutboxConfig, OutboxStore, RetryPolicy};
use sync_store_file::{
    Encryption, EncryptionKey, JsonOutboxStore, JsonOutboxStoreConfig, WalOutboxStore,
    WalOutboxStoreConfig,
};
use sync_store_sqlite::{SqliteOutboxStore, SqliteOutboxStoreConfig};
use sync_wal::SyncPolicy;

/// Filler operations are due long after every cycle's `now`, so claims never
/// pick them but they sit in every index and file.
const FILLER_DUE: i64 = 1 << 50;

/// A store of `kind`; a kind ending in `-encrypted` is that store with
/// encryption at rest (one key, as an app has).
fn open(kind: &str, dir: &Path) -> Arc<dyn OutboxStore> {
    let (kind, encryption) = match kind.strip_suffix("-encrypted") {
        Some(plain) => (
            plain,
            Some(Encryption::new(EncryptionKey::new(1, [0x42; 32]))),
        ),
        None => (kind, None),
    };
    match kind {
        "baseline-memory" => Arc::new(MemoryOutboxStore::new()),
        "json" => Arc::new(
            JsonOutboxStore::open(JsonOutboxStoreConfig {
                pretty_json: false,
                encryption,
                ..JsonOutboxStoreConfig::new(dir.join("outbox.json"))
            })
            .expect("open json store"),
        ),
        "sqlite-never" | "sqlite-always" => Arc::new(sqlite(kind, dir)),
        _ => {
            let mut config = WalOutboxStoreConfig::new(dir.join("outbox-wal"));
            config.encryption = encryption;
            config.sync = if kind == "wal-always" {
                SyncPolicy::Always
            } else {
                SyncPolicy::Never
            };
            Arc::new(WalOutboxStore::open(config).expect("open wal store"))
        }
    }
}

fn sqlite(kind: &str, dir: &Path) -> SqliteOutboxStore {
    let mut config = SqliteOutboxStoreConfig::new(dir.join("app.db"));
    config.sync = if kind == "sqlite-always" {
        SyncPolicy::Always
    } else {
        SyncPolicy::Never
    };
    SqliteOutboxStore::open(config).expect("open sqlite store")
}

fn fill(store: &dyn OutboxStore, pending: usize) {
    let ops: Vec<Operation> = (0..pending)
        .map(|i| Operation {
            id: format!("filler-{i:08}"),
            next_retry_at_ms: FILLER_DUE,
            created_at_ms: FILLER_DUE,
            seq: i as u64,
            ..Operation::new(
                "message.send",
                "/api/messages",
                r#"{"text":"queued while offline"}"#,
            )
        })
        .collect();
    store.put_batch(&ops).expect("fill");
}

/// A group of cycles: one operation each, 10 samples of 2 s.
fn cycle_group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    group
}

fn cycle(c: &mut Criterion) {
    let mut group = cycle_group(c, "store/cycle");
    let kinds = [
        "baseline-memory",
        "wal-never",
        "wal-always",
        "sqlite-never",
        "sqlite-always",
        "json",
    ];
    cycles(&mut group, &kinds, &[100, 10_000, 100_000]);
    group.finish();
}

/// The cycle with and without encryption at rest, each encrypted store
/// beside its plain self, 1,000 operations pending.
fn encryption(c: &mut Criterion) {
    let mut group = cycle_group(c, "store/encryption");
    let kinds = [
        "baseline-memory",
        "wal-never",
        "wal-never-encrypted",
        "wal-always",
        "wal-always-encrypted",
        "json",
        "json-encrypted",
    ];
    cycles(&mut group, &kinds, &[1_000]);
    group.finish();
}

/// Enqueue -> claim -> done on each store of `kinds` with each number of
/// other operations pending.
fn cycles(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    kinds: &[&str],
    pendings: &[usize],
) {
    for &pending in pendings {
        for &kind in kinds {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = open(kind, dir.path());
            fill(&*store, pending);
            // max_delay_ms beyond FILLER_DUE keeps the clock-jump guard off the fillers.
            let retry = RetryPolicy {
                max_delay: std::time::Duration::from_millis(FILLER_DUE.unsigned_abs() * 2),
                ..RetryPolicy::default()
            };
            let outbox = Outbox::new(
                OutboxConfig {
                    retry,
                    ..OutboxConfig::default()
                },
                store,
            );
            let op = Operation::new(
                "message.send",
                "/api/messages",
                r#"{"text":"hello offline-first"}"#,
            );
            let mut now = 1i64;
            group.bench_function(BenchmarkId::new(kind, pending), |b| {
                b.iter(|| {
                    now += 1;
                    let id = outbox.enqueue(op.clone(), now).expect("enqueue");
                    let claimed = outbox
                        .claim(now, 1)
                        .map(sync_outbox::Claim::detach)
                        .expect("claim");
                    assert_eq!(claimed.len(), 1);
                    outbox.mark_done(black_box(&id), now).expect("done");
                });
            });
        }
    }
}

/// Concurrent enqueuers on the WAL store under `Always`: `Outbox::enqueue`
/// writes outside its lock, so the log's group commit shares each
/// `fdatasync` between the threads.
fn concurrent_enqueue(c: &mut Criterion) {
    let mut group = c.benchmark_group("store/enqueue-always");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    for (kind, threads) in [1usize, 4, 16]
        .into_iter()
        .flat_map(|threads| [("wal-always", threads), ("sqlite-always", threads)])
    {
        // One iteration: every thread enqueues one operation.
        group.throughput(Throughput::Elements(threads as u64));
        group.bench_with_input(BenchmarkId::new(kind, threads), &threads, |b, &threads| {
            b.iter_custom(|iters| {
                let dir = tempfile::tempdir().expect("tempdir");
                let outbox = Arc::new(Outbox::new(OutboxConfig::default(), open(kind, dir.path())));
                let barrier = Arc::new(std::sync::Barrier::new(threads + 1));
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        let (outbox, barrier) = (Arc::clone(&outbox), Arc::clone(&barrier));
                        std::thread::spawn(move || {
                            barrier.wait();
                            for _ in 0..iters {
                                outbox
                                    .enqueue(
                                        Operation::new("message.send", "/api/messages", "{}"),
                                        1,
                                    )
                                    .expect("enqueue");
                            }
                        })
                    })
                    .collect();
                barrier.wait();
                let start = std::time::Instant::now();
                for handle in handles {
                    handle.join().expect("enqueuer");
                }
                start.elapsed()
            });
        });
    }
    group.finish();
}

/// An app row and its operation in one SQLite transaction
/// (`transaction-row-and-op`) beside the plain `Outbox::enqueue` of the same
/// operation (`baseline-plain-enqueue`, no app row), both under `Always`.
fn transactional_enqueue(c: &mut Criterion) {
    let mut group = c.benchmark_group("store/transactional-enqueue");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    let op = Operation::new("note.save", "/notes/1", r#"{"text":"hello offline-first"}"#);
    for name in ["baseline-plain-enqueue", "transaction-row-and-op"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(sqlite("sqlite-always", dir.path()));
        let outbox = Outbox::new(OutboxConfig::default(), store.clone());
        store
            .with_transaction(&outbox, |tx| {
                tx.execute_batch("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
                    .map_err(sync_store_sqlite::SqliteStoreError::from)
            })
            .expect("create table");
        let mut n = 0i64;
        group.bench_function(BenchmarkId::new(name, 1), |b| {
            b.iter(|| {
                n += 1;
                if name.starts_with("baseline") {
                    outbox.enqueue(op.clone(), n).expect("enqueue");
                } else {
                    store
                        .with_transaction(&outbox, |tx| {
                            tx.execute("INSERT INTO notes (id, text) VALUES (?1, 'hello')", [n])?;
                            tx.enqueue(op.clone(), n)
                        })
                        .expect("transaction");
                }
            });
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    cycle,
    encryption,
    concurrent_enqueue,
    transactional_enqueue
);
criterion_main!(benches);
