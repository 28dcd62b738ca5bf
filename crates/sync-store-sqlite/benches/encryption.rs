//! What encryption at rest costs the SQLite store (feature `sqlcipher`):
//! one enqueue -> claim -> done cycle through an `Outbox`, with 10,000 other
//! operations pending, on the same SQLCipher build with and without a key
//! (`plain` is that build's SQLite with no key: the same library, so the
//! ratio is the encryption's alone), under `SyncPolicy::Never` (CPU: the
//! pages' AES and HMAC show) and `Always` (an fsync a commit). Run with
//! `cargo bench -p sync-store-sqlite --features sqlcipher --bench encryption`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sync_outbox::{Operation, Outbox, OutboxConfig, OutboxStore, RetryPolicy};
use sync_store_sqlite::{DatabaseKey, SqliteOutboxStore, SqliteOutboxStoreConfig};
use sync_wal::SyncPolicy;

const PENDING: usize = 10_000;
/// Filler operations are due long after every cycle's `now`.
const FILLER_DUE: i64 = 1 << 50;

fn open(dir: &Path, sync: SyncPolicy, encrypted: bool) -> Arc<SqliteOutboxStore> {
    let mut config = SqliteOutboxStoreConfig::new(dir.join("app.db"));
    config.sync = sync;
    if encrypted {
        config = config.with_key(DatabaseKey::raw([0x42; 32]));
    }
    Arc::new(SqliteOutboxStore::open(config).expect("open sqlite store"))
}

fn cycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("sqlite/encryption");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(4));
    for (policy, sync) in [("never", SyncPolicy::Never), ("always", SyncPolicy::Always)] {
        for encrypted in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = open(dir.path(), sync, encrypted);
            let filler: Vec<Operation> = (0..PENDING)
                .map(|i| {
                    let mut op = Operation::new("note.create", "/notes", r#"{"text":"filler"}"#);
                    op.id = format!("filler-{i}");
                    op.seq = u64::try_from(i).unwrap_or(u64::MAX);
                    op.next_retry_at_ms = FILLER_DUE;
                    op
                })
                .collect();
            store.put_batch(&filler).expect("fill");
            let outbox = Outbox::new(
                OutboxConfig {
                    retry: RetryPolicy::default(),
                    ..OutboxConfig::default()
                },
                store.clone(),
            );
            outbox.recover(0).expect("recover");
            let name = if encrypted { "encrypted" } else { "plain" };
            let mut now = 1i64;
            group.bench_function(BenchmarkId::new(name, policy), |b| {
                b.iter(|| {
                    now += 1;
                    let id = outbox
                        .enqueue(
                            Operation::new("note.create", "/notes", r#"{"text":"hello"}"#),
                            now,
                        )
                        .expect("enqueue");
                    let claimed = outbox
                        .claim(now, 1)
                        .map(sync_outbox::Claim::detach)
                        .expect("claim");
                    assert_eq!(claimed.len(), 1);
                    outbox.mark_done(&id, now).expect("done");
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, cycle);
criterion_main!(benches);
