//! Offline-first sync for Rust applications: **if the network fails, the
//! operation still exists locally.**
//!
//! Every local operation is persisted first (a write-ahead log and a durable
//! outbox) and sent later by a worker through a transport you implement,
//! retrying temporary failures with backoff and parking permanent ones as
//! failed. This crate is the facade: each layer is a module behind a feature,
//! and [`prelude`] brings the common names in with one `use`.
//!
//! ```text
//! local write -> WAL append -> outbox enqueue -> sync worker -> transport -> ack
//! ```
//!
//! # Examples
//!
//! The whole flow: persist before any network call, fail while offline,
//! succeed once the network is back.
//!
//! ```
//! # #[cfg(all(feature = "store", feature = "engine"))]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
//! use sync::prelude::*;
//!
//! struct MyTransport {
//!     online: AtomicBool,
//! }
//! impl SyncTransport for MyTransport {
//!     fn send(&self, _op: &Operation) -> SendResult {
//!         if !self.online.load(SeqCst) {
//!             return SendResult::retryable("network offline");
//!         }
//!         SendResult::ok()
//!     }
//! }
//!
//! let dir = tempfile::tempdir()?;
//! let store = Arc::new(JsonOutboxStore::open(JsonOutboxStoreConfig::new(dir.path().join("outbox.json")))?);
//! let retry = RetryPolicy { max_attempts: 3, base_delay: std::time::Duration::from_millis(500), factor: 2.0, ..RetryPolicy::default() };
//! let outbox = Arc::new(Outbox::new(OutboxConfig { owner: "app".into(), retry, ..OutboxConfig::default() }, store.clone()));
//! let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
//! let transport = Arc::new(MyTransport { online: AtomicBool::new(false) });
//! let worker = SyncWorker::new(SyncWorkerConfig { batch_limit: 10, ..SyncWorkerConfig::default() },
//!                              outbox.clone(), probe, transport.clone());
//!
//! let id = outbox.enqueue(Operation::new("message.send", "/api/messages", r#"{"text":"hello"}"#), 1_000)?;
//! assert_eq!(worker.tick(1_001)?, 1);                  // offline: retry at 1_501
//! transport.online.store(true, SeqCst);
//! assert_eq!(worker.tick(1_501)?, 1);
//! assert_eq!(store.get(&id)?.map(|op| op.status), Some(OperationStatus::Done));
//! # Ok(())
//! # }
//! # #[cfg(not(all(feature = "store", feature = "engine")))]
//! # fn main() {}
//! ```
//!
//! # Crate features
//!
//! On by default: `wal`, `outbox`, `store` and `engine`, the whole embedded
//! stack. Off by default: `sqlite`, `sqlcipher`, `http`, `tokio`, `http-async`,
//! `tracing` and `metrics`. Turn off the defaults
//! (`default-features = false`) to take only the layers you need.
//!
//! - `wal` (default): `sync::wal`, the write-ahead log (`sync-wal`).
//! - `protocol` (on with `outbox` or `server`): `sync::protocol`, the wire
//!   both halves speak: batch types, header names, the status table and key
//!   lifetimes (`sync-protocol`).
//! - `outbox` (default): `sync::outbox`, operations, the state machine,
//!   retry policy and the store trait (`sync-outbox`); turns on `protocol`.
//! - `store` (default): `sync::store`, the JSON and WAL-backed stores
//!   (`sync-store-file`); turns on `wal` and `outbox`.
//! - `sqlite`: `sync::sqlite`, the SQLite store, whose transactions hold the
//!   app's rows and its operations together (`sync-store-sqlite`, SQLite
//!   compiled in); turns on `wal` and `outbox`.
//! - `sqlcipher`: `sync::sqlite::DatabaseKey`, the SQLite store's database
//!   (the app's rows and the outbox) encrypted at rest with SQLCipher,
//!   OpenSSL compiled in; turns on `sqlite`.
//! - `engine` (default): `sync::engine`, the worker, transport trait and
//!   network probe (`sync-engine`); turns on `outbox`.
//! - `http`: `sync::http`, a transport that sends each operation (or each
//!   batch) as an HTTP request (`sync-transport-http`, on `ureq` and
//!   rustls); turns on `engine`.
//! - `tokio`: the async face for tokio applications, in `sync::engine`:
//!   `AsyncSyncEngine` (senders as tasks, store I/O on the blocking pool,
//!   sleeps on tokio's clock), `AsyncOutbox` (enqueue as a future),
//!   `AsyncSyncTransport` and its adapters; turns on `engine`.
//! - `http-async`: `sync::http::AsyncHttpTransport`, on `reqwest` and
//!   rustls; turns on `tokio`. Without `http`, no `ureq` is compiled.
//! - `tracing`: `sync::engine::TracingObserver`, the worker's events as
//!   `tracing` events.
//! - `metrics`: numbers an operator can graph, through the `metrics`
//!   facade (`docs/metrics.md`): `sync::engine::MetricsObserver` with
//!   `engine`, the server layer's requests and pulls with `server`. The app
//!   installs a recorder (Prometheus, OpenTelemetry, ...); without one,
//!   recording costs nothing measurable.
//! - `server`: `sync::server`, the receiving half (`sync-server`): the
//!   `IdempotencyLayer` for axum 0.8 / tower 0.3 servers on tokio 1, and
//!   exactly-once effects on SQLite. Independent of the client layers;
//!   turns on `protocol`.
//! - `server-postgres`: `sync::server::PostgresIdempotencyStore`, for a
//!   fleet of servers on one PostgreSQL database (tokio-postgres 0.7,
//!   deadpool-postgres 0.14); turns on `server`.
//!
//! The layers' own features, as the facade names them: `sync-transport-http`'s
//! `blocking` is `http` and its `async` is `http-async`; `sync-engine`'s
//! `tokio`, `tracing` and `metrics` are `tokio`, `tracing` and `metrics`
//! (`metrics` also turns on `sync-server`'s); `sync-store-sqlite`'s
//! `tokio` is on with `tokio` and `sqlite`, and its `sqlcipher` is
//! `sqlcipher`; `sync-server`'s `sqlite` is `server` and its `postgres` is
//! `server-postgres`.

