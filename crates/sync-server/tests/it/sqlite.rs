//! Guards the SQLite store: the contract, the transactional form (effect
//! and response in one commit, rollback on error, fenced after a takeover),
//! keys surviving a reopen, and refusal of foreign or damaged tables.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering::SeqCst};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use http::{Request, StatusCode};
use sync_server::{
    Idempotency, IdempotencyConfig, IdempotencyLayer, IdempotencyStore, KeyExpiry,
    MemoryIdempotencyStore, ServerError, SqliteIdempotencyStore, StoredResponse,
};
use tower_service::Service;

use crate::store_contract;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_and_sqlite_stores_keep_the_contract() -> Result<(), Box<dyn std::error::Error>>
{
    store_contract::check(Arc::new(MemoryIdempotencyStore::default()), "").await?;
    let dir = tempfile::tempdir()?;
    let store = SqliteIdempotencyStore::open(dir.path().join("keys.db")).await?;
    store_contract::check(Arc::new(store), "s").await?;
    Ok(())
}

/// `POST /notes`: inserts the body as a note in the same transaction as the
/// key's response; a body `"fail"` makes the SQL fail, `"invalid"` answers
/// 422 without an effect.
async fn create(
    State(store): State<Arc<SqliteIdempotencyStore>>,
    idem: Idempotency,
    text: String,
) -> Result<Response, ServerError> {
    store
        .transaction(&idem, move |tx| {
            if text == "invalid" {
                return Ok(StoredResponse::json(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &serde_json::json!({"error": "text_invalid"}),
                ));
            }
            tx.execute("INSERT INTO notes (text) VALUES (?1)", [&text])?;
            if text == "busy" {
                // A temporary refusal after writing: not stored, rolled back.
                return Ok(StoredResponse::new(StatusCode::SERVICE_UNAVAILABLE));
            }
            if text == "fail" {
                tx.execute("INSERT INTO no_such_table VALUES (1)", [])?;
            }
            let id = tx.last_insert_rowid();
            Ok(StoredResponse::json(
                StatusCode::CREATED,
                &serde_json::json!({"id": id}),
            ))
        })
        .await
}

async fn notes(store: &SqliteIdempotencyStore) -> Result<i64, ServerError> {
    store
        .call(|db| db.query_row("SELECT count(*) FROM notes", [], |r| r.get(0)))
        .await
}

async fn server(
    path: &std::path::Path,
    clock: &Arc<AtomicI64>,
) -> Result<(Router, Arc<SqliteIdempotencyStore>), ServerError> {
    let store = Arc::new(SqliteIdempotencyStore::open(path).await?);
    store
        .call(|db| {
            db.execute_batch("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT)")
        })
        .await?;
    let clock = Arc::clone(clock);
    let config = IdempotencyConfig::default()
        .with_lease(Duration::from_secs(5))
        .with_clock(move || clock.load(SeqCst));
    let router = Router::new()
        .route("/notes", post(create))
        .layer(IdempotencyLayer::new(Arc::clone(&store), config))
        .with_state(Arc::clone(&store));
    Ok((router, store))
}

