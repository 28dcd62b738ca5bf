//! Guards that `MemoryOutboxStore` passes the store conformance suite every
//! `OutboxStore` must pass, and that operations round-trip through JSON.

use std::sync::Arc;

use sync_outbox::testing::{check_reopen, check_store, sample};
use sync_outbox::{MemoryOutboxStore, Operation, OutboxError, OutboxStore};

#[test]
fn memory_store_passes_the_suite() -> Result<(), OutboxError> {
    check_store(&mut || Ok(Arc::new(MemoryOutboxStore::new())))
}

#[test]
fn memory_store_passes_reopen_while_the_process_lives() -> Result<(), OutboxError> {
    // "Reopening" the same in-memory store: what a restart of the outbox, not
    // of the process, sees.
    let store: Arc<dyn OutboxStore> = Arc::new(MemoryOutboxStore::new());
    check_reopen(&mut || Ok(Arc::clone(&store)))
}

#[test]
fn operations_round_trip_through_json_with_readable_status() -> Result<(), serde_json::Error> {
    let op = sample("op_1", 2, 1_000);
    let json = serde_json::to_string(&op)?;
    assert!(json.contains(r#""status":"pending""#), "{json}");
    assert_eq!(serde_json::from_str::<Operation>(&json)?, op);
    // Missing fields take defaults, so older files still load.
    let old: Operation = serde_json::from_str(r#"{"id":"x","kind":"k"}"#)?;
    assert_eq!(
        (old.id.as_str(), old.attempt, old.ordering_key),
        ("x", 0, None)
    );
    Ok(())
}
