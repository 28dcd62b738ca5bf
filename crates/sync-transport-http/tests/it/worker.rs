//! Guards the whole path: a `SyncWorker` over an outbox sends through the
//! HTTP transport to a server that refuses the first requests (429), and
//! every operation ends Done, seen by the server at least once under its
//! own key.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use sync_engine::{NetworkProbe, NetworkProbeConfig, SyncWorker, SyncWorkerConfig};
use sync_outbox::{
    MemoryOutboxStore, Operation, OperationStatus, Outbox, OutboxConfig, OutboxStore, RetryPolicy,
};

use crate::{Reply, TestResult, TestServer, transport};

#[test]
fn a_worker_delivers_everything_through_a_server_that_fails_at_first() -> TestResult {
    const FAILURES: usize = 7;
    const OPS: usize = 5;
    let server = TestServer::start(|n, _| {
        if n < FAILURES {
            Reply::Status(429, vec![("Retry-After", "1".into())], String::new())
        } else {
            Reply::status(201)
        }
    })?;
    let store = Arc::new(MemoryOutboxStore::new());
    let retry = RetryPolicy {
        max_attempts: 20,
        base_delay: std::time::Duration::from_millis(100),
        ..RetryPolicy::default()
    };
    let outbox = Arc::new(Outbox::new(
        OutboxConfig {
            retry,
            ..OutboxConfig::default()
        },
        store.clone(),
    ));
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    let worker = SyncWorker::new(
        SyncWorkerConfig { batch_limit: 2 },
        outbox.clone(),
        probe,
        Arc::new(transport(&server.base_url)?),
    );
    let mut ids = BTreeSet::new();
    for i in 0..OPS {
        let op = Operation::new("message.send", "/api/messages", format!(r#"{{"n":{i}}}"#));
        ids.insert(outbox.enqueue(op, 0)?);
    }
    // Simulated time: each round jumps past any backoff (Retry-After is 1 s).
    let mut now = 1;
    for _ in 0..50 {
        worker.tick(now)?;
        now += 1_100;
        if store.stats()?.done == OPS {
            break;
        }
    }
    let ops = store.load_all()?;
    assert!(
        ops.iter().all(|op| op.status == OperationStatus::Done),
        "{ops:?}"
    );

    let mut sends_per_key: BTreeMap<String, usize> = BTreeMap::new();
    for seen in server.seen() {
        let key = seen.header("Idempotency-Key").ok_or("no key")?.to_owned();
        *sends_per_key.entry(key).or_default() += 1;
    }
    let keys: BTreeSet<String> = sends_per_key.keys().cloned().collect();
    assert_eq!(keys, ids, "every op reached the server under its own id");
    assert_eq!(sends_per_key.values().sum::<usize>(), FAILURES + OPS);
    let stats = worker.stats();
    assert_eq!((stats.done, stats.retried), (OPS as u64, FAILURES as u64));
    Ok(())
}

#[test]
fn a_slow_server_gets_each_key_once_from_two_senders() -> TestResult {
    use sync_engine::{Clock, ManualClock, SyncEngine, SyncEngineConfig};
    // Each answer takes 10 ms on the engine's clock, which the server moves
    // (no real waiting): a batch of 10 takes 100 ms, twice the in-flight
    // timeout, and each move wakes the other sender while the batch is on
    // the wire.
    let clock = Arc::new(ManualClock::new(1_000_000));
    let server_clock = Arc::clone(&clock);
    let server = TestServer::start(move |_, _| {
        server_clock.advance(10);
        Reply::status(201)
    })?;
    let store = Arc::new(MemoryOutboxStore::new());
    let outbox = Arc::new(Outbox::new(
        OutboxConfig {
            inflight_timeout: std::time::Duration::from_millis(50),
            ..OutboxConfig::default()
        },
        store.clone(),
    ));
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    let engine = SyncEngine::new(
        SyncEngineConfig {
            worker_count: 2,
            detached_claim_recheck: std::time::Duration::from_millis(10),
            ..SyncEngineConfig::default()
        },
        outbox.clone(),
        probe,
        Arc::new(transport(&server.base_url)?),
    );
    engine.start(Arc::clone(&clock))?;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(outbox.enqueue(
            Operation::new("note.create", "/notes", "{}"),
            clock.now_ms(),
        )?);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !ids
        .iter()
        .all(|id| store.get(id).ok().flatten().map(|op| op.status) == Some(OperationStatus::Done))
    {
        assert!(std::time::Instant::now() < deadline, "not all done in 20 s");
        std::thread::yield_now();
    }
    engine.stop()?;
    let mut per_key: BTreeMap<String, usize> = BTreeMap::new();
    for seen in server.seen() {
        *per_key
            .entry(
                seen.header("Idempotency-Key")
                    .unwrap_or_default()
                    .to_owned(),
            )
            .or_default() += 1;
    }
    assert_eq!(per_key.len(), 20);
    assert!(per_key.values().all(|&n| n == 1), "{per_key:?}");
    assert_eq!(engine.last_error(), None);
    Ok(())
}
