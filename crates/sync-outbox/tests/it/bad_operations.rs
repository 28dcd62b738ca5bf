//! Guards what `enqueue` refuses: an operation no server could take (an
//! empty kind or target, a target that is not a path) is a typed error and
//! nothing is stored; a value that cannot become JSON says so, without a
//! made-up position.

use std::collections::BTreeMap;
use std::sync::Arc;

use sync_outbox::{MemoryOutboxStore, Operation, Outbox, OutboxConfig, OutboxError, OutboxStore};

#[test]
fn an_operation_no_server_could_take_is_refused_and_not_stored() -> Result<(), OutboxError> {
    let store = Arc::new(MemoryOutboxStore::new());
    let outbox = Outbox::new(OutboxConfig::default(), store.clone());
    let cases = [
        (Operation::new("", "/notes", "{}"), "its kind is empty"),
        (
            Operation::new("note.create", "", "{}"),
            "its target is empty",
        ),
        (
            Operation::new("note.create", "notes", "{}"),
            "its target does not start with `/` (it is a path on the server)",
        ),
    ];
    for (op, want) in cases {
        match outbox.enqueue(op.clone(), 0) {
            Err(OutboxError::InvalidOperation { problem, .. }) => assert_eq!(problem, want),
            other => panic!("{op:?} was not refused: {other:?}"),
        }
        match outbox.prepare_enqueue(op, 0) {
            Err(OutboxError::InvalidOperation { .. }) => {}
            other => panic!("prepare_enqueue did not refuse it: {other:?}"),
        }
    }
    assert!(store.load_all()?.is_empty(), "nothing stored");
    outbox.enqueue(Operation::new("note.create", "/notes", "{}"), 0)?;
    assert_eq!(store.load_all()?.len(), 1);
    Ok(())
}

#[test]
fn a_value_that_cannot_be_json_says_so_without_a_position() {
    let mut by_pair = BTreeMap::new();
    by_pair.insert((1, 2), "a map keyed by pairs");
    let error = Operation::json("note.create", "/notes", &by_pair)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(error.contains("cannot be written as JSON"), "{error}");
    assert!(!error.contains("line 0"), "{error}");
    assert!(
        !error.contains("a map keyed by pairs"),
        "no payload: {error}"
    );
}