#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The write-ahead log: re-exports `sync-wal`.
///
/// The main types' examples use these facade paths (`sync::wal::...`,
/// `sync::prelude::*`); the others name the layer's own crate
/// (`sync_wal::...`), the same items. Where an item needs a feature of
/// its crate, the facade's name for it is in this crate's feature list.
#[cfg(feature = "wal")]
#[cfg_attr(docsrs, doc(cfg(feature = "wal")))]
pub mod wal {
    pub use sync_wal::*;
}

/// The wire both halves speak: re-exports `sync-protocol`.
///
/// The main types' examples use these facade paths (`sync::protocol::...`,
/// `sync::prelude::*`); the others name the layer's own crate
/// (`sync_protocol::...`), the same items. Where an item needs a feature of
/// its crate, the facade's name for it is in this crate's feature list.
#[cfg(feature = "protocol")]
#[cfg_attr(docsrs, doc(cfg(feature = "protocol")))]
pub mod protocol {
    pub use sync_protocol::*;
}

/// Operations, their state machine, the retry policy and the store trait:
/// re-exports `sync-outbox`.
///
/// The main types' examples use these facade paths (`sync::outbox::...`,
/// `sync::prelude::*`); the others name the layer's own crate
/// (`sync_outbox::...`), the same items. Where an item needs a feature of
/// its crate, the facade's name for it is in this crate's feature list.
#[cfg(feature = "outbox")]
#[cfg_attr(docsrs, doc(cfg(feature = "outbox")))]
pub mod outbox {
    pub use sync_outbox::*;
}

/// The durable stores: re-exports `sync-store-file`.
///
/// The main types' examples use these facade paths (`sync::store::...`,
/// `sync::prelude::*`); the others name the layer's own crate
/// (`sync_store_file::...`), the same items. Where an item needs a feature of
/// its crate, the facade's name for it is in this crate's feature list.
#[cfg(feature = "store")]
#[cfg_attr(docsrs, doc(cfg(feature = "store")))]
pub mod store {
    pub use sync_store_file::*;
}

