//! Guards the worker's rules: an offline probe spends nothing, permanent
//! failures park, retry-after is honoured, a panicking transport loses no
//! operation, and a reconnect drains the queue at once.

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;

use sync_engine::{
    EngineError, NetworkProbe, NetworkProbeConfig, SendResult, SyncWorker, SyncWorkerConfig,
};
use sync_outbox::{Operation, OperationStatus, OutboxStore};

use crate::{ScriptedTransport, TestResult, guide_outbox};

fn op() -> Operation {
    Operation::new("message.send", "/api/messages", "{}")
}

#[test]
fn an_offline_probe_touches_nothing() -> TestResult {
    let (outbox, store) = guide_outbox();
    let transport = Arc::new(ScriptedTransport::default());
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || false));
    let worker = SyncWorker::new(
        SyncWorkerConfig::default(),
        outbox.clone(),
        probe,
        transport.clone(),
    );
    let id = outbox.enqueue(op(), 0)?;
    let before = store.get(&id)?;
    assert_eq!(worker.tick(1)?, 0);
    assert_eq!(store.get(&id)?, before, "no attempt spent");
    assert_eq!(transport.sends.load(SeqCst), 0);
    Ok(())
}

#[test]
fn permanent_failures_park_and_retry_after_is_honoured() -> TestResult {
    let (outbox, store) = guide_outbox();
    let transport = Arc::new(ScriptedTransport::default());
    *transport.script.lock().map_err(|_| "poisoned")? = vec![
        SendResult::permanent("400 bad request"),
        SendResult::retry_after(7_000, "429 too many requests"),
    ];
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    let worker = SyncWorker::new(
        SyncWorkerConfig::default(),
        outbox.clone(),
        probe,
        transport,
    );
    let bad = outbox.enqueue(op(), 0)?;
    let limited = outbox.enqueue(op(), 0)?;
    assert_eq!(worker.tick(10)?, 2);
    let bad = store.get(&bad)?.ok_or("lost")?;
    assert_eq!(
        (bad.status, bad.last_error.as_str()),
        (OperationStatus::Failed, "400 bad request")
    );
    let limited = store.get(&limited)?.ok_or("lost")?;
    assert_eq!(limited.next_retry_at_ms, 7_010);
    assert_eq!(worker.tick(7_009)?, 0);
    assert_eq!(worker.tick(7_010)?, 1);
    Ok(())
}

#[test]
fn a_panicking_transport_loses_nothing() -> TestResult {
    let (outbox, store) = guide_outbox();
    let transport = Arc::new(ScriptedTransport::default());
    transport.online.store(true, SeqCst);
    transport.panic_next.store(true, SeqCst);
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    let worker = SyncWorker::new(
        SyncWorkerConfig::default(),
        outbox.clone(),
        probe,
        transport.clone(),
    );
    let first = outbox.enqueue(op(), 0)?;
    let second = outbox.enqueue(op(), 0)?;
    match worker.tick(1) {
        Err(EngineError::BatchPanicked { first_id, len }) => {
            assert_eq!((first_id, len), (first.clone(), 2));
        }
        other => panic!("expected BatchPanicked, got {other:?}"),
    }
    // Which ops were sent is unknown: each is a retryable failure, its
    // attempt counted and backoff applied, so a transport that always panics
    // cannot spin.
    for id in [&first, &second] {
        let op = store.get(id)?.ok_or("lost")?;
        assert_eq!(
            (op.status, op.attempt, op.next_retry_at_ms),
            (OperationStatus::Pending, 1, 501),
            "{}",
            op.last_error
        );
        assert!(op.last_error.contains("panicked"));
    }
    assert_eq!(worker.tick(500)?, 0, "backoff holds");
    assert_eq!(worker.tick(501)?, 2);
    for id in [&first, &second] {
        assert_eq!(
            store.get(id)?.map(|op| op.status),
            Some(OperationStatus::Done)
        );
    }
    assert_eq!(worker.stats().panicked, 1);

    // Alone in its batch, the op is named.
    let third = outbox.enqueue(op(), 600)?;
    transport.panic_next.store(true, SeqCst);
    assert!(matches!(
        worker.tick(600),
        Err(EngineError::TransportPanicked { id }) if id == third
    ));
    Ok(())
}

