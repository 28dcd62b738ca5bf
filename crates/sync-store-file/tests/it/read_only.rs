//! Guards the read-only loaders used by inspection tools: they see exactly
//! what a store sees, change no byte on disk (not even a torn tail or a
//! leftover temp snapshot), and respect the store lock both ways.

use std::fs;
use std::io::Write;
use std::path::Path;

use sync_outbox::testing::sample;
use sync_outbox::{Operation, OperationStatus, OutboxStore};
use sync_store_file::{FileStoreError, JsonOutboxStore, WalOutboxStore};

use crate::{TestResult, open_json, open_wal};

/// Every file under `dir` with its bytes.
fn files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, std::io::Error> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((path.display().to_string(), fs::read(&path)?));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `load_all` has no order; compare by id.
fn sorted(mut ops: Vec<Operation>) -> Vec<Operation> {
    ops.sort_by(|a, b| a.id.cmp(&b.id));
    ops
}

#[test]
fn the_json_loader_sees_the_store_while_it_is_open_and_after() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("outbox.json");
    assert!(
        JsonOutboxStore::load_read_only(&path)?
            .load_all()?
            .is_empty()
    );
    assert!(files(dir.path())?.is_empty(), "a read created a file");

    let store = open_json(dir.path())?;
    store.put(&sample("a", 1, 1))?;
    store.put(&sample("b", 2, 2))?;
    let expected = sorted(store.load_all()?);
    let live = JsonOutboxStore::load_read_only(&path)?;
    assert_eq!(
        sorted(live.load_all()?),
        expected,
        "read beside the open store"
    );
    store.put(&sample("c", 3, 3))?;
    let expected = sorted(store.load_all()?);
    drop(store);

    let before = files(dir.path())?;
    let view = JsonOutboxStore::load_read_only(&path)?;
    assert_eq!(sorted(view.load_all()?), expected);
    assert_eq!(files(dir.path())?, before);
    Ok(())
}

#[test]
fn the_json_loader_reports_a_corrupt_file_by_line() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("outbox.json");
    fs::write(
        &path,
        "{\"format\": \"sync-outbox\",\n \"version\": 1,\n \"operations\": [ }",
    )?;
    match JsonOutboxStore::load_read_only(&path) {
        Err(FileStoreError::Corrupt { path: p, line, .. }) => {
            assert_eq!(p, path);
            assert_eq!(line, 3);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    Ok(())
}

#[test]
fn the_wal_loader_replays_snapshot_and_log_without_touching_them() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store_dir = dir.path().join("outbox-wal");
    let store = open_wal(dir.path())?;
    for i in 0..20u64 {
        store.put(&sample(&format!("op{i}"), i, i64::try_from(i % 3)?))?;
    }
    store.compact()?;
    let mut done = sample("op3", 0, 3);
    done.status = OperationStatus::Done;
    store.put(&done)?;
    assert!(store.remove("op4")?);
    let expected = sorted(store.load_all()?);
    let live = WalOutboxStore::load_read_only(&store_dir)?;
    assert_eq!(
        sorted(live.load_all()?),
        expected,
        "read beside the open store"
    );
    drop(store);

    // What a crash leaves: a temp snapshot and a torn tail.
    fs::write(store_dir.join("snapshot.tmp"), b"half a snapshot")?;
    let segment = fs::read_dir(store_dir.join("log"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .max()
        .ok_or("no segment")?;
    fs::OpenOptions::new()
        .append(true)
        .open(&segment)?
        .write_all(b"\x40\x00\x00")?;

    let before = files(dir.path())?;
    let view = WalOutboxStore::load_read_only(&store_dir)?;
    assert_eq!(sorted(view.load_all()?), expected);
    assert_eq!(
        files(dir.path())?,
        before,
        "a read-only load changed the store"
    );
    // And the store still opens over it afterwards, cutting the tail itself.
    assert_eq!(sorted(open_wal(dir.path())?.load_all()?), expected);
    Ok(())
}

#[test]
fn a_missing_wal_store_is_an_error_naming_the_log() {
    let dir = tempfile::tempdir().ok();
    let missing = dir.as_ref().map(|d| d.path().join("nope"));
    let error = missing.map(WalOutboxStore::load_read_only);
    assert!(
        matches!(&error, Some(Err(FileStoreError::Wal(e))) if e.to_string().contains("nope")),
        "{error:?}"
    );
}
