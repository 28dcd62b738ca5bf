//! The HTTP transport end to end: a real HTTP server on 127.0.0.1 (started
//! in this process) rejects the first requests with 503 and 429, then
//! accepts; the background engine sends three operations from the WAL store
//! in `./build/http-sync` until the server has taken all of them. Every line
//! says who did what. With `SYNC_SERVER_URL` set it sends to that server
//! instead, such as the `server` example.
//!
//! ```text
//! cargo run --example http_sync
//! ```

#![expect(
    clippy::print_stdout,
    reason = "an example prints for the person running it"
)]

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sync::engine::SyncObserver;
use sync::prelude::*;

/// How many requests the server turns away before it starts accepting.
const REJECT_FIRST: usize = 4;

/// Starts a server that rejects the first requests, then accepts and
/// remembers each Idempotency-Key (a repeat is acknowledged, not applied
/// twice). Returns its base URL.
fn start_server() -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let server = tiny_http::Server::http("127.0.0.1:0")?;
    let port = server.server_addr().to_ip().ok_or("no ip")?.port();
    std::thread::spawn(move || {
        let mut applied = HashSet::new();
        for (n, request) in server.incoming_requests().enumerate() {
            let key = request
                .headers()
                .iter()
                .find(|h| h.field.equiv("Idempotency-Key"))
                .map(|h| h.value.to_string())
                .unwrap_or_default();
            let (status, retry_after, note) = if n >= REJECT_FIRST {
                if applied.insert(key.clone()) {
                    (201, None, "applied")
                } else {
                    (200, None, "duplicate, already applied")
                }
            } else if n % 2 == 1 {
                (429, Some("0"), "too many requests")
            } else {
                (503, Some("1"), "overloaded")
            };
            println!(
                "[server] {} {} key={key} -> {status} ({note})",
                request.method(),
                request.url()
            );
            let mut response = tiny_http::Response::empty(status);
            if let Some(seconds) = retry_after
                && let Ok(header) = tiny_http::Header::from_bytes("Retry-After", seconds)
            {
                response = response.with_header(header);
            }
            let _ = request.respond(response);
        }
    });
    Ok(format!("http://127.0.0.1:{port}"))
}

/// Prints each send's outcome and wakes `main` when all operations are Done.
#[derive(Default)]
struct Progress {
    done: Mutex<usize>,
    changed: Condvar,
}

impl SyncObserver for Progress {
    fn on_result(&self, op: &Operation, result: &SendResult, status: OperationStatus) {
        if result.ok {
            println!("[worker] {} delivered on attempt {}", op.id, op.attempt);
        } else {
            println!(
                "[worker] {} attempt {} failed: {} -> {:?}",
                op.id, op.attempt, result.error, status
            );
        }
        if status == OperationStatus::Done {
            *self.done.lock().unwrap_or_else(PoisonError::into_inner) += 1;
            self.changed.notify_all();
        }
    }
}

impl Progress {
    /// Waits until `n` operations are Done, or `limit` passes.
    fn wait_for(&self, n: usize, limit: Duration) -> usize {
        let done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        let (done, _) = self
            .changed
            .wait_timeout_while(done, limit, |d| *d < n)
            .unwrap_or_else(PoisonError::into_inner);
        *done
    }
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // SYNC_SERVER_URL points it at a real server instead (the `server`
    // example, which applies each key once).
    let base_url = if let Ok(url) = std::env::var("SYNC_SERVER_URL") {
        println!("[app] sending to {url}");
        url
    } else {
        let url = start_server()?;
        println!("[server] listening on {url}, rejecting the first {REJECT_FIRST} requests");
        url
    };

    let dir = Path::new("./build/http-sync");
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    let store = Arc::new(WalOutboxStore::open(WalOutboxStoreConfig::new(dir))?);
    let retry = RetryPolicy {
        max_attempts: 8,
        base_delay: std::time::Duration::from_millis(200),
        factor: 2.0,
        max_delay: std::time::Duration::from_secs(2),
        ..RetryPolicy::default()
    };
    let outbox = Arc::new(Outbox::new(
        OutboxConfig {
            owner: "http-sync".into(),
            retry,
            ..OutboxConfig::default()
        },
        store,
    ));
    let transport = Arc::new(HttpTransport::new(HttpTransportConfig {
        base_url,
        timeout: Duration::from_secs(5),
        headers: vec![("Authorization".into(), "Bearer example-token".into())],
        ..HttpTransportConfig::default()
    })?);
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    let engine = SyncEngine::new(
        SyncEngineConfig {
            worker_count: 1,
            ..SyncEngineConfig::default()
        },
        outbox.clone(),
        probe,
        transport,
    );
    let progress = Arc::new(Progress::default());
    engine.set_observer(progress.clone());

    for text in ["hello", "from", "offline"] {
        let id = outbox.enqueue(
            Operation::new(
                "message.send",
                "/api/messages",
                format!(r#"{{"text":"{text}"}}"#),
            ),
            SystemClock.now_ms(),
        )?;
        println!("[app] saved {id} to {} before any send", dir.display());
    }
    let started = Instant::now();
    engine.start(SystemClock)?;
    let done = progress.wait_for(3, Duration::from_secs(60));
    engine.stop()?;

    let stats = outbox.stats()?;
    println!(
        "[app] after {:.1?}: {} done, {} pending, {} failed; the engine made {} sends",
        started.elapsed(),
        stats.done,
        stats.pending,
        stats.failed,
        engine.stats().sent
    );
    if done != 3 {
        return Err(format!("only {done} of 3 operations were delivered").into());
    }
    Ok(())
}
