//! `synctl` on an SQLite store encrypted with SQLCipher (feature
//! `sqlcipher`): with `--key-file` it reads and repairs it; without a key
//! it points at `--key-file` (exit 1: it could be a damaged JSON store),
//! with the wrong one it says so (exit 3); the file unchanged either way.

use std::sync::Arc;

use sync_outbox::{Operation, Outbox, OutboxConfig};
use sync_store_sqlite::{DatabaseKey, SqliteOutboxStore, SqliteOutboxStoreConfig};

use crate::{TestResult, arg, synctl};

#[test]
fn synctl_reads_and_repairs_an_encrypted_store_given_its_key() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("app.db");
    let key = [0xab_u8; 32];
    let store = Arc::new(SqliteOutboxStore::open(
        SqliteOutboxStoreConfig::new(&path).with_key(DatabaseKey::raw(key)),
    )?);
    let outbox = Outbox::new(OutboxConfig::default(), store.clone());
    let first = outbox.enqueue(Operation::new("note.create", "/notes", "{}"), 1)?;
    outbox.enqueue(Operation::new("note.create", "/notes", "{}"), 1)?;
    drop(outbox);
    drop(store);
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("{}\n", "ab".repeat(32)))?;
    let wrong_file = dir.path().join("wrong");
    std::fs::write(&wrong_file, "not the passphrase")?;
    let before = std::fs::read(&path)?;

    // Without a key it cannot tell it from a damaged file, and says both.
    let plain = synctl(&["outbox", "list", arg(&path)])?;
    assert_eq!(plain.code, Some(1), "{plain:?}");
    assert!(plain.stderr.contains("--key-file"), "{}", plain.stderr);
    let wrong = synctl(&["outbox", "list", arg(&path), "--key-file", arg(&wrong_file)])?;
    assert_eq!(wrong.code, Some(3), "{wrong:?}");
    assert!(
        wrong.stderr.contains("key does not open"),
        "{}",
        wrong.stderr
    );
    assert_eq!(
        std::fs::read(&path)?,
        before,
        "a refused read changed the file"
    );

    let list = synctl(&["outbox", "list", arg(&path), "--key-file", arg(&key_file)])?;
    assert_eq!(list.code, Some(0), "{list:?}");
    assert_eq!(
        list.stdout.lines().count(),
        3,
        "header + 2\n{}",
        list.stdout
    );
    let discard = synctl(&[
        "outbox",
        "discard",
        arg(&path),
        &first,
        "--key-file",
        arg(&key_file),
    ])?;
    assert_eq!(discard.code, Some(0), "{discard:?}");
    let store = SqliteOutboxStore::load_read_only_with_key(&path, &DatabaseKey::raw(key))?;
    assert_eq!(sync_outbox::OutboxStore::load_all(&store)?.len(), 1);
    Ok(())
}
