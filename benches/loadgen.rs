//! The receiving half under load: requests per second over loopback HTTP,
//! through `IdempotencyLayer` with the effect in the key's transaction,
//! against the same handler doing its own transaction without the layer
//! (issue 27). Run with `cargo bench -p sync-benches --bench loadgen`.
//!
//! The server is axum on a tokio runtime of its own (2 workers, as on this
//! 2-core machine), the same process, real TCP on 127.0.0.1. The load
//! generator is closed-loop, like `wrk`: `CONNECTIONS` tasks on a runtime
//! of their own, each with a kept-alive connection, each sending its next
//! `PUT` as soon as the last one is answered, every request with its own
//! `Idempotency-Key` (which is why it is not `oha`: it cannot vary a header
//! per request). Rounds alternate (bare, keyed, bare, keyed, ...) so drift
//! on this noisy VM hits both alike; each route's figure is its median
//! round.
//!
//! - `bare`: `PUT /bare/notes`: one `INSERT` in a transaction of its own,
//!   no key (the handler alone).
//! - `keyed`: `PUT /keyed/notes` through the layer: the key claimed, then
//!   the same `INSERT` and the key's response in one transaction.
//!
//! Both on SQLite at `synchronous=FULL` (every commit an fsync), and, with
//! `SYNC_BENCH_POSTGRES` set to a connection string, on PostgreSQL with its
//! default `synchronous_commit=on`. Environment: `SYNC_LOADGEN_SECONDS`
//! (per round, default 3), `SYNC_LOADGEN_ROUNDS` (per route, default 3).

#![expect(clippy::print_stdout, reason = "a bench reports on stdout")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use http::StatusCode;
use sync::server::{
    Idempotency, IdempotencyConfig, IdempotencyLayer, PostgresIdempotencyStore, ServerError,
    SqliteIdempotencyStore, StoredResponse,
};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Concurrent closed-loop clients.
const CONNECTIONS: usize = 16;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone)]
enum Db {
    Sqlite(Arc<SqliteIdempotencyStore>),
    Postgres(Arc<PostgresIdempotencyStore>),
}

async fn bare(State(db): State<Db>, body: String) -> Result<Response, ServerError> {
    match db {
        Db::Sqlite(store) => {
            store
                .call(move |db| {
                    let tx = db.transaction()?;
                    tx.execute("INSERT INTO notes (body) VALUES (?1)", [&body])?;
                    tx.commit()
                })
                .await?;
        }
        Db::Postgres(store) => {
            let pg = |op| move |source| ServerError::Postgres { op, source };
            let mut client = store.pool().get().await.map_err(ServerError::Pool)?;
            let tx = client.transaction().await.map_err(pg("begin"))?;
            tx.execute("INSERT INTO loadgen_notes (body) VALUES ($1)", &[&body])
                .await
                .map_err(pg("insert"))?;
            tx.commit().await.map_err(pg("commit"))?;
        }
    }
    Ok(StatusCode::CREATED.into_response())
}

async fn keyed(
    State(db): State<Db>,
    idem: Idempotency,
    body: String,
) -> Result<Response, ServerError> {
    let answer = StoredResponse::new(StatusCode::CREATED);
    match db {
        Db::Sqlite(store) => {
            store
                .transaction(&idem, move |tx| {
                    tx.execute("INSERT INTO notes (body) VALUES (?1)", [&body])?;
                    Ok(answer)
                })
                .await
        }
        Db::Postgres(store) => {
            let effect = store.transaction(&idem).await?;
            effect
                .client()
                .execute("INSERT INTO loadgen_notes (body) VALUES ($1)", &[&body])
                .await
                .map_err(|source| ServerError::Postgres {
                    op: "insert",
                    source,
                })?;
            effect.commit(answer).await
        }
    }
}

