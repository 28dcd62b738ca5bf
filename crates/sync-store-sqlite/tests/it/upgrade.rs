//! Guards the schema upgrades: a database written by schema version 1 (no
//! `ordering`, `idempotency_key`, `replaced_keys` columns), 2 (no counts
//! table), 3 (no `first_sent_at_ms`, `unanswered_sends`) or 4 (no
//! `server_version`, no download tables) is read as it is
//! by `load_read_only`, upgraded in place by `open`, and its operations keep
//! every field, with the new ones at their defaults (a sent operation's
//! resend window starting at its last change, the same in both reads); the
//! counts start from what the table holds and follow every later write, the
//! app's own SQL included.

use sync_outbox::{Operation, OperationStatus, OrderingMode, OutboxStats, OutboxStore};
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
        // Sent once: its window starts at its last change.
        first_sent_at_ms: Some(2),
        ..Operation::new("note.create", "/notes", "{}")
    }
}

/// What version 2 adds to [`VERSION_1`], with a pending operation never sent.
const TO_VERSION_2: &str = "
ALTER TABLE sync_outbox ADD COLUMN ordering TEXT;
ALTER TABLE sync_outbox ADD COLUMN idempotency_key TEXT NOT NULL DEFAULT '';
ALTER TABLE sync_outbox ADD COLUMN replaced_keys TEXT NOT NULL DEFAULT '';
INSERT INTO sync_outbox VALUES ('op_2', 'note.edit', '/notes/1', '{}', 'pending', 0, 9,
    '', 4, 4, 'note-1', NULL, 'app', 8, NULL, '', '');
";

/// What version 3 adds to version 2, as the third release wrote it: the
/// counts table and its triggers, and the pending-age index.
const TO_VERSION_3: &str = "
CREATE TABLE sync_counts (status TEXT PRIMARY KEY NOT NULL, n INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO sync_counts (status, n) VALUES ('pending', 1), ('in_flight', 0), ('done', 0), ('failed', 1);
CREATE TRIGGER sync_outbox_count_insert AFTER INSERT ON sync_outbox BEGIN
    UPDATE sync_counts SET n = n + 1 WHERE status = NEW.status;
END;
CREATE TRIGGER sync_outbox_count_delete AFTER DELETE ON sync_outbox BEGIN
    UPDATE sync_counts SET n = n - 1 WHERE status = OLD.status;
END;
CREATE TRIGGER sync_outbox_count_update AFTER UPDATE OF status ON sync_outbox
    WHEN OLD.status IS NOT NEW.status BEGIN
    UPDATE sync_counts SET n = n - 1 WHERE status = OLD.status;
    UPDATE sync_counts SET n = n + 1 WHERE status = NEW.status;
END;
CREATE INDEX sync_outbox_pending_age ON sync_outbox (created_at_ms) WHERE status = 'pending';
UPDATE sync_meta SET value = '3' WHERE key = 'schema_version';
";

#[test]
fn a_version_1_database_is_read_then_upgraded_in_place() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("app.db");
    rusqlite::Connection::open(&path)?.execute_batch(VERSION_1)?;

    let read = SqliteOutboxStore::load_read_only(&path)?;
    assert_eq!(read.load_all()?, [version_1_operation()]);

    let store = open(&path)?;
    assert_eq!(store.load_all()?, [version_1_operation()]);
    assert_eq!(store.stats()?.failed, 1, "the counts start from the rows");
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
    assert_eq!(version, "8");
    assert_eq!(open(&path)?.load_all()?, [corrected]);
    Ok(())
}

