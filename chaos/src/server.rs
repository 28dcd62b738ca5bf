//! The server of a chaos run: `sync-server` with the transactional form on
//! SQLite (a local run) or PostgreSQL (the harness's two instances), the
//! change feed, and a reader of its tables for the checker.
//!
//! - `PUT /entities/{scope}/{id}` with `{"value": ".."}` under an
//!   `Idempotency-Key`: in the key's transaction, one row in
//!   `chaos_effects` (the op's key: a duplicate effect is two rows), the
//!   entity upserted in `chaos_entities`, and its change in the feed.
//! - `GET /sync/pull`: the feed, for the scopes the request's
//!   `x-chaos-scopes` header names (comma-separated: the harness's stand-in
//!   for an authenticated user's entitlements).
//!
//! [`Options::deliveries`] appends the key of every `PUT` that reaches the
//! server to a file (duplicates delivered); [`Options::broken`] makes the
//! deliberately broken variant the checker must catch: the effect written
//! in a transaction of its own before the key's, as a handler that ignored
//! the layer's transaction would.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use http::StatusCode;
use sync_server::{
    FeedChange, Idempotency, IdempotencyConfig, IdempotencyLayer, PostgresIdempotencyStore,
    PullConfig, PullService, ServerError, SqliteIdempotencyStore, StoredResponse,
};
use tokio::task::JoinHandle;

use crate::history::EntityKey;

/// Where a chaos server keeps its data.
#[derive(Clone, Debug)]
pub enum ServerDb {
    /// A SQLite file (one instance).
    Sqlite(PathBuf),
    /// A PostgreSQL connection string (any number of instances).
    Postgres(String),
}

/// The header a pull names its scopes in.
pub const SCOPES_HEADER: &str = "x-chaos-scopes";

type Error = Box<dyn std::error::Error + Send + Sync>;

/// How a chaos server runs beyond its database.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Append each `PUT`'s `Idempotency-Key` here as it arrives.
    pub deliveries: Option<PathBuf>,
    /// The broken variant: the effect outside the key's transaction.
    pub broken: bool,
}

/// A running chaos server; stopped when dropped.
#[derive(Debug)]
pub struct ChaosServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl ChaosServer {
    /// Where it listens.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ChaosServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
enum Db {
    Sqlite(Arc<SqliteIdempotencyStore>),
    Postgres(Arc<PostgresIdempotencyStore>),
}

#[derive(Clone)]
struct App {
    db: Db,
    broken: bool,
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS chaos_effects (op_key TEXT NOT NULL, \
     scope TEXT NOT NULL, id TEXT NOT NULL, value TEXT NOT NULL);
     CREATE TABLE IF NOT EXISTS chaos_entities (scope TEXT NOT NULL, id TEXT NOT NULL, \
     value TEXT NOT NULL, PRIMARY KEY (scope, id));";

const EFFECT_SQLITE: &str =
    "INSERT INTO chaos_effects (op_key, scope, id, value) VALUES (?1, ?2, ?3, ?4)";
const EFFECT_PG: &str =
    "INSERT INTO chaos_effects (op_key, scope, id, value) VALUES ($1, $2, $3, $4)";
const UPSERT_SQLITE: &str = "INSERT INTO chaos_entities (scope, id, value) VALUES (?1, ?2, ?3) \
     ON CONFLICT (scope, id) DO UPDATE SET value = excluded.value";
const UPSERT_PG: &str = "INSERT INTO chaos_entities (scope, id, value) VALUES ($1, $2, $3) \
     ON CONFLICT (scope, id) DO UPDATE SET value = excluded.value";

/// Starts a server on `listen` (port 0 picks one) over `db`, creating its
/// tables if needed. Must be called within a tokio runtime with I/O and
/// time enabled.
///
/// # Errors
///
/// Opening the store, creating the tables, binding the listener.
pub async fn start(listen: SocketAddr, db: ServerDb) -> Result<ChaosServer, Error> {
    start_with(listen, db, Options::default()).await
}

/// [`start`] with [`Options`].
///
/// # Errors
///
/// As [`start`]; opening the deliveries file.
pub async fn start_with(
    listen: SocketAddr,
    db: ServerDb,
    options: Options,
) -> Result<ChaosServer, Error> {
    let scopes = PullConfig::new(|parts| {
        parts
            .headers
            .get(SCOPES_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    });
    let config = IdempotencyConfig::default().with_lease(std::time::Duration::from_secs(2));
    let (db, layer, pull): (Db, _, Router) = match db {
        ServerDb::Sqlite(path) => {
            let store = Arc::new(SqliteIdempotencyStore::open(path).await?);
            store.call(|c| c.execute_batch(SCHEMA)).await?;
            let layer = IdempotencyLayer::new(Arc::clone(&store), config);
            let pull = Router::new()
                .route_service("/sync/pull", PullService::new(Arc::clone(&store), scopes));
            (Db::Sqlite(store), layer, pull)
        }
        ServerDb::Postgres(conn) => {
            let store = Arc::new(PostgresIdempotencyStore::connect(&conn, 8)?);
            store.migrate().await?;
            store
                .pool()
                .get()
                .await?
                .batch_execute(&format!(
                    "SELECT pg_advisory_lock(77); {SCHEMA} SELECT pg_advisory_unlock(77);"
                ))
                .await?;
            let layer = IdempotencyLayer::new(Arc::clone(&store), config);
            let pull = Router::new()
                .route_service("/sync/pull", PullService::new(Arc::clone(&store), scopes));
            (Db::Postgres(store), layer, pull)
        }
    };
    let api: Router = Router::new()
        .route("/entities/{scope}/{id}", put(apply))
        .layer(layer)
        .with_state(App {
            db,
            broken: options.broken,
        });
    let mut app = api.merge(pull);
    if let Some(path) = options.deliveries {
        let file = Arc::new(std::sync::Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ));
        app = app.layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let file = Arc::clone(&file);
                async move {
                    if request.method() == http::Method::PUT
                        && let Some(key) = request.headers().get("idempotency-key")
                    {
                        let line = format!("{}\n", key.to_str().unwrap_or("?"));
                        let mut file = file
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        // A few bytes to the page cache, one write.
                        let _ = std::io::Write::write_all(&mut *file, line.as_bytes());
                    }
                    next.run(request).await
                }
            },
        ));
    }
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(ChaosServer { addr, task })
}

