//! Scrapes `examples/server.rs`'s `/metrics` after real traffic over HTTP
//! and checks the numbers against what happened: a device (the engine with
//! `MetricsObserver`, `HttpTransport`) sends 10 notes, 3 of them are sent
//! again by hand under the same key, and a pull downloads the 10. The
//! server's layer, its pull service and the client engine record into the
//! same Prometheus recorder.

use std::collections::BTreeMap;
use std::sync::Arc;

use sync::engine::{
    MetricsObserver, NetworkProbe, NetworkProbeConfig, SyncWorker, SyncWorkerConfig,
};
use sync::http::{HttpTransport, HttpTransportConfig};
use sync::outbox::{MemoryOutboxStore, Operation, OperationStatus, Outbox, OutboxConfig};

#[expect(
    dead_code,
    reason = "the test calls the example's `app`, not its `main`"
)]
#[path = "../server.rs"]
mod server;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The scrape's samples: `name{labels}` -> value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// A device sends 10 notes through the engine with `MetricsObserver`;
/// returns each operation's id and body.
fn send_notes(url: &str) -> Result<Vec<(String, String)>, Error> {
    let outbox = Arc::new(Outbox::new(
        OutboxConfig::default(),
        Arc::new(MemoryOutboxStore::new()),
    ));
    let transport = HttpTransport::new(HttpTransportConfig {
        base_url: url.to_owned(),
        headers: vec![("authorization".into(), "alice".into())],
        ..HttpTransportConfig::default()
    })?;
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    let worker = SyncWorker::new(
        SyncWorkerConfig::default(),
        outbox.clone(),
        probe,
        Arc::new(transport),
    );
    assert!(worker.set_observer(Arc::new(MetricsObserver::new(outbox.clone()))));
    let mut ops = Vec::new();
    for n in 0..10 {
        let body = format!(r#"{{"text":"note {n}"}}"#);
        let id = outbox.enqueue(Operation::new("note.create", "/notes", body.clone()), 1)?;
        ops.push((id, body));
    }
    let mut now = 1;
    while outbox.stats()?.done < 10 {
        now += 60_000;
        worker.tick(now)?;
        assert!(now < 3_600_000, "not sent: {:?}", outbox.stats()?);
    }
    for (id, _) in &ops {
        let status = outbox.store().get(id)?.map(|op| op.status);
        assert_eq!(status, Some(OperationStatus::Done));
    }

    Ok(ops)
}

#[test]
fn the_metrics_endpoint_tells_what_happened() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let url = runtime.block_on(async {
        let app = server::app(&dir.path().join("server.db")).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok::<_, Error>(url)
    })?;

    // The device: 10 notes through the engine, on this (blocking) thread.
    let ops = send_notes(&url)?;

    let scrape = runtime.block_on(async {
        let client = reqwest::Client::new();
        // Three resends of acknowledged notes (answers lost, say): replayed.
        for (id, body) in ops.iter().take(3) {
            let answer = client
                .post(format!("{url}/notes"))
                .header("authorization", "alice")
                .header("idempotency-key", id.as_str())
                .body(body.clone())
                .send()
                .await?;
            assert!(answer.headers().contains_key("idempotent-replayed"));
        }
        // A new device downloads the feed: the 10 notes.
        let page = client
            .get(format!("{url}/sync/pull"))
            .header("authorization", "alice")
            .send()
            .await?
            .text()
            .await?;
        let page: sync::protocol::PullResponse = serde_json::from_str(&page)?;
        assert_eq!(page.changes.len(), 10);
        Ok::<_, Error>(
            client
                .get(format!("{url}/metrics"))
                .send()
                .await?
                .text()
                .await?,
        )
    })?;
    let got = samples(&scrape);
    let value = |name: &str| got.get(name).copied().unwrap_or(f64::NAN);
    let expected = [
        // The server's layer: 10 applied, 3 replayed.
        (r#"sync_server_requests{outcome="applied"}"#, 10.0),
        (r#"sync_server_requests{outcome="replayed"}"#, 3.0),
        // Its pull service: one pull, 10 changes.
        (r#"sync_server_pulls{outcome="ok"}"#, 1.0),
        ("sync_server_pull_changes", 10.0),
        // The device's engine: 10 sends done, in one batch, none retried.
        (r#"messaging_client_sent_messages{outcome="done"}"#, 10.0),
        ("sync_client_batch_size_count", 1.0),
        ("sync_client_batch_size_sum", 10.0),
        ("sync_client_send_attempts_count", 10.0),
        ("sync_client_send_attempts_sum", 10.0),
        (r#"sync_outbox_operations{state="done"}"#, 10.0),
        (r#"sync_outbox_operations{state="pending"}"#, 0.0),
        (
            r#"messaging_process_duration_count{messaging_operation_name="process"}"#,
            10.0,
        ),
    ];
    for (name, want) in expected {
        assert!(
            (value(name) - want).abs() < 1e-9,
            "{name}: {} in the scrape, {want} expected:\n{scrape}",
            value(name)
        );
    }
    assert!(
        !got.contains_key(r#"messaging_client_sent_messages{outcome="retry"}"#),
        "{scrape}"
    );
    Ok(())
}
