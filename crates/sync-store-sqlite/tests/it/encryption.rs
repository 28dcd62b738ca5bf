//! The database encrypted at rest (feature `sqlcipher`): the app's row and
//! its operation in one transaction of the encrypted database, and back
//! after a reopen with the key; nothing of either readable in the file;
//! no key, a wrong key, or a key for a plain database: a typed error naming
//! the file, and not a byte changed.

use std::path::Path;
use std::sync::Arc;

use sync_outbox::{Operation, Outbox, OutboxConfig, OutboxStore};
use sync_store_sqlite::{
    DatabaseKey, SqliteOutboxStore, SqliteOutboxStoreConfig, SqliteStoreError,
};

use crate::TestResult;

const SECRET: &str = "the-users-private-note-text";

fn keyed(path: &Path, key: DatabaseKey) -> Result<SqliteOutboxStore, SqliteStoreError> {
    SqliteOutboxStore::open(SqliteOutboxStoreConfig::new(path).with_key(key))
}

/// Every byte of the database and its `-wal` file, for "nothing changed".
fn files(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = std::fs::read(path)?;
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    if let Ok(more) = std::fs::read(&wal) {
        bytes.extend(more);
    }
    Ok(bytes)
}

#[test]
fn an_encrypted_database_keeps_the_apps_row_and_its_operation_together() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("app.db");
    let key = DatabaseKey::raw([0x5a; 32]);
    let store = Arc::new(keyed(&path, key.clone())?);
    let outbox = Arc::new(Outbox::new(OutboxConfig::default(), store.clone()));
    let id = store.with_transaction(&outbox, |tx| {
        tx.execute_batch("CREATE TABLE notes (id TEXT PRIMARY KEY, text TEXT)")?;
        tx.execute("INSERT INTO notes VALUES ('n1', ?1)", [SECRET])?;
        let payload = format!(r#"{{"text":"{SECRET}"}}"#);
        tx.enqueue(Operation::new("note.create", "/notes", payload), 1_000)
    })?;
    drop(outbox);
    drop(store);

    // Neither the row nor the operation is in the files as text.
    let bytes = files(&path)?;
    let find = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(!find(SECRET.as_bytes()));
    assert!(!find(b"sync_outbox"));
    assert!(!find(b"SQLite format 3"));

    // Back, with the key: the operation, and the app's row beside it.
    let store = keyed(&path, key.clone())?;
    let ops = store.load_all()?;
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].id, id);
    assert!(ops[0].payload.contains(SECRET));
    drop(store);
    let read = SqliteOutboxStore::load_read_only_with_key(&path, &key)?;
    assert_eq!(read.load_all()?.len(), 1);
    let app = sync_store_sqlite::rusqlite::Connection::open(&path)?;
    app.pragma_update(
        None,
        "key",
        "x'5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a'",
    )?;
    let text: String = app.query_row("SELECT text FROM notes WHERE id = 'n1'", [], |r| r.get(0))?;
    assert_eq!(text, SECRET);
    Ok(())
}

#[test]
fn no_key_or_a_wrong_key_is_a_typed_error_and_changes_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("app.db");
    let store = Arc::new(keyed(&path, DatabaseKey::passphrase("correct horse"))?);
    let outbox = Outbox::new(OutboxConfig::default(), store.clone());
    outbox.enqueue(Operation::new("note.create", "/notes", "{}"), 1)?;
    drop(outbox);
    drop(store);
    let before = files(&path)?;

    let wrong = keyed(&path, DatabaseKey::passphrase("battery staple"))
        .err()
        .ok_or("a wrong key opened it")?;
    assert!(
        matches!(&wrong, SqliteStoreError::KeyMismatch { path: p, .. } if p == &path),
        "{wrong:?}"
    );
    assert!(wrong.to_string().contains("app.db"), "{wrong}");
    let none = SqliteOutboxStore::open(SqliteOutboxStoreConfig::new(&path))
        .err()
        .ok_or("opened without its key")?;
    assert!(
        matches!(none, SqliteStoreError::NotADatabase { .. }),
        "{none:?}"
    );
    assert!(none.to_string().contains("encrypted"), "{none}");
    let read = SqliteOutboxStore::load_read_only_with_key(&path, &DatabaseKey::raw([1; 32]))
        .err()
        .ok_or("a wrong key read it")?;
    assert!(
        matches!(read, SqliteStoreError::KeyMismatch { .. }),
        "{read:?}"
    );
    assert!(files(&path)? == before, "a refused open changed the files");

    // The right key still opens it, with its operation.
    assert_eq!(
        keyed(&path, DatabaseKey::passphrase("correct horse"))?
            .load_all()?
            .len(),
        1
    );
    Ok(())
}

#[test]
fn a_key_for_a_plain_database_is_refused_and_changes_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("app.db");
    let store = crate::open(&path)?;
    store.put(&sync_outbox::testing::sample("op_1", 1, 0))?;
    drop(store);
    let before = files(&path)?;
    let refused = keyed(&path, DatabaseKey::raw([2; 32]))
        .err()
        .ok_or("a plain database opened with a key")?;
    assert!(
        matches!(refused, SqliteStoreError::KeyMismatch { reason, .. } if reason.contains("not encrypted")),
        "{refused:?}"
    );
    assert!(files(&path)? == before, "a refused open changed the files");
    assert_eq!(crate::open(&path)?.load_all()?.len(), 1);
    Ok(())
}

/// A crash can leave committed pages in the `-wal` file; a wrong key must
/// not checkpoint them into the database while it finds out it is wrong.
#[test]
fn a_wrong_key_leaves_a_leftover_wal_file_and_the_database_as_they_were() -> TestResult {
    let dir = tempfile::tempdir()?;
    let live = dir.path().join("live.db");
    let key = DatabaseKey::raw([0x33; 32]);
    let store = Arc::new(keyed(&live, key.clone())?);
    let outbox = Outbox::new(OutboxConfig::default(), store.clone());
    for _ in 0..20 {
        outbox.enqueue(Operation::new("note.create", "/notes", "{}"), 1)?;
    }
    // What a crash leaves: the database and its `-wal`, copied while open.
    let path = dir.path().join("app.db");
    std::fs::copy(&live, &path)?;
    let (mut live_wal, mut wal) = (live.as_os_str().to_owned(), path.as_os_str().to_owned());
    live_wal.push("-wal");
    wal.push("-wal");
    std::fs::copy(&live_wal, &wal)?;
    drop(outbox);
    drop(store);
    assert!(
        std::fs::metadata(&wal)?.len() > 0,
        "no frames to checkpoint"
    );
    let (db_before, wal_before) = (std::fs::read(&path)?, std::fs::read(&wal)?);

    let refused = keyed(&path, DatabaseKey::raw([0x34; 32]))
        .err()
        .ok_or("a wrong key opened it")?;
    assert!(
        matches!(refused, SqliteStoreError::KeyMismatch { .. }),
        "{refused:?}"
    );
    // (Compared whole; printed only as "changed": they are megabytes.)
    assert!(std::fs::read(&path)? == db_before, "the database changed");
    assert!(std::fs::read(&wal)? == wal_before, "the -wal file changed");
    // The right key recovers every committed operation from the `-wal`.
    assert_eq!(keyed(&path, key)?.load_all()?.len(), 20);
    Ok(())
}
