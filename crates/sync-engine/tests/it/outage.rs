//! Guards "an outage is not a failure", with every default a new user gets
//! (5 attempts from 1 s, a probe that always says online, one sender of
//! 10): the server is down for ten minutes of engine time, on both engines,
//! then comes back. Nothing becomes `Failed`, every operation reaches the
//! server exactly once, sending pauses while the server is unreachable (a
//! bounded number of tries, one operation each, one at a time across
//! senders), and the return brings no storm: one request per operation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sync_engine::{
    AsyncSyncEngine, AsyncSyncTransport, ManualClock, NetworkProbe, NetworkProbeConfig, ResultSink,
    SendResult, SyncEngine, SyncEngineConfig, SyncTransport, TokioClock, async_trait,
};
use sync_outbox::{
    MemoryOutboxStore, Operation, OperationStatus, Outbox, OutboxConfig, OutboxStore,
};

use crate::{TestResult, eventually};

const N_OPS: usize = 50;
const OUTAGE_MS: i64 = 10 * 60 * 1_000;

/// A server that can be down (connection refused, as the HTTP transport
/// reports it: `not_sent`) and counts what reaches it.
#[derive(Debug, Default)]
struct Upstream {
    up: AtomicBool,
    requests_while_down: AtomicUsize,
    requests_while_up: AtomicUsize,
    /// Operations on the wire right now, and the most ever at once.
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    applied: Mutex<HashMap<String, usize>>,
}

impl Upstream {
    fn answer(&self, op: &Operation) -> SendResult {
        if !self.up.load(SeqCst) {
            self.requests_while_down.fetch_add(1, SeqCst);
            return SendResult::not_sent("connection refused");
        }
        self.requests_while_up.fetch_add(1, SeqCst);
        *self
            .applied
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(op.idempotency_key().to_owned())
            .or_default() += 1;
        SendResult::ok()
    }

    fn enter(&self) {
        let now = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.most_in_flight.fetch_max(now, SeqCst);
    }

    fn leave(&self) {
        self.in_flight.fetch_sub(1, SeqCst);
    }

    /// The figures a test reports and checks.
    fn check(&self, store: &MemoryOutboxStore, engine: &str) -> TestResult {
        let ops = store.load_all()?;
        let failed = ops
            .iter()
            .filter(|op| op.status == OperationStatus::Failed)
            .count();
        assert_eq!(failed, 0, "{engine}: an outage made dead letters");
        assert!(ops.iter().all(|op| op.status == OperationStatus::Done));
        let applied = self.applied.lock().unwrap_or_else(PoisonError::into_inner);
        assert_eq!(applied.len(), N_OPS, "{engine}: every operation arrived");
        assert!(
            applied.values().all(|&n| n == 1),
            "{engine}: each exactly once"
        );
        let down = self.requests_while_down.load(SeqCst);
        let up = self.requests_while_up.load(SeqCst);
        eprintln!(
            "{engine}: {N_OPS} operations, server down {} min: {down} requests while down, \
             {up} after it came back, at most {} on the wire at once, 0 failed",
            OUTAGE_MS / 60_000,
            self.most_in_flight.load(SeqCst)
        );
        // One try, one operation, at a time: the pause doubles from 1 s to
        // 60 s, so ten minutes hold about 15 tries (and the first batch's
        // one refused request).
        assert!(
            down <= 20,
            "{engine}: {down} requests while the server was down"
        );
        assert_eq!(up, N_OPS, "{engine}: no storm on return, one request each");
        Ok(())
    }
}

/// One request at a time, each result reported as it arrives, and the rest
/// of the batch not tried once one got no answer (what the HTTP transport
/// does).
impl SyncTransport for Upstream {
    fn send(&self, op: &Operation) -> SendResult {
        self.enter();
        let result = self.answer(op);
        self.leave();
        result
    }

