//! The change feed on SQLite: the contract (refusals, the model against any
//! sequence of writes, compactions and pulls), a cursor from a database
//! later restored from a backup, the version on an operation's answer, a
//! rolled-back effect leaving no change, and a feed table of an unknown
//! version refused untouched.

use std::sync::Arc;

use axum::body::Body;
use axum::routing::post;
use axum::{Router, extract::State};
use http::Request;
use proptest::prelude::*;
use sync_protocol::{PullErrorCode, RestartReason, SYNC_VERSION};
use sync_server::{
    FeedChange, Idempotency, IdempotencyConfig, IdempotencyLayer, ServerError,
    SqliteIdempotencyStore, StoredResponse,
};
use tower_service::Service;

use crate::feed_contract::{self, Backend, Error, Pulled};

/// A SQLite store in a temp dir.
pub(crate) struct Sqlite {
    pub(crate) store: Arc<SqliteIdempotencyStore>,
    pub(crate) dir: tempfile::TempDir,
}

impl Sqlite {
    pub(crate) async fn new() -> Result<Self, Error> {
        let dir = tempfile::tempdir()?;
        let store = Arc::new(SqliteIdempotencyStore::open(dir.path().join("server.db")).await?);
        Ok(Self { store, dir })
    }
}

impl Backend for Sqlite {
    type Feed = SqliteIdempotencyStore;

    fn feed(&self) -> Arc<SqliteIdempotencyStore> {
        Arc::clone(&self.store)
    }

    async fn record(&self, changes: Vec<FeedChange>) -> Result<Vec<i64>, Error> {
        Ok(self
            .store
            .call(move |db| {
                let tx = db.transaction()?;
                let versions = changes
                    .iter()
                    .map(|c| SqliteIdempotencyStore::record(&tx, c))
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                tx.commit()?;
                Ok(versions)
            })
            .await?)
    }
}

use sync_server::rusqlite;

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

