//! The change feed, measured. Run with `cargo xtask bench`.
//!
//! - `feed/record`: one operation through the transactional form on SQLite
//!   (`synchronous=FULL`, so every commit is an fsync): its key begun, the
//!   note row inserted, the key's response stored, one commit.
//!   `baseline-effect-without-change` is that handler; `effect-with-change`
//!   also records the note's change in the feed; `effect-with-10-changes`
//!   records ten. The ratio is what recording costs inside the effect.
//! - `feed/pull`: one page of 1,000 changes (about 60 bytes of state each)
//!   from a feed of 20,000 in two scopes, read through `PullService` as a
//!   device's `GET` would be (cursor check, one read transaction, JSON
//!   out). `baseline-sql-select` is a plain `SELECT` of the same rows on
//!   the same database, without the horizon, the cursor or JSON: the floor
//!   of what any pull could cost.
//!
//! With `SYNC_BENCH_POSTGRES` set to a connection string (`host=...
//! dbname=...`, a database the bench may create tables in), the same groups
//! run on PostgreSQL as `feed-pg/record` and `feed-pg/pull`.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::Request;
use sync::server::{
    Begin, FeedChange, Fingerprint, Idempotency, IdempotencyStore, KeyExpiry,
    PostgresIdempotencyStore, PullConfig, PullService, SqliteIdempotencyStore, StoredResponse,
};
use tower_service::Service;

const PAGE: usize = 1_000;
const PAGE_ROWS: i64 = 1_000;
const FEED: usize = 20_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

static KEYS: AtomicU64 = AtomicU64::new(0);

/// A new key's claim on `store`, as the layer would make it.
async fn claim(store: &dyn IdempotencyStore) -> Idempotency {
    let key = format!("k{}", KEYS.fetch_add(1, Ordering::Relaxed));
    let print = Fingerprint::of("POST", "/notes", key.as_bytes());
    match store.begin("bench", &key, print, 0, 60_000).await {
        Ok(Begin::Started(claim)) => {
            Idempotency::from_claim(claim, KeyExpiry::after(0, 86_400_000, 86_400_000))
        }
        other => panic!("a new key did not start: {other:?}"),
    }
}

fn note(n: u64) -> serde_json::Value {
    serde_json::json!({ "text": format!("note number {n}"), "done": false, "n": n })
}

/// The handler's changes: `count` notes of operation `n`.
fn changes_of(n: u64, count: usize) -> Vec<FeedChange> {
    (0..count)
        .map(|i| FeedChange::upsert("user:1", "note", &format!("{n}.{i}"), &note(n)))
        .collect()
}

/// One record group: the same handler without a change, with one and with
/// ten; `effect(changes)` runs it once.
fn record_group<Fut: Future<Output = ()>>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    effect: impl Fn(usize) -> Fut,
) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    for (variant, changes) in [
        ("baseline-effect-without-change", 0),
        ("effect-with-change", 1),
        ("effect-with-10-changes", 10),
    ] {
        group.bench_function(variant, |b| b.iter(|| rt.block_on(effect(changes))));
    }
    group.finish();
}

/// A store in `dir`.
fn sqlite_store(
    rt: &tokio::runtime::Runtime,
    dir: &tempfile::TempDir,
) -> Arc<SqliteIdempotencyStore> {
    rt.block_on(SqliteIdempotencyStore::open(dir.path().join("server.db")))
        .map(Arc::new)
        .expect("open")
}

/// A store in `dir` with the handler's `notes` table.
fn sqlite_notes_store(
    rt: &tokio::runtime::Runtime,
    dir: &tempfile::TempDir,
) -> Arc<SqliteIdempotencyStore> {
    let store = sqlite_store(rt, dir);
    rt.block_on(async {
        store
            .call(|db| db.execute_batch("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)"))
            .await
            .expect("schema");
    });
    store
}

fn sqlite_record(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = sqlite_notes_store(rt, &dir);
    record_group(c, rt, "feed/record", |changes| {
        let store = Arc::clone(&store);
        async move {
            let idem = claim(&*store).await;
            let n = KEYS.load(Ordering::Relaxed);
            let response = store
                .transaction(&idem, move |tx| {
                    let body = note(n).to_string();
                    tx.execute("INSERT INTO notes (body) VALUES (?1)", [&body])?;
                    for change in changes_of(n, changes) {
                        SqliteIdempotencyStore::record(tx, &change)?;
                    }
                    Ok(StoredResponse::new(http::StatusCode::CREATED))
                })
                .await
                .expect("effect");
            black_box(response);
        }
    });
}

