//! Guards the whole path: a `SyncWorker` over an outbox sends through the
//! HTTP transport to a server that fails the first requests, and every
//! operation ends Done, seen by the server at least once under its own key.

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
            Reply::Status(503, vec![("Retry-After", "1".into())], String::new())
        } else {
            Reply::status(201)
        }
    })?;
    let store = Arc::new(MemoryOutboxStore::new());
    let retry = RetryPolicy {
        max_attempts: 20,
        base_delay_ms: 100,
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
        if store.count_by_status()?.get(2) == Some(&OPS) {
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
