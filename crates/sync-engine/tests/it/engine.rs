//! Guards the background engine on a manual clock: it wakes on enqueue, on
//! reconnect and when the clock reaches a retry time, stops cleanly, and with
//! several workers sends concurrently while keeping per-key order.

use std::collections::HashMap;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use sync_engine::{
    Clock, EngineError, ManualClock, NetworkProbe, NetworkProbeConfig, SendResult, SyncEngine,
    SyncEngineConfig, SyncTransport,
};
use sync_outbox::{Operation, OperationStatus, OutboxStore};

use crate::{ScriptedTransport, TestResult, eventually, guide_outbox};

fn status(store: &dyn OutboxStore, id: &str) -> Option<OperationStatus> {
    store.get(id).ok().flatten().map(|op| op.status)
}

#[test]
fn wakes_on_enqueue_on_reconnect_and_on_time() -> TestResult {
    let (outbox, store) = guide_outbox();
    let transport = Arc::new(ScriptedTransport::default());
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    let engine = SyncEngine::new(
        SyncEngineConfig::default(),
        outbox.clone(),
        probe.clone(),
        transport.clone(),
    );
    let clock = Arc::new(ManualClock::new(1_000));
    engine.start(Arc::clone(&clock))?;
    assert!(engine.running());
    assert!(matches!(
        engine.start(Arc::clone(&clock)),
        Err(EngineError::AlreadyRunning)
    ));

    // Wake on enqueue: the offline transport fails it, retry at 1_500.
    let id = outbox.enqueue(Operation::new("message.send", "/api/messages", "{}"), 1_000)?;
    eventually("first attempt", || {
        store
            .get(&id)
            .ok()
            .flatten()
            .is_some_and(|op| op.attempt == 1 && op.status == OperationStatus::Pending)
    });

    // Wake on time: the clock reaching the retry time sends it again (still offline).
    clock.advance(500);
    eventually("second attempt", || {
        store
            .get(&id)
            .ok()
            .flatten()
            .is_some_and(|op| op.attempt == 2 && op.status == OperationStatus::Pending)
    });
    assert_eq!(
        store.get(&id)?.map(|op| op.next_retry_at_ms),
        Some(1_500 + 1_000)
    );

    // Wake on reconnect: no clock movement, the backoff is drained at once.
    probe.report_failure(clock_now(&clock));
    transport.online.store(true, SeqCst);
    probe.set_online(true, clock_now(&clock));
    eventually("done after reconnect", || {
        status(&*store, &id) == Some(OperationStatus::Done)
    });

    engine.stop()?;
    assert!(!engine.running());
    assert_eq!(engine.stats().done, 1);
    Ok(())
}

fn clock_now(clock: &ManualClock) -> i64 {
    use sync_engine::Clock;
    clock.now_ms()
}

#[test]
fn stop_joins_and_a_stopped_engine_sends_nothing() -> TestResult {
    let (outbox, store) = guide_outbox();
    let transport = Arc::new(ScriptedTransport::default());
    transport.online.store(true, SeqCst);
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    let engine = SyncEngine::new(
        SyncEngineConfig {
            worker_count: 3,
            ..SyncEngineConfig::default()
        },
        outbox.clone(),
        probe,
        transport.clone(),
    );
    engine.start(ManualClock::new(0))?;
    engine.stop()?;
    let id = outbox.enqueue(Operation::new("k", "/t", "{}"), 0)?;
    assert_eq!(status(&*store, &id), Some(OperationStatus::Pending));
    assert_eq!(transport.sends.load(SeqCst), 0);
    // A deterministic pass still works.
    assert_eq!(engine.tick(0)?, 1);
    Ok(())
}

/// A stop landing while a sender is between its stop check and its sleep
/// must still end that sender: on a manual clock with nothing to do there is
/// no deadline to rescue it, so a lost stop is a `stop` that never returns.
/// The window is a few instructions wide: a thousand short-lived engines of
/// sixteen senders each hit it in about one run in ten on a loaded machine
/// (measured against the old loop: 2 of 20 runs under three busy loops, 0 of
/// 40 after the fix). Each `stop` gets a generous bound so a regression fails
/// here instead of hanging the suite.
#[test]
fn stop_always_returns_however_it_races_the_senders() -> TestResult {
    let (outbox, _store) = guide_outbox();
    let transport = Arc::new(ScriptedTransport::default());
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    for round in 0..1000 {
        let engine = SyncEngine::new(
            SyncEngineConfig {
                worker_count: 16,
                ..SyncEngineConfig::default()
            },
            outbox.clone(),
            probe.clone(),
            transport.clone(),
        );
        engine.start(ManualClock::new(0))?;
        if round % 2 == 0 {
            // Keep the senders busy waking each other while the stop lands.
            engine.wake();
        }
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let stopped = engine.stop();
            let _ = done_tx.send(stopped.is_ok());
        });
        match done_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(true) => {}
            Ok(false) => return Err(format!("round {round}: a sender panicked").into()),
            Err(_) => return Err(format!("round {round}: stop did not return").into()),
        }
    }
    Ok(())
}

