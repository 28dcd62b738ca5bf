//! W3C trace context from the app to the server's handler: an operation
//! enqueued while the app's trace is in effect (`OutboxConfig::trace_context`)
//! keeps that `traceparent`, the HTTP transport sends it (single requests
//! and batch elements), and the handler behind the layer reads it from
//! `Idempotency::traceparent`; also on a retry, and never another
//! operation's.

use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use sync_engine::{NetworkProbe, NetworkProbeConfig, SyncWorker, SyncWorkerConfig};
use sync_outbox::{
    MemoryOutboxStore, Operation, OperationStatus, Outbox, OutboxConfig, TraceContext,
};
use sync_server::{
    BatchService, Idempotency, IdempotencyConfig, IdempotencyLayer, MemoryIdempotencyStore,
};
use sync_transport_http::{HttpTransport, HttpTransportConfig};

type Error = Box<dyn std::error::Error + Send + Sync>;

const APP_TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const OWN_TRACE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// What each handled request said: (body, traceparent).
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

async fn note(State(seen): State<Seen>, idem: Idempotency, body: String) -> &'static str {
    seen.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((body, idem.traceparent().map(str::to_owned)));
    "ok"
}

fn run(batch: bool) -> Result<Vec<(String, Option<String>)>, Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let seen: Seen = Arc::default();
    let base_url = runtime.block_on(async {
        let store = Arc::new(MemoryIdempotencyStore::default());
        let api: Router = Router::new()
            .route("/notes", post(note))
            .layer(IdempotencyLayer::new(store, IdempotencyConfig::default()))
            .with_state(Arc::clone(&seen));
        let app = Router::new()
            .route_service("/sync/batch", BatchService::new(api.clone()))
            .merge(api);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok::<_, Error>(base_url)
    })?;
    // The app's tracer says which trace is in effect; here, a switch.
    let in_trace = Arc::new(Mutex::new(true));
    let current = {
        let in_trace = Arc::clone(&in_trace);
        TraceContext::new(move || {
            (*in_trace.lock().unwrap_or_else(PoisonError::into_inner)).then(|| APP_TRACE.to_owned())
        })
    };
    let outbox = Arc::new(Outbox::new(
        OutboxConfig {
            trace_context: Some(current),
            ..OutboxConfig::default()
        },
        Arc::new(MemoryOutboxStore::new()),
    ));
    let transport = HttpTransport::new(HttpTransportConfig {
        base_url,
        batch_target: batch.then(|| "/sync/batch".to_owned()),
        ..HttpTransportConfig::default()
    })?;
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    let worker = SyncWorker::new(
        SyncWorkerConfig::default(),
        outbox.clone(),
        probe,
        Arc::new(transport),
    );
    // In the app's trace; outside any trace; with a trace of its own.
    outbox.enqueue(Operation::new("note", "/notes", "traced"), 1)?;
    *in_trace.lock().unwrap_or_else(PoisonError::into_inner) = false;
    outbox.enqueue(Operation::new("note", "/notes", "untraced"), 1)?;
    let own = Operation {
        traceparent: Some(OWN_TRACE.into()),
        ..Operation::new("note", "/notes", "own")
    };
    outbox.enqueue(own, 1)?;
    assert_eq!(worker.tick(1)?, 3);
    let stored = outbox.store().load_all()?;
    assert!(stored.iter().all(|op| op.status == OperationStatus::Done));
    let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner).clone();
    seen.sort();
    Ok(seen)
}

fn expected() -> Vec<(String, Option<String>)> {
    vec![
        ("own".into(), Some(OWN_TRACE.into())),
        ("traced".into(), Some(APP_TRACE.into())),
        ("untraced".into(), None),
    ]
}

#[test]
fn the_apps_trace_reaches_the_handler_with_each_single_request() -> Result<(), Error> {
    assert_eq!(run(false)?, expected());
    Ok(())
}

#[test]
fn the_apps_trace_reaches_the_handler_with_each_batch_element() -> Result<(), Error> {
    assert_eq!(run(true)?, expected());
    Ok(())
}
