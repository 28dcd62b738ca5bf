//! The download state file: survives a reopen, refuses a file that is not
//! one (left as it is), and is held by one process.

use sync_outbox::download::{Change, ChangeOp, DownloadState, DownloadStateStore, HeldChange};

use super::FileDownloadState;
use crate::error::FileStoreError;

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[test]
fn the_state_survives_a_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("download.json");
    let state = DownloadState {
        cursor: Some("c7".into()),
        covers_below: 12,
        last_version: 11,
        held: vec![HeldChange {
            ordering_key: "note/1".into(),
            change: Change {
                scope: "u".into(),
                entity: "note".into(),
                id: "1".into(),
                version: 11,
                op: ChangeOp::Delete,
            },
        }],
        in_snapshot: false,
        verify: vec!["note/2".into()],
    };
    FileDownloadState::open(&path)?.save(&state)?;
    assert_eq!(FileDownloadState::open(&path)?.load()?, state);
    assert_eq!(FileDownloadState::read_only(&path)?, state);
    Ok(())
}

#[test]
fn a_file_that_is_not_a_state_is_refused_and_left_alone() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("download.json");
    std::fs::write(&path, br#"{"cursor": 5"#)?;
    match FileDownloadState::open(&path) {
        Err(FileStoreError::Corrupt { path: named, .. }) => assert_eq!(named, path),
        other => return Err(format!("expected Corrupt, got {other:?}").into()),
    }
    assert_eq!(std::fs::read(&path)?, br#"{"cursor": 5"#);
    Ok(())
}

#[test]
fn one_process_at_a_time() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("download.json");
    let first = FileDownloadState::open(&path)?;
    assert!(matches!(
        FileDownloadState::open(&path),
        Err(FileStoreError::Locked { .. })
    ));
    drop(first);
    FileDownloadState::open(&path)?;
    Ok(())
}
