//! Guards the guide's scenario with its exact numbers: saved, a first tick
//! offline (attempt 1, "network offline", retry at now + 500), nothing sent
//! before that time, then done once the network recovers.

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;

use sync_engine::{NetworkProbe, NetworkProbeConfig, SyncWorker, SyncWorkerConfig};
use sync_outbox::{Operation, OperationStatus, OutboxStore};

use crate::{ScriptedTransport, TestResult, guide_outbox};

#[test]
fn the_guides_program_behaves_as_the_guide_says() -> TestResult {
    let (outbox, store) = guide_outbox();
    let transport = Arc::new(ScriptedTransport::default());
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    let worker = SyncWorker::new(
        SyncWorkerConfig { batch_limit: 10 },
        outbox.clone(),
        probe,
        transport.clone(),
    );
    let t0 = 1_700_000_000_000;

    let id = outbox.enqueue(
        Operation::new(
            "message.send",
            "/api/messages",
            r#"{"text":"hello offline-first"}"#,
        ),
        t0,
    )?;
    assert_eq!(
        store.get(&id)?.map(|op| op.status),
        Some(OperationStatus::Pending),
        "saved before any send"
    );

    assert_eq!(worker.tick(t0 + 1)?, 1);
    let after = store.get(&id)?.ok_or("lost")?;
    assert_eq!(after.attempt, 1);
    assert_eq!(after.last_error, "network offline");
    assert_eq!(after.next_retry_at_ms, t0 + 1 + 500);
    assert_eq!(after.status, OperationStatus::Pending);

    transport.online.store(true, SeqCst);
    assert_eq!(
        worker.tick(t0 + 500)?,
        0,
        "nothing is sent before next_retry_at_ms"
    );
    assert_eq!(worker.tick(after.next_retry_at_ms + 1)?, 1);
    let done = store.get(&id)?.ok_or("lost")?;
    assert_eq!((done.status, done.attempt), (OperationStatus::Done, 2));
    assert_eq!(transport.sends.load(SeqCst), 2);
    let stats = worker.stats();
    assert_eq!(
        (stats.sent, stats.done, stats.retried, stats.failed),
        (2, 1, 1, 0)
    );
    Ok(())
}
