//! The download half on the device, measured. Run with `cargo xtask bench`.
//!
//! `download/apply-page`: one pulled page of 500 upserts (about 60 bytes of
//! state each, spread over 5,000 notes) committed into the app's SQLite
//! database, per store durability (`sqlite-full`: `SyncPolicy::Always`,
//! `synchronous=FULL`; `sqlite-normal`: `SyncPolicy::Never`,
//! `synchronous=NORMAL`):
//! - `sqlite-download`: `SqliteDownload::commit_page`: the download state
//!   read, the rule planned against the outbox (100 pending operations of
//!   other notes), each change through the app's `ApplySqliteChanges`
//!   (`apply_changes`: a cached `INSERT ... ON CONFLICT DO UPDATE` prepared
//!   once per page, as the peer does), the cursor written, one
//!   `BEGIN IMMEDIATE` ... `COMMIT`;
//! - `peer-sqlite-upsert`: the same 500 rows upserted by plain rusqlite in
//!   one transaction with the same cached statement, on a database with
//!   the same journal mode and `synchronous`: what an app writing the rows
//!   itself would pay, with no cursor, no rule, no JSON;
//! - `baseline-file-write`: the same rows' bytes written to a file through
//!   a `BufWriter` and flushed (and fsynced for `sqlite-full`): the floor.
//!
//! Inputs are made and dropped outside the timed part for all three.
//! `SYNC_BENCH_PENDING` sets the number of pending operations (default
//! 100; 0 shows what planning against them costs).

use std::collections::HashSet;
use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rusqlite::Connection;
use sync_outbox::download::{Change, ChangeOp, DownloadTarget, PullResponse};
use sync_outbox::{Operation, Outbox, OutboxConfig};
use sync_store_sqlite::{
    ApplySqliteChanges, SqliteDownload, SqliteOutboxStore, SqliteOutboxStoreConfig,
    SqliteStoreError,
};
use sync_wal::SyncPolicy;

const PAGE: usize = 500;
const NOTES: u64 = 5_000;
const UPSERT: &str = "INSERT INTO notes (id, text, version) VALUES (?1, ?2, ?3)
     ON CONFLICT (id) DO UPDATE SET text = excluded.text, version = excluded.version";

struct Notes;

impl ApplySqliteChanges for Notes {
    fn upsert(
        &mut self,
        db: &Connection,
        c: &Change,
        state: &serde_json::Value,
    ) -> rusqlite::Result<()> {
        db.prepare_cached(UPSERT)?
            .execute((&c.id, state["text"].as_str(), c.version))
            .map(drop)
    }
    fn delete(&mut self, db: &Connection, c: &Change) -> rusqlite::Result<()> {
        db.prepare_cached("DELETE FROM notes WHERE id = ?1")?
            .execute([&c.id])
            .map(drop)
    }
    /// As an app tuning it would: each statement prepared once per page,
    /// as the peer does.
    fn apply_changes(&mut self, db: &Connection, changes: &[&Change]) -> rusqlite::Result<()> {
        let mut upsert = db.prepare_cached(UPSERT)?;
        let mut delete = db.prepare_cached("DELETE FROM notes WHERE id = ?1")?;
        for c in changes {
            match &c.op {
                ChangeOp::Upsert { state } => {
                    upsert.execute((&c.id, state["text"].as_str(), c.version))?
                }
                ChangeOp::Delete => delete.execute([&c.id])?,
            };
        }
        Ok(())
    }
    fn reset(&mut self, _db: &Connection, _keep: &HashSet<String>) -> rusqlite::Result<()> {
        Ok(())
    }
    fn forget(&mut self, _db: &Connection, _key: &str) -> rusqlite::Result<()> {
        Ok(())
    }
}

/// The rows of page `n`: (id, text, version).
fn rows(n: u64) -> Vec<(String, String, i64)> {
    (0..PAGE as u64)
        .map(|i| {
            let version = i64::try_from(n * PAGE as u64 + i + 1).unwrap_or(i64::MAX);
            let id = format!("n{}", (version.unsigned_abs() * 7_919) % NOTES);
            (
                id,
                format!("note text, version {version}, a line long"),
                version,
            )
        })
        .collect()
}