#[test]
fn a_version_3_database_gets_the_resend_window_columns() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("app.db");
    let version_3 = VERSION_1.replace("('schema_version', '1')", "('schema_version', '2')")
        + TO_VERSION_2
        + TO_VERSION_3;
    rusqlite::Connection::open(&path)?.execute_batch(&version_3)?;
    let read = SqliteOutboxStore::load_read_only(&path)?.load_all()?;
    let store = open(&path)?;
    let mut upgraded = store.load_all()?;
    upgraded.sort_by_key(|op| op.seq);
    let mut read = read;
    read.sort_by_key(|op| op.seq);
    assert_eq!(read, upgraded, "the read-only view is the upgraded one");
    assert_eq!(upgraded[0], version_1_operation());
    assert_eq!(
        (upgraded[1].first_sent_at_ms, upgraded[1].unanswered_sends),
        (None, 0),
        "never sent: no window"
    );
    let mut unanswered = upgraded[1].clone();
    unanswered.unanswered_sends = 3;
    unanswered.first_sent_at_ms = Some(11);
    store.put(&unanswered)?;
    assert_eq!(store.stats()?.pending, 1);
    drop(store);
    let reopened = open(&path)?.load_all()?;
    assert!(reopened.contains(&unanswered));
    Ok(())
}

#[test]
fn a_version_2_database_gets_counts_that_follow_every_writer() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("app.db");
    let version_2 =
        VERSION_1.replace("('schema_version', '1')", "('schema_version', '2')") + TO_VERSION_2;
    rusqlite::Connection::open(&path)?.execute_batch(&version_2)?;
    assert_eq!(
        SqliteOutboxStore::load_read_only(&path)?.load_all()?.len(),
        2
    );

    let store = open(&path)?;
    let scan = || -> Result<OutboxStats, Box<dyn std::error::Error>> {
        let mut stats = OutboxStats::default();
        for op in store.load_all()? {
            stats.add(&op);
        }
        Ok(stats)
    };
    let expected = OutboxStats {
        pending: 1,
        failed: 1,
        oldest_pending_created_at_ms: Some(4),
        // The upgrade counted the payloads once; the triggers keep it.
        queued_bytes: scan()?.queued_bytes,
        ..OutboxStats::default()
    };
    assert!(expected.queued_bytes > 0);
    assert_eq!(store.stats()?, expected);

    // The app's own SQL, on its own connection: the triggers count it too.
    let app = rusqlite::Connection::open(&path)?;
    app.execute_batch(
        "INSERT INTO sync_outbox VALUES ('op_3', 'note.edit', '/notes/1', '{}', 'pending', 0, 9,
             '', 3, 3, NULL, NULL, 'app', 9, NULL, '', '', NULL, 0, NULL, 0, NULL, 0, NULL, '', NULL);
         UPDATE sync_outbox SET status = 'done' WHERE id = 'op_1';
         UPDATE sync_outbox SET payload = '{\"a\":1}' WHERE id = 'op_2';",
    )?;
    assert_eq!(store.stats()?, scan()?);
    assert_eq!(store.stats()?.oldest_pending_created_at_ms, Some(3));
    app.execute("DELETE FROM sync_outbox WHERE status = 'pending'", [])?;
    assert_eq!(store.stats()?, scan()?);
    assert_eq!((store.stats()?.pending, store.stats()?.done), (0, 1));
    Ok(())
}

/// What version 4 adds to version 3, as the fourth release wrote it.
const TO_VERSION_4: &str = "
ALTER TABLE sync_outbox ADD COLUMN first_sent_at_ms INTEGER;
ALTER TABLE sync_outbox ADD COLUMN unanswered_sends INTEGER NOT NULL DEFAULT 0;
UPDATE sync_meta SET value = '4' WHERE key = 'schema_version';
";

#[test]
fn a_version_4_database_gets_the_server_version_and_the_download_tables() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("app.db");
    let version_4 = VERSION_1.replace("('schema_version', '1')", "('schema_version', '2')")
        + TO_VERSION_2
        + TO_VERSION_3
        + TO_VERSION_4;
    rusqlite::Connection::open(&path)?.execute_batch(&version_4)?;
    let read = SqliteOutboxStore::load_read_only(&path)?.load_all()?;
    assert!(read.iter().all(|op| op.server_version.is_none()));
    let store = open(&path)?;
    let mut done = store.get("op_2")?.ok_or("op_2")?;
    done.status = OperationStatus::Done;
    done.server_version = Some(41);
    store.put(&done)?;
    drop(store);
    assert_eq!(
        open(&path)?.get("op_2")?.and_then(|op| op.server_version),
        Some(41)
    );
    let tables: i64 = rusqlite::Connection::open(&path)?.query_row(
        "SELECT count(*) FROM sqlite_master WHERE name IN ('sync_download', 'sync_held')",
        [],
        |row| row.get(0),
    )?;
    assert_eq!(tables, 2);
    Ok(())
}

