//! Unit tests of claims: a held claim never times out, a dropped one comes
//! back at once, late results are kept or ignored as the rules say, and every
//! change that can make work claimable calls the `on_claimable` listeners.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use crate::memory_store::MemoryOutboxStore;
use crate::{
    Operation, OperationStatus, Outbox, OutboxConfig, OutboxError, OutboxStore, SendOutcome,
};

type TestResult = Result<(), OutboxError>;

const TIMEOUT_MS: i64 = 100;

fn outbox() -> (Outbox, Arc<MemoryOutboxStore>) {
    let store = Arc::new(MemoryOutboxStore::new());
    let config = OutboxConfig {
        inflight_timeout: std::time::Duration::from_millis(TIMEOUT_MS.unsigned_abs()),
        ..OutboxConfig::default()
    };
    (Outbox::new(config, store.clone()), store)
}

fn op(key: Option<&str>) -> Operation {
    Operation {
        ordering_key: key.map(Into::into),
        ..Operation::new("note.update", "/notes/1", "{}")
    }
}

fn status(store: &MemoryOutboxStore, id: &str) -> Option<OperationStatus> {
    store.get(id).ok().flatten().map(|op| op.status)
}

fn ids(ops: &[Operation]) -> Vec<&str> {
    ops.iter().map(|op| op.id.as_str()).collect()
}

/// Counts `on_claimable` calls.
fn counter(outbox: &Outbox) -> Arc<AtomicUsize> {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    outbox.on_claimable(move || {
        seen.fetch_add(1, SeqCst);
    });
    calls
}

#[test]
fn a_held_claim_never_times_out_however_slow_the_send() -> TestResult {
    let (outbox, store) = outbox();
    let id = outbox.enqueue(op(None), 0)?;
    let claim = outbox.claim(0, 10)?;
    assert_eq!(ids(claim.ops()), [id.as_str()]);
    // Far past the in-flight timeout, a second sender finds nothing.
    assert!(outbox.claim(TIMEOUT_MS * 1_000, 10)?.is_empty());
    assert_eq!(outbox.recover(TIMEOUT_MS * 1_000)?.requeued, 0);
    assert_eq!(outbox.next_expiry_at_ms(), None, "nothing can time out");
    outbox.mark_done(&id, TIMEOUT_MS * 1_000)?;
    assert_eq!(status(&store, &id), Some(OperationStatus::Done));
    let claimed = store.get(&id)?.map(|op| op.attempt);
    assert_eq!(claimed, Some(1), "sent once");
    Ok(())
}

#[test]
fn a_detached_claim_times_out_as_before() -> TestResult {
    let (outbox, _) = outbox();
    let id = outbox.enqueue(op(None), 0)?;
    let ops = outbox.claim(0, 10)?.detach();
    assert_eq!(ids(&ops), [id.as_str()]);
    assert_eq!(outbox.next_expiry_at_ms(), Some(TIMEOUT_MS));
    assert!(outbox.claim(TIMEOUT_MS - 1, 10)?.is_empty());
    assert_eq!(ids(outbox.claim(TIMEOUT_MS, 10)?.ops()), [id.as_str()]);
    Ok(())
}

#[test]
fn a_dropped_claim_leaves_orphans_that_come_back_at_once() -> TestResult {
    let (outbox, store) = outbox();
    let calls = counter(&outbox);
    let a = outbox.enqueue(op(None), 0)?;
    let b = outbox.enqueue(op(None), 0)?;
    let claim = outbox.claim(0, 10)?;
    outbox.mark_done(&a, 1)?;
    let before = calls.load(SeqCst);
    drop(claim);
    assert_eq!(
        calls.load(SeqCst),
        before + 1,
        "the drop woke the listeners"
    );
    assert_eq!(outbox.next_claimable_at_ms()?, Some(0), "due at once");
    // Long before any timeout: b is claimed again, its attempt counted.
    let again = outbox.claim(2, 10)?;
    assert_eq!(ids(again.ops()), [b.as_str()]);
    assert_eq!(again.ops()[0].attempt, 2);
    let stored = store
        .get(&b)?
        .ok_or(OutboxError::UnknownId { id: b.clone() })?;
    assert_eq!(stored.status, OperationStatus::InFlight);
    Ok(())
}

#[test]
fn an_orphan_on_its_last_attempt_fails_and_says_why() -> TestResult {
    let store = Arc::new(MemoryOutboxStore::new());
    let config = OutboxConfig {
        retry: crate::RetryPolicy {
            max_attempts: 1,
            ..crate::RetryPolicy::default()
        },
        ..OutboxConfig::default()
    };
    let outbox = Outbox::new(config, store.clone());
    let id = outbox.enqueue(op(None), 0)?;
    drop(outbox.claim(0, 10)?);
    assert!(outbox.claim(1, 10)?.is_empty());
    let failed = store.get(&id)?.ok_or(OutboxError::UnknownId { id })?;
    assert_eq!(failed.status, OperationStatus::Failed);
    assert!(
        failed.last_error.contains("interrupted"),
        "{}",
        failed.last_error
    );
    Ok(())
}

