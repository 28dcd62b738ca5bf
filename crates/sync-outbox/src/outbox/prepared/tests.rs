//! Unit tests of prepared enqueues: a prepared operation holds its key's
//! place, a rollback leaves the indexes as they were, a commit registers the
//! operation and wakes the listeners, and coalescing plans an update of the
//! never-claimed operation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use crate::memory_store::MemoryOutboxStore;
use crate::{Operation, Outbox, OutboxConfig, OutboxError, OutboxStore};

fn keyed(key: &str) -> Operation {
    Operation {
        ordering_key: Some(key.into()),
        ..Operation::new("note.update", "/notes/1", "{}")
    }
}

fn claimed(outbox: &Outbox, now: i64) -> Result<Vec<String>, OutboxError> {
    Ok(outbox
        .claim(now, 10)
        .map(crate::Claim::detach)?
        .into_iter()
        .map(|op| op.id)
        .collect())
}

#[test]
fn a_prepared_operation_holds_its_place_and_a_rollback_gives_it_back() -> Result<(), OutboxError> {
    let store = Arc::new(MemoryOutboxStore::new());
    let outbox = Outbox::new(OutboxConfig::default(), store.clone());
    let prepared = outbox.prepare_enqueue(keyed("note-1"), 0)?;
    let later = outbox.enqueue(keyed("note-1"), 0)?;
    assert!(
        claimed(&outbox, 1)?.is_empty(),
        "the later op waits behind the prepared one"
    );
    drop(prepared); // rolled back
    assert_eq!(store.load_all()?.len(), 1, "nothing was written");
    assert_eq!(claimed(&outbox, 2)?, [later]);
    Ok(())
}

#[test]
fn a_commit_registers_the_operation_and_wakes_listeners() -> Result<(), OutboxError> {
    let store = Arc::new(MemoryOutboxStore::new());
    let outbox = Outbox::new(OutboxConfig::default(), store.clone());
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    outbox.on_claimable(move || {
        seen.fetch_add(1, SeqCst);
    });
    let first = outbox.prepare_enqueue(keyed("note-1"), 0)?;
    let second = outbox.prepare_enqueue(keyed("note-1"), 0)?;
    assert!(first.operation().seq < second.operation().seq);
    assert!(matches!(
        outbox.prepare_enqueue(
            Operation {
                id: first.operation().id.clone(),
                ..keyed("x")
            },
            0
        ),
        Err(OutboxError::DuplicateId { .. })
    ));
    store.put(first.operation())?;
    store.put(second.operation())?;
    let first_id = first.committed();
    let second_id = second.committed();
    assert_eq!(calls.load(SeqCst), 2);
    assert_eq!(
        claimed(&outbox, 1)?,
        std::slice::from_ref(&first_id),
        "per-key order"
    );
    outbox.mark_done(&first_id, 2)?;
    assert_eq!(claimed(&outbox, 3)?, [second_id]);
    Ok(())
}

#[test]
fn coalescing_plans_an_update_of_the_never_claimed_operation() -> Result<(), OutboxError> {
    let store = Arc::new(MemoryOutboxStore::new());
    let outbox = Outbox::new(OutboxConfig::default(), store.clone());
    let draft = |text: &str| Operation {
        coalesce_key: Some("draft-1".into()),
        ..Operation::new("draft.save", "/drafts/1", text)
    };
    let prepared = outbox.prepare_enqueue(draft("a"), 0)?;
    assert!(!prepared.replaces_existing());
    store.put(prepared.operation())?;
    let id = prepared.committed();

    let update = outbox.prepare_enqueue(draft("ab"), 1)?;
    assert!(update.replaces_existing());
    assert_eq!(update.operation().id, id);
    assert_eq!(update.operation().payload, "ab");
    drop(update);

    // Once claimed, it may have been sent: no more coalescing into it.
    assert_eq!(claimed(&outbox, 2)?, std::slice::from_ref(&id));
    let fresh = outbox.prepare_enqueue(draft("abc"), 3)?;
    assert!(!fresh.replaces_existing());
    assert_ne!(fresh.operation().id, id);
    Ok(())
}

