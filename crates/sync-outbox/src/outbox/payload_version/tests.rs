//! `upgrade_payloads`: never-sent operations rewritten once, with their
//! version; sent ones kept byte for byte; refused and unknown versions made
//! dead letters with the reason; done ones untouched; a second run a no-op.

use std::sync::Arc;

use crate::memory_store::MemoryOutboxStore;
use crate::{Operation, OperationStatus, Outbox, OutboxConfig, OutboxStore, SendOutcome};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn note(text: &str, version: u32) -> Operation {
    Operation {
        payload_version: version,
        ..Operation::new("note.save", "/notes/1", format!(r#"{{"text":"{text}"}}"#))
    }
}

/// Version 2 renames `text` to `body`; version 0 notes with `"old"` text
/// are refused (say, a format this release dropped).
fn to_v2(op: &mut Operation) -> Result<(), String> {
    let old: serde_json::Value = serde_json::from_str(&op.payload).map_err(|e| e.to_string())?;
    if old["text"] == "old" {
        return Err("version 0 notes without a title are no longer supported".into());
    }
    op.payload = serde_json::json!({ "body": old["text"] }).to_string();
    Ok(())
}

#[test]
fn queued_operations_are_upgraded_once_and_the_rest_said_why() -> TestResult {
    let store = Arc::new(MemoryOutboxStore::new());
    let outbox = Outbox::new(OutboxConfig::default(), store.clone());
    let fresh = outbox.enqueue(note("milk", 0), 0)?;
    let refused = outbox.enqueue(note("old", 0), 0)?;
    let newer = outbox.enqueue(note("from the future", 3), 0)?;
    let current = outbox.enqueue(note("already", 2), 0)?;
    // One sent (its answer lost) and one done: neither may change.
    let sent = outbox.enqueue(note("on the wire", 1), 0)?;
    let done = outbox.enqueue(note("acknowledged", 1), 0)?;
    for op in outbox.claim(0, 10)?.detach() {
        if op.id == sent {
            outbox.record(&op.id, SendOutcome::retry_later("timeout", None), 1)?;
        } else if op.id == done {
            outbox.mark_done(&op.id, 1)?;
        } else {
            outbox.record(&op.id, SendOutcome::retry_later("offline", None), 1)?;
        }
    }
    // The claim above counted an attempt on every one: make the never-sent
    // ones never-sent again, as a fresh queue from the last release is.
    for id in [&fresh, &refused, &newer, &current] {
        let mut op = store.get(id)?.ok_or("missing")?;
        op.attempt = 0;
        op.first_sent_at_ms = None;
        store.put(&op)?;
    }
    let before_sent = store.get(&sent)?.ok_or("missing")?;
    let before_done = store.get(&done)?.ok_or("missing")?;

    let report = outbox.upgrade_payloads(2, 5, to_v2)?;
    assert_eq!(
        (report.upgraded, report.failed, report.kept_as_sent),
        (1, 2, 1)
    );
    let get = |id: &str| {
        store
            .get(id)?
            .ok_or_else(|| crate::OutboxError::UnknownId { id: id.into() })
    };
    let upgraded = get(&fresh)?;
    assert_eq!(
        (
            upgraded.payload.as_str(),
            upgraded.payload_version,
            upgraded.status
        ),
        (r#"{"body":"milk"}"#, 2, OperationStatus::Pending)
    );
    let refused = get(&refused)?;
    assert_eq!(refused.status, OperationStatus::Failed);
    assert!(
        refused.last_error.contains("no longer supported"),
        "{}",
        refused.last_error
    );
    assert_eq!(
        refused.payload, r#"{"text":"old"}"#,
        "a refused one keeps its payload"
    );
    let newer = get(&newer)?;
    assert_eq!(newer.status, OperationStatus::Failed);
    assert!(
        newer.last_error.contains("newer than this app's 2"),
        "{}",
        newer.last_error
    );
    assert_eq!(get(&current)?.payload, r#"{"text":"already"}"#);
    assert_eq!(get(&sent)?, before_sent, "a sent one is kept byte for byte");
    assert_eq!(get(&done)?, before_done);

    // Once: an upgraded operation is not offered again; the dead letters
    // are (the app may handle them now) and, refused alike, stay as they are.
    let again = outbox.upgrade_payloads(2, 6, |op| {
        assert_ne!(op.id, fresh, "upgraded twice");
        to_v2(op)
    })?;
    assert_eq!((again.upgraded, again.failed), (0, 0));
    // The upgraded one is claimable and goes out in the new format.
    let claimed = outbox.claim(10_000, 10)?.detach();
    assert!(
        claimed
            .iter()
            .any(|op| op.id == fresh && op.payload.contains("body"))
    );
    Ok(())
}