#[test]
fn every_refusal_is_typed_and_reveals_nothing() -> Result<(), Error> {
    runtime()?.block_on(async {
        let (a, b) = (Sqlite::new().await?, Sqlite::new().await?);
        feed_contract::check_refusals(&a, &b).await
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Every reader that pulls until done holds the server's final state
    /// of its scopes and nothing of another's, whatever came between:
    /// writes of several changes in one transaction, compactions (and the
    /// restarts they force), pulls of any limit, pages cut by size.
    #[test]
    fn readers_end_with_the_servers_state_of_their_scopes(
        ops in prop::collection::vec(feed_contract::op(), 1..60),
        small_pages in any::<bool>(),
    ) {
        let result = runtime().and_then(|rt| rt.block_on(async {
            let backend = Sqlite::new().await?;
            feed_contract::check_model(&backend, &ops, if small_pages { 20 } else { 1 << 20 }).await
        }));
        prop_assert!(result.is_ok(), "{:?}", result.err());
    }
}

/// A device that pulled from the live database, then meets the database
/// restored from an earlier backup: its cursor is ahead of the feed, and it
/// is told to start again rather than trust a history that changed.
#[test]
fn a_cursor_ahead_of_a_restored_database_starts_again() -> Result<(), Error> {
    runtime()?.block_on(async {
        let live = Sqlite::new().await?;
        live.record(vec![FeedChange::upsert("alice", "note", "1", &1)])
            .await?;
        let backup = live.dir.path().join("backup.db");
        let to = backup.to_str().ok_or("temp path")?.to_owned();
        live.store
            .call(move |db| db.execute("VACUUM INTO ?1", [to]))
            .await?;
        live.record(vec![FeedChange::upsert("alice", "note", "2", &2)])
            .await?;
        let mut on_live = feed_contract::service(live.feed(), 1 << 20);
        let Pulled::Page(page) = feed_contract::pull(&mut on_live, "alice", "").await? else {
            return Err("the live pull was refused".into());
        };
        let restored = Arc::new(SqliteIdempotencyStore::open(&backup).await?);
        let mut on_restored = feed_contract::service(restored, 1 << 20);
        match feed_contract::pull(
            &mut on_restored,
            "alice",
            &format!("cursor={}", page.cursor),
        )
        .await?
        {
            Pulled::Refused(410, e)
                if e.error == PullErrorCode::Restart
                    && e.reason == Some(RestartReason::CursorAhead) => {}
            other => return Err(format!("a cursor ahead: {other:?}").into()),
        }
        Ok(())
    })
}

async fn create(
    State(store): State<Arc<SqliteIdempotencyStore>>,
    idem: Idempotency,
    body: String,
) -> Result<axum::response::Response, ServerError> {
    store
        .transaction(&idem, move |tx| {
            tx.execute("INSERT INTO notes (text) VALUES (?1)", [&body])?;
            if body == "fail" {
                // Recorded, then the handler fails: neither may stay.
                SqliteIdempotencyStore::record(
                    tx,
                    &FeedChange::upsert("alice", "note", "bad", &body),
                )?;
                return Err(rusqlite::Error::InvalidQuery);
            }
            if body != "quiet" {
                SqliteIdempotencyStore::record(
                    tx,
                    &FeedChange::upsert("alice", "note", &body, &body),
                )?;
            }
            Ok(StoredResponse::new(http::StatusCode::CREATED))
        })
        .await
}

/// The transactional form's answer says the version its changes committed
/// at (and its replay says the same); a pull covering that version has
/// them; an answer that recorded nothing has no version; a failed handler
/// leaves neither its row nor its change.
#[test]
fn an_operations_answer_carries_the_version_a_pull_covers() -> Result<(), Error> {
    runtime()?.block_on(async {
        let backend = Sqlite::new().await?;
        let store = backend.feed();
        store
            .call(|db| db.execute_batch("CREATE TABLE notes (text TEXT)"))
            .await?;
        let mut app: Router = Router::new()
            .route("/notes", post(create))
            .layer(IdempotencyLayer::new(
                store.clone(),
                IdempotencyConfig::default(),
            ))
            .with_state(store.clone());
        let send = |key: &str, body: &str| {
            Request::post("/notes")
                .header("idempotency-key", key)
                .body(Body::from(body.to_owned()))
        };
        let first = app.call(send("k1", "one")?).await?;
        let version: i64 = first.headers()[SYNC_VERSION].to_str()?.parse()?;
        let replay = app.call(send("k1", "one")?).await?;
        if replay.headers().get(SYNC_VERSION) != first.headers().get(SYNC_VERSION) {
            return Err("the replay lost the version".into());
        }
        let quiet = app.call(send("k2", "quiet")?).await?;
        if quiet.status() != 201 || quiet.headers().get(SYNC_VERSION).is_some() {
            return Err("an answer that recorded nothing has a version".into());
        }
        let failed = app.call(send("k3", "fail")?).await?;
        if failed.status() != 500 {
            return Err(format!("a failed handler answered {}", failed.status()).into());
        }
        let mut pulls = feed_contract::service(store.clone(), 1 << 20);
        let Pulled::Page(page) = feed_contract::pull(&mut pulls, "alice", "").await? else {
            return Err("refused".into());
        };
        if !page.covers(version) || page.changes.len() != 1 || page.changes[0].id != "one" {
            return Err(format!("the pull after the operation: {page:?}").into());
        }
        let notes: i64 = store
            .call(|db| db.query_row("SELECT count(*) FROM notes", [], |r| r.get(0)))
            .await?;
        if notes != 2 {
            return Err(format!("{notes} notes: the failed effect stayed").into());
        }
        Ok(())
    })
}

/// A database whose feed tables are of a version this build does not know
/// is refused, and they are left as they were.
#[test]
fn a_feed_of_an_unknown_version_is_refused_untouched() -> Result<(), Error> {
    runtime()?.block_on(async {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("server.db");
        drop(SqliteIdempotencyStore::open(&path).await?);
        let db = rusqlite::Connection::open(&path)?;
        db.execute(
            "UPDATE sync_feed_meta SET value = '99' WHERE key = 'schema_version'",
            [],
        )?;
        drop(db);
        match SqliteIdempotencyStore::open(&path).await {
            Err(ServerError::UnknownSchema { table, found, .. })
                if table == "sync_feed" && found == "99" => {}
            other => return Err(format!("an unknown feed version: {other:?}").into()),
        }
        let db = rusqlite::Connection::open(&path)?;
        let version: String = db.query_row(
            "SELECT value FROM sync_feed_meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )?;
        if version != "99" {
            return Err("the refused feed was written to".into());
        }
        Ok(())
    })
}
