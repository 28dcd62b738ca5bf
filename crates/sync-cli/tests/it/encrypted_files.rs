//! `synctl` on WAL and JSON stores encrypted at rest: with `--key-file`
//! (and `--key-id`) it reads and repairs them; without a key it says the
//! store is encrypted and points at `--key-file`; with the wrong key it
//! says so (exit 3). The files are unchanged by every refusal.

use std::path::Path;
use std::sync::Arc;

use sync_outbox::{Operation, Outbox, OutboxConfig, OutboxStore};
use sync_store_file::{
    Encryption, EncryptionKey, JsonOutboxStore, JsonOutboxStoreConfig, WalOutboxStore,
    WalOutboxStoreConfig,
};

use crate::{TestResult, arg, synctl};

const KEY: [u8; 32] = [0x3c; 32];

fn encryption() -> Encryption {
    Encryption::new(EncryptionKey::new(7, KEY))
}

fn fill(store: Arc<dyn OutboxStore>) -> Result<String, Box<dyn std::error::Error>> {
    let outbox = Outbox::new(OutboxConfig::default(), store);
    let first = outbox.enqueue(
        Operation::new("note.create", "/notes", r#"{"t":"secret"}"#),
        1,
    )?;
    outbox.enqueue(Operation::new("note.create", "/notes", "{}"), 1)?;
    Ok(first)
}

/// The store's files (the log's segments, or the JSON file), without the
/// zeros the log preallocates.
fn store_bytes(p: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = if p.is_dir() {
        std::fs::read_dir(p.join("log"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "wal"))
            .map(|e| {
                (
                    e.path().display().to_string(),
                    std::fs::read(e.path()).unwrap_or_default(),
                )
            })
            .collect()
    } else {
        vec![(
            p.display().to_string(),
            std::fs::read(p).unwrap_or_default(),
        )]
    };
    for (_, bytes) in &mut files {
        let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |at| at + 1);
        bytes.truncate(end);
    }
    files.sort();
    files
}

fn check(path: &Path, dir: &Path, first: &str) -> TestResult {
    let key_file = dir.join("key");
    std::fs::write(&key_file, format!("{}\n", "3c".repeat(32)))?;
    let wrong_file = dir.join("wrong");
    std::fs::write(&wrong_file, "00".repeat(32))?;
    let before = store_bytes(path);

    let plain = synctl(&["outbox", "list", arg(path)])?;
    assert_eq!(plain.code, Some(3), "{plain:?}");
    assert!(
        plain.stderr.contains("encrypted") && plain.stderr.contains("--key-file"),
        "{}",
        plain.stderr
    );
    let wrong = synctl(&[
        "outbox",
        "list",
        arg(path),
        "--key-file",
        arg(&wrong_file),
        "--key-id",
        "7",
    ])?;
    assert_eq!(wrong.code, Some(3), "{wrong:?}");
    assert!(
        wrong.stderr.contains("does not authenticate"),
        "{}",
        wrong.stderr
    );
    // The right key under another id: the store names the id it needs.
    let other_id = synctl(&["outbox", "list", arg(path), "--key-file", arg(&key_file)])?;
    assert_eq!(other_id.code, Some(3), "{other_id:?}");
    assert!(other_id.stderr.contains("key id 7"), "{}", other_id.stderr);
    assert!(
        store_bytes(path) == before,
        "a refused read changed {}",
        path.display()
    );

    let list = synctl(&[
        "outbox",
        "list",
        arg(path),
        "--key-file",
        arg(&key_file),
        "--key-id",
        "7",
    ])?;
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
        arg(path),
        first,
        "--key-file",
        arg(&key_file),
        "--key-id",
        "7",
    ])?;
    assert_eq!(discard.code, Some(0), "{discard:?}");
    let list = synctl(&[
        "outbox",
        "list",
        arg(path),
        "--key-file",
        arg(&key_file),
        "--key-id",
        "7",
    ])?;
    assert_eq!(
        list.stdout.lines().count(),
        2,
        "header + 1\n{}",
        list.stdout
    );
    Ok(())
}

#[test]
fn synctl_reads_and_repairs_an_encrypted_wal_store_given_its_key() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("outbox-wal");
    let first = fill(Arc::new(WalOutboxStore::open(
        WalOutboxStoreConfig::new(&path).with_encryption(encryption()),
    )?))?;
    check(&path, dir.path(), &first)?;
    // The app's own key still opens what synctl wrote.
    let store =
        WalOutboxStore::open(WalOutboxStoreConfig::new(&path).with_encryption(encryption()))?;
    assert_eq!(store.load_all()?.len(), 1);
    Ok(())
}

#[test]
fn synctl_reads_and_repairs_an_encrypted_json_store_given_its_key() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("outbox.json");
    let first = fill(Arc::new(JsonOutboxStore::open(
        JsonOutboxStoreConfig::new(&path).with_encryption(encryption()),
    )?))?;
    check(&path, dir.path(), &first)?;
    let store =
        JsonOutboxStore::open(JsonOutboxStoreConfig::new(&path).with_encryption(encryption()))?;
    assert_eq!(store.load_all()?.len(), 1);
    Ok(())
}
