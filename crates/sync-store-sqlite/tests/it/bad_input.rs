//! Guards the bad-input rules: a file that is not a database, a foreign
//! schema version and an unreadable row are typed errors naming the file,
//! and none of those files is changed; a second open is `Locked`; files are
//! owner-only; the read-only loader changes no byte.

use sync_outbox::{Operation, OutboxStore};
use sync_store_sqlite::{SqliteOutboxStore, SqliteStoreError};

use crate::{TestResult, open, store_and_outbox};

#[test]
fn a_file_that_is_not_a_database_is_refused_and_unchanged() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("notes.db");
    let bytes = b"{\"this\": \"is json, not sqlite\"}\n".repeat(200);
    std::fs::write(&path, &bytes)?;
    let error = open(&path).err().ok_or("opened a JSON file")?;
    assert!(
        matches!(error, SqliteStoreError::NotADatabase { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("notes.db"));
    assert_eq!(std::fs::read(&path)?, bytes, "not a byte changed");
    assert!(SqliteOutboxStore::load_read_only(&path).is_err());
    Ok(())
}

#[test]
fn a_foreign_schema_version_is_refused_and_unchanged() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("app.db");
    {
        let conn = rusqlite::Connection::open(&path)?;
        conn.execute_batch(
            "CREATE TABLE sync_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             INSERT INTO sync_meta VALUES ('schema_version', '9');
             CREATE TABLE notes (id TEXT);",
        )?;
    }
    let before = std::fs::read(&path)?;
    let error = open(&path).err().ok_or("opened a foreign schema")?;
    match &error {
        SqliteStoreError::ForeignSchema {
            found, expected, ..
        } => {
            assert_eq!((found.as_str(), *expected), ("9", 8));
        }
        other => return Err(format!("unexpected {other}").into()),
    }
    assert!(error.to_string().contains("app.db"));
    assert_eq!(std::fs::read(&path)?, before);
    Ok(())
}

#[test]
fn an_unreadable_row_is_a_typed_error_naming_the_row() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("app.db");
    {
        let store = open(&path)?;
        let mut op = Operation::new("k", "/t", "{}");
        op.id = "op-1".into();
        store.put(&op)?;
    }
    rusqlite::Connection::open(&path)?
        .execute("UPDATE sync_outbox SET status = 'teleported'", [])?;
    let store = open(&path)?;
    let error = store.get("op-1").err().ok_or("read a bad row")?;
    let report = format!(
        "{error}: {}",
        std::error::Error::source(&error)
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    assert!(
        report.contains("op-1") && report.contains("status"),
        "{report}"
    );
    Ok(())
}

#[test]
fn one_owner_at_a_time_and_files_are_private() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, outbox) = store_and_outbox(dir.path())?;
    let second = open(&dir.path().join("app.db"))
        .err()
        .ok_or("opened twice")?;
    assert!(
        matches!(second, SqliteStoreError::Locked { .. }),
        "{second}"
    );
    // A reader is no owner: it reads beside the open store.
    assert_eq!(
        SqliteOutboxStore::load_read_only(store.path())?.load_all()?,
        store.load_all()?
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(store.path())?.permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    drop((store, outbox));
    if let Err(e) = open(&dir.path().join("app.db")) {
        return Err(format!("not free again once closed: {e}").into());
    }
    Ok(())
}

#[test]
fn the_read_only_loader_reads_everything_and_changes_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("app.db");
    {
        let (_, outbox) = store_and_outbox(dir.path())?;
        for n in 0..5 {
            outbox.enqueue(Operation::new("k", "/t", format!("{n}")), n)?;
        }
        let claimed = outbox.claim(10, 2).map(sync_outbox::Claim::detach)?;
        outbox.mark_done(&claimed[0].id, 11)?;
    }
    let before = std::fs::read(&path)?;
    let loaded = SqliteOutboxStore::load_read_only(&path)?;
    assert_eq!(loaded.load_all()?.len(), 5);
    let stats = loaded.stats()?;
    assert_eq!(
        [stats.pending, stats.in_flight, stats.done, stats.failed],
        [3, 1, 1, 0]
    );
    assert_eq!(std::fs::read(&path)?, before, "not a byte changed");
    Ok(())
}

#[test]
fn a_sync_outbox_table_of_someone_else_is_refused_and_unchanged() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("app.db");
    {
        let conn = rusqlite::Connection::open(&path)?;
        conn.execute_batch(
            "CREATE TABLE sync_outbox (message TEXT); INSERT INTO sync_outbox VALUES ('hi');",
        )?;
    }
    let before = std::fs::read(&path)?;
    let error = open(&path).err().ok_or("took over a foreign table")?;
    assert!(
        matches!(error, SqliteStoreError::ForeignSchema { .. }),
        "{error}"
    );
    assert_eq!(std::fs::read(&path)?, before, "not even switched to WAL");
    Ok(())
}
