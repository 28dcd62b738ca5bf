//! Guards batch mode: one request carries the whole batch with every
//! operation's key, each operation gets its own result through the status
//! table, a refused or garbled answer and a connection dropped mid-batch
//! leave every operation retryable (never done), and a worker records a
//! mixed batch op by op.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::sync::Arc;

use sync_engine::{NetworkProbe, NetworkProbeConfig, SyncTransport, SyncWorker, SyncWorkerConfig};
use sync_outbox::{MemoryOutboxStore, OperationStatus, Outbox, OutboxConfig, OutboxStore};
use sync_transport_http::{
    BatchRequest, BatchResponse, BatchResult, HttpMethod, HttpTransport, HttpTransportConfig,
    HttpTransportError,
};

use crate::{Reply, TestResult, TestServer, op};

fn batch_transport(base_url: &str) -> Result<HttpTransport, HttpTransportError> {
    HttpTransport::new(
        HttpTransportConfig {
            base_url: base_url.to_owned(),
            headers: vec![("Authorization".into(), "Bearer t0k3n".into())],
            batch_target: Some("/sync/batch".into()),
            ..HttpTransportConfig::default()
        }
        .with_method("note.delete", HttpMethod::Delete),
    )
}

/// A worker over a fresh in-memory outbox, sending in batch mode to `base_url`.
fn batch_worker(
    base_url: &str,
) -> Result<(SyncWorker, Arc<Outbox>, Arc<MemoryOutboxStore>), HttpTransportError> {
    let store = Arc::new(MemoryOutboxStore::new());
    let outbox = Arc::new(Outbox::new(OutboxConfig::default(), store.clone()));
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    let worker = SyncWorker::new(
        SyncWorkerConfig::default(),
        outbox.clone(),
        probe,
        Arc::new(batch_transport(base_url)?),
    );
    Ok((worker, outbox, store))
}

/// A 200 answer with `results`.
fn answer(results: Vec<BatchResult>) -> Reply {
    let body = serde_json::to_string(&BatchResponse { results }).unwrap_or_default();
    Reply::Status(200, Vec::new(), body)
}

fn result(key: &str, status: u16, retry_after: Option<&str>) -> BatchResult {
    BatchResult {
        idempotency_key: key.into(),
        status,
        retry_after: retry_after.map(Into::into),
        body: None,
        sync_version: None,
    }
}

/// A server that answers every batch element with 201.
fn acking_server() -> Result<TestServer, Box<dyn std::error::Error + Send + Sync>> {
    TestServer::start(|_, seen| {
        let request: BatchRequest = serde_json::from_str(&seen.body).unwrap_or(BatchRequest {
            operations: Vec::new(),
        });
        answer(
            request
                .operations
                .iter()
                .map(|op| result(&op.idempotency_key, 201, None))
                .collect(),
        )
    })
}

#[test]
fn a_batch_is_one_request_carrying_every_key() -> TestResult {
    let server = acking_server()?;
    let transport = batch_transport(&server.base_url)?;
    let ops = [
        op("op_1", "note.create", "/notes", r#"{"text":"a"}"#),
        op("op_2", "note.delete", "/notes/1", ""),
        op("op_3", "note.create", "/notes", "not json at all"),
    ];
    let results = transport.send_batch(&ops);
    assert!(results.iter().all(|r| r.ok), "{results:?}");
    let seen = server.seen();
    assert_eq!(seen.len(), 1, "one request for the batch");
    let request = &seen[0];
    assert_eq!(
        (request.method.as_str(), request.url.as_str()),
        ("POST", "/sync/batch")
    );
    assert_eq!(request.header("Content-Type"), Some("application/json"));
    assert_eq!(request.header("Authorization"), Some("Bearer t0k3n"));
    assert_eq!(
        request.header("Idempotency-Key"),
        None,
        "each element has its own"
    );
    let body: BatchRequest = serde_json::from_str(&request.body)?;
    let keys: Vec<&str> = body
        .operations
        .iter()
        .map(|o| o.idempotency_key.as_str())
        .collect();
    assert_eq!(keys, ["op_1", "op_2", "op_3"]);
    assert_eq!(body.operations[1].method, "DELETE");
    assert_eq!(body.operations[1].target, "/notes/1");
    assert_eq!(
        body.operations[2].payload, "not json at all",
        "payloads travel as they are"
    );

    // `send` still sends one operation alone, to its own target.
    assert!(transport.send(&ops[0]).ok);
    assert_eq!(server.seen()[1].url, "/notes");
    Ok(())
}

#[test]
fn each_operation_gets_its_own_result() -> TestResult {
    let server = TestServer::start(|_, _| {
        answer(vec![
            result("ghost", 201, None),
            result("op_3", 503, Some("7")),
            result("op_2", 422, None),
            result("op_1", 201, None),
            result("op_1", 500, None),
        ])
    })?;
    let transport = batch_transport(&server.base_url)?;
    let ops: Vec<_> = (1..=4)
        .map(|n| op(&format!("op_{n}"), "note.create", "/notes", "{}"))
        .collect();
    let results = transport.send_batch(&ops);
    assert_eq!(results.len(), 4);
    assert!(
        results[0].ok,
        "201; the first of two results for a key counts"
    );
    assert!(!results[1].ok && !results[1].retryable, "422 is permanent");
    assert!(results[2].retryable);
    assert_eq!(results[2].retry_after_ms, Some(7_000));
    assert!(
        !results[3].ok && results[3].retryable,
        "no result: the server did not get to it"
    );
    assert!(results[3].error.contains("no result"));
    Ok(())
}

#[test]
fn a_refused_or_garbled_batch_leaves_every_operation_retryable() -> TestResult {
    let ops: Vec<_> = (1..=3)
        .map(|n| op(&format!("op_{n}"), "note.create", "/notes", "{}"))
        .collect();
    let server = TestServer::start(|n, _| match n {
        0 => Reply::Status(503, vec![("Retry-After", "2".into())], "busy".into()),
        1 => Reply::Status(200, Vec::new(), r#"{"secret":"4111"}"#.into()),
        _ => Reply::status(400),
    })?;
    let transport = batch_transport(&server.base_url)?;
    let refused = transport.send_batch(&ops);
    assert!(
        refused
            .iter()
            .all(|r| r.retryable && r.retry_after_ms == Some(2_000))
    );
    let garbled = transport.send_batch(&ops);
    assert!(garbled.iter().all(|r| !r.ok && r.retryable), "{garbled:?}");
    assert!(
        garbled.iter().all(|r| !r.error.contains("4111")),
        "no body in errors"
    );
    let bad = transport.send_batch(&ops);
    assert!(
        bad.iter().all(|r| !r.ok && r.retryable),
        "a 400 for the batch dead-letters no operation"
    );
    assert!(bad.iter().all(|r| r.error.starts_with("batch refused")));
    Ok(())
}

/// Accepts one connection, reads one whole request, and closes the
/// connection without a word.
fn hang_up_server() -> Result<(String, std::thread::JoinHandle<usize>), std::io::Error> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let base_url = format!("http://{}", listener.local_addr()?);
    let thread = std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return 0;
        };
        let mut reader = BufReader::new(stream);
        let mut length = 0usize;
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap_or(0);
            }
            line.clear();
        }
        let mut body = vec![0; length];
        let read = reader.read_exact(&mut body).map_or(0, |()| length);
        drop(reader); // closes the socket: the batch is cut
        read
    });
    Ok((base_url, thread))
}