/// `PUT /entities/{scope}/{id}`: the effect, the entity and its change, in
/// the key's transaction.
async fn apply(
    State(App { db, broken }): State<App>,
    Path((scope, id)): Path<(String, String)>,
    idem: Idempotency,
    body: String,
) -> Result<Response, ServerError> {
    let Some(value) = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["value"].as_str().map(str::to_owned))
    else {
        return Ok(StatusCode::BAD_REQUEST.into_response());
    };
    let key = idem.key().to_owned();
    let change = FeedChange::upsert(
        &scope,
        "entity",
        &id,
        &serde_json::json!({ "value": value }),
    );
    let answer = StoredResponse::new(StatusCode::OK);
    match db {
        Db::Sqlite(store) => {
            store
                .transaction(&idem, move |tx| {
                    tx.execute(
                        EFFECT_SQLITE,
                        sync_server::rusqlite::params![key, scope, id, value],
                    )?;
                    tx.execute(
                        UPSERT_SQLITE,
                        sync_server::rusqlite::params![scope, id, value],
                    )?;
                    SqliteIdempotencyStore::record(tx, &change)?;
                    Ok(answer)
                })
                .await
        }
        Db::Postgres(store) => {
            let pg = |op| move |source| ServerError::Postgres { op, source };
            if broken {
                // The defect under test: the effect commits on its own,
                // before (and apart from) the key's transaction.
                let client = store.pool().get().await.map_err(ServerError::Pool)?;
                client
                    .execute(EFFECT_PG, &[&key, &scope, &id, &value])
                    .await
                    .map_err(pg("insert the effect"))?;
                client
                    .execute(UPSERT_PG, &[&scope, &id, &value])
                    .await
                    .map_err(pg("upsert the entity"))?;
                let effect = store.transaction(&idem).await?;
                effect.record(&change).await?;
                return effect.commit(answer).await;
            }
            let effect = store.transaction(&idem).await?;
            effect
                .client()
                .execute(EFFECT_PG, &[&key, &scope, &id, &value])
                .await
                .map_err(pg("insert the effect"))?;
            effect
                .client()
                .execute(UPSERT_PG, &[&scope, &id, &value])
                .await
                .map_err(pg("upsert the entity"))?;
            effect.record(&change).await?;
            effect.commit(answer).await
        }
    }
}

/// What the server holds at the end of a run, for the checker: one key per
/// effect row (a duplicate effect is there twice), and the entities.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerState {
    /// The op key of every effect row.
    pub effects: Vec<String>,
    /// Every entity's value.
    pub entities: BTreeMap<EntityKey, String>,
}

/// Reads a SQLite chaos server's tables (the server may be stopped).
///
/// # Errors
///
/// SQLite's.
pub fn read_sqlite(path: &std::path::Path) -> Result<ServerState, Error> {
    let db = sync_server::rusqlite::Connection::open(path)?;
    let mut state = ServerState::default();
    let mut effects = db.prepare("SELECT op_key FROM chaos_effects")?;
    for key in effects.query_map([], |r| r.get::<_, String>(0))? {
        state.effects.push(key?);
    }
    let mut entities = db.prepare("SELECT scope, id, value FROM chaos_entities")?;
    let rows = entities.query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))?;
    for row in rows {
        let (key, value): (EntityKey, String) = row?;
        state.entities.insert(key, value);
    }
    Ok(state)
}

/// Reads a PostgreSQL chaos server's tables.
///
/// # Errors
///
/// PostgreSQL's.
pub async fn read_postgres(conn: &str) -> Result<ServerState, Error> {
    let store = PostgresIdempotencyStore::connect(conn, 1)?;
    let client = store.pool().get().await?;
    let mut state = ServerState::default();
    for row in client
        .query("SELECT op_key FROM chaos_effects", &[])
        .await?
    {
        state.effects.push(row.try_get(0)?);
    }
    for row in client
        .query("SELECT scope, id, value FROM chaos_entities", &[])
        .await?
    {
        state
            .entities
            .insert((row.try_get(0)?, row.try_get(1)?), row.try_get(2)?);
    }
    Ok(state)
}
