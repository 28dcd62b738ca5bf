//! The library beside its peers, in one run, for the performance goals of
//! the README (run with `cargo xtask bench`):
//!
//! - `peers/cycle-always`: one enqueue -> claim -> done cycle through the
//!   WAL store under `SyncPolicy::Always`, beside an SQLite outbox table
//!   with `synchronous=FULL` (`baseline-sqlite-full`), written as a
//!   competent app developer would: WAL journal mode, prepared statements,
//!   an index on `(status, due, seq)`, each step its own transaction. At 1
//!   operation per cycle and at 100 (one claim of 100, then 100 dones:
//!   ours recorded together as the engine's worker does, SQLite's each in
//!   its own transaction, and in `baseline-sqlite-full-batched` all in one).
//! - `peers/cycle-never`: the same under `Never`, beside the SQLite table
//!   with `synchronous=NORMAL` (`baseline-sqlite-normal`) and `queue-file`
//!   (a port of Square's Tape, a bare durable FIFO) add / peek / remove
//!   without sync (`baseline-queue-file`), configured as its docs and
//!   Tape's advise for a busy queue: a preallocated file (16 MiB, so it
//!   never grows mid-run) and `overwrite_on_remove` off (zeroing removed
//!   bytes is a privacy option that costs a write per remove).
//! - Every contender of a cycle group holds 10,000 queued operations before
//!   the run (a queue that drains to empty measures a different thing:
//!   queue-file truncates its file, SQLite's index is tiny), and every
//!   cycle group has the physical baseline beside it: the same operations'
//!   JSON written through a `BufWriter` to a plain file, flushed per cycle
//!   (and `fdatasync`ed under `Always`): `baseline-file`.
//! - `peers/durable-append`: `Wal::append` under `SyncPolicy::Always` beside
//!   okaywal's `EntryWriter::commit` (`baseline-okaywal`), 1 and 16 threads,
//!   the same 450-byte record.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sync_outbox::{Operation, Outbox, OutboxConfig, SendOutcome};
use sync_store_file::{WalOutboxStore, WalOutboxStoreConfig};
use sync_wal::{RecordType, SyncPolicy, Wal, WalConfig, WalRecord};

/// About what one operation's JSON is in the WAL store.
const RECORD: &[u8; 450] = &[b'x'; 450];

/// The operations queued before a cycle group runs.
const QUEUED: usize = 10_000;

/// A 99-byte payload, as the independent harness of issue 27 used.
const PAYLOAD: &str = r#"{"text":"hello offline-first, this is a message of about one line and more","to":"ada@example.com"}"#;

fn op() -> Operation {
    Operation::new("message.send", "/api/messages", PAYLOAD)
}

fn wal_outbox(dir: &Path, sync: SyncPolicy) -> Outbox {
    let mut config = WalOutboxStoreConfig::new(dir.join("outbox-wal"));
    config.sync = sync;
    let store = Arc::new(WalOutboxStore::open(config).expect("open wal store"));
    Outbox::new(OutboxConfig::default(), store)
}

/// The outbox table an app developer would write in SQLite.
struct SqliteTable {
    conn: rusqlite::Connection,
    seq: i64,
}

