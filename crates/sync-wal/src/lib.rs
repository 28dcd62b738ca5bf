//! A segmented, CRC-framed write-ahead log that survives crashes.
//!
//! `sync-wal` appends records to a directory of segment files and reads them
//! back in order. Every frame carries a CRC; a write torn by a crash is cut
//! away on open, and damage anywhere else is reported, never skipped. How hard
//! each append is pushed to disk is a [`SyncPolicy`], with group commit under
//! [`SyncPolicy::Always`].
//!
//! It is a log of opaque records and nothing more: it knows nothing of
//! operations, outboxes or JSON, and has no dependency on the rest of the
//! `sync` workspace, so it can be used alone.
//!
//! # Examples
//!
//! ```
//! use sync_wal::{RecordType, SyncPolicy, Wal, WalConfig, WalRecord};
//!
//! let dir = tempfile::tempdir().expect("a temp dir");
//! let mut config = WalConfig::new(dir.path());
//! config.sync = SyncPolicy::Always;
//! {
//!     let wal = Wal::open(config.clone())?;
//!     wal.append(&WalRecord { id: "op_1".into(), kind: RecordType::PutOperation, ts_ms: 1, payload: b"{}".to_vec() })?;
//!     wal.append(&WalRecord { id: "op_1".into(), kind: RecordType::MarkDone, ts_ms: 2, payload: Vec::new() })?;
//! } // dropped: the directory lock is released
//!
//! let wal = Wal::open(config)?;
//! let kinds: Vec<RecordType> = wal.iter_from(0)?.map(|item| item.map(|(_, r)| r.kind)).collect::<Result<_, _>>()?;
//! assert_eq!(kinds, [RecordType::PutOperation, RecordType::MarkDone]);
//! assert_eq!(wal.next_lsn(), 2);
//! # Ok::<_, sync_wal::WalError>(())
//! ```
//!
//! # Crate features
//!
//! - `testing` (off by default): the `testing` module, test doubles of
//!   [`Storage`] that inject faults and model power loss.
//!
//! The crate depends only on `crc32fast` and `thiserror`.
//!
//! # Format
//!
//! The byte layout, the recovery rules and a crash-by-crash analysis are in
//! [`docs/FORMAT.md`](https://github.com/sync-rs/sync/blob/main/docs/FORMAT.md).
//! The [`format`](mod@format) module encodes and decodes it on byte slices.

#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod error;
mod file;
pub mod format;
mod inspect;
mod lock;
mod reader;
mod record;
mod recovery;
mod segment;
mod storage;
mod sync_policy;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
mod wal;

pub use config::WalConfig;
pub use error::{Corruption, WalError};
pub use inspect::{LogTail, SegmentInfo, VerifyReport, WalInspector};
pub use lock::LockedFile;
pub use reader::WalIter;
pub use record::{RecordType, WalRecord};
pub use recovery::RecoveryMode;
pub use storage::{FileStorage, Storage, StorageFile};
pub use sync_policy::SyncPolicy;
pub use wal::Wal;

/// The result type of this crate.
pub type Result<T, E = WalError> = std::result::Result<T, E>;
