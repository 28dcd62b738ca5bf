//! Integration tests of `sync-store-file`: one binary, one module per behaviour.

mod compaction;
mod conformance;
mod corrupt;
mod encryption;
mod locking;
mod power_loss;
mod read_only;
mod security;

use std::path::Path;

use sync_store_file::{
    JsonOutboxStore, JsonOutboxStoreConfig, WalOutboxStore, WalOutboxStoreConfig,
};

pub(crate) type TestResult = Result<(), Box<dyn std::error::Error>>;

pub(crate) fn json_config(dir: &Path) -> JsonOutboxStoreConfig {
    JsonOutboxStoreConfig::new(dir.join("outbox.json"))
}

pub(crate) fn open_json(dir: &Path) -> Result<JsonOutboxStore, sync_store_file::FileStoreError> {
    JsonOutboxStore::open(json_config(dir))
}

pub(crate) fn open_wal(dir: &Path) -> Result<WalOutboxStore, sync_store_file::FileStoreError> {
    WalOutboxStore::open(WalOutboxStoreConfig::new(dir.join("outbox-wal")))
}