/// Page `n` of the feed, as the server sends it.
fn page(n: u64) -> PullResponse {
    let changes: Vec<serde_json::Value> = rows(n)
        .into_iter()
        .map(|(id, text, version)| {
            serde_json::json!({"scope": "u", "entity": "note", "id": id, "version": version,
                "op": "upsert", "state": {"text": text}})
        })
        .collect();
    let last = i64::try_from((n + 1) * PAGE as u64).unwrap_or(i64::MAX);
    serde_json::from_value(
        serde_json::json!({"changes": changes, "cursor": last.to_string(),
        "more": true, "covers_below": last + 1, "snapshot": n == 0}),
    )
    .expect("a page")
}

/// The device's database in `dir` with the notes table and the pending
/// operations, and its download target.
fn device(dir: &std::path::Path, policy: SyncPolicy) -> SqliteDownload<Notes> {
    let store = Arc::new(
        SqliteOutboxStore::open(SqliteOutboxStoreConfig {
            sync: policy,
            ..SqliteOutboxStoreConfig::new(dir.join("device.db"))
        })
        .expect("store"),
    );
    let outbox = Arc::new(Outbox::new(OutboxConfig::default(), store.clone()));
    store
        .with_transaction(&outbox, |tx| {
            tx.execute_batch("CREATE TABLE notes (id TEXT PRIMARY KEY, text TEXT, version INTEGER)")
                .map_err(SqliteStoreError::from)
        })
        .expect("table");
    let pending: u32 = std::env::var("SYNC_BENCH_PENDING")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    for i in 0..pending {
        outbox
            .enqueue(
                Operation {
                    ordering_key: Some(format!("other/{i}")),
                    ..Operation::new("other.save", "/other", "{}")
                },
                0,
            )
            .expect("enqueue");
    }
    SqliteDownload::new(store, outbox, Notes)
}

fn apply_page(c: &mut Criterion) {
    let mut group = c.benchmark_group("download/apply-page");
    group.sample_size(20);
    group.throughput(Throughput::Elements(PAGE as u64));
    for (name, policy, synchronous) in [
        ("sqlite-full", SyncPolicy::Always, "FULL"),
        ("sqlite-normal", SyncPolicy::Never, "NORMAL"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let download = device(dir.path(), policy);
        let mut n = 0;
        group.bench_function(BenchmarkId::new("sqlite-download", name), |b| {
            b.iter_batched_ref(
                || {
                    n += 1;
                    page(n - 1)
                },
                |page| black_box(download.commit_page(page).expect("commit")),
                criterion::BatchSize::SmallInput,
            );
        });

        let mut peer = Connection::open(dir.path().join("peer.db")).expect("peer");
        peer.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous={synchronous};
             CREATE TABLE notes (id TEXT PRIMARY KEY, text TEXT, version INTEGER);"
        ))
        .expect("peer setup");
        let mut m = 0;
        group.bench_function(BenchmarkId::new("peer-sqlite-upsert", name), |b| {
            b.iter_batched_ref(
                || {
                    m += 1;
                    rows(m - 1)
                },
                |rows| {
                    let tx = peer.transaction().expect("begin");
                    {
                        let mut upsert = tx.prepare_cached(UPSERT).expect("prepare");
                        for (id, text, version) in rows.iter() {
                            upsert.execute((id, text, version)).expect("upsert");
                        }
                    }
                    tx.commit().expect("commit");
                },
                criterion::BatchSize::SmallInput,
            );
        });

        let file = std::fs::File::create(dir.path().join("rows.bin")).expect("file");
        let mut out = std::io::BufWriter::new(file);
        let mut k = 0;
        group.bench_function(BenchmarkId::new("baseline-file-write", name), |b| {
            b.iter_batched_ref(
                || {
                    k += 1;
                    rows(k - 1)
                },
                |rows| {
                    for (id, text, version) in rows.iter() {
                        out.write_all(id.as_bytes()).expect("write");
                        out.write_all(text.as_bytes()).expect("write");
                        out.write_all(&version.to_le_bytes()).expect("write");
                    }
                    out.flush().expect("flush");
                    if policy == SyncPolicy::Always {
                        out.get_ref().sync_data().expect("fsync");
                    }
                },
                criterion::BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, apply_page);
criterion_main!(benches);
