//! The README's client, whole: a durable queue, one note enqueued, and the
//! background engine sending it over HTTP to `http://127.0.0.1:8080` (start
//! `cargo run --example server` in another terminal). Without a server the
//! note waits safely in `./build/quickstart`; run it again once the server
//! is up and it is delivered, once.
//!
//! ```text
//! cargo run --example server        # terminal 1
//! cargo run --example quickstart    # terminal 2
//! ```

#![expect(
    clippy::print_stdout,
    reason = "an example prints for the person running it"
)]

use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // README:start
    use std::sync::Arc;
    use sync::prelude::*;

    // A durable queue: each operation is on disk before `enqueue` returns.
    let store = Arc::new(WalOutboxStore::open(WalOutboxStoreConfig::new(
        "./build/quickstart",
    ))?);
    let outbox = Arc::new(Outbox::new(OutboxConfig::default(), store));

    // Record what the user did, online or not.
    let note = Operation::new("note.create", "/notes", r#"{"title":"Groceries"}"#);
    let id = outbox.enqueue(note, SystemClock.now_ms())?;

    // Send it when the network allows: once, retried through outages.
    let transport = HttpTransport::new(HttpTransportConfig {
        base_url: "http://127.0.0.1:8080".into(),
        ..HttpTransportConfig::default()
    })?;
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    let engine = SyncEngine::started(
        SyncEngineConfig::default(),
        outbox.clone(),
        probe,
        Arc::new(transport),
        SystemClock,
    )?;
    // README:end

    // Watch the queue for a few seconds, then stop: what is not sent yet
    // stays on disk for the next run.
    let mut stats = outbox.watch_stats()?;
    let mut now = stats.current();
    while now.unsent() > 0 {
        match stats.wait_changed_timeout(Duration::from_secs(5)) {
            Some(next) => now = next,
            None => break,
        }
    }
    engine.stop()?;
    let op = outbox.store().get(&id)?.ok_or("the note is gone")?;
    println!("note {id}: {:?}", op.status);
    println!(
        "queue: {} unsent, {} done, {} failed",
        now.unsent(),
        now.done,
        now.failed
    );
    if now.unsent() > 0 {
        println!("no server answered: start `cargo run --example server` and run this again");
    }
    Ok(())
}
