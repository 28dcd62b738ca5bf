//! Guards the send path's promises: a claim held by a live sender is never
//! sent by another however slow the server (the default batch and a
//! 3.5 s server against a 30 s in-flight timeout), operations a crash left
//! `InFlight` are sent again at once after a real reopen of either store, a
//! transport that returns the wrong number of results gets no op marked
//! `Done` without its result, and errors name the operation and the step
//! and keep their cause.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex, PoisonError};

use sync_engine::{
    Clock, EngineError, ManualClock, NetworkProbe, NetworkProbeConfig, SendResult, SyncEngine,
    SyncEngineConfig, SyncStep, SyncTransport, SyncWorker, SyncWorkerConfig,
};
use sync_outbox::{
    MemoryOutboxStore, Operation, OperationStatus, Outbox, OutboxConfig, OutboxError, OutboxStore,
};

use crate::{ScriptedTransport, TestResult, eventually, guide_outbox};

/// A server that takes `latency_ms` of the shared manual clock to answer,
/// and records every send and any overlap of two sends of one operation.
#[derive(Debug)]
struct SlowServer {
    clock: Arc<ManualClock>,
    latency_ms: i64,
    state: Mutex<SlowState>,
}

#[derive(Debug, Default)]
struct SlowState {
    in_progress: HashSet<String>,
    sends: HashMap<String, usize>,
    overlaps: Vec<String>,
}

impl SyncTransport for SlowServer {
    fn send(&self, op: &Operation) -> SendResult {
        {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            *state.sends.entry(op.id.clone()).or_default() += 1;
            if !state.in_progress.insert(op.id.clone()) {
                state.overlaps.push(op.id.clone());
            }
        }
        // The answer takes `latency_ms` on the engine's clock, and a few real
        // milliseconds, so the other sender, woken by the clock, really runs
        // while this send is still on the wire. The sleep is not for time
        // (the clock is manual) but for the other thread to be scheduled:
        // waiting for its claim instead (a store counting `ready` calls) was
        // tried and caught the bug this guards less often, or hung on a pass
        // that did not claim.
        self.clock.advance(self.latency_ms);
        std::thread::sleep(std::time::Duration::from_millis(5));
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .in_progress
            .remove(&op.id);
        SendResult::ok()
    }
}

#[test]
fn a_slow_server_gets_each_operation_exactly_once() -> TestResult {
    // The defaults: batch 10, in-flight timeout 30 s; 2 senders; a server
    // answering in 3.5 s, so a batch takes 35 s, longer than the timeout.
    // Before claims were held, the idle sender expired the batch's last ops
    // and sent them a second time while the first sender still had them.
    let store = Arc::new(MemoryOutboxStore::new());
    let outbox = Arc::new(Outbox::new(OutboxConfig::default(), store.clone()));
    let clock = Arc::new(ManualClock::new(1_000_000));
    let server = Arc::new(SlowServer {
        clock: Arc::clone(&clock),
        latency_ms: 3_500,
        state: Mutex::new(SlowState::default()),
    });
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    let engine = SyncEngine::new(
        SyncEngineConfig {
            worker_count: 2,
            ..SyncEngineConfig::default()
        },
        outbox.clone(),
        probe,
        server.clone(),
    );
    engine.start(Arc::clone(&clock))?;
    // Four waves of one default batch: one sender claims the wave and needs
    // 35 s of server time for it, while the other sender, idle, wakes at
    // every step of the clock and looks for work.
    let mut ids = Vec::new();
    for _ in 0..4 {
        let wave: Vec<String> = (0..10)
            .map(|_| outbox.enqueue(Operation::new("k", "/t", "{}"), clock.now_ms()))
            .collect::<Result<_, _>>()?;
        eventually("the wave done", || {
            wave.iter().all(|id| {
                store.get(id).ok().flatten().map(|op| op.status) == Some(OperationStatus::Done)
            })
        });
        ids.extend(wave);
    }
    engine.stop()?;
    let state = server.state.lock().map_err(|_| "poisoned")?;
    assert!(
        state.overlaps.is_empty(),
        "sent twice at once: {:?}",
        state.overlaps
    );
    let total: usize = state.sends.values().sum();
    assert_eq!(total, 40, "40 operations, 40 requests");
    assert!(state.sends.values().all(|&n| n == 1));
    assert_eq!(engine.last_error(), None, "no engine error");
    assert_eq!(engine.stats().done, 40);
    for id in &ids {
        assert_eq!(store.get(id)?.map(|op| op.attempt), Some(1));
    }
    Ok(())
}

