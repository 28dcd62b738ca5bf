//! Guards format compatibility: the checked-in v1 segments in
//! `tests/fixtures/` read back exactly, and the corrupt one is refused, with
//! every version of this crate. Regenerate (only when adding a version) with
//! `SYNC_WAL_BLESS=1 cargo test -p sync-wal --test it fixtures`.

use std::fs;
use std::path::{Path, PathBuf};

use sync_wal::{RecordType, Wal, WalError, WalRecord};

use crate::{TestResult, config, read_all};

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The records in `v1/`: the guide's WAL demo, plus every kind.
fn v1_records() -> Vec<WalRecord> {
    let mut records = vec![
        WalRecord {
            id: "op_1".into(),
            kind: RecordType::PutOperation,
            ts_ms: 1_710_000_000_000,
            payload: br#"{"kind":"message.send","target":"/api/messages"}"#.to_vec(),
        },
        WalRecord {
            id: "op_1".into(),
            kind: RecordType::MarkDone,
            ts_ms: 1_710_000_000_001,
            payload: Vec::new(),
        },
    ];
    for (i, kind) in [
        RecordType::MarkInFlight,
        RecordType::MarkFailed,
        RecordType::MarkPending,
        RecordType::Remove,
        RecordType::Checkpoint,
        RecordType::Custom(0),
        RecordType::Custom(255),
    ]
    .into_iter()
    .enumerate()
    {
        records.push(WalRecord {
            id: format!("k{i}"),
            kind,
            ts_ms: -1,
            payload: vec![0xff, 0, 1],
        });
    }
    records
}

/// Copies a fixture into a temp dir, so opening it (which takes a lock file)
/// never changes the checked-in files.
fn open_copy(
    name: &str,
) -> Result<(tempfile::TempDir, Result<Wal, WalError>), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    for entry in fs::read_dir(fixture_dir(name))? {
        let entry = entry?;
        fs::copy(entry.path(), dir.path().join(entry.file_name()))?;
    }
    let wal = Wal::open(config(dir.path()));
    Ok((dir, wal))
}

#[test]
fn v1_segment_reads_back_exactly() -> TestResult {
    if std::env::var_os("SYNC_WAL_BLESS").is_some() {
        bless()?;
    }
    let (_dir, wal) = open_copy("v1")?;
    let wal = wal?;
    let got: Vec<WalRecord> = read_all(&wal)?.into_iter().map(|(_, r)| r).collect();
    assert_eq!(got, v1_records());
    Ok(())
}

#[test]
fn corrupt_v1_segment_is_refused() -> TestResult {
    let (_dir, wal) = open_copy("v1-corrupt")?;
    match wal {
        // The flipped byte sits in the second frame; valid frames follow it.
        Err(WalError::Corrupt { offset, .. }) => {
            assert_eq!(offset, 24 + v1_records()[0].encoded_len() as u64);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    Ok(())
}

fn bless() -> TestResult {
    let v1 = fixture_dir("v1");
    let _ = fs::remove_dir_all(&v1);
    {
        let wal = Wal::open(config(&v1))?;
        wal.append_batch(&v1_records())?;
    }
    fs::remove_file(v1.join("LOCK"))?;
    let corrupt = fixture_dir("v1-corrupt");
    let _ = fs::remove_dir_all(&corrupt);
    fs::create_dir_all(&corrupt)?;
    let name = "00000000000000000000.wal";
    let mut bytes = fs::read(v1.join(name))?;
    let at = 24 + v1_records()[0].encoded_len() + 12;
    bytes[at] ^= 0x01;
    fs::write(corrupt.join(name), bytes)?;
    Ok(())
}