impl SqliteTable {
    fn open(dir: &Path, synchronous: &str) -> Self {
        let conn = rusqlite::Connection::open(dir.join("outbox.db")).expect("open sqlite");
        conn.pragma_update(None, "journal_mode", "WAL")
            .expect("wal");
        conn.pragma_update(None, "synchronous", synchronous)
            .expect("synchronous");
        conn.execute_batch(
            "CREATE TABLE outbox (
                id TEXT PRIMARY KEY, kind TEXT, target TEXT, payload TEXT,
                status INTEGER NOT NULL, attempt INTEGER NOT NULL, due INTEGER NOT NULL,
                seq INTEGER NOT NULL, last_error TEXT, created INTEGER, updated INTEGER);
             CREATE INDEX outbox_due ON outbox (status, due, seq);",
        )
        .expect("schema");
        Self { conn, seq: 0 }
    }

    fn enqueue(&mut self, op: &Operation, now: i64) {
        self.seq += 1;
        self.conn
            .prepare_cached("INSERT INTO outbox VALUES (?1, ?2, ?3, ?4, 0, 0, ?5, ?6, '', ?5, ?5)")
            .and_then(|mut s| {
                s.execute(rusqlite::params![
                    format!("op-{}", self.seq),
                    op.kind,
                    op.target,
                    op.payload,
                    now,
                    self.seq
                ])
            })
            .expect("insert");
    }

    /// Claims up to `limit` due operations in one transaction.
    fn claim(&mut self, now: i64, limit: i64) -> Vec<String> {
        let tx = self.conn.transaction().expect("begin");
        let ids: Vec<String> = {
            let mut select = tx
                .prepare_cached(
                    "SELECT id FROM outbox WHERE status = 0 AND due <= ?1 ORDER BY due, seq LIMIT ?2",
                )
                .expect("select");
            select
                .query_map(rusqlite::params![now, limit], |row| row.get(0))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows")
        };
        {
            let mut update = tx
                .prepare_cached(
                    "UPDATE outbox SET status = 1, attempt = attempt + 1, updated = ?2 WHERE id = ?1",
                )
                .expect("update");
            for id in &ids {
                update.execute(rusqlite::params![id, now]).expect("claim");
            }
        }
        tx.commit().expect("commit");
        ids
    }

    fn done(&mut self, id: &str, now: i64) {
        self.conn
            .prepare_cached("UPDATE outbox SET status = 2, updated = ?2 WHERE id = ?1")
            .and_then(|mut s| s.execute(rusqlite::params![id, now]))
            .expect("done");
    }

    /// Records a whole batch's acknowledgements in one transaction.
    fn done_all(&mut self, ids: &[String], now: i64) {
        let tx = self.conn.transaction().expect("begin");
        {
            let mut update = tx
                .prepare_cached("UPDATE outbox SET status = 2, updated = ?2 WHERE id = ?1")
                .expect("update");
            for id in ids {
                update.execute(rusqlite::params![id, now]).expect("done");
            }
        }
        tx.commit().expect("commit");
    }
}

fn cycles(c: &mut Criterion, group_name: &str, ours: SyncPolicy, peers: &[&str]) {
    let mut group = c.benchmark_group(group_name);
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    for batch in [1usize, 100] {
        group.throughput(Throughput::Elements(batch as u64));
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = wal_outbox(dir.path(), ours);
        let mut now = 1i64;
        for _ in 0..QUEUED {
            outbox.enqueue(op(), 0).expect("fill");
        }
        group.bench_function(BenchmarkId::new("sync-wal-store", batch), |b| {
            b.iter(|| {
                now += 1;
                for _ in 0..batch {
                    outbox.enqueue(op(), now).expect("enqueue");
                }
                // As the engine's worker does: a held claim, then the
                // batch's results recorded together (one write, one sync).
                let claim = outbox.claim(now, batch).expect("claim");
                let acks = claim
                    .iter()
                    .map(|op| (op.id.as_str(), SendOutcome::Acknowledged));
                outbox.record_results(acks, now).expect("done");
            });
        });
        for peer in peers {
            let dir = tempfile::tempdir().expect("tempdir");
            match *peer {
                "baseline-file" => {
                    bench_file(&mut group, batch, dir.path(), ours == SyncPolicy::Always);
                }
                "baseline-queue-file" => bench_queue_file(&mut group, batch, dir.path()),
                "baseline-sqlite-full-batched" if batch == 1 => {}
                sqlite => {
                    let batched_dones = sqlite.ends_with("batched");
                    let synchronous = if sqlite.contains("full") {
                        "FULL"
                    } else {
                        "NORMAL"
                    };
                    let mut table = SqliteTable::open(dir.path(), synchronous);
                    let op = op();
                    let mut now = 1i64;
                    table.conn.execute_batch("BEGIN").expect("begin");
                    for _ in 0..QUEUED {
                        table.enqueue(&op, 0);
                    }
                    table.conn.execute_batch("COMMIT").expect("commit");
                    group.bench_function(BenchmarkId::new(sqlite, batch), |b| {
                        b.iter(|| {
                            now += 1;
                            for _ in 0..batch {
                                table.enqueue(&op, now);
                            }
                            let batch = i64::try_from(batch).unwrap_or(i64::MAX);
                            let claimed = table.claim(now, batch);
                            if batched_dones {
                                table.done_all(&claimed, now);
                            } else {
                                for id in &claimed {
                                    table.done(id, now);
                                }
                            }
                        });
                    });
                }
            }
        }
    }
    group.finish();
}