/// Serves both routes over `db` on 127.0.0.1; returns the address.
async fn serve(db: Db) -> Result<SocketAddr, Error> {
    let config = IdempotencyConfig::default();
    let keyed_routes: Router<Db> = match &db {
        Db::Sqlite(store) => Router::new()
            .route("/keyed/notes", put(keyed))
            .layer(IdempotencyLayer::new(Arc::clone(store), config)),
        Db::Postgres(store) => Router::new()
            .route("/keyed/notes", put(keyed))
            .layer(IdempotencyLayer::new(Arc::clone(store), config)),
    };
    let app = Router::new()
        .route("/bare/notes", put(bare))
        .merge(keyed_routes)
        .with_state(db);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

static KEYS: AtomicU64 = AtomicU64::new(0);

/// One round: `CONNECTIONS` closed loops on `url` for `seconds`; requests
/// answered 2xx per second. A non-2xx answer stops the bench: it would
/// measure failures.
async fn round(client: &reqwest::Client, url: &str, seconds: u64) -> Result<f64, Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (client, url, stop, done) = (
            client.clone(),
            url.to_owned(),
            Arc::clone(&stop),
            Arc::clone(&done),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = KEYS.fetch_add(1, Ordering::Relaxed);
                let answer = client
                    .put(&url)
                    .header("idempotency-key", format!("load-{n}"))
                    .body(format!(r#"{{"text":"note number {n}","done":false}}"#))
                    .send()
                    .await?;
                if !answer.status().is_success() {
                    return Err(format!("{url}: {}", answer.status()).into());
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), Error>(())
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let counted = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    for task in tasks {
        task.await??;
    }
    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    let rate = counted as f64 / elapsed.as_secs_f64();
    Ok(rate)
}

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates.get(rates.len() / 2).copied().unwrap_or(0.0)
}

/// Alternating rounds on one server; prints and returns (bare, keyed).
/// The store is opened on the server's runtime (`open`): a PostgreSQL
/// connection's task lives on the runtime that made it.
fn compare<F>(name: &str, open: F) -> Result<(f64, f64), Error>
where
    F: Future<Output = Result<Db, Error>>,
{
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let addr = server.block_on(async { serve(open.await?).await })?;
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let seconds = env_number("SYNC_LOADGEN_SECONDS", 3);
    let rounds = env_number("SYNC_LOADGEN_ROUNDS", 3);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONNECTIONS)
        .build()?;
    let (mut bare_rates, mut keyed_rates) = (Vec::new(), Vec::new());
    clients.block_on(async {
        // Warm up: connections open, statements prepared.
        round(&client, &format!("http://{addr}/bare/notes"), 1).await?;
        round(&client, &format!("http://{addr}/keyed/notes"), 1).await?;
        for _ in 0..rounds {
            bare_rates.push(round(&client, &format!("http://{addr}/bare/notes"), seconds).await?);
            keyed_rates.push(round(&client, &format!("http://{addr}/keyed/notes"), seconds).await?);
        }
        Ok::<(), Error>(())
    })?;
    let (bare, keyed) = (median(bare_rates.clone()), median(keyed_rates.clone()));
    println!(
        "loadgen/{name}: bare handler {bare:.0} req/s, through the key {keyed:.0} req/s: \
         {:.2}x (the key costs {:.0}% of the handler's throughput); rounds bare {:?}, keyed {:?}",
        keyed / bare,
        (1.0 - keyed / bare) * 100.0,
        bare_rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
        keyed_rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
    );
    Ok((bare, keyed))
}

fn main() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("server.db");
    compare("sqlite-full", async move {
        let store = SqliteIdempotencyStore::open(path).await?;
        store
            .call(|db| {
                db.execute_batch(
                    "PRAGMA synchronous = FULL; \
                     CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
                )
            })
            .await?;
        Ok(Db::Sqlite(Arc::new(store)))
    })?;
    if let Ok(conn) = std::env::var("SYNC_BENCH_POSTGRES") {
        compare("postgres", async move {
            let store = PostgresIdempotencyStore::connect(&conn, 16)?;
            store.migrate().await?;
            store
                .pool()
                .get()
                .await?
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS loadgen_notes \
                     (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL)",
                )
                .await?;
            Ok(Db::Postgres(Arc::new(store)))
        })?;
    } else {
        println!("loadgen/postgres: SYNC_BENCH_POSTGRES is not set, skipped");
    }
    Ok(())
}
