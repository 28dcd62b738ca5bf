//! Guards the two answers to a dead letter: strict order through failures
//! (`OrderingMode::StopOnFailure`: a failed head keeps its key blocked until
//! retried, corrected or discarded, across a reload too) and
//! `Outbox::correct` (new payload, new idempotency key, same place).

use std::sync::Arc;

use sync_outbox::{
    Correction, MemoryOutboxStore, Operation, OperationStatus, OrderingMode, Outbox, OutboxConfig,
    OutboxError, OutboxStore, SendOutcome,
};

type TestResult = Result<(), OutboxError>;

const REFUSED: &str = "HTTP 422";

fn outbox(mode: OrderingMode, store: &Arc<MemoryOutboxStore>) -> Outbox {
    let config = OutboxConfig {
        ordering: mode,
        ..OutboxConfig::default()
    };
    Outbox::new(config, store.clone())
}

fn note(step: &str) -> Operation {
    Operation {
        ordering_key: Some("note-1".into()),
        ..Operation::new(step, "/notes/1", "{}")
    }
}

/// Claims everything due and acknowledges it; returns the kinds sent, in order.
fn send_all(outbox: &Outbox, now: i64) -> Result<Vec<String>, OutboxError> {
    let mut sent = Vec::new();
    loop {
        let claim = outbox.claim(now, 10)?;
        if claim.is_empty() {
            return Ok(sent);
        }
        for op in &claim {
            sent.push(op.kind.clone());
            outbox.mark_done(&op.id, now)?;
        }
    }
}

/// Enqueues create, edit, edit; fails the create for good.
fn failed_create(outbox: &Outbox) -> Result<String, OutboxError> {
    let create = outbox.enqueue(note("create"), 0)?;
    outbox.enqueue(note("edit-1"), 0)?;
    outbox.enqueue(note("edit-2"), 0)?;
    let claim = outbox.claim(1, 10)?;
    assert_eq!(claim.len(), 1, "per-key order: the create alone");
    outbox.record(&create, SendOutcome::refused(REFUSED), 2)?;
    drop(claim);
    Ok(create)
}

#[test]
fn by_default_the_edits_go_on_without_their_failed_create() -> TestResult {
    let store = Arc::new(MemoryOutboxStore::new());
    let outbox = outbox(OrderingMode::SkipFailed, &store);
    let create = failed_create(&outbox)?;
    assert_eq!(send_all(&outbox, 3)?, ["edit-1", "edit-2"]);
    outbox.retry_failed(&create, 4)?;
    assert_eq!(send_all(&outbox, 5)?, ["create"], "after its edits");
    Ok(())
}

#[test]
fn stop_on_failure_holds_the_line_until_the_head_is_retried_then_keeps_order() -> TestResult {
    let store = Arc::new(MemoryOutboxStore::new());
    let outbox = outbox(OrderingMode::StopOnFailure, &store);
    let create = failed_create(&outbox)?;
    assert!(send_all(&outbox, 3)?.is_empty(), "the edits wait");
    // A new outbox on the same store (an app restart) still holds the line.
    let restarted = self::outbox(OrderingMode::StopOnFailure, &store);
    assert!(send_all(&restarted, 4)?.is_empty(), "after a reload too");
    restarted.retry_failed(&create, 5)?;
    assert_eq!(send_all(&restarted, 6)?, ["create", "edit-1", "edit-2"]);
    Ok(())
}

#[test]
fn discarding_the_failed_head_releases_the_line() -> TestResult {
    let store = Arc::new(MemoryOutboxStore::new());
    let outbox = outbox(OrderingMode::StopOnFailure, &store);
    let create = failed_create(&outbox)?;
    outbox.discard(&create)?;
    assert_eq!(send_all(&outbox, 3)?, ["edit-1", "edit-2"]);
    Ok(())
}

#[test]
fn an_operation_overrides_the_outbox_ordering_either_way() -> TestResult {
    // The outbox skips, this create stops the line.
    let store = Arc::new(MemoryOutboxStore::new());
    let outbox = outbox(OrderingMode::SkipFailed, &store);
    let create = outbox.enqueue(
        Operation {
            ordering: Some(OrderingMode::StopOnFailure),
            ..note("create")
        },
        0,
    )?;
    outbox.enqueue(note("edit-1"), 0)?;
    let claim = outbox.claim(1, 10)?;
    outbox.record(&create, SendOutcome::refused(REFUSED), 2)?;
    drop(claim);
    assert!(send_all(&outbox, 3)?.is_empty());

    // The outbox stops the line, this create does not.
    let store = Arc::new(MemoryOutboxStore::new());
    let outbox = self::outbox(OrderingMode::StopOnFailure, &store);
    let create = outbox.enqueue(
        Operation {
            ordering: Some(OrderingMode::SkipFailed),
            ..note("create")
        },
        0,
    )?;
    outbox.enqueue(note("edit-1"), 0)?;
    let claim = outbox.claim(1, 10)?;
    outbox.record(&create, SendOutcome::refused(REFUSED), 2)?;
    drop(claim);
    assert_eq!(send_all(&outbox, 3)?, ["edit-1"]);
    Ok(())
}

