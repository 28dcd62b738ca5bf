//! Guards the wake-ups: on a running engine that is idle, on a clock that
//! never moves, every outbox change that makes work claimable (`retry_failed`,
//! `make_pending_due`, a discard or a completion that unblocks a key), and the
//! app's `sync_now` and `wake`, get the work sent at once.

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;

use sync_engine::{
    ManualClock, NetworkProbe, NetworkProbeConfig, SendResult, SyncEngine, SyncEngineConfig,
};
use sync_outbox::{Operation, OperationStatus, Outbox, OutboxStore};

use crate::{ScriptedTransport, TestResult, eventually, guide_outbox};

const NOW: i64 = 1_000;

/// A started engine over the guide's outbox, on a clock stuck at `NOW`, whose
/// transport answers `script` first and ok afterwards.
fn idle_engine(
    script: Vec<SendResult>,
) -> (
    SyncEngine,
    Arc<Outbox>,
    Arc<sync_outbox::MemoryOutboxStore>,
    Arc<ScriptedTransport>,
) {
    let (outbox, store) = guide_outbox();
    let transport = Arc::new(ScriptedTransport::default());
    *transport
        .script
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = script;
    transport.online.store(true, SeqCst);
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    let engine = SyncEngine::new(
        SyncEngineConfig::default(),
        outbox.clone(),
        probe,
        transport.clone(),
    );
    (engine, outbox, store, transport)
}

fn status_of(store: &dyn OutboxStore, id: &str) -> Option<OperationStatus> {
    store.get(id).ok().flatten().map(|op| op.status)
}

fn keyed(key: &str) -> Operation {
    Operation {
        ordering_key: Some(key.into()),
        ..Operation::new("k", "/t", "{}")
    }
}

#[test]
fn retry_failed_on_an_idle_engine_sends_at_once() -> TestResult {
    let (engine, outbox, store, _) = idle_engine(vec![SendResult::permanent("422")]);
    let id = outbox.enqueue(Operation::new("k", "/t", "{}"), NOW)?;
    engine.start(ManualClock::new(NOW))?;
    eventually("parked as failed", || {
        status_of(&*store, &id) == Some(OperationStatus::Failed)
    });
    outbox.retry_failed(&id, NOW)?;
    eventually("retried dead letter sent", || {
        status_of(&*store, &id) == Some(OperationStatus::Done)
    });
    engine.stop()?;
    Ok(())
}

#[test]
fn make_pending_due_and_sync_now_send_what_waits_in_backoff() -> TestResult {
    let (engine, outbox, store, _) = idle_engine(vec![
        SendResult::retryable("503"),
        SendResult::retryable("503"),
    ]);
    let first = outbox.enqueue(Operation::new("k", "/t", "{}"), NOW)?;
    let second = outbox.enqueue(Operation::new("k", "/t", "{}"), NOW)?;
    engine.start(ManualClock::new(NOW))?;
    eventually("both in backoff", || {
        [&first, &second].iter().all(|id| {
            store
                .get(id)
                .ok()
                .flatten()
                .is_some_and(|op| op.status == OperationStatus::Pending && op.attempt == 1)
        })
    });
    assert_eq!(outbox.make_pending_due(NOW)?, 2);
    eventually("sent after make_pending_due", || {
        [&first, &second]
            .iter()
            .all(|id| status_of(&*store, id) == Some(OperationStatus::Done))
    });
    engine.stop()?;

    // The app's button: the same through the engine.
    let (engine, outbox, store, _) = idle_engine(vec![SendResult::retryable("503")]);
    let id = outbox.enqueue(Operation::new("k", "/t", "{}"), NOW)?;
    engine.start(ManualClock::new(NOW))?;
    eventually("in backoff", || {
        store
            .get(&id)
            .ok()
            .flatten()
            .is_some_and(|op| op.attempt == 1 && op.status == OperationStatus::Pending)
    });
    engine.sync_now();
    eventually("sent after sync_now", || {
        status_of(&*store, &id) == Some(OperationStatus::Done)
    });
    engine.stop()?;
    Ok(())
}

#[test]
fn a_discard_or_completion_that_unblocks_a_key_sends_the_next() -> TestResult {
    // The head waits in backoff; the next op of its key is due but blocked.
    let (engine, outbox, store, _) = idle_engine(vec![SendResult::retryable("503")]);
    let head = outbox.enqueue(keyed("chat"), NOW)?;
    let next = outbox.enqueue(keyed("chat"), NOW)?;
    engine.start(ManualClock::new(NOW))?;
    eventually("head in backoff", || {
        store
            .get(&head)
            .ok()
            .flatten()
            .is_some_and(|op| op.attempt == 1 && op.status == OperationStatus::Pending)
    });
    assert_eq!(status_of(&*store, &next), Some(OperationStatus::Pending));
    outbox.discard(&head)?;
    eventually("next sent after the discard", || {
        status_of(&*store, &next) == Some(OperationStatus::Done)
    });
    engine.stop()?;

    // The app sends the head itself (claim_ready) and records it: the engine
    // is told the key moved on.
    let (engine, outbox, store, _) = idle_engine(Vec::new());
    let head = outbox.enqueue(keyed("chat"), NOW)?;
    let claimed = outbox.claim(NOW, 1).map(sync_outbox::Claim::detach)?;
    assert_eq!(claimed.len(), 1);
    let next = outbox.enqueue(keyed("chat"), NOW)?;
    engine.start(ManualClock::new(NOW))?;
    outbox.mark_done(&head, NOW)?;
    eventually("next sent after the completion", || {
        status_of(&*store, &next) == Some(OperationStatus::Done)
    });
    engine.stop()?;
    Ok(())
}

#[test]
fn wake_looks_again_for_work_the_outbox_could_not_announce() -> TestResult {
    let (engine, outbox, store, transport) = idle_engine(Vec::new());
    engine.start(ManualClock::new(NOW))?;
    // Written to the store behind the outbox's back: nobody is told.
    let mut op = Operation::new("k", "/t", "{}");
    op.id = "written-directly".into();
    op.next_retry_at_ms = NOW;
    store.put(&op)?;
    assert_eq!(transport.sends.load(SeqCst), 0);
    engine.wake();
    eventually("sent after wake", || {
        status_of(&*store, "written-directly") == Some(OperationStatus::Done)
    });
    engine.stop()?;
    let _ = outbox;
    Ok(())
}
