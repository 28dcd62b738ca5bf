//! Guards that both file stores pass the `sync-outbox` conformance suite,
//! including everything acknowledged surviving a reopen.

use std::sync::Arc;

use sync_outbox::testing::{check_reopen, check_store};
use sync_outbox::{OutboxError, OutboxStore};

use crate::{open_json, open_wal};

fn fresh_dir() -> Result<tempfile::TempDir, OutboxError> {
    tempfile::tempdir().map_err(OutboxError::store)
}

#[test]
fn json_store_passes_the_suite() -> Result<(), OutboxError> {
    let mut dirs = Vec::new();
    check_store(&mut || {
        let dir = fresh_dir()?;
        let store: Arc<dyn OutboxStore> = Arc::new(open_json(dir.path())?);
        dirs.push(dir);
        Ok(store)
    })?;
    let dir = fresh_dir()?;
    check_reopen(&mut || Ok(Arc::new(open_json(dir.path())?)))
}

#[test]
fn wal_store_passes_the_suite() -> Result<(), OutboxError> {
    let mut dirs = Vec::new();
    check_store(&mut || {
        let dir = fresh_dir()?;
        let store: Arc<dyn OutboxStore> = Arc::new(open_wal(dir.path())?);
        dirs.push(dir);
        Ok(store)
    })?;
    let dir = fresh_dir()?;
    check_reopen(&mut || Ok(Arc::new(open_wal(dir.path())?)))
}

#[test]
fn the_json_file_shows_every_field_of_every_op() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = open_json(dir.path())?;
    let op = sync_outbox::testing::sample("op_1", 1, 42);
    store.put(&op)?;
    let text = std::fs::read_to_string(dir.path().join("outbox.json"))?;
    for field in [
        "\"format\": \"sync-outbox\"",
        "\"version\": 1",
        "\"id\": \"op_1\"",
        "\"kind\"",
        "\"target\"",
        "\"payload\"",
        "\"status\": \"pending\"",
        "\"attempt\"",
        "\"next_retry_at_ms\": 42",
        "\"last_error\"",
        "\"created_at_ms\"",
        "\"updated_at_ms\"",
        "\"ordering_key\"",
        "\"coalesce_key\"",
        "\"owner\"",
        "\"seq\"",
    ] {
        assert!(text.contains(field), "{field} missing from\n{text}");
    }
    Ok(())
}