/// Holds every send until `width` sends are in progress at once (or 5 s pass),
/// and records concurrency and per-key order.
#[derive(Debug, Default)]
struct GateTransport {
    width: usize,
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    in_progress: Vec<Option<String>>,
    max_in_progress: usize,
    same_key_overlap: bool,
    sent_per_key: HashMap<String, Vec<u64>>,
}

impl SyncTransport for GateTransport {
    fn send(&self, op: &Operation) -> SendResult {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if op.ordering_key.is_some() && state.in_progress.contains(&op.ordering_key) {
            state.same_key_overlap = true;
        }
        state.in_progress.push(op.ordering_key.clone());
        state.max_in_progress = state.max_in_progress.max(state.in_progress.len());
        if let Some(key) = &op.ordering_key {
            state
                .sent_per_key
                .entry(key.clone())
                .or_default()
                .push(op.seq);
        }
        self.changed.notify_all();
        let (mut state, _) = self
            .changed
            .wait_timeout_while(state, Duration::from_secs(5), |s| {
                s.in_progress.len() < self.width && s.max_in_progress < self.width
            })
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(at) = state.in_progress.iter().position(|k| *k == op.ordering_key) {
            state.in_progress.remove(at);
        }
        SendResult::ok()
    }
}

#[test]
fn several_workers_send_concurrently_in_order_per_key() -> TestResult {
    let (outbox, store) = guide_outbox();
    let transport = Arc::new(GateTransport {
        width: 4,
        ..GateTransport::default()
    });
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    let config = SyncEngineConfig {
        worker_count: 4,
        batch_limit: 1,
        ..SyncEngineConfig::default()
    };
    let engine = SyncEngine::new(config, outbox.clone(), probe, transport.clone());
    let mut ids = Vec::new();
    for i in 0..40 {
        let key = format!("chat-{}", i % 8);
        ids.push(outbox.enqueue(
            Operation {
                ordering_key: Some(key),
                ..Operation::new("k", "/t", "{}")
            },
            0,
        )?);
    }
    engine.start(ManualClock::new(0))?;
    eventually("all done", || {
        ids.iter()
            .all(|id| status(&*store, id) == Some(OperationStatus::Done))
    });
    engine.stop()?;
    let state = transport.state.lock().map_err(|_| "poisoned")?;
    assert_eq!(
        state.max_in_progress, 4,
        "4 workers had 4 sends in progress at once"
    );
    assert!(!state.same_key_overlap, "two sends of one key overlapped");
    for (key, seqs) in &state.sent_per_key {
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(seqs, &sorted, "{key} out of order");
        assert_eq!(seqs.len(), 5);
    }
    Ok(())
}

#[test]
fn a_sleeping_engine_wakes_for_a_key_head_in_backoff() -> TestResult {
    // Regression: ops due but blocked behind their key's head, which waits in
    // backoff, must not make the engine sleep forever. Real clock, 20 ms backoff.
    use sync_outbox::{MemoryOutboxStore, Outbox, OutboxConfig, RetryPolicy};
    let store = Arc::new(MemoryOutboxStore::new());
    let retry = RetryPolicy {
        base_delay: std::time::Duration::from_millis(20),
        ..RetryPolicy::default()
    };
    let outbox = Arc::new(Outbox::new(
        OutboxConfig {
            retry,
            ..OutboxConfig::default()
        },
        store.clone(),
    ));
    let transport = Arc::new(ScriptedTransport::default());
    *transport.script.lock().map_err(|_| "poisoned")? = vec![SendResult::retryable("timeout")];
    transport.online.store(true, SeqCst);
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    let engine = SyncEngine::new(
        SyncEngineConfig::default(),
        outbox.clone(),
        probe,
        transport.clone(),
    );
    let now = sync_engine::SystemClock.now_ms();
    let keyed = |n: u32| Operation {
        ordering_key: Some("k".into()),
        ..Operation::new("k", "/t", format!("{n}"))
    };
    let head = outbox.enqueue(keyed(0), now)?;
    let next = outbox.enqueue(keyed(1), now)?;
    engine.start(sync_engine::SystemClock)?;
    eventually("both done", || {
        status(&*store, &head) == Some(OperationStatus::Done)
            && status(&*store, &next) == Some(OperationStatus::Done)
    });
    engine.stop()?;
    assert_eq!(transport.sends.load(SeqCst), 3);
    Ok(())
}

#[test]
fn an_engine_built_started_sends_at_once() -> TestResult {
    let (outbox, store) = guide_outbox();
    let transport = Arc::new(ScriptedTransport::default());
    transport.online.store(true, SeqCst);
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    let clock = Arc::new(ManualClock::new(0));
    let engine = SyncEngine::started(
        SyncEngineConfig::default(),
        outbox.clone(),
        probe,
        transport,
        Arc::clone(&clock),
    )?;
    assert!(engine.running());
    let id = outbox.enqueue(Operation::new("note.create", "/notes", "{}"), 0)?;
    eventually("sent by the started engine", || {
        status(&*store, &id) == Some(OperationStatus::Done)
    });
    engine.stop()?;
    Ok(())
}