#[test]
fn a_batch_cut_by_a_dropped_connection_is_retried_whole() -> TestResult {
    let (base_url, server) = hang_up_server()?;
    let (worker, outbox, store) = batch_worker(&base_url)?;
    let ids: Vec<String> = (0..4)
        .map(|_| outbox.enqueue(op("", "note.create", "/notes", "{}"), 0))
        .collect::<Result<_, _>>()?;
    assert_eq!(worker.tick(1)?, 4);
    assert!(
        server.join().map_err(|_| "server panicked")? > 0,
        "the server read the batch"
    );
    for id in &ids {
        let stored = store.get(id)?.ok_or("lost")?;
        // No answer: retried, without using up an attempt, and its key may
        // have reached the server (the resend window started).
        assert_eq!(
            (
                stored.status,
                stored.attempt,
                stored.unanswered_sends,
                stored.first_sent_at_ms
            ),
            (OperationStatus::Pending, 0, 1, Some(1)),
            "{}",
            stored.last_error
        );
        assert!(
            stored.last_error.contains("connection"),
            "{}",
            stored.last_error
        );
    }
    Ok(())
}

#[test]
fn a_worker_records_a_mixed_batch_op_by_op() -> TestResult {
    let server = TestServer::start(|_, seen| {
        let request: BatchRequest = serde_json::from_str(&seen.body).unwrap_or(BatchRequest {
            operations: Vec::new(),
        });
        let results = request
            .operations
            .iter()
            .map(|op| {
                let status = if op.payload.contains("bad") { 422 } else { 201 };
                result(&op.idempotency_key, status, None)
            })
            .collect();
        answer(results)
    })?;
    let (worker, outbox, store) = batch_worker(&server.base_url)?;
    let good = outbox.enqueue(op("", "note.create", "/notes", r#"{"ok":1}"#), 0)?;
    let bad = outbox.enqueue(op("", "note.create", "/notes", r#"{"bad":1}"#), 0)?;
    let also_good = outbox.enqueue(op("", "note.create", "/notes", r#"{"ok":2}"#), 0)?;
    assert_eq!(worker.tick(1)?, 3);
    assert_eq!(server.seen().len(), 1);
    let status = |id: &str| store.get(id).ok().flatten().map(|op| op.status);
    assert_eq!(status(&good), Some(OperationStatus::Done));
    assert_eq!(status(&bad), Some(OperationStatus::Failed));
    assert_eq!(status(&also_good), Some(OperationStatus::Done));
    Ok(())
}

#[test]
fn an_invalid_batch_target_is_refused_at_construction() {
    let config = HttpTransportConfig {
        batch_target: Some("/batch path with spaces".into()),
        ..HttpTransportConfig::default()
    };
    assert!(matches!(
        HttpTransport::new(config),
        Err(HttpTransportError::InvalidBatchTarget { .. })
    ));
}

#[test]
fn a_corrected_operation_travels_under_its_new_key_alone_and_in_a_batch() -> TestResult {
    let server = acking_server()?;
    let transport = batch_transport(&server.base_url)?;
    let mut corrected = op("op_1", "note.create", "/notes", r#"{"title":"fixed"}"#);
    corrected.idempotency_key = "op_1.1".into();
    corrected.replaced_keys = vec!["op_1".into()];
    let plain = op("op_2", "note.create", "/notes", "{}");
    // Results are matched to operations by the key they were sent under.
    let results = transport.send_batch(&[corrected.clone(), plain]);
    assert!(results.iter().all(|r| r.ok), "{results:?}");
    let body: BatchRequest = serde_json::from_str(&server.seen()[0].body)?;
    let keys: Vec<&str> = body
        .operations
        .iter()
        .map(|o| o.idempotency_key.as_str())
        .collect();
    assert_eq!(keys, ["op_1.1", "op_2"]);
    assert!(transport.send(&corrected).ok);
    assert_eq!(server.seen()[1].header("Idempotency-Key"), Some("op_1.1"));
    Ok(())
}
