//! The background `SyncEngine`: four senders drain 200 operations through a
//! flaky transport (timeouts, 503s with retry-after, a few permanent 400s),
//! on the WAL store in `./build/engine-loop`, then stop cleanly. Nothing
//! polls: the senders sleep until an operation is due or work arrives.
//!
//! ```text
//! cargo run --example engine_loop
//! ```

#![expect(
    clippy::print_stdout,
    reason = "an example prints for the person running it"
)]

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Instant;

use sync::engine::SyncObserver;
use sync::prelude::*;

/// Fails about one send in three, deterministically.
struct FlakyTransport {
    calls: AtomicU64,
}

impl SyncTransport for FlakyTransport {
    fn send(&self, op: &Operation) -> SendResult {
        let n = self.calls.fetch_add(1, Relaxed);
        match n % 9 {
            0 | 4 => SendResult::retryable("timeout"),
            7 => SendResult::retry_after(50, "503 service unavailable"),
            _ if op.payload.contains("\"n\":13}") => SendResult::permanent("400 bad request"),
            _ => SendResult::ok(),
        }
    }
}

/// Counts operations that reached a final state and wakes the app when all did.
#[derive(Default)]
struct Finished {
    count: Mutex<usize>,
    changed: Condvar,
}

impl Finished {
    fn wait_for(&self, n: usize) {
        let count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        drop(
            self.changed
                .wait_while(count, |c| *c < n)
                .unwrap_or_else(PoisonError::into_inner),
        );
    }
}

impl SyncObserver for Finished {
    fn on_result(&self, _op: &Operation, _result: &SendResult, status: OperationStatus) {
        if status == OperationStatus::Done || status == OperationStatus::Failed {
            *self.count.lock().unwrap_or_else(PoisonError::into_inner) += 1;
            self.changed.notify_all();
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new("./build/engine-loop");
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    let store = Arc::new(WalOutboxStore::open(WalOutboxStoreConfig::new(dir))?);
    let retry = RetryPolicy {
        max_attempts: 5,
        base_delay: std::time::Duration::from_millis(20),
        factor: 2.0,
        max_delay: std::time::Duration::from_millis(500),
        ..RetryPolicy::default()
    };
    let outbox = Arc::new(Outbox::new(
        OutboxConfig {
            owner: "engine-loop".into(),
            retry,
            ..OutboxConfig::default()
        },
        store.clone(),
    ));
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    let transport = Arc::new(FlakyTransport {
        calls: AtomicU64::new(0),
    });
    let engine = SyncEngine::new(
        SyncEngineConfig {
            worker_count: 4,
            batch_limit: 5,
            ..SyncEngineConfig::default()
        },
        outbox.clone(),
        probe,
        transport.clone(),
    );
    let finished = Arc::new(Finished::default());
    engine.set_observer(finished.clone());
    engine.start(SystemClock)?;
    println!("[engine] started with 4 senders");

    let started = Instant::now();
    for n in 0..200 {
        let op = Operation {
            ordering_key: Some(format!("chat-{}", n % 10)),
            ..Operation::new("message.send", "/api/messages", format!("{{\"n\":{n}}}"))
        };
        outbox.enqueue(op, SystemClock.now_ms())?;
    }
    println!("[app] enqueued 200 operations (10 chats, in order per chat)");

    // Wait, without polling, until every operation reached Done or Failed.
    finished.wait_for(200);
    let stats = outbox.stats()?;
    println!("[outbox] done: {}, failed: {}", stats.done, stats.failed);
    engine.stop()?;
    let stats = engine.stats();
    println!(
        "[engine] stopped after {:.2?}: {} sends, {} done, {} retried, {} failed",
        started.elapsed(),
        stats.sent,
        stats.done,
        stats.retried,
        stats.failed
    );
    println!("[engine] running: {}", engine.running());
    Ok(())
}
