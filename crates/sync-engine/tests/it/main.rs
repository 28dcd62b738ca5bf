//! Integration tests of `sync-engine`: one binary, one module per behaviour.

mod accounts;
mod async_engine;
mod async_simulation;
mod completion;
mod download_engine;
mod download_simulation;
mod drain;
mod engine;
mod guide;
mod outage;
mod rng;
mod send_path;
mod simulation;
mod telemetry;
mod wakeups;
mod worker;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

use sync_engine::{SendResult, SyncTransport};
use sync_outbox::{MemoryOutboxStore, Operation, Outbox, OutboxConfig, RetryPolicy};

pub(crate) type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A transport whose next answers are scripted; `ok` once the script runs out.
#[derive(Debug, Default)]
pub(crate) struct ScriptedTransport {
    pub(crate) script: Mutex<Vec<SendResult>>,
    pub(crate) online: AtomicBool,
    pub(crate) panic_next: AtomicBool,
    pub(crate) sends: AtomicUsize,
}

impl SyncTransport for ScriptedTransport {
    fn send(&self, _op: &Operation) -> SendResult {
        self.sends.fetch_add(1, SeqCst);
        assert!(!self.panic_next.swap(false, SeqCst), "transport bug");
        let mut script = self
            .script
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !script.is_empty() {
            return script.remove(0);
        }
        if self.online.load(SeqCst) {
            SendResult::ok()
        } else {
            SendResult::retryable("network offline")
        }
    }
}

pub(crate) fn guide_outbox() -> (Arc<Outbox>, Arc<MemoryOutboxStore>) {
    let store = Arc::new(MemoryOutboxStore::new());
    let retry = RetryPolicy {
        max_attempts: 3,
        base_delay: std::time::Duration::from_millis(500),
        factor: 2.0,
        ..RetryPolicy::default()
    };
    let config = OutboxConfig {
        owner: "test".into(),
        retry,
        inflight_timeout: std::time::Duration::from_secs(10),
        ..OutboxConfig::default()
    };
    (Arc::new(Outbox::new(config, store.clone())), store)
}

/// Waits (bounded) for a background engine to reach a state; panics with
/// `what` if it does not within 10 s. Only the engine's own threads run
/// meanwhile: no test time depends on this bound.
pub(crate) fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        std::thread::yield_now();
    }
}

/// An outbox over a fresh memory store, default settings.
pub(crate) fn memory_outbox() -> std::sync::Arc<sync_outbox::Outbox> {
    std::sync::Arc::new(sync_outbox::Outbox::new(
        sync_outbox::OutboxConfig::default(),
        std::sync::Arc::new(sync_outbox::MemoryOutboxStore::new()),
    ))
}

/// A probe that always says online.
pub(crate) fn online_probe() -> std::sync::Arc<sync_engine::NetworkProbe> {
    std::sync::Arc::new(sync_engine::NetworkProbe::new(
        sync_engine::NetworkProbeConfig::default(),
        || true,
    ))
}