    fn send_each(&self, ops: &[Operation], results: &mut ResultSink<'_>) {
        let mut unreachable = false;
        for (index, op) in ops.iter().enumerate() {
            let result = if unreachable {
                SendResult::not_sent("not tried")
            } else {
                SyncTransport::send(self, op)
            };
            unreachable |= result.is_unanswered();
            results.report(index, result);
        }
    }
}

#[async_trait]
impl AsyncSyncTransport for Upstream {
    async fn send(&self, op: &Operation) -> SendResult {
        self.enter();
        tokio::time::sleep(Duration::from_millis(20)).await; // a round trip
        let result = self.answer(op);
        self.leave();
        result
    }

    async fn send_each(&self, ops: &[Operation], results: &mut ResultSink<'_>) {
        let mut unreachable = false;
        for (index, op) in ops.iter().enumerate() {
            let result = if unreachable {
                SendResult::not_sent("not tried")
            } else {
                AsyncSyncTransport::send(self, op).await
            };
            unreachable |= result.is_unanswered();
            results.report(index, result);
        }
    }
}

fn defaults() -> (Arc<Outbox>, Arc<MemoryOutboxStore>, Arc<NetworkProbe>) {
    let store = Arc::new(MemoryOutboxStore::new());
    let outbox = Arc::new(Outbox::new(OutboxConfig::default(), store.clone()));
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    (outbox, store, probe)
}

#[test]
fn the_threaded_engine_outlasts_a_ten_minute_outage() -> TestResult {
    for worker_count in [1, 3] {
        let (outbox, store, probe) = defaults();
        let upstream = Arc::new(Upstream::default());
        let config = SyncEngineConfig {
            worker_count,
            ..SyncEngineConfig::default()
        };
        let engine = SyncEngine::new(config, outbox.clone(), probe, upstream.clone());
        let clock = Arc::new(ManualClock::new(1_000));
        for i in 0..N_OPS {
            outbox.enqueue(Operation::new("note.edit", "/notes", format!("{i}")), 1_000)?;
        }
        engine.start(Arc::clone(&clock))?;
        let settle = || {
            eventually("every sender asleep", || clock.sleeping() == worker_count);
        };
        settle();
        // Ten minutes of engine time, a second at a time; each step waits
        // until every sender has done all it can and sleeps.
        for _ in 0..OUTAGE_MS / 1_000 {
            clock.advance(1_000);
            settle();
        }
        assert_eq!(store.stats()?.failed, 0, "nothing failed during the outage");
        upstream.up.store(true, SeqCst);
        // The next try (at most a minute away) gets through and drains it all.
        for _ in 0..120 {
            if store.stats()?.done == N_OPS {
                break;
            }
            clock.advance(1_000);
            settle();
        }
        engine.stop()?;
        upstream.check(&store, &format!("threaded engine, {worker_count} senders"))?;
        assert!(
            upstream.most_in_flight.load(SeqCst) <= worker_count,
            "never more on the wire than senders"
        );
    }
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn the_async_engine_outlasts_a_ten_minute_outage() -> TestResult {
    let (outbox, store, probe) = defaults();
    let upstream = Arc::new(Upstream::default());
    let engine = AsyncSyncEngine::new(
        SyncEngineConfig::default(),
        outbox.clone(),
        probe,
        upstream.clone(),
    );
    let clock = TokioClock::starting_at(1_000);
    for i in 0..N_OPS {
        outbox.enqueue(Operation::new("note.edit", "/notes", format!("{i}")), 1_000)?;
    }
    engine.start_with_clock(clock).await?;
    tokio::time::sleep(Duration::from_millis(u64::try_from(OUTAGE_MS)?)).await;
    assert_eq!(store.stats()?.failed, 0, "nothing failed during the outage");
    upstream.up.store(true, SeqCst);
    for _ in 0..120 {
        if store.stats()?.done == N_OPS {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    engine.stop().await?;
    upstream.check(&store, "async engine")
}