#[test]
fn late_results_keep_the_ack_and_never_undo_a_newer_state() -> TestResult {
    let (outbox, store) = outbox();
    // A late ack after the claim timed out and went back to Pending: Done.
    let acked = outbox.enqueue(op(Some("k")), 0)?;
    let queued = outbox.enqueue(op(Some("k")), 0)?;
    let first = outbox.claim(0, 10).map(crate::Claim::detach)?;
    assert_eq!(ids(&first), [acked.as_str()]);
    assert_eq!(outbox.recover(TIMEOUT_MS)?.requeued, 1);
    assert_eq!(status(&store, &acked), Some(OperationStatus::Pending));
    outbox.mark_done(&acked, TIMEOUT_MS + 1)?;
    assert_eq!(status(&store, &acked), Some(OperationStatus::Done));
    // ... and the key moves on.
    assert_eq!(
        ids(&outbox.claim(TIMEOUT_MS + 1, 10).map(crate::Claim::detach)?),
        [queued.as_str()]
    );

    // A late failure after the claim timed out and went back to Pending:
    // ignored, the op keeps its newer state.
    let late_fail = outbox.enqueue(op(None), 200)?;
    outbox.claim(200, 10).map(crate::Claim::detach)?;
    outbox.recover(200 + TIMEOUT_MS)?;
    let pending = store.get(&late_fail)?;
    assert_eq!(
        outbox.record(
            &late_fail,
            SendOutcome::Failed {
                error: "503",
                retryable: false,
                retry_after_ms: None
            },
            400
        )?,
        OperationStatus::Pending,
        "a late failure reports the status it found"
    );
    assert_eq!(store.get(&late_fail)?, pending, "and changes nothing");

    // A late ack of an operation that Failed by timing out on its last attempt.
    let store_last = Arc::new(MemoryOutboxStore::new());
    let last = Outbox::new(
        OutboxConfig {
            retry: crate::RetryPolicy {
                max_attempts: 1,
                ..crate::RetryPolicy::default()
            },
            inflight_timeout: std::time::Duration::from_millis(TIMEOUT_MS.unsigned_abs()),
            ..OutboxConfig::default()
        },
        store_last.clone(),
    );
    let id = last.enqueue(op(None), 0)?;
    last.claim(0, 1).map(crate::Claim::detach)?;
    assert_eq!(last.recover(TIMEOUT_MS)?.failed, 1);
    last.mark_done(&id, TIMEOUT_MS + 1)?;
    assert_eq!(status(&store_last, &id), Some(OperationStatus::Done));
    Ok(())
}

#[test]
fn a_result_for_a_discarded_operation_is_an_unknown_id() -> TestResult {
    let (outbox, _) = outbox();
    let id = outbox.enqueue(op(None), 0)?;
    let claim = outbox.claim(0, 10)?;
    outbox.discard(&id)?;
    assert!(matches!(
        outbox.mark_done(&id, 1),
        Err(OutboxError::UnknownId { .. })
    ));
    drop(claim);
    assert!(!outbox.has_in_flight(), "no orphan left for a discarded op");
    Ok(())
}

#[test]
fn every_change_that_makes_work_claimable_notifies() -> TestResult {
    let (outbox, _) = outbox();
    let calls = counter(&outbox);
    let expect = |what: &str, calls_before: usize| {
        let now = calls.load(SeqCst);
        assert!(now > calls_before, "{what} did not notify");
        now
    };
    let n = calls.load(SeqCst);

    let head = outbox.enqueue(op(Some("k")), 0)?;
    let n = expect("enqueue", n);
    outbox.enqueue(op(Some("k")), 0)?;
    let n = expect("enqueue", n);
    let draft = |text: &str| Operation {
        coalesce_key: Some("draft".into()),
        ..Operation::new("draft.save", "/drafts/1", text)
    };
    outbox.enqueue(draft("a"), 0)?;
    let n = expect("enqueue", n);
    outbox.enqueue(draft("ab"), 0)?;
    let n = expect("coalescing", n);

    let claim = outbox.claim(0, 1)?;
    assert_eq!(ids(claim.ops()), [head.as_str()]);
    outbox.mark_done(&head, 1)?;
    let n = expect("a completion that unblocks its key", n);
    drop(claim);

    let claim = outbox.claim(1, 10)?;
    let ids_now: Vec<String> = claim.ops().iter().map(|op| op.id.clone()).collect();
    let [keyed, drafted] = ids_now.as_slice() else {
        panic!("expected two claims, got {ids_now:?}");
    };
    outbox.record(keyed, SendOutcome::refused("422"), 2)?;
    outbox.record(drafted, SendOutcome::retry_later("503", None), 2)?;
    drop(claim);
    outbox.retry_failed(keyed, 3)?;
    let n = expect("retry_failed", n);
    assert_eq!(outbox.make_pending_due(3)?, 1);
    let n = expect("make_pending_due", n);
    outbox.discard(drafted)?;
    let n = expect("discard", n);

    let ops = outbox.claim(3, 10)?.detach();
    assert_eq!(ops.len(), 1);
    assert_eq!(outbox.recover(3 + TIMEOUT_MS)?.requeued, 1);
    expect("recovery of a timed-out claim", n);
    Ok(())
}

