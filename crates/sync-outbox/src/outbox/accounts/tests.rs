//! Accounts: only the signed-in account's operations are claimed; keys and
//! coalescing are per account; a user who comes back finds their queue in
//! its old order; list and discard by account.

use std::sync::Arc;

use crate::memory_store::MemoryOutboxStore;
use crate::{Operation, Outbox, OutboxConfig, OutboxStore};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn edit(note: &str, text: &str) -> Operation {
    Operation {
        ordering_key: Some(format!("note/{note}")),
        coalesce_key: Some(format!("note-text/{note}")),
        ..Operation::new("note.save", format!("/notes/{note}"), text)
    }
}

fn claim_ids(outbox: &Outbox, now: i64) -> Result<Vec<String>, crate::OutboxError> {
    Ok(outbox
        .claim(now, 10)?
        .detach()
        .into_iter()
        .map(|op| op.id)
        .collect())
}

#[test]
fn a_signed_out_users_queue_waits_apart_and_comes_back_in_order() -> TestResult {
    let store = Arc::new(MemoryOutboxStore::new());
    let outbox = Outbox::new(OutboxConfig::default(), store.clone());
    outbox.set_account(Some("ann"));
    let ann_1 = outbox.enqueue(edit("1", "ann's first"), 0)?;
    let ann_2 = outbox.enqueue(edit("2", "ann's"), 0)?;
    assert_eq!(
        store.get(&ann_1)?.and_then(|op| op.account).as_deref(),
        Some("ann")
    );

    // Ann signs out, Ben signs in and edits the same note: his own queue,
    // not coalesced into Ann's pending edit, not waiting behind it.
    outbox.set_account(Some("ben"));
    let ben_1 = outbox.enqueue(edit("1", "ben's"), 0)?;
    assert_ne!(ben_1, ann_1, "never coalesced into another account's edit");
    assert_eq!(claim_ids(&outbox, 1)?, std::slice::from_ref(&ben_1));
    outbox.mark_done(&ben_1, 2)?;
    assert!(
        claim_ids(&outbox, 3)?.is_empty(),
        "Ann's operations are not sent for Ben"
    );

    // Ann comes back: her queue, in its order; Ben's is not touched.
    outbox.set_account(Some("ann"));
    let ann_1b = outbox.enqueue(edit("1", "ann's second"), 4)?;
    assert_eq!(ann_1b, ann_1, "her own pending edit coalesces");
    assert_eq!(claim_ids(&outbox, 5)?, [ann_1.clone(), ann_2.clone()]);
    let anns: Vec<String> = outbox
        .account_operations("ann")?
        .into_iter()
        .map(|op| op.id)
        .collect();
    assert_eq!(anns, [ann_1, ann_2]);
    Ok(())
}

#[test]
fn an_accounts_queue_can_be_exported_and_discarded() -> TestResult {
    let store = Arc::new(MemoryOutboxStore::new());
    let outbox = Outbox::new(OutboxConfig::default(), store.clone());
    outbox.set_account(Some("ann"));
    outbox.enqueue(edit("1", "a"), 0)?;
    outbox.enqueue(edit("2", "b"), 0)?;
    outbox.set_account(None);
    let plain = outbox.enqueue(edit("3", "no account"), 0)?;
    let export = serde_json::to_string(&outbox.account_operations("ann")?)?;
    assert!(export.contains("\"account\":\"ann\""), "{export}");
    assert_eq!(outbox.discard_account("ann")?, 2);
    assert!(outbox.account_operations("ann")?.is_empty());
    assert_eq!(claim_ids(&outbox, 1)?, [plain], "no account: its own queue");
    Ok(())
}
