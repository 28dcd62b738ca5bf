//! Guards the schema upgrade: a database written by schema version 1 (no
//! `ordering`, `idempotency_key`, `replaced_keys` columns) is read as it is
//! by `load_read_only`, upgraded in place by `open`, and its operations keep
//! every field, with the new ones at their defaults.

use sync_outbox::{Operation, OperationStatus, OrderingMode, OutboxStore};
use sync_store_sqlite::SqliteOutboxStore;

use crate::{TestResult, open};

/// The tables as schema version 1 created them, with one failed operation.
const VERSION_1: &str = "
CREATE TABLE sync_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE sync_outbox (
    id TEXT PRIMARY KEY NOT NULL, kind TEXT NOT NULL, target TEXT NOT NULL,
    payload TEXT NOT NULL, status TEXT NOT NULL, attempt INTEGER NOT NULL,
    next_retry_at_ms INTEGER NOT NULL, last_error TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL,
    ordering_key TEXT, coalesce_key TEXT, owner TEXT NOT NULL, seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sync_outbox_due ON sync_outbox (status, next_retry_at_ms, seq);
INSERT INTO sync_meta VALUES ('schema_version', '1');
INSERT INTO sync_outbox VALUES ('op_1', 'note.create', '/notes', '{}', 'failed', 1, 5,
    'HTTP 422', 1, 2, 'note-1', NULL, 'app', 7);
";

fn version_1_operation() -> Operation {
    Operation {
        id: "op_1".into(),
        status: OperationStatus::Failed,
        attempt: 1,
        next_retry_at_ms: 5,
        last_error: "HTTP 422".into(),
        created_at_ms: 1,
        updated_at_ms: 2,
        ordering_key: Some("note-1".into()),
        owner: "app".into(),
        seq: 7,
        ..Operation::new("note.create", "/notes", "{}")
    }
}

#[test]
fn a_version_1_database_is_read_then_upgraded_in_place() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("app.db");
    rusqlite::Connection::open(&path)?.execute_batch(VERSION_1)?;

    let read = SqliteOutboxStore::load_read_only(&path)?;
    assert_eq!(read.load_all()?, [version_1_operation()]);

    let store = open(&path)?;
    assert_eq!(store.load_all()?, [version_1_operation()]);
    let mut corrected = version_1_operation();
    corrected.ordering = Some(OrderingMode::StopOnFailure);
    corrected.idempotency_key = "op_1.1".into();
    corrected.replaced_keys = vec!["op_1".into()];
    store.put(&corrected)?;
    drop(store);

    let version: String = rusqlite::Connection::open(&path)?.query_row(
        "SELECT value FROM sync_meta WHERE key = 'schema_version'",
        [],
        |row| row.get(0),
    )?;
    assert_eq!(version, "2");
    assert_eq!(open(&path)?.load_all()?, [corrected]);
    Ok(())
}
