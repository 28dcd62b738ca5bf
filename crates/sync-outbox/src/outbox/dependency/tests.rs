//! The dependency rule's edges: what enqueue refuses, a dependent waiting
//! on a dead letter and going on after its retry, a discarded or answerless
//! dependency failing the dependent, answers past the limit, purges that
//! keep a needed answer, and no busy wake while a dependent waits.

use std::sync::Arc;

use crate::memory_store::MemoryOutboxStore;
use crate::{
    Need, Operation, OperationStatus, Outbox, OutboxConfig, OutboxError, OutboxStore, SendOutcome,
};

type TestResult = Result<(), OutboxError>;

fn outbox(config: OutboxConfig) -> (Outbox, Arc<MemoryOutboxStore>) {
    let store = Arc::new(MemoryOutboxStore::new());
    (Outbox::new(config, store.clone()), store)
}

fn create() -> Operation {
    Operation::new("note.create", "/notes", r#"{"title":"t"}"#).keeping_answer()
}

fn item(create: &str) -> Operation {
    Operation::new("item.add", "/notes/tmp-1/items", r#"{"note":"tmp-1"}"#)
        .needing(Need::new(create, "/id", "tmp-1"))
}

fn answered(id: &str) -> [(&str, SendOutcome<'_>); 1] {
    [(
        id,
        SendOutcome::AcknowledgedWith {
            version: None,
            answer: r#"{"id":"n7"}"#,
        },
    )]
}

fn status(store: &MemoryOutboxStore, id: &str) -> Result<(OperationStatus, String), OutboxError> {
    let op = store
        .get(id)?
        .ok_or(OutboxError::UnknownId { id: id.into() })?;
    Ok((op.status, op.last_error))
}

#[test]
fn enqueue_refuses_needs_that_can_never_be_met() -> TestResult {
    let (outbox, _) = outbox(OutboxConfig::default());
    let plain = outbox.enqueue(Operation::new("note.create", "/notes", "{}"), 0)?;
    let kept = outbox.enqueue(create(), 0)?;
    for (op, why) in [
        (item("op_nowhere"), "not in the queue"),
        (item(&plain), "does not keep its answer"),
        (
            Operation::new("item.add", "/notes/x", "{}").needing(Need::new(&kept, "/id", "tmp-1")),
            "neither its target nor its payload",
        ),
        (
            Operation::new("item.add", "/notes/tmp-1", "{}")
                .needing(Need::new(&kept, "id", "tmp-1")),
            "not a JSON pointer",
        ),
    ] {
        match outbox.enqueue(op, 0) {
            Err(OutboxError::InvalidOperation { problem, .. }) => {
                assert!(problem.contains(why), "{problem} vs {why}");
            }
            other => panic!("expected a refusal naming {why}, got {other:?}"),
        }
    }
    assert_eq!(outbox.stats()?.pending, 2, "nothing refused was stored");
    Ok(())
}

#[test]
fn a_dependent_waits_while_its_dependency_is_a_dead_letter_and_goes_after_a_retry() -> TestResult {
    let (outbox, store) = outbox(OutboxConfig::default());
    let create = outbox.enqueue(create(), 0)?;
    let item = outbox.enqueue(item(&create), 0)?;
    let claim = outbox.claim(1, 10)?;
    assert_eq!(claim.len(), 1, "only the create");
    outbox.record(&create, SendOutcome::refused("HTTP 422"), 2)?;
    drop(claim);
    assert!(outbox.claim(3, 10)?.is_empty(), "the item waits");
    assert_eq!(
        outbox.next_claimable_at_ms()?,
        None,
        "a waiting dependent is not a reason to wake"
    );
    assert_eq!(status(&store, &item)?.0, OperationStatus::Pending);

    outbox.retry_failed(&create, 4)?;
    let claim = outbox.claim(5, 10)?;
    assert_eq!(claim.ops()[0].id, create);
    outbox.record_results(answered(&create), 6)?;
    drop(claim);
    assert_eq!(
        outbox.next_claimable_at_ms()?,
        Some(0),
        "the item may go now"
    );
    let claim = outbox.claim(7, 10)?;
    assert_eq!(claim.ops()[0].target, "/notes/n7/items");
    assert_eq!(claim.ops()[0].payload, r#"{"note":"n7"}"#);
    let stored = store
        .get(&item)?
        .ok_or(OutboxError::UnknownId { id: item.clone() })?;
    assert_eq!(
        (stored.target.as_str(), stored.needs.len()),
        ("/notes/n7/items", 0)
    );
    Ok(())
}

#[test]
fn a_discarded_dependency_makes_the_dependent_a_dead_letter_never_sent() -> TestResult {
    let (outbox, store) = outbox(OutboxConfig::default());
    let create = outbox.enqueue(create(), 0)?;
    let item = outbox.enqueue(item(&create), 0)?;
    outbox.discard(&create)?;
    assert!(outbox.claim(1, 10)?.is_empty());
    let (status, why) = status(&store, &item)?;
    assert_eq!(status, OperationStatus::Failed);
    assert!(why.contains(&create) && why.contains("discarded"), "{why}");
    let op = store
        .get(&item)?
        .ok_or(OutboxError::UnknownId { id: item.clone() })?;
    assert!(!op.was_sent());
    Ok(())
}

#[test]
fn an_answer_past_the_limit_or_missing_is_not_kept_and_fails_the_dependent() -> TestResult {
    let config = OutboxConfig {
        max_answer_bytes: 8,
        ..OutboxConfig::default()
    };
    let (outbox, store) = outbox(config);
    let big = outbox.enqueue(create(), 0)?;
    let bare = outbox.enqueue(create(), 0)?;
    let on_big = outbox.enqueue(item(&big), 0)?;
    let on_bare = outbox.enqueue(item(&bare), 0)?;
    let claim = outbox.claim(1, 10)?;
    assert_eq!(claim.len(), 2);
    outbox.record_results(answered(&big), 2)?;
    outbox.record(&bare, SendOutcome::Acknowledged, 2)?;
    drop(claim);
    let kept = store
        .get(&big)?
        .ok_or(OutboxError::UnknownId { id: big.clone() })?;
    assert_eq!(kept.status, OperationStatus::Done);
    assert_eq!(kept.answer, None);
    assert!(kept.last_error.contains("11 bytes"), "{}", kept.last_error);

    assert!(outbox.claim(3, 10)?.is_empty());
    let (s1, why1) = status(&store, &on_big)?;
    let (s2, why2) = status(&store, &on_bare)?;
    assert_eq!((s1, s2), (OperationStatus::Failed, OperationStatus::Failed));
    assert!(why1.contains("max_answer_bytes"), "{why1}");
    assert!(why2.contains("no answer"), "{why2}");
    Ok(())
}

#[test]
fn an_answer_without_the_value_fails_the_dependent_with_the_pointer() -> TestResult {
    let (outbox, store) = outbox(OutboxConfig::default());
    let create = outbox.enqueue(create(), 0)?;
    let item = outbox.enqueue(item(&create), 0)?;
    let claim = outbox.claim(1, 10)?;
    let answer = SendOutcome::AcknowledgedWith {
        version: None,
        answer: r#"{"other":1}"#,
    };
    outbox.record(&create, answer, 2)?;
    drop(claim);
    assert!(outbox.claim(3, 10)?.is_empty());
    let (status, why) = status(&store, &item)?;
    assert_eq!(status, OperationStatus::Failed);
    assert!(why.contains("`/id`"), "{why}");
    Ok(())
}

#[test]
fn purge_keeps_a_done_answer_a_queued_operation_needs() -> TestResult {
    let (outbox, store) = outbox(OutboxConfig::default());
    let create = outbox.enqueue(create(), 0)?;
    let other = outbox.enqueue(Operation::new("note.create", "/notes", "{}"), 0)?;
    let claim = outbox.claim(1, 10)?;
    outbox.record_results(answered(&create), 2)?;
    outbox.mark_done(&other, 2)?;
    drop(claim);
    let item = outbox.enqueue(item(&create), 3)?;
    assert_eq!(outbox.purge_done(100)?, 1, "only the unneeded one");
    assert!(store.get(&create)?.is_some());
    let claim = outbox.claim(4, 10)?;
    assert_eq!(claim.ops()[0].target, "/notes/n7/items");
    outbox.mark_done(&item, 5)?;
    drop(claim);
    assert_eq!(outbox.purge_done(100)?, 2, "needed no more");
    Ok(())
}

#[test]
fn kinds_in_keep_answers_of_keep_theirs_and_a_replayed_answer_fills_in_late() -> TestResult {
    let config = OutboxConfig {
        keep_answers_of: vec!["note.create".into()],
        ..OutboxConfig::default()
    };
    let (outbox, store) = outbox(config);
    let create = outbox.enqueue(Operation::new("note.create", "/notes", "{}"), 0)?;
    let claim = outbox.claim(1, 10)?;
    outbox.record(&create, SendOutcome::Acknowledged, 2)?;
    drop(claim);
    // The same answer comes again (a replay) with its body: now kept.
    outbox.record_results(answered(&create), 3)?;
    let op = store
        .get(&create)?
        .ok_or(OutboxError::UnknownId { id: create.clone() })?;
    assert!(op.keep_answer);
    assert_eq!(op.answer.as_deref(), Some(r#"{"id":"n7"}"#));
    assert!(op.last_error.is_empty());
    Ok(())
}

#[test]
fn a_claim_that_makes_a_dependent_a_dead_letter_wakes_waiters() -> TestResult {
    let (outbox, _) = outbox(OutboxConfig::default());
    let create = outbox.enqueue(create(), 0)?;
    let item = outbox.enqueue(item(&create), 0)?;
    outbox.discard(&create)?;
    let before = outbox.change_count();
    assert!(outbox.claim(1, 10)?.is_empty());
    assert!(outbox.change_count() > before, "waiters were not told");
    let ended = outbox.wait(&item, std::time::Duration::ZERO)?;
    assert!(
        matches!(&ended, Some(crate::Completion::Failed(op)) if op.last_error.contains("discarded")),
        "{ended:?}"
    );
    Ok(())
}
