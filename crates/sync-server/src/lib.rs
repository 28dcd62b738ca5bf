//! The receiving half of `sync`: a server that applies each operation once,
//! however often the client sends it.
//!
//! The client sends every operation at least once, with its id as the
//! `Idempotency-Key` header (or the batch element's `idempotency_key`).
//! [`IdempotencyLayer`], a tower layer for axum servers, follows the IETF
//! httpapi "Idempotency-Key" draft: the first request with a key runs and
//! its response is stored, a repeat gets that response replayed, a repeat
//! while the first still runs gets `409`, the same key on a different
//! request gets `422`, and a response the client retries (a `5xx`, `408`,
//! `409`, `425`, `429`) is not stored, so the retry runs again.
//!
//! A layer alone cannot make the handler's database write and the key's
//! record atomic. The **transactional form** can: the handler takes
//! [`Idempotency`] and writes its effect through its store's transaction,
//! which stores the key's response in the same commit. A server killed at
//! any point then either applied the operation and remembers it, or did
//! neither, and the retry (after the dead request's lease) runs it once.
//!
//! Stores: [`MemoryIdempotencyStore`] (tests), `SqliteIdempotencyStore`
//! (feature `sqlite`, default; facade feature `server`: one server process,
//! on rusqlite) and `PostgresIdempotencyStore` (feature `postgres`; facade
//! `server-postgres`: a fleet behind a load
//! balancer; the table's primary key is what dedupes across instances).
//! [`BatchService`] serves the client's batch format, each element deduped
//! on its own key by the same layer and handlers. An all-or-nothing group
//! ([`GroupRequest`]) is one request under one key, applied in the key's
//! transaction: a refused member undoes the group ([`Member`]).
//!
//! The **change feed** is the download half: a handler records what it
//! changed ([`FeedChange`]) in the same transaction as its effect, and
//! [`PullService`] serves the changes, per scope, to every device, in
//! pages no cursor can skip a change in, with a snapshot for a new device
//! and a typed "start again" for a cursor that cannot be continued. The
//! SQL stores implement [`ChangeFeed`] (`docs/PROTOCOL.md`, "Pulling
//! changes").
//!
//! This crate knows nothing of the client: it depends only on the wire both
//! halves share, `sync-protocol` (`docs/PROTOCOL.md`).
//!
//! # Examples
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
//! use std::sync::Arc;
//! use axum::{Router, body::Body, routing::post};
//! use http::Request;
//! use sync_server::{IdempotencyConfig, IdempotencyLayer, MemoryIdempotencyStore};
//! use tower_service::Service;
//!
//! let store = Arc::new(MemoryIdempotencyStore::default());
//! let mut app: Router = Router::new()
//!     .route("/notes", post(|body: String| async move { format!("stored {body}") }))
//!     .layer(IdempotencyLayer::new(store, IdempotencyConfig::default()));
//! let send = || Request::post("/notes").header("idempotency-key", "op-1").body(Body::from("hi")).unwrap();
//! let first = app.call(send()).await?;
//! let again = app.call(send()).await?;
//! assert_eq!(first.status(), 200);
//! assert_eq!(again.headers()["idempotent-replayed"], "true");
//! # Ok::<_, std::convert::Infallible>(())
//! # })?;
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```
//!
//! # Crate features
//!
//! - `sqlite` (default): `SqliteIdempotencyStore`, on rusqlite with SQLite
//!   compiled in.
//! - `postgres`: `PostgresIdempotencyStore`, on tokio-postgres with a
//!   deadpool pool.

#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod batch;
mod config;
mod error;
mod feed;
mod fingerprint;
mod group;
mod handle;
mod key;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod key_table;
mod layer;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod record;
mod response;
#[cfg(feature = "sqlite")]
mod sqlite;
mod store;

pub use batch::BatchService;
pub use config::{ClockFn, IdempotencyConfig, KeyRequirement, ScopeFn};
pub use error::ServerError;
pub use feed::{
    ChangeFeed, Compaction, EntitledScopesFn, FeedChange, FeedKey, FeedPage, FeedQuery, Position,
    PullConfig, PullService,
};
pub use fingerprint::Fingerprint;
pub use group::{Member, group_applied};
pub use handle::{Idempotency, MissingIdempotency};
pub use layer::{IdempotencyLayer, IdempotencyService};
pub use memory::MemoryIdempotencyStore;
#[cfg(feature = "postgres")]
pub use postgres::{PgEffect, PostgresIdempotencyStore};
pub use record::{Decision, KeyRecord, KeyState, decide};
pub use response::StoredResponse;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteIdempotencyStore;
pub use store::{Begin, IdempotencyStore, KeyClaim, KeyExpiry};
/// The feed's wire types, defined in `sync-protocol` and re-exported here.
pub use sync_protocol::{Change, ChangeOp, PullError, PullErrorCode, PullResponse, RestartReason};
/// The group wire types, defined in `sync-protocol` and re-exported here.
pub use sync_protocol::{GROUP_TARGET, GroupOperation, GroupRequest, GroupResponse};
/// The header names and key limit, defined in `sync-protocol` (shared with
/// the client) and re-exported here.
pub use sync_protocol::{
    IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, IDEMPOTENT_RESPONSE_EXPIRED, MAX_KEY_LEN, SYNC_VERSION,
};

/// The SQLite binding the SQLite store uses, for the app's own SQL.
#[cfg(feature = "sqlite")]
pub use rusqlite;
/// The PostgreSQL client the PostgreSQL store uses, for the app's own SQL.
#[cfg(feature = "postgres")]
pub use tokio_postgres;

/// The result type of this crate.
pub type Result<T, E = ServerError> = std::result::Result<T, E>;
