//! The wire both halves of `sync` speak: what the client sends, what the
//! server answers, and what each answer means.
//!
//! A small leaf crate with no I/O (serde, `serde_json` and a query-string
//! encoder), so a client
//! (`sync-transport-http`) and a server (`sync-server`) agree on one
//! definition, and a server in another crate (or, reading
//! `docs/PROTOCOL.md`, in another language) can follow it:
//!
//! - the batch request and response types ([`BatchRequest`],
//!   [`BatchResponse`]);
//! - all-or-nothing groups, one request under one key ([`GroupRequest`],
//!   [`GroupResponse`], [`GROUP_TARGET`]);
//! - the change feed's pull ([`PullRequest`], [`PullResponse`], [`Change`],
//!   [`PullError`]) and the version header on an operation's answer
//!   ([`SYNC_VERSION`]);
//! - the header names ([`IDEMPOTENCY_KEY`], [`IDEMPOTENT_REPLAYED`],
//!   [`IDEMPOTENT_RESPONSE_EXPIRED`], [`RETRY_AFTER`]);
//! - the status table ([`map_status`]: done, retried, unavailable,
//!   permanent; [`is_storable`]: what a server replays);
//! - how long each half remembers a key ([`DEFAULT_KEY_MEMORY`] on the
//!   server above [`DEFAULT_RESEND_WINDOW`] on the client).
//!
//! # Examples
//!
//! ```
//! use sync_protocol::{BatchResponse, StatusClass, map_status};
//!
//! let answer: BatchResponse = serde_json::from_str(
//!     r#"{"results":[{"idempotency_key":"op_1","status":201},{"idempotency_key":"op_2","status":503}]}"#,
//! )?;
//! let classes: Vec<StatusClass> = answer.results.iter().map(|r| map_status(r.status)).collect();
//! assert_eq!(classes, [StatusClass::Done, StatusClass::Unavailable]);
//! # Ok::<_, serde_json::Error>(())
//! ```
//!
//! # Crate features
//!
//! None.

#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod batch;
mod feed;
mod group;
mod header;
mod lifetime;
mod status;

pub use batch::{BatchOperation, BatchRequest, BatchResponse, BatchResult, WireOperation};
pub use feed::{
    Change, ChangeOp, DEFAULT_PULL_LIMIT, MAX_PULL_LIMIT, PullError, PullErrorCode, PullRequest,
    PullResponse, RestartReason, SYNC_VERSION,
};
pub use group::{GROUP_TARGET, GroupOperation, GroupRequest, GroupResponse};
pub use header::{
    IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, IDEMPOTENT_RESPONSE_EXPIRED, MAX_KEY_LEN, RETRY_AFTER,
    TRACEPARENT, is_traceparent,
};
pub use lifetime::{DEFAULT_KEY_MEMORY, DEFAULT_RESEND_WINDOW, DEFAULT_RESPONSE_TTL};
pub use status::{StatusClass, is_storable, map_status};