/// The SQLite store: re-exports `sync-store-sqlite`.
///
/// The main types' examples use these facade paths (`sync::sqlite::...`,
/// `sync::prelude::*`); the others name the layer's own crate
/// (`sync_store_sqlite::...`), the same items. Where an item needs a feature of
/// its crate, the facade's name for it is in this crate's feature list.
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub mod sqlite {
    pub use sync_store_sqlite::*;
}

/// The worker, transport trait and network probe: re-exports `sync-engine`.
///
/// The main types' examples use these facade paths (`sync::engine::...`,
/// `sync::prelude::*`); the others name the layer's own crate
/// (`sync_engine::...`), the same items. Where an item needs a feature of
/// its crate, the facade's name for it is in this crate's feature list.
#[cfg(feature = "engine")]
#[cfg_attr(docsrs, doc(cfg(feature = "engine")))]
pub mod engine {
    pub use sync_engine::*;
}

/// The HTTP transport: re-exports `sync-transport-http`.
///
/// The main types' examples use these facade paths (`sync::http::...`,
/// `sync::prelude::*`); the others name the layer's own crate
/// (`sync_transport_http::...`), the same items. Where an item needs a feature of
/// its crate, the facade's name for it is in this crate's feature list.
#[cfg(any(feature = "http", feature = "http-async"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "http", feature = "http-async"))))]
pub mod http {
    pub use sync_transport_http::*;
}

/// The receiving half, for servers: re-exports `sync-server`.
///
/// The main types' examples use these facade paths (`sync::server::...`,
/// `sync::prelude::*`); the others name the layer's own crate
/// (`sync_server::...`), the same items. Where an item needs a feature of
/// its crate, the facade's name for it is in this crate's feature list.
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod server {
    pub use sync_server::*;
}

/// The names most applications need, for `use sync::prelude::*;`.
pub mod prelude {
    #[cfg(feature = "tokio")]
    pub use crate::engine::{
        AsyncDownloader, AsyncOutbox, AsyncPullTransport, AsyncSyncEngine, AsyncSyncTransport,
        TokioClock,
    };
    #[cfg(feature = "engine")]
    pub use crate::engine::{
        Clock, DownloadConfig, Downloader, ManualClock, NetworkProbe, NetworkProbeConfig,
        PullTransport, Reflection, ResultSink, SendResult, SyncEngine, SyncEngineConfig,
        SyncTransport, SyncWorker, SyncWorkerConfig, SystemClock,
    };
    #[cfg(feature = "http-async")]
    pub use crate::http::AsyncHttpTransport;
    #[cfg(feature = "http")]
    pub use crate::http::HttpTransport;
    #[cfg(any(feature = "http", feature = "http-async"))]
    pub use crate::http::{AuthProvider, HttpMethod, HttpTransportConfig};
    #[cfg(feature = "outbox")]
    pub use crate::outbox::download::{AppDownload, ApplyChanges, Change};
    #[cfg(feature = "outbox")]
    pub use crate::outbox::{
        Completion, MemoryOutboxStore, Need, Operation, OperationStatus, Outbox, OutboxConfig,
        OutboxStore, RetryPolicy,
    };
    #[cfg(feature = "sqlite")]
    pub use crate::sqlite::{
        ApplySqliteChanges, SqliteDownload, SqliteOutboxStore, SqliteOutboxStoreConfig,
    };
    #[cfg(feature = "store")]
    pub use crate::store::{
        FileDownloadState, JsonOutboxStore, JsonOutboxStoreConfig, WalOutboxStore,
        WalOutboxStoreConfig,
    };
    /// The old names of `JsonOutboxStore` and its config, deprecated.
    #[cfg(feature = "store")]
    #[expect(deprecated, reason = "the old names keep working for one release")]
    pub use crate::store::{FileOutboxStore, FileOutboxStoreConfig};
    #[cfg(feature = "wal")]
    pub use crate::wal::{RecordType, SyncPolicy, Wal, WalConfig, WalRecord};
}
