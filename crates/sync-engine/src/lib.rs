//! The sending side of an offline-first sync: [`SyncWorker`] takes due
//! operations from a [`sync_outbox::Outbox`], asks a [`NetworkProbe`] whether
//! the network is worth trying, sends through the application's
//! [`SyncTransport`], and records each [`SendResult`].
//!
//! This is the only layer that knows a network exists; it works through the
//! `Outbox` and the `SyncTransport` trait and depends on no storage crate.
//! Every time is the caller's `now_ms`.
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
//! use std::time::Duration;
//! use sync::prelude::*;
//!
//! struct Flaky {
//!     online: AtomicBool,
//! }
//! impl SyncTransport for Flaky {
//!     fn send(&self, _op: &Operation) -> SendResult {
//!         if self.online.load(SeqCst) { SendResult::ok() } else { SendResult::retryable("network offline") }
//!     }
//! }
//!
//! let store = Arc::new(MemoryOutboxStore::new());
//! let retry = RetryPolicy { max_attempts: 3, base_delay: Duration::from_millis(500), factor: 2.0, ..RetryPolicy::default() };
//! let outbox = Arc::new(Outbox::new(OutboxConfig { retry, ..OutboxConfig::default() }, store.clone()));
//! let transport = Arc::new(Flaky { online: AtomicBool::new(false) });
//! let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
//! let worker = SyncWorker::new(SyncWorkerConfig { batch_limit: 10 }, outbox.clone(), probe, transport.clone());
//!
//! let id = outbox.enqueue(Operation::new("message.send", "/api/messages", "{}"), 0)?;
//! assert_eq!(worker.tick(1)?, 1);                      // fails: retry at 1 + 500
//! transport.online.store(true, SeqCst);
//! assert_eq!(worker.tick(500)?, 0);                    // not due yet
//! assert_eq!(worker.tick(501)?, 1);
//! assert_eq!(store.get(&id)?.map(|op| op.status), Some(OperationStatus::Done));
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```
//!
//! # Crate features
//!
//! - `tracing` (off by default): `TracingObserver`, which turns the
//!   worker's events into `tracing` events.
//! - `tokio` (off by default): the async face for tokio applications:
//!   `AsyncSyncEngine` (the engine's senders as tasks, store I/O on the
//!   blocking pool, sleeps on tokio's clock), `AsyncSyncTransport` with its
//!   adapters `SpawnBlockingTransport` and `BlockOnTransport`, `AsyncOutbox`
//!   (enqueue and friends as futures), `TokioClock`, and `async_trait`.

#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "tokio")]
mod async_engine;
#[cfg(feature = "tokio")]
mod async_outbox;
#[cfg(feature = "tokio")]
mod async_transport;
mod clock;
mod download;
mod drain;
mod engine;
mod error;
#[cfg(feature = "metrics")]
mod metrics_observer;
mod observer;
mod probe;
mod schedule;
mod transport;
mod worker;
mod worker_core;

#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use async_engine::AsyncSyncEngine;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use async_outbox::AsyncOutbox;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use async_trait::async_trait;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use async_transport::{AsyncSyncTransport, BlockOnTransport, SpawnBlockingTransport};
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use clock::TokioClock;
pub use clock::{Clock, ManualClock, SystemClock, Wakeup};
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use download::{AsyncDownloader, AsyncPullTransport};
pub use download::{DownloadConfig, Downloader, PullReport, PullResult, PullTransport, Reflection};
pub use drain::DrainReport;
pub use engine::{SyncEngine, SyncEngineConfig};
pub use error::{EngineError, SyncStep};
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub use metrics_observer::MetricsObserver;
#[cfg(feature = "tracing")]
pub use observer::TracingObserver;
pub use observer::{BatchReport, SyncObserver};
pub use probe::{NetworkProbe, NetworkProbeConfig};
/// Whether a send that got no answer may have reached the server; defined
/// in `sync-outbox`.
pub use sync_outbox::Delivery;
pub use transport::{ResultSink, SendResult, SyncTransport};
pub use worker::{SyncWorker, SyncWorkerConfig, WorkerStats};

/// The result type of this crate.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
