//! The receiving half: an axum server that applies each operation once,
//! however often a client sends it. Notes and messages are written in the
//! same SQLite transaction as their `Idempotency-Key`'s response
//! (`./build/sync-server/server.db`), so a crash either applied a request
//! and remembers it, or did neither. It serves single requests and the
//! client's batch format (`POST /sync/batch`). Each row's change is recorded
//! in the change feed in the same transaction, and devices download it from
//! `GET /sync/pull`. `PUT /notes/{id}` and `DELETE /notes/{id}` keep notes
//! named by the device (the last write wins), as `two_devices` edits them.
//!
//! ```text
//! cargo run --example server                      # listens on 127.0.0.1:8080
//! SYNC_SERVER_URL=http://127.0.0.1:8080 cargo run --example http_sync
//! SYNC_SERVER_URL=http://127.0.0.1:8080 cargo run --example axum_app
//! cargo run --example two_devices                 # starts this server in-process
//! cargo run --example server -- --self-test       # sends itself a duplicate, then exits
//! ```
//!
//! `GET /metrics` is the process's metrics in Prometheus's text format
//! (`metrics-exporter-prometheus` as the `metrics` recorder): the layer's
//! requests by outcome, handler time and pulls served, and the client
//! engine's numbers when one runs in the same process (`docs/metrics.md`).
//!
//! `SYNC_SERVER_ADDR` changes the address. Keys and the feed are scoped by
//! the `Authorization` header (standing in for the user an auth layer would
//! find), so two users' keys never meet and neither pulls the other's rows.