#[test]
fn a_version_6_database_gets_the_answer_columns_and_keeps_needs_and_answers_after() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("app.db");
    let mut op = Operation::new("item.add", "/notes/tmp-1/items", "{}");
    op.id = "op_2".into();
    op.seq = 2;
    op.account = Some("ada".into());
    op.payload_version = 3;
    drop(open(&path)?);
    {
        // Schema 6 is schema 8 without the three answer columns and the
        // traceparent.
        let conn = rusqlite::Connection::open(&path)?;
        conn.execute_batch(
            "ALTER TABLE sync_outbox DROP COLUMN traceparent;
             ALTER TABLE sync_outbox DROP COLUMN keep_answer;
             ALTER TABLE sync_outbox DROP COLUMN answer;
             ALTER TABLE sync_outbox DROP COLUMN needs;
             UPDATE sync_meta SET value = '6' WHERE key = 'schema_version';
             INSERT INTO sync_outbox (id, kind, target, payload, status, attempt, next_retry_at_ms,
                 last_error, created_at_ms, updated_at_ms, ordering_key, coalesce_key, owner, seq,
                 payload_version, account)
             VALUES ('op_2', 'item.add', '/notes/tmp-1/items', '{}', 'pending', 0, 0, '', 0, 0,
                 NULL, NULL, '', 2, 3, 'ada');",
        )?;
    }
    assert_eq!(
        SqliteOutboxStore::load_read_only(&path)?.load_all()?,
        [op.clone()]
    );
    let store = open(&path)?;
    assert_eq!(store.load_all()?, [op.clone()]);
    op = op.needing(sync_outbox::Need::new("op_1", "/id", "tmp-1"));
    op.keep_answer = true;
    op.answer = Some(r#"{"id":"n1"}"#.into());
    store.put(&op)?;
    drop(store);
    assert_eq!(open(&path)?.load_all()?, [op]);
    Ok(())
}

#[test]
fn a_version_7_database_gets_the_traceparent_column() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("app.db");
    let mut op = Operation::new("note.create", "/notes", "{}");
    op.id = "op_7".into();
    op.seq = 7;
    drop(open(&path)?);
    {
        // Schema 7 is schema 8 without `traceparent`.
        let conn = rusqlite::Connection::open(&path)?;
        conn.execute_batch(
            "ALTER TABLE sync_outbox DROP COLUMN traceparent;
             UPDATE sync_meta SET value = '7' WHERE key = 'schema_version';
             INSERT INTO sync_outbox (id, kind, target, payload, status, attempt, next_retry_at_ms,
                 last_error, created_at_ms, updated_at_ms, ordering_key, coalesce_key, owner, seq)
             VALUES ('op_7', 'note.create', '/notes', '{}', 'pending', 0, 0, '', 0, 0,
                 NULL, NULL, '', 7);",
        )?;
    }
    // Read as it is (a `synctl` beside an older app), then upgraded.
    assert_eq!(
        SqliteOutboxStore::load_read_only(&path)?.load_all()?,
        [op.clone()]
    );
    let store = open(&path)?;
    assert_eq!(store.load_all()?, [op.clone()]);
    op.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    store.put(&op)?;
    drop(store);
    assert_eq!(open(&path)?.load_all()?, [op]);
    let version: String = rusqlite::Connection::open(&path)?.query_row(
        "SELECT value FROM sync_meta WHERE key = 'schema_version'",
        [],
        |row| row.get(0),
    )?;
    assert_eq!(version, "8");
    Ok(())
}