/// One page of `PAGE` changes through the service, from a cursor in the
/// middle of the feed (taken once: every iteration reads the same page).
fn pull_page<F: sync::server::ChangeFeed>(
    rt: &tokio::runtime::Runtime,
    service: &mut PullService<F>,
    cursor: &str,
) -> usize {
    rt.block_on(async {
        let request = Request::get(format!("/pull?limit={PAGE}&cursor={cursor}"))
            .body(Body::empty())
            .expect("request");
        let Ok(answer) = service.call(request).await;
        let bytes = axum::body::to_bytes(answer.into_body(), usize::MAX)
            .await
            .expect("body");
        bytes.len()
    })
}

/// The cursor after the first page of `PAGE`.
fn mid_cursor<F: sync::server::ChangeFeed>(
    rt: &tokio::runtime::Runtime,
    service: &mut PullService<F>,
) -> String {
    rt.block_on(async {
        let request = Request::get(format!("/pull?limit={PAGE}"))
            .body(Body::empty())
            .expect("request");
        let Ok(answer) = service.call(request).await;
        let bytes = axum::body::to_bytes(answer.into_body(), usize::MAX)
            .await
            .expect("body");
        let page: sync::protocol::PullResponse = serde_json::from_slice(&bytes).expect("a page");
        assert_eq!(page.changes.len(), PAGE);
        page.cursor
    })
}

fn sqlite_pull(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = sqlite_store(rt, &dir);
    rt.block_on(async {
        store
            .call(|db| {
                let tx = db.transaction()?;
                for n in 0..FEED as u64 {
                    let scope = if n % 2 == 0 { "user:1" } else { "user:2" };
                    SqliteIdempotencyStore::record(
                        &tx,
                        &FeedChange::upsert(scope, "note", &n.to_string(), &note(n)),
                    )?;
                }
                tx.commit()
            })
            .await
            .expect("fill");
    });
    let mut service = PullService::new(
        Arc::clone(&store),
        PullConfig::new(|_| vec!["user:1".to_owned()]),
    );
    let cursor = mid_cursor(rt, &mut service);
    let mut group = c.benchmark_group("feed/pull");
    group.throughput(Throughput::Elements(PAGE as u64));
    group.bench_function("pull-service", |b| {
        b.iter(|| black_box(pull_page(rt, &mut service, &cursor)));
    });
    let plain = rusqlite::Connection::open(dir.path().join("server.db")).expect("open");
    group.bench_function("baseline-sql-select", |b| {
        b.iter(|| {
            let mut statement = plain
                .prepare_cached(
                    "SELECT scope, entity, id, version, seq, state FROM sync_feed \
                     WHERE scope = 'user:1' AND (version, seq) > (2000, 2000) \
                     ORDER BY version, seq LIMIT ?1",
                )
                .expect("prepare");
            let rows: Vec<(String, String, String, i64, i64, String)> = statement
                .query_map([PAGE_ROWS], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                })
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows");
            assert_eq!(rows.len(), PAGE);
            black_box(rows)
        });
    });
    group.finish();
}

fn postgres(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let Ok(conn) = std::env::var("SYNC_BENCH_POSTGRES") else {
        eprintln!("feed-pg: SYNC_BENCH_POSTGRES is not set, the PostgreSQL groups are skipped");
        return;
    };
    let store = rt.block_on(async {
        let store = Arc::new(PostgresIdempotencyStore::connect(&conn, 4).expect("connect"));
        let client = store.pool().get().await.expect("a connection");
        client
            .batch_execute(
                "DROP TABLE IF EXISTS sync_feed, sync_feed_meta, sync_idempotency, \
                 sync_idempotency_meta, bench_notes; DROP SEQUENCE IF EXISTS sync_feed_seq;
                 CREATE TABLE bench_notes (id BIGSERIAL PRIMARY KEY, body TEXT);",
            )
            .await
            .expect("reset");
        drop(client);
        store.migrate().await.expect("migrate");
        store
    });
    record_group(c, rt, "feed-pg/record", |changes| {
        let store = Arc::clone(&store);
        async move {
            let idem = claim(&*store).await;
            let n = KEYS.load(Ordering::Relaxed);
            let effect = store.transaction(&idem).await.expect("begin");
            effect
                .client()
                .execute(
                    "INSERT INTO bench_notes (body) VALUES ($1)",
                    &[&note(n).to_string()],
                )
                .await
                .expect("insert");
            for change in changes_of(n, changes) {
                effect.record(&change).await.expect("record");
            }
            black_box(
                effect
                    .commit(StoredResponse::new(http::StatusCode::CREATED))
                    .await
                    .expect("commit"),
            );
        }
    });
    postgres_key_cost(c, rt, &store);
    postgres_pull(c, rt, &store);
}