#[test]
fn an_operation_being_coalesced_into_is_not_claimed_until_the_commit() -> Result<(), OutboxError> {
    let store = Arc::new(MemoryOutboxStore::new());
    let outbox = Outbox::new(OutboxConfig::default(), store.clone());
    let draft = |text: &str| Operation {
        coalesce_key: Some("draft-1".into()),
        ..Operation::new("draft.save", "/drafts/1", text)
    };
    let id = outbox.enqueue(draft("a"), 0)?;
    let update = outbox.prepare_enqueue(draft("ab"), 1)?;
    assert!(update.replaces_existing());
    assert!(
        claimed(&outbox, 2)?.is_empty(),
        "not sent with its old payload"
    );
    assert_eq!(
        outbox.next_claimable_at_ms()?,
        None,
        "no busy wake-up either"
    );
    store.put(update.operation())?;
    let _ = update.committed();
    let sent = outbox.claim(3, 10).map(crate::Claim::detach)?;
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].id.as_str(), sent[0].payload.as_str()),
        (id.as_str(), "ab")
    );

    // A rolled-back coalescing leaves the op claimable as it was.
    let other = outbox.enqueue(
        Operation {
            coalesce_key: Some("draft-2".into()),
            ..Operation::new("draft.save", "/drafts/2", "x")
        },
        4,
    )?;
    let rolled_back = outbox.prepare_enqueue(
        Operation {
            coalesce_key: Some("draft-2".into()),
            ..Operation::new("draft.save", "/drafts/2", "xy")
        },
        5,
    )?;
    drop(rolled_back);
    let sent = outbox.claim(6, 10).map(crate::Claim::detach)?;
    assert_eq!(
        (sent[0].id.as_str(), sent[0].payload.as_str()),
        (other.as_str(), "x")
    );
    Ok(())
}

#[test]
fn a_rollback_that_unblocks_a_key_wakes_the_senders() -> Result<(), OutboxError> {
    let store = Arc::new(MemoryOutboxStore::new());
    let outbox = Outbox::new(OutboxConfig::default(), store.clone());
    let prepared = outbox.prepare_enqueue(keyed("note-1"), 0)?;
    outbox.enqueue(keyed("note-1"), 0)?;
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    outbox.on_claimable(move || {
        seen.fetch_add(1, SeqCst);
    });
    drop(prepared);
    assert_eq!(
        calls.load(SeqCst),
        1,
        "the waiting op may go: senders are told"
    );
    Ok(())
}

#[test]
fn a_reload_keeps_a_prepared_operation_in_its_place() -> Result<(), OutboxError> {
    let store = Arc::new(MemoryOutboxStore::new());
    let outbox = Outbox::new(OutboxConfig::default(), store.clone());
    let first = outbox.prepare_enqueue(keyed("note-1"), 0)?;
    let second = outbox.enqueue(keyed("note-1"), 0)?;
    outbox.recover(0)?; // rebuilds the indexes from the store
    let later = outbox.enqueue(keyed("note-2"), 0)?;
    assert!(
        store
            .get(&later)?
            .is_some_and(|op| op.seq > first.operation().seq),
        "no seq handed out twice"
    );
    assert!(
        !claimed(&outbox, 1)?.contains(&second),
        "still behind the prepared one"
    );
    store.put(first.operation())?;
    let first_id = first.committed();
    let order = claimed(&outbox, 2)?;
    assert_eq!(order, [first_id]);
    Ok(())
}

#[test]
fn an_exclusive_outbox_settles_its_enqueues_after_releasing_itself() -> Result<(), OutboxError> {
    let store = Arc::new(MemoryOutboxStore::new());
    let outbox = Outbox::new(OutboxConfig::default(), store.clone());
    let mut held = outbox.lock_for_transaction()?;
    let kept = held.prepare_enqueue(keyed("a"), 0)?;
    store.put(kept.operation())?;
    let ids = held.commit(vec![kept]);
    assert_eq!(claimed(&outbox, 1)?, ids);
    let mut held = outbox.lock_for_transaction()?;
    let dropped = held.prepare_enqueue(keyed("b"), 0)?;
    held.rollback(vec![dropped]);
    assert!(claimed(&outbox, 2)?.is_empty());
    Ok(())
}
