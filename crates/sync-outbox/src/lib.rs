//! The outbox of an offline-first sync: operations, their state machine, the
//! retry policy, and the store trait.
//!
//! An [`Operation`] is persisted by [`Outbox::enqueue`] before any network
//! call; a sender claims due operations with [`Outbox::claim`] (held by the
//! returned [`Claim`] while it sends them), and records each result with
//! [`Outbox::mark_done`] or [`Outbox::record`], which applies the
//! [`RetryPolicy`]. `sync-engine` does this for you.
//!
//! This crate is the model and the rules only: it does no I/O and reads no
//! clock (every time is the caller's `now_ms`), and depends on no other crate
//! of the workspace. Durable stores implement [`OutboxStore`] elsewhere
//! (`sync-store-file`); [`MemoryOutboxStore`] is the in-memory one.
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use sync::outbox::{MemoryOutboxStore, Operation, OperationStatus, Outbox, OutboxConfig, OutboxStore, RetryPolicy};
//!
//! let store = Arc::new(MemoryOutboxStore::new());
//! let retry = RetryPolicy { max_attempts: 3, base_delay: Duration::from_millis(500), factor: 2.0, ..RetryPolicy::default() };
//! let outbox = Outbox::new(OutboxConfig { owner: "app".into(), retry, ..OutboxConfig::default() }, store.clone());
//!
//! let mut op = Operation::default();
//! op.kind = "message.send".into();
//! op.target = "/api/messages".into();
//! op.payload = r#"{"text":"hello"}"#.into();
//! let id = outbox.enqueue(op, 0)?;                    // persisted before it returns
//! let claim = outbox.claim(1, 10)?;                 // -> InFlight, held by this sender
//! assert_eq!(claim.len(), 1);
//! outbox.mark_done(&id, 2)?;
//! assert_eq!(store.get(&id)?.map(|op| op.status), Some(OperationStatus::Done));
//! # Ok::<_, sync::outbox::OutboxError>(())
//! ```
//!
//! # Crate features
//!
//! - `testing` (off by default): the `testing` module, a conformance suite
//!   every [`OutboxStore`] implementation should pass.

#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod dependency;
pub mod download;
mod error;
mod group;
mod id;
mod memory_store;
mod operation;
mod outbox;
mod retry;
mod store;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
mod trace;
mod transition;

pub use dependency::Need;
pub use error::OutboxError;
pub use memory_store::MemoryOutboxStore;
pub use operation::{Delivery, Operation, OperationStatus, OrderingMode};
pub use outbox::{
    Claim, Completion, Correction, ExclusiveOutbox, Outbox, OutboxConfig, OutboxStats,
    PayloadUpgrade, PreparedEnqueue, RecoveryReport, SendOutcome, StatsWatch,
};
pub use retry::{Jitter, RetryPolicy};
pub use store::{OutboxStore, status_index};
/// The batch wire types, defined in `sync-protocol` (shared with
/// `sync-server`) and re-exported here.
pub use sync_protocol::{BatchOperation, BatchRequest, BatchResponse, BatchResult};
/// The group wire types ([`Operation::group`]), defined in `sync-protocol`
/// and re-exported here.
pub use sync_protocol::{GROUP_TARGET, GroupOperation, GroupRequest, GroupResponse};
pub use trace::TraceContext;
pub use transition::{is_allowed, transition};

/// The result type of this crate.
pub type Result<T, E = OutboxError> = std::result::Result<T, E>;