/// `server-pg/key-cost`: `server/key-cost` on PostgreSQL.
fn postgres_key_cost(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    store: &Arc<PostgresIdempotencyStore>,
) {
    let mut group = c.benchmark_group("server-pg/key-cost");
    group.throughput(Throughput::Elements(1));
    group.bench_function("through-the-key", |b| {
        b.iter(|| {
            rt.block_on(async {
                let idem = claim(&**store).await;
                let body = note(KEYS.load(Ordering::Relaxed)).to_string();
                let effect = store.transaction(&idem).await.expect("begin");
                effect
                    .client()
                    .execute("INSERT INTO bench_notes (body) VALUES ($1)", &[&body])
                    .await
                    .expect("insert");
                black_box(
                    effect
                        .commit(StoredResponse::new(http::StatusCode::CREATED))
                        .await
                        .expect("commit"),
                );
            });
        });
    });
    group.bench_function("baseline-handler-alone", |b| {
        b.iter(|| {
            rt.block_on(async {
                let body = note(KEYS.fetch_add(1, Ordering::Relaxed)).to_string();
                let mut client = store.pool().get().await.expect("a connection");
                let tx = client.transaction().await.expect("begin");
                tx.execute("INSERT INTO bench_notes (body) VALUES ($1)", &[&body])
                    .await
                    .expect("insert");
                tx.commit().await.expect("commit");
            });
        });
    });
    group.finish();
}

fn postgres_pull(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    store: &Arc<PostgresIdempotencyStore>,
) {
    rt.block_on(async {
        let mut client = store.pool().get().await.expect("a connection");
        client
            .batch_execute("TRUNCATE sync_feed")
            .await
            .expect("truncate");
        let tx = client.transaction().await.expect("begin");
        for n in 0..FEED as u64 {
            let scope = if n % 2 == 0 { "user:1" } else { "user:2" };
            PostgresIdempotencyStore::record(
                &*tx,
                &FeedChange::upsert(scope, "note", &n.to_string(), &note(n)),
            )
            .await
            .expect("fill");
        }
        tx.commit().await.expect("commit");
        // Fresh statistics, as autovacuum would soon have: without them the
        // planner sometimes sorted the whole table for the plain SELECT
        // (5.2 ms instead of 0.9), which is no baseline.
        client
            .batch_execute("ANALYZE sync_feed")
            .await
            .expect("analyze");
    });
    let mut service = PullService::new(
        Arc::clone(store),
        PullConfig::new(|_| vec!["user:1".to_owned()]),
    );
    let cursor = mid_cursor(rt, &mut service);
    let mut group = c.benchmark_group("feed-pg/pull");
    group.throughput(Throughput::Elements(PAGE as u64));
    group.bench_function("pull-service", |b| {
        b.iter(|| black_box(pull_page(rt, &mut service, &cursor)));
    });
    group.bench_function("baseline-sql-select", |b| {
        b.iter(|| {
            rt.block_on(async {
                let client = store.pool().get().await.expect("a connection");
                let rows = client
                    .query(
                        "SELECT scope, entity, id, version, seq, state FROM sync_feed \
                         WHERE scope = 'user:1' ORDER BY version, seq OFFSET 1000 LIMIT $1",
                        &[&PAGE_ROWS],
                    )
                    .await
                    .expect("query");
                assert_eq!(rows.len(), PAGE);
                black_box(rows)
            })
        });
    });
    group.finish();
}

/// `server/key-cost` (SQLite, `synchronous=FULL`): what exactly-once costs
/// a handler. `through-the-key`: the key begun, then the note inserted and
/// the key's response stored in one transaction (the transactional form);
/// `baseline-handler-alone`: the same insert in a transaction of its own,
/// no key. In-process, without HTTP: the store's share of a request.
fn sqlite_key_cost(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = sqlite_notes_store(rt, &dir);
    let mut group = c.benchmark_group("server/key-cost");
    group.throughput(Throughput::Elements(1));
    group.bench_function("through-the-key", |b| {
        b.iter(|| {
            rt.block_on(async {
                let idem = claim(&*store).await;
                let body = note(KEYS.load(Ordering::Relaxed)).to_string();
                let response = store
                    .transaction(&idem, move |tx| {
                        tx.execute("INSERT INTO notes (body) VALUES (?1)", [&body])?;
                        Ok(StoredResponse::new(http::StatusCode::CREATED))
                    })
                    .await
                    .expect("effect");
                black_box(response);
            });
        });
    });
    group.bench_function("baseline-handler-alone", |b| {
        b.iter(|| {
            rt.block_on(async {
                let body = note(KEYS.fetch_add(1, Ordering::Relaxed)).to_string();
                store
                    .call(move |db| {
                        let tx = db.transaction()?;
                        tx.execute("INSERT INTO notes (body) VALUES (?1)", [&body])?;
                        tx.commit()
                    })
                    .await
                    .expect("handler");
            });
        });
    });
    group.finish();
}

fn feed(c: &mut Criterion) {
    let rt = runtime();
    sqlite_key_cost(c, &rt);
    sqlite_record(c, &rt);
    sqlite_pull(c, &rt);
    postgres(c, &rt);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = feed
}
criterion_main!(benches);