#[test]
fn a_reconnect_drains_ops_waiting_in_backoff() -> TestResult {
    let (outbox, store) = guide_outbox();
    let transport = Arc::new(ScriptedTransport::default());
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    let worker = SyncWorker::new(
        SyncWorkerConfig::default(),
        outbox.clone(),
        probe.clone(),
        transport.clone(),
    );
    let id = outbox.enqueue(op(), 0)?;
    assert_eq!(worker.tick(0)?, 1); // offline transport: retry at 500
    probe.report_failure(1);
    assert_eq!(worker.tick(2)?, 0, "the probe says offline");
    transport.online.store(true, SeqCst);
    probe.set_online(true, 100);
    assert_eq!(worker.tick(100)?, 1, "due at once on reconnect, not at 500");
    assert_eq!(
        store.get(&id)?.map(|op| op.status),
        Some(OperationStatus::Done)
    );

    // With draining turned off, backoff is kept.
    let (outbox, _) = guide_outbox();
    let config = NetworkProbeConfig {
        drain_on_reconnect: false,
        ..NetworkProbeConfig::default()
    };
    let probe = Arc::new(NetworkProbe::new(config, || true));
    let transport = Arc::new(ScriptedTransport::default());
    let worker = SyncWorker::new(
        SyncWorkerConfig::default(),
        outbox.clone(),
        probe.clone(),
        transport.clone(),
    );
    outbox.enqueue(op(), 0)?;
    worker.tick(0)?;
    probe.report_failure(1);
    transport.online.store(true, SeqCst);
    probe.set_online(true, 100);
    assert_eq!(worker.tick(100)?, 0);
    assert_eq!(worker.tick(500)?, 1);
    Ok(())
}

#[test]
fn the_probe_caches_and_rechecks() {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let probe = NetworkProbe::new(
        NetworkProbeConfig {
            cache_ttl: std::time::Duration::from_millis(100),
            ..NetworkProbeConfig::default()
        },
        move || {
            counter.fetch_add(1, SeqCst);
            true
        },
    );
    assert!(probe.is_online(0));
    assert!(probe.is_online(99));
    assert_eq!(calls.load(SeqCst), 1, "cached within the ttl");
    assert!(probe.is_online(100));
    assert_eq!(calls.load(SeqCst), 2);
    assert_eq!(probe.next_check_at_ms(), Some(200));
}

#[derive(Debug, Default)]
struct Recorder {
    events: std::sync::Mutex<Vec<String>>,
}

impl sync_engine::SyncObserver for Recorder {
    fn on_result(&self, _op: &Operation, result: &SendResult, status: OperationStatus) {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(format!("{status:?} {}", result.error));
    }
    fn on_error(&self, error: &EngineError) {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(format!("error {error}"));
    }
}

#[test]
fn the_observer_sees_every_result_and_error() -> TestResult {
    let (outbox, _) = guide_outbox();
    let transport = Arc::new(ScriptedTransport::default());
    *transport.script.lock().map_err(|_| "poisoned")? = vec![
        SendResult::ok(),
        SendResult::retryable("timeout"),
        SendResult::permanent("400"),
    ];
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    let worker = SyncWorker::new(
        SyncWorkerConfig::default(),
        outbox.clone(),
        probe,
        transport.clone(),
    );
    let recorder = Arc::new(Recorder::default());
    assert!(worker.set_observer(recorder.clone()));
    assert!(!worker.set_observer(recorder.clone()), "installed once");
    for _ in 0..3 {
        outbox.enqueue(op(), 0)?;
    }
    worker.tick(0)?;
    outbox.enqueue(op(), 0)?;
    transport.panic_next.store(true, SeqCst);
    assert!(worker.tick(1).is_err());
    let events = recorder.events.lock().map_err(|_| "poisoned")?.clone();
    assert_eq!(
        events[..4],
        [
            "Done ",
            "Pending timeout",
            "Failed 400",
            "Pending the transport panicked"
        ]
    );
    assert!(
        events[4].starts_with("error transport panicked"),
        "{events:?}"
    );
    Ok(())
}