/// Enqueues one op, claims it and "crashes" (the claim is never recorded or
/// released), then reopens the store and starts an engine on a clock that
/// never moves: the op must be sent at once.
fn resent_at_once_after_reopen(
    open: &dyn Fn() -> Result<Arc<dyn OutboxStore>, Box<dyn std::error::Error>>,
) -> TestResult {
    let now = 5_000_000;
    let id = {
        let store = open()?;
        let outbox = Outbox::new(OutboxConfig::default(), store);
        let id = outbox.enqueue(Operation::new("k", "/t", r#"{"n":1}"#), now)?;
        let claim = outbox.claim(now, 10)?;
        assert_eq!(claim.len(), 1);
        std::mem::forget(claim); // the process dies: no Drop runs
        id
    }; // the store closes and releases its lock, as the process exit would
    let store = open()?;
    assert_eq!(
        store.get(&id)?.map(|op| op.status),
        Some(OperationStatus::InFlight)
    );
    let outbox = Arc::new(Outbox::new(OutboxConfig::default(), Arc::clone(&store)));
    let transport = Arc::new(ScriptedTransport::default());
    transport.online.store(true, SeqCst);
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    let engine = SyncEngine::new(
        SyncEngineConfig::default(),
        outbox,
        probe,
        transport.clone(),
    );
    engine.start(ManualClock::new(now))?;
    eventually("the interrupted op is sent again", || {
        store.get(&id).ok().flatten().map(|op| op.status) == Some(OperationStatus::Done)
    });
    engine.stop()?;
    let done = store.get(&id)?.ok_or("lost")?;
    assert_eq!(done.attempt, 2, "the interrupted attempt counted");
    assert_eq!(transport.sends.load(SeqCst), 1);
    Ok(())
}

#[test]
fn a_crash_leaves_nothing_waiting_for_the_timeout_in_the_wal_store() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("outbox");
    resent_at_once_after_reopen(&|| {
        let config = sync_store_file::WalOutboxStoreConfig::new(path.clone());
        Ok(Arc::new(sync_store_file::WalOutboxStore::open(config)?))
    })
}

#[test]
fn a_crash_leaves_nothing_waiting_for_the_timeout_in_the_json_store() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("outbox.json");
    resent_at_once_after_reopen(&|| {
        let config = sync_store_file::JsonOutboxStoreConfig {
            pretty_json: false,
            ..sync_store_file::JsonOutboxStoreConfig::new(path.clone())
        };
        Ok(Arc::new(sync_store_file::JsonOutboxStore::open(config)?))
    })
}

/// A batch transport that returns `n_results` results, all ok.
#[derive(Debug)]
struct MiscountingTransport {
    n_results: usize,
}

impl SyncTransport for MiscountingTransport {
    fn send(&self, _op: &Operation) -> SendResult {
        SendResult::ok()
    }
    fn send_batch(&self, _ops: &[Operation]) -> Vec<SendResult> {
        vec![SendResult::ok(); self.n_results]
    }
}