#![expect(
    clippy::print_stdout,
    reason = "an example prints for the person running it"
)]

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post, put};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sync::server::{
    BatchService, FeedChange, Idempotency, IdempotencyConfig, IdempotencyLayer, PullConfig,
    PullService, ServerError, SqliteIdempotencyStore, StoredResponse,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `POST /notes` and `POST /api/messages`: stores the body as a row of
/// `table`, its change in the feed (in the caller's scope), and the key's
/// `201` with the row's id, in one transaction. The answer carries
/// `sync-version`: a device knows its note is in what it downloaded once a
/// pull covers that version.
async fn store_row(
    store: &SqliteIdempotencyStore,
    idem: &Idempotency,
    table: &'static str,
    body: String,
) -> Result<Response, ServerError> {
    let key = idem.key().to_owned();
    let scope = idem.scope().to_owned();
    store
        .transaction(idem, move |tx| {
            if serde_json::from_str::<serde_json::Value>(&body).is_err() {
                // Refused, stored and replayed like any answer: no effect.
                return Ok(StoredResponse::json(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &serde_json::json!({ "error": "body_not_json" }),
                ));
            }
            tx.execute(
                &format!("INSERT INTO {table} (op_key, body) VALUES (?1, ?2)"),
                [&key, &body],
            )?;
            let id = tx.last_insert_rowid();
            let state: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let entity = table.trim_end_matches('s');
            SqliteIdempotencyStore::record(
                tx,
                &FeedChange::upsert(&scope, entity, &id.to_string(), &state),
            )?;
            println!("[server] {table} #{id} applied for key {key}");
            Ok(
                StoredResponse::json(StatusCode::CREATED, &serde_json::json!({ "id": id }))
                    .with_header("location", &format!("/{table}/{id}")),
            )
        })
        .await
}

async fn notes(
    State(store): State<Arc<SqliteIdempotencyStore>>,
    idem: Idempotency,
    body: String,
) -> Result<Response, ServerError> {
    store_row(&store, &idem, "notes", body).await
}

async fn messages(
    State(store): State<Arc<SqliteIdempotencyStore>>,
    idem: Idempotency,
    body: String,
) -> Result<Response, ServerError> {
    store_row(&store, &idem, "messages", body).await
}

/// `PUT /notes/{id}` (a note's whole state, the last write wins) and
/// `DELETE /notes/{id}`: the row and its change in the feed, in the key's
/// transaction; the answer's `sync-version` names the change.
async fn named_note(
    store: &SqliteIdempotencyStore,
    idem: &Idempotency,
    id: String,
    body: Option<String>,
) -> Result<Response, ServerError> {
    let scope = idem.scope().to_owned();
    store
        .transaction(idem, move |tx| {
            let change = if let Some(body) = &body {
                let Ok(state) = serde_json::from_str::<serde_json::Value>(body) else {
                    return Ok(StoredResponse::json(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        &serde_json::json!({ "error": "body_not_json" }),
                    ));
                };
                tx.execute(
                    "INSERT INTO named_notes (id, body) VALUES (?1, ?2)
                     ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                    [&id, body],
                )?;
                println!("[server] note {id} = {body}");
                FeedChange::upsert(&scope, "note", &id, &state)
            } else {
                tx.execute("DELETE FROM named_notes WHERE id = ?1", [&id])?;
                println!("[server] note {id} deleted");
                FeedChange::delete(&scope, "note", &id)
            };
            SqliteIdempotencyStore::record(tx, &change)?;
            Ok(StoredResponse::json(
                StatusCode::OK,
                &serde_json::json!({ "id": id }),
            ))
        })
        .await
}

async fn put_note(
    State(store): State<Arc<SqliteIdempotencyStore>>,
    Path(id): Path<String>,
    idem: Idempotency,
    body: String,
) -> Result<Response, ServerError> {
    named_note(&store, &idem, id, Some(body)).await
}

async fn delete_note(
    State(store): State<Arc<SqliteIdempotencyStore>>,
    Path(id): Path<String>,
    idem: Idempotency,
) -> Result<Response, ServerError> {
    named_note(&store, &idem, id, None).await
}

/// The caller's scope: its `Authorization` header.
fn caller(parts: &axum::http::request::Parts) -> String {
    parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// The process's Prometheus recorder: installed by the first caller, shared
/// by every later one (a process has one global recorder).
pub(crate) fn prometheus() -> Result<PrometheusHandle, BoxError> {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new().install_recorder()?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// The whole app: the layer on the API routes, the batch and pull
/// endpoints beside, and `/metrics`.
pub(crate) async fn app(db: &std::path::Path) -> Result<Router, BoxError> {
    let store = Arc::new(SqliteIdempotencyStore::open(db).await?);
    store
        .call(|c| {
            c.execute_batch(
                "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, op_key TEXT, body TEXT);
                 CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, op_key TEXT, body TEXT);
                 CREATE TABLE IF NOT EXISTS named_notes (id TEXT PRIMARY KEY, body TEXT);",
            )
        })
        .await?;
    let config = IdempotencyConfig::default().with_scope(caller);
    // A caller reads its own scope; a real app reads its auth layer's user.
    let pull = PullService::new(
        Arc::clone(&store),
        PullConfig::new(|parts| vec![caller(parts)]),
    );
    let api: Router = Router::new()
        .route("/notes", post(notes))
        .route("/notes/{id}", put(put_note).delete(delete_note))
        .route("/api/messages", post(messages))
        .layer(IdempotencyLayer::new(Arc::clone(&store), config))
        .with_state(store);
    let metrics = prometheus()?;
    Ok(Router::new()
        .route_service("/sync/batch", BatchService::new(api.clone()))
        .route_service("/sync/pull", pull)
        .route("/metrics", get(move || async move { metrics.render() }))
        .merge(api))
}

/// Posts one note three times under one key (a resend after a lost
/// answer): applied once, replayed twice. Then downloads the feed as a new
/// device would: the note once, and the version its answer carried covered.
async fn self_test(url: &str) -> Result<(), BoxError> {
    let client = reqwest::Client::new();
    let mut version = None;
    for attempt in 1..=3 {
        let response = client
            .post(format!("{url}/notes"))
            .header("authorization", "alice")
            .header("idempotency-key", "self-test-note-1")
            .body(r#"{"text":"buy milk"}"#)
            .send()
            .await?;
        let replayed = response.headers().contains_key("idempotent-replayed");
        version = response
            .headers()
            .get(sync::protocol::SYNC_VERSION)
            .and_then(|v| v.to_str().ok()?.parse::<i64>().ok());
        println!(
            "[client] attempt {attempt}: {} {}{}",
            response.status(),
            response.text().await?,
            if replayed { " (replayed)" } else { "" }
        );
    }
    let page: sync::protocol::PullResponse = serde_json::from_str(
        &client
            .get(format!("{url}/sync/pull"))
            .header("authorization", "alice")
            .send()
            .await?
            .text()
            .await?,
    )?;
    for change in &page.changes {
        println!(
            "[device] pulled {} {} at version {}: {:?}",
            change.entity, change.id, change.version, change.op
        );
    }
    let covered = version.is_some_and(|v| page.covers(v));
    println!(
        "[device] {} change(s), more: {}, our note's version {version:?} covered: {covered}",
        page.changes.len(),
        page.more
    );
    if page.changes.len() != 1 || !covered {
        return Err("the feed did not bring the note back once".into());
    }
    Ok(())
}

async fn run() -> Result<(), BoxError> {
    let self_testing = std::env::args().any(|a| a == "--self-test");
    let dir = std::path::Path::new("build").join("sync-server");
    if self_testing && dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let app = app(&dir.join("server.db")).await?;
    let addr = if self_testing {
        "127.0.0.1:0".to_owned()
    } else {
        std::env::var("SYNC_SERVER_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".into())
    };
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let url = format!("http://{}", listener.local_addr()?);
    println!(
        "[server] listening on {url}, keys and rows in {}",
        dir.display()
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    if self_testing {
        self_test(&url).await?;
        server.abort();
        return Ok(());
    }
    server.await??;
    Ok(())
}

fn main() -> Result<(), BoxError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}
