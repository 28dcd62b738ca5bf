//! Guards that the SQLite store passes the `sync-outbox` conformance suite,
//! including everything acknowledged surviving a reopen, under each
//! `SyncPolicy`.

use std::sync::Arc;

use sync_outbox::testing::{check_reopen, check_store};
use sync_outbox::{OutboxError, OutboxStore};
use sync_store_sqlite::{SqliteOutboxStore, SqliteOutboxStoreConfig};
use sync_wal::SyncPolicy;

#[test]
fn the_sqlite_store_passes_the_suite_under_every_policy() -> Result<(), OutboxError> {
    for sync in [
        SyncPolicy::Always,
        SyncPolicy::Never,
        SyncPolicy::Interval(std::time::Duration::from_millis(5)),
    ] {
        let open = |path: std::path::PathBuf| -> Result<Arc<dyn OutboxStore>, OutboxError> {
            let config = SqliteOutboxStoreConfig {
                sync,
                ..SqliteOutboxStoreConfig::new(path)
            };
            Ok(Arc::new(SqliteOutboxStore::open(config)?))
        };
        let mut dirs = Vec::new();
        check_store(&mut || {
            let dir = tempfile::tempdir().map_err(OutboxError::store)?;
            let store = open(dir.path().join("app.db"))?;
            dirs.push(dir);
            Ok(store)
        })?;
        let dir = tempfile::tempdir().map_err(OutboxError::store)?;
        check_reopen(&mut || open(dir.path().join("app.db")))?;
    }
    Ok(())
}
