//! The pause while the server is unreachable, as a sender's pass sees it:
//! one try at a time, and a try whose batch is dropped unfinished (a stop)
//! does not block the next.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use sync_outbox::{MemoryOutboxStore, Operation, Outbox, OutboxConfig};

use super::WorkerCore;
use crate::probe::{NetworkProbe, NetworkProbeConfig, Permit};

fn core() -> Result<WorkerCore, sync_outbox::OutboxError> {
    let outbox = Arc::new(Outbox::new(
        OutboxConfig::default(),
        Arc::new(MemoryOutboxStore::new()),
    ));
    for _ in 0..3 {
        outbox.enqueue(Operation::new("k", "/t", "{}"), 0)?;
    }
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    Ok(WorkerCore::new(
        10,
        outbox,
        probe,
        Arc::new(AtomicBool::new(false)),
    ))
}

#[test]
fn while_unreachable_one_sender_tries_one_operation() -> Result<(), Box<dyn std::error::Error>> {
    let core = core()?;
    core.probe.report_unreachable(0);
    assert!(core.prepare(500)?.is_none(), "paused for the first second");
    let batch = core.prepare(1_000)?.ok_or("nothing to try")?;
    assert_eq!(batch.claim.len(), 1, "one operation per try");
    assert!(core.prepare(1_000)?.is_none(), "one try at a time");
    // The try is dropped unfinished, as a stop does: the next may try.
    drop(batch);
    assert_eq!(core.probe.permit(1_000), Permit::Try);
    Ok(())
}