async fn post_note(router: &Router, key: &str, text: &str) -> (StatusCode, bool, String) {
    let request = Request::post("/notes")
        .header("idempotency-key", key)
        .body(Body::from(text.to_owned()))
        .unwrap_or_default();
    let Ok(response) = router.clone().call(request).await;
    let replayed = response.headers().contains_key("idempotent-replayed");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    (
        status,
        replayed,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_effect_and_the_response_commit_together_and_survive_a_reopen()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("app.db");
    let clock = Arc::new(AtomicI64::new(1_000_000));
    let (router, store) = server(&path, &clock).await?;
    let (status, replayed, body) = post_note(&router, "op-1", "milk").await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false));
    assert_eq!(body, r#"{"id":1}"#);
    let (status, replayed, again) = post_note(&router, "op-1", "milk").await;
    assert_eq!((status, replayed), (StatusCode::CREATED, true));
    assert_eq!(again, body);
    assert_eq!(notes(&store).await?, 1);
    drop((router, store));

    // A restarted server remembers the key.
    let (router, store) = server(&path, &clock).await?;
    let (_, replayed, after) = post_note(&router, "op-1", "milk").await;
    assert!(replayed);
    assert_eq!(after, body);
    assert_eq!(notes(&store).await?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_transaction_leaves_no_effect_and_the_retry_runs_again()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let clock = Arc::new(AtomicI64::new(1_000_000));
    let (router, store) = server(&dir.path().join("app.db"), &clock).await?;
    let (status, _, _) = post_note(&router, "op-f", "fail").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        notes(&store).await?,
        0,
        "the note was rolled back with the key"
    );
    // The 500 released the key: the same key with a good body is a new
    // request only if the fingerprint matches, so retry the same body.
    let (status, replayed, _) = post_note(&router, "op-f", "fail").await;
    assert_eq!(
        (status, replayed),
        (StatusCode::INTERNAL_SERVER_ERROR, false)
    );
    // A 4xx decided in the transaction is stored and replayed.
    let (status, _, _) = post_note(&router, "op-i", "invalid").await;
    let (again, replayed, _) = post_note(&router, "op-i", "invalid").await;
    assert_eq!(
        (status, again, replayed),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            StatusCode::UNPROCESSABLE_ENTITY,
            true
        )
    );
    assert_eq!(notes(&store).await?, 0);
    // A 503 decided in the transaction: not stored, its effect rolled back,
    // and the retry runs again.
    let (status, _, _) = post_note(&router, "op-b", "busy").await;
    let (again, replayed, _) = post_note(&router, "op-b", "busy").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!((again, replayed), (StatusCode::SERVICE_UNAVAILABLE, false));
    assert_eq!(notes(&store).await?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_whose_key_was_taken_over_is_rolled_back()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = SqliteIdempotencyStore::open(dir.path().join("app.db")).await?;
    store
        .call(|db| db.execute_batch("CREATE TABLE notes (text TEXT)"))
        .await?;
    let print = sync_server::Fingerprint::of("POST", "/notes", b"x");
    let sync_server::Begin::Started(old) = store.begin("", "k", print, 0, 1_000).await? else {
        panic!("a new key must start");
    };
    let sync_server::Begin::Started(_new) = store.begin("", "k", print, 1_000, 1_000).await? else {
        panic!("a key past its lease must be taken over");
    };
    let idem = Idempotency::from_claim(old, KeyExpiry::after(0, 100_000, 100_000));
    let result = store
        .transaction(&idem, |tx| {
            tx.execute("INSERT INTO notes VALUES ('late')", [])?;
            Ok(StoredResponse::new(StatusCode::CREATED))
        })
        .await;
    assert!(
        matches!(result, Err(ServerError::KeyLost { .. })),
        "{result:?}"
    );
    assert!(!idem.is_committed());
    assert_eq!(notes(&store).await?, 0, "the late effect was rolled back");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_schema_versions_and_damaged_rows_are_refused_unchanged()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("app.db");
    let store = SqliteIdempotencyStore::open(&path).await?;
    // A damaged row: a fingerprint of the wrong length.
    store
        .call(|db| {
            db.execute(
                "INSERT INTO sync_idempotency (scope, key, fingerprint, state, token, lease_until_ms, created_at_ms) \
                 VALUES ('', 'bad', x'00', 0, 't', 0, 0)",
                [],
            )
        })
        .await?;
    let print = sync_server::Fingerprint::of("POST", "/notes", b"x");
    let err = store.begin("", "bad", print, 0, 1_000).await;
    assert!(
        matches!(&err, Err(ServerError::CorruptRecord { key, .. }) if key == "bad"),
        "{err:?}"
    );
    // The layer answers 503 for it: never a run without the check.
    let router: Router = Router::new()
        .route("/notes", post(|| async { "ran" }))
        .layer(IdempotencyLayer::new(
            Arc::new(store.clone()),
            IdempotencyConfig::default(),
        ));
    let (status, _, _) = post_note(&router, "bad", "x").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    store
        .call(|db| db.execute("UPDATE sync_idempotency_meta SET value = '99'", []))
        .await?;
    drop(store);
    let before = std::fs::read(&path)?;
    let refused = SqliteIdempotencyStore::open(&path).await;
    assert!(
        matches!(&refused, Err(ServerError::UnknownSchema { found, .. }) if found == "99"),
        "{refused:?}"
    );
    assert_eq!(
        std::fs::read(&path)?,
        before,
        "a refused database is not written to"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_key_table_is_refused_before_anything_is_written()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("foreign.db");
    {
        // Someone else's table of the same name, in rollback-journal mode.
        let db = sync_server::rusqlite::Connection::open(&path)?;
        db.execute_batch("CREATE TABLE sync_idempotency (id INTEGER PRIMARY KEY, v TEXT)")?;
    }
    let before = std::fs::read(&path)?;
    let refused = SqliteIdempotencyStore::open(&path).await;
    assert!(
        matches!(&refused, Err(ServerError::UnknownSchema { found, .. }) if found == "none"),
        "{refused:?}"
    );
    assert_eq!(std::fs::read(&path)?, before, "not written to");
    assert!(
        !dir.path().join("foreign.db-wal").exists(),
        "not switched to WAL"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_open_cut_short_after_the_meta_table_is_finished_on_the_next()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("half.db");
    {
        let db = sync_server::rusqlite::Connection::open(&path)?;
        db.execute_batch(
            "CREATE TABLE sync_idempotency_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        )?;
    }
    let store = SqliteIdempotencyStore::open(&path).await?;
    store_contract::check(Arc::new(store), "half").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_key_table_is_upgraded_and_its_keys_are_remembered()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("v1.db");
    let day = 86_400_000_i64;
    let print = sync_server::Fingerprint::of("POST", "/notes", b"hi");
    {
        // The version 1 schema, exactly as the first release wrote it, with
        // one key completed at day 0 whose response lived a day.
        let db = sync_server::rusqlite::Connection::open(&path)?;
        db.execute_batch(
            "CREATE TABLE sync_idempotency_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE sync_idempotency (
               scope TEXT NOT NULL, key TEXT NOT NULL, fingerprint BLOB NOT NULL,
               state INTEGER NOT NULL, token TEXT, lease_until_ms INTEGER,
               status INTEGER, headers TEXT, body BLOB, expires_at_ms INTEGER,
               created_at_ms INTEGER NOT NULL,
               PRIMARY KEY (scope, key));
             CREATE INDEX sync_idempotency_expiry ON sync_idempotency (expires_at_ms) WHERE state = 1;
             CREATE INDEX sync_idempotency_lease ON sync_idempotency (lease_until_ms) WHERE state = 0;
             INSERT INTO sync_idempotency_meta VALUES ('schema_version', '1');",
        )?;
        db.execute(
            "INSERT INTO sync_idempotency (scope, key, fingerprint, state, status, headers, body, \
             expires_at_ms, created_at_ms) VALUES ('', 'old', ?1, 1, 201, '[]', x'6869', ?2, 0)",
            sync_server::rusqlite::params![print.as_bytes().as_slice(), day],
        )?;
    }
    let store = SqliteIdempotencyStore::open(&path).await?;
    let version: String = store
        .call(|db| {
            db.query_row(
                "SELECT value FROM sync_idempotency_meta WHERE key = 'schema_version'",
                [],
                |row| row.get(0),
            )
        })
        .await?;
    assert_eq!(version, "2");
    // Three days on: the response expired, the key is remembered.
    assert_eq!(
        store.begin("", "old", print, 3 * day, 1_000).await?,
        sync_server::Begin::Remembered { status: 201 }
    );
    // Thirty days from its start, it is forgotten.
    assert!(matches!(
        store.begin("", "old", print, 30 * day, 1_000).await?,
        sync_server::Begin::Started(_)
    ));
    // And the store keeps its whole contract after the upgrade.
    store_contract::check(Arc::new(store), "upgraded").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_commits_unsynced_and_every_effect_after_it_synced()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = SqliteIdempotencyStore::open(dir.path().join("keys.db")).await?;
    let print = sync_server::Fingerprint::of("POST", "/notes", b"hi");
    let begun = store.begin("", "k1", print, 0, 60_000).await?;
    assert!(matches!(begun, sync_server::Begin::Started(_)), "{begun:?}");
    // 2 is FULL: the effect's commit (and the app's SQL) fsyncs again.
    let synchronous: i64 = store
        .call(|db| db.pragma_query_value(None, "synchronous", |row| row.get(0)))
        .await?;
    assert_eq!(synchronous, 2);
    Ok(())
}
