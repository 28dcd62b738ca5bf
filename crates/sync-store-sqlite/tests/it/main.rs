//! Integration tests of `sync-store-sqlite`: one binary, one module per
//! behaviour.

mod bad_input;
mod conformance;
#[cfg(feature = "sqlcipher")]
mod encryption;
mod transaction;
mod upgrade;

use std::path::Path;
use std::sync::Arc;

use sync_outbox::{Outbox, OutboxConfig};
use sync_store_sqlite::{SqliteOutboxStore, SqliteOutboxStoreConfig, SqliteStoreError};

pub(crate) type TestResult = Result<(), Box<dyn std::error::Error>>;

pub(crate) fn open(path: &Path) -> Result<SqliteOutboxStore, SqliteStoreError> {
    SqliteOutboxStore::open(SqliteOutboxStoreConfig::new(path))
}

/// A store at `dir/app.db` and an outbox over it.
pub(crate) fn store_and_outbox(
    dir: &Path,
) -> Result<(Arc<SqliteOutboxStore>, Arc<Outbox>), SqliteStoreError> {
    let store = Arc::new(open(&dir.join("app.db"))?);
    let outbox = Arc::new(Outbox::new(OutboxConfig::default(), store.clone()));
    Ok((store, outbox))
}
