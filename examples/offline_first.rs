//! The main flow, step by step: persist an operation before any network
//! call, fail the first send while offline, succeed once the network
//! recovers. The durable outbox is left in `./build/sync-example/outbox.json`
//! to `cat`.
//!
//! ```text
//! cargo run --example offline_first
//! cat ./build/sync-example/outbox.json
//! ```

#![expect(
    clippy::print_stdout,
    reason = "an example prints for the person running it"
)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sync::outbox::status_index;
use sync::prelude::*;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn reset_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::create_dir_all(dir)
}

/// A transport that is offline until told otherwise.
struct ExampleTransport {
    online: AtomicBool,
}

impl ExampleTransport {
    fn set_online(&self, online: bool) {
        self.online.store(online, SeqCst);
    }
}

impl SyncTransport for ExampleTransport {
    fn send(&self, op: &Operation) -> SendResult {
        println!("[transport] sending: {} -> {}", op.id, op.target);
        if !self.online.load(SeqCst) {
            return SendResult::retryable("network offline");
        }
        SendResult::ok()
    }
}

#[expect(
    clippy::field_reassign_with_default,
    reason = "builds the operation field by field, to show each one"
)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new("./build/sync-example");
    reset_dir(dir)?;

    let store = Arc::new(JsonOutboxStore::open(JsonOutboxStoreConfig::new(
        dir.join("outbox.json"),
    ))?);

    let retry = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(500),
        factor: 2.0,
        ..RetryPolicy::default()
    };
    let outbox = Arc::new(Outbox::new(
        OutboxConfig {
            owner: "sync-example".into(),
            retry,
            ..OutboxConfig::default()
        },
        store.clone(),
    ));
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    let transport = Arc::new(ExampleTransport {
        online: AtomicBool::new(false),
    }); // start offline
    let worker = SyncWorker::new(
        SyncWorkerConfig { batch_limit: 10 },
        outbox.clone(),
        probe,
        transport.clone(),
    );

    let t0 = now_ms();

    // 1. Persist the operation BEFORE any network call.
    let mut op = Operation::default();
    op.kind = "message.send".into();
    op.target = "/api/messages".into();
    op.payload = r#"{"text":"hello offline-first"}"#.into();
    let id = outbox.enqueue(op, t0)?;
    println!("[app] operation saved: {id}");

    // 2. First tick: offline, fails with a retryable error.
    println!("\n[app] first sync attempt (offline)");
    let processed_offline = worker.tick(t0 + 1)?;
    println!("[worker] processed: {processed_offline}");

    let after_offline = store.get(&id)?;
    if let Some(op) = &after_offline {
        println!("[outbox] attempt: {}", op.attempt);
        println!("[outbox] last_error: {}", op.last_error);
        println!("[outbox] next_retry_at_ms: {}", op.next_retry_at_ms);
    }

    // 3. The network recovers: the second tick succeeds.
    println!("\n[app] network recovers");
    transport.set_online(true);
    let retry_time = after_offline.map_or(t0 + 1000, |op| op.next_retry_at_ms + 1);
    let processed_online = worker.tick(retry_time)?;
    println!("[worker] processed: {processed_online}");

    if let Some(op) = store.get(&id)? {
        // The status by name, with its index (0 pending, 1 in flight, 2 done,
        // 3 failed).
        println!(
            "[outbox] final status: {:?} ({})",
            op.status,
            status_index(op.status)
        );
        if op.status == OperationStatus::Done {
            println!("[outbox] operation completed");
        }
    }

    println!(
        "\n[files] outbox saved at: \"{}\"",
        dir.join("outbox.json").display()
    );
    Ok(())
}
