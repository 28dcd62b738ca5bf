//! Guards the privacy of local data: an error about a damaged file never
//! quotes the value it choked on (it may be part of a payload), and an
//! operation id is never used as a file name, whatever it contains.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use sync_outbox::OutboxStore;
use sync_outbox::testing::sample;
use sync_store_file::FileStoreError;
use sync_wal::{RecordType, Wal, WalConfig, WalRecord};

use crate::{TestResult, open_json, open_wal};

/// The error, its `Debug` and its whole source chain, as one text.
fn everything_said(error: &FileStoreError) -> String {
    let mut text = format!("{error} {error:?}");
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        let _ = write!(text, " {e} {e:?}");
        source = e.source();
    }
    text
}

#[test]
fn a_damaged_json_store_error_never_quotes_the_data() -> TestResult {
    for bad_op in [
        r#"{"id": "a", "kind": "k", "target": "/t", "payload": "{}", "status": "pending", "attempt": "card 4111-SECRET"}"#,
        r#"{"id": "a", "kind": "k", "target": "/t", "payload": "{}", "status": "SECRET-status"}"#,
        r#"{"id": "a", "kind": "k", "target": "/t", "payload": 4111, "note": "SECRET"}"#,
    ] {
        let dir = tempfile::tempdir()?;
        fs::write(
            dir.path().join("outbox.json"),
            format!("{{\"format\": \"sync-outbox\", \"version\": 1, \"operations\": [{bad_op}]}}"),
        )?;
        let error = open_json(dir.path()).err().ok_or("a bad file opened")?;
        let said = everything_said(&error);
        assert!(
            matches!(error, FileStoreError::Corrupt { line: 1, .. }),
            "{said}"
        );
        assert!(!said.contains("SECRET") && !said.contains("4111"), "{said}");
    }
    Ok(())
}

#[test]
fn a_damaged_wal_record_error_never_quotes_the_data() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("outbox-wal/log");
    fs::create_dir_all(&log)?;
    {
        let wal = Wal::open(WalConfig::new(&log))?;
        wal.append(&WalRecord {
            id: "a".into(),
            kind: RecordType::PutOperation,
            ts_ms: 0,
            payload: br#"{"id":"a","attempt":"token SECRET-123"}"#.to_vec(),
        })?;
    }
    let error = open_wal(dir.path()).err().ok_or("a bad record opened")?;
    let said = everything_said(&error);
    assert!(
        matches!(error, FileStoreError::CorruptRecord { lsn: 0, .. }),
        "{said}"
    );
    assert!(!said.contains("SECRET"), "{said}");
    Ok(())
}

/// Every path under `dir`.
fn tree(dir: &Path) -> Result<Vec<String>, std::io::Error> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d)? {
            let path = entry?.path();
            out.push(
                path.strip_prefix(dir)
                    .unwrap_or(&path)
                    .display()
                    .to_string(),
            );
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[test]
fn ids_are_never_file_names() -> TestResult {
    let root = tempfile::tempdir()?;
    let dir = root.path().join("store");
    fs::create_dir(&dir)?;
    let json = open_json(&dir)?;
    let wal = open_wal(&dir)?;
    for (i, id) in [
        "../escape",
        "/tmp/abs",
        "a/b",
        "..",
        "nul\0byte",
        "LOCK",
        "snapshot",
    ]
    .into_iter()
    .enumerate()
    {
        let op = sample(id, u64::try_from(i)?, 0);
        json.put(&op)?;
        wal.put(&op)?;
    }
    wal.compact()?;
    assert_eq!(json.load_all()?.len(), 7);
    assert_eq!(wal.load_all()?.len(), 7);
    assert_eq!(
        tree(root.path())?,
        [
            "store",
            "store/outbox-wal",
            "store/outbox-wal/log",
            "store/outbox-wal/log/00000000000000000000.wal",
            "store/outbox-wal/log/LOCK",
            "store/outbox-wal/snapshot",
            "store/outbox.json",
            "store/outbox.json.lock",
        ]
    );
    Ok(())
}