#[test]
fn attempts_used_up_by_interrupted_sends_stop_the_line_too() -> TestResult {
    let store = Arc::new(MemoryOutboxStore::new());
    let config = OutboxConfig {
        ordering: OrderingMode::StopOnFailure,
        retry: sync_outbox::RetryPolicy {
            max_attempts: 1,
            ..sync_outbox::RetryPolicy::default()
        },
        ..OutboxConfig::default()
    };
    let outbox = Outbox::new(config, store.clone());
    let create = outbox.enqueue(note("create"), 0)?;
    outbox.enqueue(note("edit-1"), 0)?;
    drop(outbox.claim(1, 10)?); // the sender gave up: an orphan on its last attempt
    assert!(send_all(&outbox, 2)?.is_empty());
    assert_eq!(
        store.get(&create)?.map(|op| op.status),
        Some(OperationStatus::Failed)
    );
    Ok(())
}

#[test]
fn a_corrected_dead_letter_goes_first_under_a_new_key_with_the_old_kept() -> TestResult {
    let store = Arc::new(MemoryOutboxStore::new());
    let outbox = outbox(OrderingMode::StopOnFailure, &store);
    let create = failed_create(&outbox)?;
    let key = outbox.correct(&create, Correction::payload(r#"{"title":"fixed"}"#), 3)?;
    assert_eq!(key, format!("{create}.1"));
    let claim = outbox.claim(4, 10)?;
    let sent = &claim.ops()[0];
    assert_eq!(
        (sent.id.as_str(), sent.kind.as_str(), sent.payload.as_str()),
        (create.as_str(), "create", r#"{"title":"fixed"}"#)
    );
    assert_eq!(sent.idempotency_key(), key);
    assert_eq!(sent.attempt, 1, "attempts start again");
    // Refused again, corrected again: the next key, both old ones kept.
    outbox.record(&create, SendOutcome::refused(REFUSED), 5)?;
    drop(claim);
    let key = outbox.correct(
        &create,
        Correction {
            target: Some("/v2/notes".into()),
            ..Correction::default()
        },
        6,
    )?;
    assert_eq!(key, format!("{create}.2"));
    let op = store
        .get(&create)?
        .ok_or(OutboxError::UnknownId { id: create.clone() })?;
    assert_eq!(op.replaced_keys, [create.clone(), format!("{create}.1")]);
    assert_eq!(
        (op.target.as_str(), op.last_error.as_str()),
        ("/v2/notes", "")
    );
    assert_eq!(send_all(&outbox, 7)?, ["create", "edit-1", "edit-2"]);
    Ok(())
}

#[test]
fn only_dead_letters_and_unsent_operations_can_be_corrected() -> TestResult {
    let store = Arc::new(MemoryOutboxStore::new());
    let outbox = outbox(OrderingMode::SkipFailed, &store);
    let unsent = outbox.enqueue(Operation::new("note.create", "/notes", "{}"), 0)?;
    // Never sent: changed in place, same key.
    assert_eq!(
        outbox.correct(&unsent, Correction::payload("[1]"), 1)?,
        unsent
    );
    let claim = outbox.claim(2, 10)?;
    assert_eq!(claim.ops()[0].payload, "[1]");
    assert!(matches!(
        outbox.correct(&unsent, Correction::payload("[2]"), 3),
        Err(OutboxError::InvalidTransition {
            from: OperationStatus::InFlight,
            ..
        })
    ));
    outbox.record(&unsent, SendOutcome::retry_later("HTTP 503", None), 4)?;
    drop(claim);
    // Sent and waiting for its retry: its result may still be stored under the old key.
    assert!(matches!(
        outbox.correct(&unsent, Correction::payload("[2]"), 5),
        Err(OutboxError::InvalidTransition { .. })
    ));
    assert!(matches!(
        outbox.correct("nope", Correction::default(), 5),
        Err(OutboxError::UnknownId { .. })
    ));
    Ok(())
}

#[test]
fn typed_payloads_round_trip_and_their_errors_never_print_the_payload()
-> Result<(), Box<dyn std::error::Error>> {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Payment {
        card: String,
        cents: u32,
    }
    let op = Operation::json(
        "payment.create",
        "/payments",
        &Payment {
            card: "4242-4242-4242-4242".into(),
            cents: 1_250,
        },
    )?;
    assert_eq!(
        op.payload_json::<Payment>()?,
        Payment {
            card: "4242-4242-4242-4242".into(),
            cents: 1_250
        }
    );
    // The wrong type: serde would quote the card number; we do not.
    let wrong = op
        .payload_json::<Vec<u32>>()
        .err()
        .ok_or("read as a list")?;
    let shown = format!("{wrong} {wrong:?}");
    assert!(!shown.contains("4242"), "{shown}");
    assert!(shown.contains("not the expected type") && shown.contains("payment.create"));
    let garbled = Operation::new("payment.create", "/payments", r#"{"card":"4242-42"#);
    let error = garbled
        .payload_json::<Payment>()
        .err()
        .ok_or("read garbage")?;
    assert!(
        matches!(error, OutboxError::Payload { line: 1, .. }),
        "{error}"
    );
    assert!(!error.to_string().contains("4242"));
    Ok(())
}
