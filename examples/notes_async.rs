//! The stack most apps have, async end to end: notes in the app's own
//! SQLite database, each note and its operation committed in one
//! transaction from async code (`with_transaction_async`, off the
//! runtime's threads), and `AsyncSyncEngine` sending them through
//! `AsyncHttpTransport`. The server is the receiving half in this process
//! (`sync-server` on axum, applying each key once); `SYNC_SERVER_URL` sends
//! to another one instead, such as the `server` example.
//!
//! ```text
//! cargo run --example notes_async
//! ```

#![expect(
    clippy::print_stdout,
    reason = "an example prints for the person running it"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::routing::post;
use sync::prelude::*;
use sync::server::{IdempotencyConfig, IdempotencyLayer, MemoryIdempotencyStore};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The receiving half, in this process: each key applied once.
async fn start_server() -> Result<(String, Arc<AtomicUsize>), BoxError> {
    let applied = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&applied);
    let app: Router = Router::new()
        .route(
            "/notes",
            post(move |body: String| async move {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                println!("[server] note #{n} applied: {body}");
                (axum::http::StatusCode::CREATED, format!("{{\"id\":{n}}}"))
            }),
        )
        .layer(IdempotencyLayer::new(
            Arc::new(MemoryIdempotencyStore::default()),
            IdempotencyConfig::default(),
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, applied))
}

async fn run() -> Result<(), BoxError> {
    let (base_url, applied) = match std::env::var("SYNC_SERVER_URL") {
        Ok(url) => (url, Arc::new(AtomicUsize::new(0))),
        Err(_) => start_server().await?,
    };
    let dir = std::path::Path::new("build").join("notes-async");
    std::fs::create_dir_all(&dir)?;

    // The app's database holds its notes and the outbox.
    let store = Arc::new(SqliteOutboxStore::open(SqliteOutboxStoreConfig::new(
        dir.join("app.db"),
    ))?);
    let outbox = Arc::new(Outbox::new(OutboxConfig::default(), store.clone()));
    let engine = AsyncSyncEngine::started(
        SyncEngineConfig::default(),
        Arc::clone(&outbox),
        Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true)),
        Arc::new(AsyncHttpTransport::new(HttpTransportConfig {
            base_url,
            ..HttpTransportConfig::default()
        })?),
    )
    .await?;

    // A handler's work: the note row and its operation in one commit.
    for text in ["buy milk", "call mum", "water the plants"] {
        let id = store
            .with_transaction_async(Arc::clone(&outbox), move |tx| -> Result<String, BoxError> {
                tx.execute_batch(
                    "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT)",
                )?;
                tx.execute("INSERT INTO notes (text) VALUES (?1)", [text])?;
                let payload = serde_json::json!({ "text": text }).to_string();
                Ok(tx.enqueue_now(Operation::new("note.create", "/notes", payload))?)
            })
            .await?;
        println!("[app] saved {text:?} with its operation {id}");
    }

    // Until everything is synced (the engine wakes on each commit).
    let mut stats = AsyncOutbox::new(Arc::clone(&outbox)).watch_stats().await?;
    while stats.current().unsent() > 0 {
        if stats.changed().await.is_none() {
            break;
        }
    }
    engine.stop().await?;
    let now = stats.current();
    println!(
        "[app] {} done, {} unsent, {} failed; the server applied {} notes",
        now.done,
        now.unsent(),
        now.failed,
        applied.load(Ordering::SeqCst)
    );
    Ok(())
}

fn main() -> Result<(), BoxError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}