#[test]
fn a_wrong_result_count_marks_nothing_done_without_its_result() -> TestResult {
    for n_results in [1, 5] {
        let (outbox, store) = guide_outbox();
        let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
        let worker = SyncWorker::new(
            SyncWorkerConfig { batch_limit: 3 },
            outbox.clone(),
            probe,
            Arc::new(MiscountingTransport { n_results }),
        );
        let ids: Vec<String> = (0..3)
            .map(|_| outbox.enqueue(Operation::new("k", "/t", "{}"), 0))
            .collect::<Result<_, _>>()?;
        match worker.tick(1) {
            Err(EngineError::BatchResultCount {
                first_id,
                expected,
                got,
            }) => assert_eq!(
                (first_id.as_str(), expected, got),
                (ids[0].as_str(), 3, n_results)
            ),
            other => panic!("expected BatchResultCount, got {other:?}"),
        }
        let statuses: Vec<OperationStatus> = ids
            .iter()
            .map(|id| {
                store
                    .get(id)
                    .ok()
                    .flatten()
                    .map_or(OperationStatus::Failed, |op| op.status)
            })
            .collect();
        // Which result is whose cannot be trusted: every op is retried.
        assert!(
            statuses.iter().all(|s| *s == OperationStatus::Pending),
            "{statuses:?} with {n_results} results"
        );
        if n_results == 1 {
            let retried = store.get(&ids[2])?.ok_or("lost")?;
            assert!(
                retried.last_error.contains("1 results for 3"),
                "{}",
                retried.last_error
            );
            assert_eq!(retried.next_retry_at_ms, 501, "backoff, not a hot loop");
        }
    }
    Ok(())
}

/// A store whose writes of `Done` fail, as a full disk would.
#[derive(Debug, Default)]
struct DoneFailsStore {
    inner: MemoryOutboxStore,
}

impl OutboxStore for DoneFailsStore {
    fn put(&self, op: &Operation) -> Result<(), OutboxError> {
        if op.status == OperationStatus::Done {
            return Err(OutboxError::store(std::io::Error::other(
                "no space left on device (os error 28)",
            )));
        }
        self.inner.put(op)
    }
    fn get(&self, id: &str) -> Result<Option<Operation>, OutboxError> {
        self.inner.get(id)
    }
    fn remove(&self, id: &str) -> Result<bool, OutboxError> {
        self.inner.remove(id)
    }
    fn load_all(&self) -> Result<Vec<Operation>, OutboxError> {
        self.inner.load_all()
    }
}

#[derive(Debug, Default)]
struct ErrorLog(Mutex<Vec<String>>);

impl sync_engine::SyncObserver for ErrorLog {
    fn on_error(&self, error: &EngineError) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(error.report());
    }
}

#[test]
fn an_engine_error_names_the_operation_and_step_and_keeps_its_cause() -> TestResult {
    let store = Arc::new(DoneFailsStore::default());
    let outbox = Arc::new(Outbox::new(OutboxConfig::default(), store.clone()));
    let transport = Arc::new(ScriptedTransport::default());
    transport.online.store(true, SeqCst);
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    let engine = SyncEngine::new(
        SyncEngineConfig::default(),
        outbox.clone(),
        probe,
        transport,
    );
    let log = Arc::new(ErrorLog::default());
    assert!(engine.set_observer(log.clone()));
    let secret = r#"{"card":"4111 1111 1111 1111"}"#;
    let id = outbox.enqueue(Operation::new("pay", "/pay", secret), 0)?;
    engine.start(ManualClock::new(0))?;
    eventually("an error is reported", || engine.last_error().is_some());
    engine.stop()?;

    let want = format!(
        "recording the acknowledgement of operation {id} failed: outbox store failed: \
         no space left on device (os error 28)"
    );
    assert_eq!(engine.last_error().as_deref(), Some(want.as_str()));
    let error = engine.last_engine_error().ok_or("no error kept")?;
    match &*error {
        EngineError::OutboxStep {
            step: SyncStep::RecordDone,
            id: Some(failed),
            source: OutboxError::Store { .. },
        } => assert_eq!(failed, &id),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        std::error::Error::source(&*error).map(ToString::to_string),
        Some("outbox store failed".to_owned()),
        "the cause is the source, not repeated in Display"
    );
    let logged = log.0.lock().map_err(|_| "poisoned")?;
    assert!(logged.contains(&want), "{logged:?}");
    assert!(
        logged
            .iter()
            .chain([&want])
            .all(|line| !line.contains("4111")),
        "no payload in any message"
    );
    Ok(())
}