#[test]
fn a_restart_finds_earlier_claims_orphaned() -> TestResult {
    let (outbox, store) = outbox();
    let id = outbox.enqueue(op(None), 0)?;
    let claim = outbox.claim(0, 10)?;
    // The process dies with the claim held (no drop runs).
    std::mem::forget(claim);
    let restarted = Outbox::new(outbox.config().clone(), store.clone());
    assert_eq!(restarted.next_claimable_at_ms()?, Some(0));
    let again = restarted.claim(1, 10)?;
    assert_eq!(
        ids(again.ops()),
        [id.as_str()],
        "at once, not after the timeout"
    );
    assert_eq!(again.ops()[0].attempt, 2);
    Ok(())
}

/// A memory store whose `load_all` fails while `fail_loads` is set, and
/// whose `put` of a `Done` operation writes and then reports an error while
/// `fail_done_after_write` is set.
#[derive(Debug, Default)]
struct FlakyStore {
    inner: MemoryOutboxStore,
    fail_loads: std::sync::atomic::AtomicBool,
    fail_done_after_write: std::sync::atomic::AtomicBool,
}

impl OutboxStore for FlakyStore {
    fn put(&self, op: &Operation) -> Result<(), OutboxError> {
        self.inner.put(op)?;
        if op.status == OperationStatus::Done && self.fail_done_after_write.load(SeqCst) {
            return Err(OutboxError::store(std::io::Error::other("fsync failed")));
        }
        Ok(())
    }
    fn get(&self, id: &str) -> Result<Option<Operation>, OutboxError> {
        self.inner.get(id)
    }
    fn remove(&self, id: &str) -> Result<bool, OutboxError> {
        self.inner.remove(id)
    }
    fn load_all(&self) -> Result<Vec<Operation>, OutboxError> {
        if self.fail_loads.load(SeqCst) {
            return Err(OutboxError::store(std::io::Error::other("read failed")));
        }
        self.inner.load_all()
    }
}

#[test]
fn a_failed_reload_does_not_turn_live_claims_into_orphans() -> TestResult {
    let store = Arc::new(FlakyStore::default());
    let config = OutboxConfig {
        inflight_timeout: std::time::Duration::from_millis(TIMEOUT_MS.unsigned_abs()),
        ..OutboxConfig::default()
    };
    let outbox = Outbox::new(config, store.clone());
    let id = outbox.enqueue(op(None), 0)?;
    assert_eq!(
        ids(&outbox.claim(0, 1).map(crate::Claim::detach)?),
        [id.as_str()]
    );
    store.fail_loads.store(true, SeqCst);
    assert!(outbox.recover(1).is_err());
    store.fail_loads.store(false, SeqCst);
    // The claim is still this process's own: it waits for its timeout.
    assert_eq!(outbox.recover(1)?.requeued, 0);
    assert!(
        outbox.claim(1, 10)?.is_empty(),
        "not sent a second time at once"
    );
    assert_eq!(outbox.recover(TIMEOUT_MS)?.requeued, 1);
    Ok(())
}

#[test]
fn a_done_written_despite_an_error_stops_blocking_its_key() -> TestResult {
    let store = Arc::new(FlakyStore::default());
    let outbox = Outbox::new(OutboxConfig::default(), store.clone());
    let head = outbox.enqueue(op(Some("k")), 0)?;
    let next = outbox.enqueue(op(Some("k")), 0)?;
    let claim = outbox.claim(0, 10)?;
    assert_eq!(ids(claim.ops()), [head.as_str()]);
    store.fail_done_after_write.store(true, SeqCst);
    assert!(outbox.mark_done(&head, 1).is_err());
    store.fail_done_after_write.store(false, SeqCst);
    drop(claim); // unrecorded as far as the outbox knows: an orphan
    assert_eq!(status(&store.inner, &head), Some(OperationStatus::Done));
    assert_eq!(
        ids(outbox.claim(2, 10)?.ops()),
        [next.as_str()],
        "the key moved on"
    );
    Ok(())
}

#[test]
fn claim_ready_tells_sleepers_about_the_new_expiry() -> TestResult {
    let (outbox, _) = outbox();
    outbox.enqueue(op(None), 0)?;
    let calls = counter(&outbox);
    let before = calls.load(SeqCst);
    assert_eq!(outbox.claim(0, 10).map(crate::Claim::detach)?.len(), 1);
    assert!(calls.load(SeqCst) > before);
    Ok(())
}
