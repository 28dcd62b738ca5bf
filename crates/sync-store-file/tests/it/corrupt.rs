//! Guards that a store refuses a file it cannot trust with a typed error that
//! names the file, and leaves the file byte-for-byte unchanged: truncated
//! JSON, wrong version, binary junk, a corrupt snapshot, a corrupt WAL record
//! mid-log.

use std::fs;
use std::path::Path;

use sync_outbox::OutboxStore;
use sync_outbox::testing::sample;
use sync_store_file::FileStoreError;

use crate::{TestResult, open_json, open_wal};

fn assert_json_refused(dir: &Path, bytes: &[u8], want_line: Option<usize>) -> TestResult {
    let path = dir.join("outbox.json");
    fs::write(&path, bytes)?;
    match open_json(dir) {
        Err(FileStoreError::Corrupt {
            path: p,
            line,
            column,
            reason,
        }) => {
            assert_eq!(p, path);
            if let Some(want) = want_line {
                assert_eq!(line, want, "{reason}");
                assert!(column > 0 || bytes.is_empty(), "{reason}");
            }
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(fs::read(&path)?, bytes, "a refused file is untouched");
    Ok(())
}

#[test]
fn json_store_refuses_truncated_wrong_version_junk_and_duplicates() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let store = open_json(dir.path())?;
        store.put_batch(&[sample("a", 1, 1), sample("b", 2, 2)])?;
    }
    let good = fs::read(dir.path().join("outbox.json"))?;
    assert_json_refused(dir.path(), &good[..good.len() / 2], None)?;
    assert_json_refused(dir.path(), b"", Some(1))?;
    assert_json_refused(dir.path(), &[0xde, 0xad, 0xbe, 0xef, 0, 1, 2], Some(1))?;
    let text = String::from_utf8(good.clone())?;
    assert_json_refused(
        dir.path(),
        text.replace("\"version\": 1", "\"version\": 2").as_bytes(),
        None,
    )?;
    assert_json_refused(
        dir.path(),
        text.replace("\"id\": \"b\"", "\"id\": \"a\"").as_bytes(),
        None,
    )?;
    assert_json_refused(dir.path(), b"{\n  \"format\": \"sync-outbox\",\n  \"version\": 1,\n  \"operations\": [ { \"attempt\": \"x\" } ]\n}", Some(4))?;
    // The good file still opens.
    fs::write(dir.path().join("outbox.json"), &good)?;
    assert_eq!(open_json(dir.path())?.load_all()?.len(), 2);
    Ok(())
}

#[test]
fn wal_store_refuses_a_corrupt_snapshot() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let store = open_wal(dir.path())?;
        store.put_batch(&[sample("a", 1, 1), sample("b", 2, 2)])?;
        store.compact()?;
        store.put(&sample("c", 3, 3))?;
    }
    let path = dir.path().join("outbox-wal/snapshot");
    let mut bytes = fs::read(&path)?;
    let last = bytes.len() - 1;
    bytes[last] ^= 0x20;
    fs::write(&path, &bytes)?;
    match open_wal(dir.path()) {
        Err(FileStoreError::CorruptSnapshot {
            path: p, offset, ..
        }) => {
            assert_eq!(p, path);
            assert_eq!(offset, 28, "the checksum field");
        }
        other => panic!("expected CorruptSnapshot, got {other:?}"),
    }
    assert_eq!(fs::read(&path)?, bytes);
    fs::write(&path, b"junk")?;
    assert!(matches!(
        open_wal(dir.path()),
        Err(FileStoreError::CorruptSnapshot { offset: 0, .. })
    ));
    Ok(())
}

#[test]
fn wal_store_refuses_a_corrupt_record_mid_log() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let store = open_wal(dir.path())?;
        for i in 0..5 {
            store.put(&sample(&format!("op{i}"), i, 1))?;
        }
    }
    let segment = dir.path().join("outbox-wal/log/00000000000000000000.wal");
    let mut bytes = fs::read(&segment)?;
    bytes[24 + 40] ^= 0xff; // inside the first record's body; four valid records follow
    fs::write(&segment, &bytes)?;
    match open_wal(dir.path()) {
        Err(FileStoreError::Wal(sync_wal::WalError::Corrupt {
            segment: s,
            offset: 24,
            ..
        })) => assert_eq!(s, segment),
        other => panic!("expected a corrupt wal, got {other:?}"),
    }
    assert_eq!(fs::read(&segment)?, bytes);
    Ok(())
}

#[test]
fn errors_convert_into_outbox_errors_with_their_source() -> TestResult {
    let dir = tempfile::tempdir()?;
    fs::write(dir.path().join("outbox.json"), b"nope")?;
    let error: sync_outbox::OutboxError = open_json(dir.path())
        .err()
        .ok_or("expected an error")?
        .into();
    let source = std::error::Error::source(&error)
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(source.contains("outbox.json"), "{source}");
    Ok(())
}

#[test]
fn the_json_store_refuses_to_write_an_id_it_could_not_read_back() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = open_json(dir.path())?;
    let mut op = sample("x", 1, 1);
    op.id = String::new();
    assert!(store.put(&op).is_err());
    assert!(
        !dir.path().join("outbox.json").exists(),
        "nothing may be written"
    );
    drop(store);
    open_json(dir.path())?;
    Ok(())
}
