//! A page, its cursor and the app's rows commit together: an app that fails
//! mid-page leaves neither rows nor cursor; a held change and the state
//! survive a reopen.

use std::collections::HashSet;
use std::sync::Arc;

use rusqlite::Connection;
use sync_outbox::download::DownloadTarget;
use sync_outbox::{Operation, Outbox, OutboxConfig, OutboxError};
use sync_protocol::{Change, PullResponse};

use super::{ApplySqliteChanges, SqliteDownload};
use crate::{SqliteOutboxStore, SqliteOutboxStoreConfig};

/// Counts every apply in a table with no key: applying twice shows.
struct Counter {
    fail_on: Option<String>,
}

impl ApplySqliteChanges for Counter {
    fn upsert(
        &mut self,
        db: &Connection,
        c: &Change,
        _s: &serde_json::Value,
    ) -> rusqlite::Result<()> {
        if self.fail_on.as_deref() == Some(c.id.as_str()) {
            return Err(rusqlite::Error::InvalidQuery);
        }
        db.execute(
            "INSERT INTO applied (id, version) VALUES (?1, ?2)",
            (&c.id, c.version),
        )
        .map(drop)
    }
    fn delete(&mut self, db: &Connection, c: &Change) -> rusqlite::Result<()> {
        db.execute(
            "INSERT INTO applied (id, version) VALUES (?1, -?2)",
            (&c.id, c.version),
        )
        .map(drop)
    }
    fn reset(&mut self, _db: &Connection, _keep: &HashSet<String>) -> rusqlite::Result<()> {
        Ok(())
    }
    fn forget(&mut self, _db: &Connection, _key: &str) -> rusqlite::Result<()> {
        Ok(())
    }
}

fn page(json: &str) -> Result<PullResponse, serde_json::Error> {
    serde_json::from_str(json)
}

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[test]
fn a_failed_apply_leaves_neither_rows_nor_cursor() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteOutboxStore::open(SqliteOutboxStoreConfig::new(
        dir.path().join("app.db"),
    ))?);
    let outbox = Arc::new(Outbox::new(OutboxConfig::default(), store.clone()));
    store.with_transaction(&outbox, |tx| -> Result<(), Box<dyn std::error::Error>> {
        tx.execute_batch("CREATE TABLE applied (id TEXT, version INTEGER)")?;
        Ok(())
    })?;
    let download = SqliteDownload::new(
        store.clone(),
        outbox.clone(),
        Counter {
            fail_on: Some("b".into()),
        },
    );
    let two = page(
        r#"{"changes":[{"scope":"u","entity":"note","id":"a","version":1,"op":"upsert","state":{}},
            {"scope":"u","entity":"note","id":"b","version":2,"op":"upsert","state":{}}],
            "cursor":"c1","more":false,"covers_below":3,"snapshot":true}"#,
    )?;
    assert!(matches!(
        download.commit_page(&two),
        Err(OutboxError::Apply { .. })
    ));
    let rows: i64 = store
        .app_connection()
        .query_row("SELECT count(*) FROM applied", [], |r| r.get(0))?;
    assert_eq!(rows, 0, "a was rolled back with b");
    assert_eq!(download.state()?.cursor, None);
    Ok(())
}

#[test]
fn held_changes_and_the_cursor_survive_a_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("app.db");
    {
        let store = Arc::new(SqliteOutboxStore::open(SqliteOutboxStoreConfig::new(
            &path,
        ))?);
        let outbox = Arc::new(Outbox::new(OutboxConfig::default(), store.clone()));
        store.with_transaction(&outbox, |tx| -> Result<(), Box<dyn std::error::Error>> {
            tx.execute_batch("CREATE TABLE applied (id TEXT, version INTEGER)")?;
            tx.enqueue(
                Operation {
                    ordering_key: Some("note/a".into()),
                    ..Operation::new("note.edit", "/notes/a", "{}")
                },
                0,
            )?;
            Ok(())
        })?;
        let download = SqliteDownload::new(store.clone(), outbox, Counter { fail_on: None });
        let done = download.commit_page(&page(
            r#"{"changes":[{"scope":"u","entity":"note","id":"a","version":5,"op":"delete"}],
                "cursor":"c9","more":false,"covers_below":6,"snapshot":false}"#,
        )?)?;
        assert_eq!((done.applied, done.held), (0, 1), "a has a pending edit");
    }
    let state = SqliteOutboxStore::download_state_read_only(&path)?;
    assert_eq!(state.cursor.as_deref(), Some("c9"));
    assert_eq!((state.covers_below, state.last_version), (6, 5));
    assert_eq!(state.held.len(), 1);
    assert_eq!(state.held[0].ordering_key, "note/a");
    Ok(())
}
