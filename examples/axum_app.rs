//! An async app end to end, in one program on tokio:
//! - **the app**: an axum server whose `POST /notes` handler enqueues an
//!   operation through `AsyncOutbox` (its fsync runs on the blocking pool)
//!   and answers `202` at once, network or not;
//! - **the engine**: an `AsyncSyncEngine` sending from a WAL store in
//!   `./build/axum-app` through `AsyncHttpTransport`, with a bearer token
//!   from an `AuthProvider`;
//! - **the upstream**: another axum server that wants a fresh token (the
//!   app starts with a stale one, refreshed on the first `401`), answers the
//!   first two good requests `503`, then applies each `Idempotency-Key` once.
//!
//! A client posts three notes to the app; the program prints who did what
//! and exits once the upstream has all three. With `SYNC_SERVER_URL` set, the
//! engine sends to that server instead, such as the `server` example.
//!
//! ```text
//! cargo run --example axum_app
//! ```

#![expect(
    clippy::print_stdout,
    reason = "an example prints for the person running it"
)]

use std::collections::HashSet;
use std::error::Error;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use sync::prelude::*;

type BoxError = Box<dyn Error + Send + Sync>;

/// The upstream accepts only this token.
const FRESH_TOKEN: &str = "fresh-token";

/// A bearer token the app caches and renews when the upstream refuses it.
struct TokenProvider {
    token: Mutex<String>,
}

impl AuthProvider for TokenProvider {
    fn headers(&self) -> Result<Vec<(String, String)>, BoxError> {
        let token = self.token.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(vec![("Authorization".into(), format!("Bearer {token}"))])
    }

    fn refresh(&self) -> Result<(), BoxError> {
        // A real app calls its token endpoint here (this runs on tokio's
        // blocking pool, so a blocking call is fine).
        *self.token.lock().unwrap_or_else(PoisonError::into_inner) = FRESH_TOKEN.into();
        println!("[auth] upstream said 401: token refreshed");
        Ok(())
    }
}

/// The upstream's state: how many good requests it turned away, and the keys
/// it applied.
#[derive(Default)]
struct Upstream {
    turned_away: AtomicUsize,
    applied: Mutex<HashSet<String>>,
}

async fn upstream_notes(State(upstream): State<Arc<Upstream>>, headers: HeaderMap) -> StatusCode {
    let token_ok = headers
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == format!("Bearer {FRESH_TOKEN}").as_bytes());
    if !token_ok {
        println!("[upstream] 401: stale token");
        return StatusCode::UNAUTHORIZED;
    }
    if upstream
        .turned_away
        .fetch_update(SeqCst, SeqCst, |n| (n < 2).then_some(n + 1))
        .is_ok()
    {
        println!("[upstream] 503: busy, try again");
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let first_time = upstream
        .applied
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key.clone());
    println!(
        "[upstream] 201: {key} {}",
        if first_time {
            "applied"
        } else {
            "already applied"
        }
    );
    StatusCode::CREATED
}

/// The app's handler: persist the operation, answer at once.
async fn app_notes(State(queue): State<AsyncOutbox>, body: String) -> (StatusCode, String) {
    let op = Operation::new("note.create", "/notes", body);
    match queue.enqueue(op).await {
        Ok(id) => (StatusCode::ACCEPTED, id),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Serves `app` on an ephemeral port of 127.0.0.1; returns its base URL.
async fn serve(app: Router) -> Result<String, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

async fn run() -> Result<(), BoxError> {
    let upstream = Arc::new(Upstream::default());
    // SYNC_SERVER_URL points the engine at a real server instead (the
    // `server` example, which applies each key once).
    let upstream_url = match std::env::var("SYNC_SERVER_URL") {
        Ok(url) => url,
        Err(_) => {
            serve(
                Router::new()
                    .route("/notes", post(upstream_notes))
                    .with_state(Arc::clone(&upstream)),
            )
            .await?
        }
    };

    // The store: a WAL under ./build, synced before every Ok (the default).
    let dir = std::path::Path::new("build").join("axum-app");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let store = Arc::new(WalOutboxStore::open(WalOutboxStoreConfig::new(&dir))?);
    let retry = RetryPolicy {
        base_delay: std::time::Duration::from_millis(200),
        ..RetryPolicy::default()
    };
    let outbox = Arc::new(Outbox::new(
        OutboxConfig {
            retry,
            ..OutboxConfig::default()
        },
        store.clone(),
    ));
    let transport = AsyncHttpTransport::new(HttpTransportConfig {
        base_url: upstream_url,
        timeout: Duration::from_secs(5),
        ..HttpTransportConfig::default()
    })?
    .with_auth(Arc::new(TokenProvider {
        token: Mutex::new("stale-token".into()),
    }));
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    let engine = AsyncSyncEngine::new(
        SyncEngineConfig::default(),
        outbox.clone(),
        probe,
        Arc::new(transport),
    );
    engine.start().await?;
    println!("[engine] started");

    let queue = AsyncOutbox::new(outbox);
    let app_url = serve(
        Router::new()
            .route("/notes", post(app_notes))
            .with_state(queue.clone()),
    )
    .await?;

    let client = reqwest::Client::new();
    for text in ["buy milk", "call Ada", "water the plants"] {
        let started = Instant::now();
        let response = client
            .post(format!("{app_url}/notes"))
            .body(format!(r#"{{"text":"{text}"}}"#))
            .send()
            .await?;
        let status = response.status();
        let id = response.text().await?;
        println!(
            "[app] POST /notes {text:?}: {status} in {:.1?}, queued as {id}",
            started.elapsed()
        );
    }

    let started = Instant::now();
    loop {
        let stats = queue.stats().await?;
        if stats.done == 3 {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(format!("not delivered within 60 s: {stats:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    engine.stop().await?;
    let applied = match std::env::var("SYNC_SERVER_URL") {
        Ok(url) => format!("{url} applied them"),
        Err(_) => format!(
            "upstream applied {}",
            upstream
                .applied
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len()
        ),
    };
    let sent = engine.stats();
    println!(
        "[app] all 3 notes delivered in {:.1?}: {} sends, {} retried, {applied}",
        started.elapsed(),
        sent.sent,
        sent.retried
    );
    Ok(())
}

fn main() -> Result<(), BoxError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}
