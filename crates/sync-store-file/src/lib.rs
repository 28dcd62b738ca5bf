//! Durable [`OutboxStore`](sync_outbox::OutboxStore)s on files.
//!
//! - [`JsonOutboxStore`]: the whole outbox in one JSON document a person can
//!   read with `cat`, replaced atomically on every change. O(n) per change.
//! - [`WalOutboxStore`]: every change is one record appended to a
//!   [`sync_wal`] log, with snapshots and truncation. O(1) per change, group
//!   commit under `SyncPolicy::Always`. The one for queues that grow.
//! - [`FileDownloadState`]: where the device is in the server's change feed,
//!   beside either store, for pulled changes the app applies to its own data
//!   (`sync_outbox::download::AppDownload`).
//!
//! Both refuse to open a file they cannot parse (a typed error naming the
//! file), never overwrite it, hold an exclusive lock for their lifetime, and
//! create files mode 0600 on unix. Both pass the `sync-outbox` store
//! conformance suite.
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use sync::prelude::*;
//!
//! let dir = tempfile::tempdir().expect("a temp dir");
//! let store = Arc::new(WalOutboxStore::open(WalOutboxStoreConfig::new(dir.path()))?);
//! let outbox = Outbox::new(OutboxConfig::default(), store.clone());
//! let id = outbox.enqueue(Operation::new("message.send", "/api/messages", "{}"), 0)?;
//! let claim = outbox.claim(0, 10)?;
//! # let _ = claim;
//! outbox.mark_done(&id, 1)?;
//! assert_eq!(store.get(&id)?.map(|op| op.status), Some(OperationStatus::Done));
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```
//!
//! # Crate features
//!
//! None.

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]
#![doc(test(attr(deny(warnings))))]

mod download;
mod encryption;
mod error;
mod file;
mod json_store;
pub mod snapshot;
mod transition;
mod wal_store;

pub use download::FileDownloadState;
pub use encryption::{Encryption, EncryptionKey, KEY_LEN, KeyRing, KeySet, SEALED_FILE_MAGIC};
pub use error::{EncryptionProblem, FileStoreError};

/// The old name of [`FileStoreError`] (beside `sync_store_sqlite::SqliteStoreError`).
#[deprecated(since = "0.1.0", note = "renamed `FileStoreError`")]
pub type StoreError = FileStoreError;
pub use json_store::{
    JSON_FORMAT_NAME, JSON_FORMAT_VERSION, JsonOutboxStore, JsonOutboxStoreConfig,
};

/// The old name of [`JsonOutboxStore`]: the WAL store is a file store too.
#[deprecated(since = "0.1.0", note = "renamed `JsonOutboxStore`")]
pub type FileOutboxStore = JsonOutboxStore;

/// The old name of [`JsonOutboxStoreConfig`].
#[deprecated(since = "0.1.0", note = "renamed `JsonOutboxStoreConfig`")]
pub type FileOutboxStoreConfig = JsonOutboxStoreConfig;
pub use wal_store::{WalOutboxStore, WalOutboxStoreConfig};

/// The result type of this crate.
pub type Result<T, E = FileStoreError> = std::result::Result<T, E>;