type Group<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// The physical baseline: the operations' JSON through a `BufWriter`,
/// flushed per cycle, and `fdatasync`ed too when `always`.
fn bench_file(group: &mut Group<'_>, batch: usize, dir: &Path, always: bool) {
    use std::io::Write as _;
    let file = std::fs::File::create(dir.join("plain")).expect("file");
    let mut out = std::io::BufWriter::new(file);
    let bytes = serde_json::to_vec(&op()).expect("json");
    group.bench_function(BenchmarkId::new("baseline-file", batch), |b| {
        b.iter(|| {
            for _ in 0..batch {
                out.write_all(&bytes).expect("write");
            }
            out.flush().expect("flush");
            if always {
                out.get_ref().sync_data().expect("sync");
            }
        });
    });
}

/// queue-file as its docs advise, holding [`QUEUED`] elements: add, then
/// peek and remove as many.
fn bench_queue_file(group: &mut Group<'_>, batch: usize, dir: &Path) {
    let mut queue =
        queue_file::QueueFile::with_capacity(dir.join("q"), 16 << 20).expect("queue-file");
    queue.set_sync_writes(false);
    queue.set_overwrite_on_remove(false);
    let bytes = serde_json::to_vec(&op()).expect("json");
    for _ in 0..QUEUED {
        queue.add(&bytes).expect("fill");
    }
    group.bench_function(BenchmarkId::new("baseline-queue-file", batch), |b| {
        b.iter(|| {
            for _ in 0..batch {
                queue.add(&bytes).expect("add");
            }
            for _ in 0..batch {
                let _ = queue.peek().expect("peek");
                queue.remove().expect("remove");
            }
        });
    });
}

fn cycle_always(c: &mut Criterion) {
    cycles(
        c,
        "peers/cycle-always",
        SyncPolicy::Always,
        &[
            "baseline-sqlite-full",
            "baseline-sqlite-full-batched",
            "baseline-file",
        ],
    );
}

fn cycle_never(c: &mut Criterion) {
    cycles(
        c,
        "peers/cycle-never",
        SyncPolicy::Never,
        &[
            "baseline-sqlite-normal",
            "baseline-queue-file",
            "baseline-file",
        ],
    );
}

/// `threads` threads each append `iters` records; returns the time.
fn threaded(threads: usize, iters: u64, append: impl Fn() + Send + Sync + 'static) -> Duration {
    let append = Arc::new(append);
    let barrier = Arc::new(std::sync::Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (append, barrier) = (Arc::clone(&append), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                for _ in 0..iters {
                    append();
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for handle in handles {
        handle.join().expect("appender");
    }
    start.elapsed()
}

fn durable_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("peers/durable-append");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    for threads in [1usize, 16] {
        group.throughput(Throughput::Elements(threads as u64));
        group.bench_function(BenchmarkId::new("sync-wal", threads), |b| {
            b.iter_custom(|iters| {
                let dir = tempfile::tempdir().expect("tempdir");
                let mut config = WalConfig::new(dir.path().join("wal"));
                config.sync = SyncPolicy::Always;
                let wal = Arc::new(Wal::open(config).expect("open wal"));
                let record = WalRecord {
                    id: "op_0000000001".into(),
                    kind: RecordType::PutOperation,
                    ts_ms: 1_700_000_000_000,
                    payload: RECORD.to_vec(),
                };
                threaded(threads, iters, move || {
                    wal.append(&record).expect("append");
                })
            });
        });
        group.bench_function(BenchmarkId::new("baseline-okaywal", threads), |b| {
            b.iter_custom(|iters| {
                let dir = tempfile::tempdir().expect("tempdir");
                let log = okaywal::WriteAheadLog::recover(dir.path(), okaywal::LogVoid)
                    .expect("open okaywal");
                threaded(threads, iters, move || {
                    let mut entry = log.begin_entry().expect("entry");
                    entry.write_chunk(RECORD).expect("chunk");
                    entry.commit().expect("commit");
                })
            });
        });
    }
    group.finish();
}

criterion_group!(benches, cycle_always, cycle_never, durable_append);
criterion_main!(benches);
