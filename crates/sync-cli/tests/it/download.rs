//! Guards `synctl download show` on both kinds of state: the cursor and the
//! held changes of an SQLite database (beside the app holding it open) and
//! of a download state file, read without changing a byte; a missing or
//! corrupt file gets a clear message and its exit code.

use std::collections::HashSet;
use std::sync::Arc;

use rusqlite::Connection;
use sync_outbox::download::{
    Change, DownloadState, DownloadStateStore, DownloadTarget, HeldChange, PullResponse,
};
use sync_outbox::{Operation, Outbox, OutboxConfig};
use sync_store_file::FileDownloadState;
use sync_store_sqlite::{
    ApplySqliteChanges, SqliteDownload, SqliteOutboxStore, SqliteOutboxStoreConfig,
};

use crate::{TestResult, arg, files, synctl};

/// Applies nothing: the test reads the download state, not the app's rows.
struct Nothing;

impl ApplySqliteChanges for Nothing {
    fn upsert(
        &mut self,
        _: &Connection,
        _: &Change,
        _: &serde_json::Value,
    ) -> rusqlite::Result<()> {
        Ok(())
    }
    fn delete(&mut self, _: &Connection, _: &Change) -> rusqlite::Result<()> {
        Ok(())
    }
    fn reset(&mut self, _: &Connection, _: &HashSet<String>) -> rusqlite::Result<()> {
        Ok(())
    }
    fn forget(&mut self, _: &Connection, _: &str) -> rusqlite::Result<()> {
        Ok(())
    }
}

/// A page of two notes: `a` has a pending local edit, so it is held.
fn page() -> Result<PullResponse, serde_json::Error> {
    serde_json::from_str(
        r#"{"changes":[{"scope":"u","entity":"note","id":"a","version":4,"op":"upsert","state":{"text":"theirs"}},
            {"scope":"u","entity":"note","id":"b","version":5,"op":"delete"}],
            "cursor":"c-17","more":false,"covers_below":6,"snapshot":true}"#,
    )
}

#[test]
fn show_reads_an_sqlite_databases_cursor_and_held_changes_beside_the_app() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("app.db");
    let store = Arc::new(SqliteOutboxStore::open(SqliteOutboxStoreConfig::new(&db))?);
    let outbox = Arc::new(Outbox::new(OutboxConfig::default(), store.clone()));
    outbox.enqueue(
        Operation {
            ordering_key: Some("note/a".into()),
            ..Operation::new("note.update", "/notes/a", "{}")
        },
        0,
    )?;
    let download = SqliteDownload::new(store.clone(), outbox, Nothing);
    download.commit_page(&page()?)?;

    // The app still has the database open. A reader may touch SQLite's
    // shared-memory index (`-shm`), never the database or its log.
    let data = || -> Result<Vec<(String, Vec<u8>)>, std::io::Error> {
        let mut all = files(dir.path())?;
        all.retain(|(name, _)| !name.ends_with("-shm"));
        Ok(all)
    };
    let before = data()?;
    let run = synctl(&["download", "show", arg(&db)])?;
    assert_eq!(run.code, Some(0), "{run:?}");
    for expected in [
        "c-17",
        "covers below:",
        "6",
        "held:",
        "note/a",
        "upsert",
        "complete",
    ] {
        assert!(run.stdout.contains(expected), "{expected}: {}", run.stdout);
    }
    assert!(
        !run.stdout.contains("delete"),
        "note b was applied, not held"
    );
    let run = synctl(&["download", "show", arg(&db), "--json"])?;
    assert_eq!(run.code, Some(0), "{run:?}");
    let state: DownloadState = serde_json::from_str(&run.stdout)?;
    assert_eq!(state, download.state()?);
    assert_eq!(state.held.len(), 1);
    assert!(data()? == before, "a read changes nothing");
    Ok(())
}

#[test]
fn show_reads_a_state_file_and_refuses_a_missing_or_corrupt_one() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("download.json");
    let mut change: Change = serde_json::from_str(
        r#"{"scope":"u","entity":"note","id":"a","version":4,"op":"delete"}"#,
    )?;
    change.version = 9;
    let state = DownloadState {
        cursor: Some("c-3".into()),
        covers_below: 10,
        last_version: 9,
        held: vec![HeldChange {
            ordering_key: "note/a".into(),
            change,
        }],
        ..DownloadState::default()
    };
    FileDownloadState::open(&path)?.save(&state)?;
    let run = synctl(&["download", "show", arg(&path)])?;
    assert_eq!(run.code, Some(0), "{run:?}");
    for expected in ["c-3", "note/a", "delete", "9"] {
        assert!(run.stdout.contains(expected), "{expected}: {}", run.stdout);
    }
    let run = synctl(&["download", "show", arg(&path), "--json"])?;
    assert_eq!(serde_json::from_str::<DownloadState>(&run.stdout)?, state);

    let missing = dir.path().join("nope.json");
    let run = synctl(&["download", "show", arg(&missing)])?;
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(run.stderr.contains("no download state at"), "{run:?}");

    std::fs::write(&path, b"{\"cursor\": 12")?;
    let run = synctl(&["download", "show", arg(&path)])?;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains("download.json"),
        "names the file: {run:?}"
    );
    assert_eq!(std::fs::read(&path)?, b"{\"cursor\": 12", "left alone");
    Ok(())
}
