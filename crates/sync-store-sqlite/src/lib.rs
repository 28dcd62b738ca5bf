//! An [`OutboxStore`](sync_outbox::OutboxStore) in SQLite, for apps that
//! keep their data in SQLite: the app's change and its operation are written
//! in one transaction, so "if the network fails, the operation still exists
//! locally" holds for the change itself, across any crash.
//!
//! [`SqliteOutboxStore`] passes the store conformance suite, holds the same
//! single-owner lock as the file stores, maps `SyncPolicy` onto SQLite's
//! durability settings (the table is on the type), and refuses, without
//! writing to it, a file that is not a database or has a schema version it
//! does not know. [`SqliteOutboxStore::transaction`] (or
//! [`with_transaction`](SqliteOutboxStore::with_transaction)) gives the app a
//! [`SqliteTransaction`] for its own SQL and its operations together.
//!
//! SQLite is compiled in (`rusqlite` with `bundled`): nothing to install.
//! The outbox's tables are `sync_outbox` and `sync_meta`; the app may read
//! them with plain SQL (`SELECT status, count(*) FROM sync_outbox GROUP BY
//! status`), but changes go through the `Outbox`.
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use sync::prelude::*;
//!
//! let dir = tempfile::tempdir()?;
//! let store = Arc::new(SqliteOutboxStore::open(SqliteOutboxStoreConfig::new(dir.path().join("app.db")))?);
//! let outbox = Outbox::new(OutboxConfig::default(), store.clone());
//! let ids = store.with_transaction(&outbox, |tx| {
//!     tx.execute_batch("CREATE TABLE notes (id TEXT PRIMARY KEY, text TEXT)")?;
//!     tx.execute("INSERT INTO notes VALUES ('n1', 'buy milk')", [])?;
//!     tx.enqueue(Operation::new("note.create", "/notes", r#"{"id":"n1","text":"buy milk"}"#), 1_000)?;
//!     Ok::<_, sync::sqlite::SqliteStoreError>(())
//! });
//! assert!(ids.is_ok());
//! assert_eq!(outbox.claim(1_001, 10)?.len(), 1);
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```
//!
//! # Crate features
//!
//! - `tokio` (off by default; in the `sync` facade, on with `tokio` and
//!   `sqlite`): `SqliteOutboxStore::with_transaction_async`, the
//!   transactional enqueue as a future on tokio's blocking pool.

#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod download;
mod error;
#[cfg(feature = "sqlcipher")]
mod key;
mod schema;
mod store;
mod transaction;

/// The SQLite binding this crate uses, for the app's own SQL on the same
/// database (so the versions always match).
pub use rusqlite;

pub use download::{ApplySqliteChanges, SqliteDownload};
pub use error::SqliteStoreError;
#[cfg(feature = "sqlcipher")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlcipher")))]
pub use key::DatabaseKey;
pub use store::{SqliteOutboxStore, SqliteOutboxStoreConfig};
pub use transaction::SqliteTransaction;

/// The result type of this crate.
pub type Result<T, E = SqliteStoreError> = std::result::Result<T, E>;
