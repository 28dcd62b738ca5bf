//! Unit tests of the outbox: every transition and error, retry timing, per-key
//! order, recovery, coalescing and housekeeping.

use std::sync::Arc;

use super::*;
use crate::SendOutcome;
use crate::memory_store::MemoryOutboxStore;

type TestResult = Result<(), OutboxError>;

fn guide_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: std::time::Duration::from_millis(500),
        factor: 2.0,
        ..RetryPolicy::default()
    }
}

fn outbox() -> (Outbox, Arc<MemoryOutboxStore>) {
    let store = Arc::new(MemoryOutboxStore::new());
    let config = OutboxConfig {
        owner: "test".into(),
        retry: guide_retry(),
        inflight_timeout: std::time::Duration::from_secs(10),
        ..OutboxConfig::default()
    };
    (Outbox::new(config, store.clone()), store)
}

fn op(key: Option<&str>) -> Operation {
    Operation {
        ordering_key: key.map(Into::into),
        ..Operation::new("message.send", "/api/messages", "{}")
    }
}

fn get(store: &MemoryOutboxStore, id: &str) -> Result<Operation, OutboxError> {
    store
        .get(id)?
        .ok_or_else(|| OutboxError::UnknownId { id: id.into() })
}

fn ids(ops: &[Operation]) -> Vec<&str> {
    ops.iter().map(|op| op.id.as_str()).collect()
}

#[test]
fn the_guides_scenario_has_exact_numbers() -> TestResult {
    let (outbox, store) = outbox();
    let t0 = 1_000_000;
    let id = outbox.enqueue(op(None), t0)?;
    let enqueued = get(&store, &id)?;
    assert_eq!(
        (enqueued.status, enqueued.attempt, enqueued.next_retry_at_ms),
        (OperationStatus::Pending, 0, t0)
    );
    assert_eq!(enqueued.owner, "test");

    assert_eq!(
        ids(&outbox.claim(t0 + 1, 10).map(crate::Claim::detach)?),
        [id.as_str()]
    );
    assert_eq!(
        outbox.record(
            &id,
            SendOutcome::Failed {
                error: "network offline",
                retryable: true,
                retry_after_ms: None
            },
            t0 + 1
        )?,
        OperationStatus::Pending
    );
    let after = get(&store, &id)?;
    assert_eq!(after.attempt, 1);
    assert_eq!(after.last_error, "network offline");
    assert_eq!(after.next_retry_at_ms, t0 + 1 + 500);

    assert!(
        outbox
            .claim(t0 + 500, 10)
            .map(crate::Claim::detach)?
            .is_empty(),
        "not due before next_retry_at_ms"
    );
    outbox.claim(t0 + 501, 10).map(crate::Claim::detach)?;
    outbox.record(&id, SendOutcome::retry_later("503", None), t0 + 501)?;
    assert_eq!(get(&store, &id)?.next_retry_at_ms, t0 + 501 + 1000);

    outbox.claim(t0 + 1501, 10).map(crate::Claim::detach)?;
    assert_eq!(
        outbox.record(
            &id,
            SendOutcome::Failed {
                error: "503",
                retryable: true,
                retry_after_ms: None
            },
            t0 + 1501
        )?,
        OperationStatus::Failed
    );
    let failed = get(&store, &id)?;
    assert_eq!(
        (failed.status, failed.attempt),
        (OperationStatus::Failed, 3)
    );
    Ok(())
}

#[test]
fn success_after_a_retry_is_done() -> TestResult {
    let (outbox, store) = outbox();
    let id = outbox.enqueue(op(None), 0)?;
    outbox.claim(1, 10).map(crate::Claim::detach)?;
    outbox.record(&id, SendOutcome::retry_later("network offline", None), 1)?;
    outbox.claim(501, 10).map(crate::Claim::detach)?;
    outbox.mark_done(&id, 502)?;
    let done = get(&store, &id)?;
    assert_eq!(
        (done.status, done.attempt, done.updated_at_ms),
        (OperationStatus::Done, 2, 502)
    );
    Ok(())
}

#[test]
fn permanent_failures_are_failed_at_once() -> TestResult {
    let (outbox, store) = outbox();
    let id = outbox.enqueue(op(None), 0)?;
    outbox.claim(0, 1).map(crate::Claim::detach)?;
    assert_eq!(
        outbox.record(
            &id,
            SendOutcome::Failed {
                error: "400 bad request",
                retryable: false,
                retry_after_ms: None
            },
            1
        )?,
        OperationStatus::Failed
    );
    assert_eq!(get(&store, &id)?.last_error, "400 bad request");
    assert!(
        outbox
            .claim(i64::MAX, 10)
            .map(crate::Claim::detach)?
            .is_empty()
    );
    Ok(())
}

#[test]
fn a_longer_retry_after_wins_and_is_capped() -> TestResult {
    let (outbox, store) = outbox();
    let id = outbox.enqueue(op(None), 0)?;
    outbox.claim(0, 1).map(crate::Claim::detach)?;
    outbox.record(&id, SendOutcome::retry_later("429", Some(7_000)), 10)?;
    assert_eq!(get(&store, &id)?.next_retry_at_ms, 7_010);
    outbox.claim(7_010, 1).map(crate::Claim::detach)?;
    outbox.record(&id, SendOutcome::retry_later("429", Some(10)), 7_010)?;
    assert_eq!(
        get(&store, &id)?.next_retry_at_ms,
        7_010 + 1000,
        "a shorter hint loses to the backoff"
    );

    let (outbox, store) = outbox_with(RetryPolicy {
        max_delay: std::time::Duration::from_secs(2),
        ..guide_retry()
    });
    let id = outbox.enqueue(op(None), 0)?;
    outbox.claim(0, 1).map(crate::Claim::detach)?;
    outbox.record(&id, SendOutcome::retry_later("429", Some(1_000_000)), 0)?;
    assert_eq!(
        get(&store, &id)?.next_retry_at_ms,
        2_000,
        "hints are capped at max_delay_ms"
    );
    Ok(())
}

fn outbox_with(retry: RetryPolicy) -> (Outbox, Arc<MemoryOutboxStore>) {
    let store = Arc::new(MemoryOutboxStore::new());
    (
        Outbox::new(
            OutboxConfig {
                retry,
                ..OutboxConfig::default()
            },
            store.clone(),
        ),
        store,
    )
}

#[test]
fn illegal_transitions_unknown_and_duplicate_ids_are_errors() -> TestResult {
    let (outbox, store) = outbox();
    let id = outbox.enqueue(op(None), 0)?;
    let before = get(&store, &id)?;
    assert!(matches!(
        outbox.mark_done(&id, 1),
        Err(OutboxError::InvalidTransition {
            from: OperationStatus::Pending,
            to: OperationStatus::Done,
            ..
        })
    ));
    assert!(matches!(
        outbox.record(
            &id,
            SendOutcome::Failed {
                error: "x",
                retryable: true,
                retry_after_ms: None
            },
            1
        ),
        Err(OutboxError::InvalidTransition { .. })
    ));
    assert!(matches!(
        outbox.retry_failed(&id, 1),
        Err(OutboxError::InvalidTransition { .. })
    ));
    assert_eq!(
        get(&store, &id)?,
        before,
        "a refused transition changes nothing"
    );

    outbox.claim(0, 1).map(crate::Claim::detach)?;
    outbox.mark_done(&id, 1)?;
    let done = get(&store, &id)?;
    // A second result for a Done operation is a late answer: no error, and
    // it changes nothing.
    outbox.mark_done(&id, 2)?;
    assert_eq!(
        outbox.record(
            &id,
            SendOutcome::Failed {
                error: "x",
                retryable: false,
                retry_after_ms: None
            },
            2
        )?,
        OperationStatus::Done
    );
    assert_eq!(get(&store, &id)?, done, "a late result changes nothing");
    assert!(matches!(
        outbox.retry_failed(&id, 2),
        Err(OutboxError::InvalidTransition { .. })
    ));

    for result in [
        outbox.mark_done("nope", 0),
        outbox.retry_failed("nope", 0),
        outbox.discard("nope"),
    ] {
        assert!(matches!(result, Err(OutboxError::UnknownId { id }) if id == "nope"));
    }
    let given = Operation {
        id: "client-42".into(),
        ..op(None)
    };
    assert_eq!(outbox.enqueue(given.clone(), 5)?, "client-42");
    assert!(
        matches!(outbox.enqueue(given, 6), Err(OutboxError::DuplicateId { id }) if id == "client-42")
    );
    Ok(())
}

#[test]
fn generated_ids_are_unique_and_sort_by_time() -> TestResult {
    let (outbox, _) = outbox();
    let mut ids = Vec::new();
    for now in [5, 5, 5, 1_000, 1_700_000_000_000] {
        ids.push(outbox.enqueue(op(None), now)?);
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    sorted.dedup();
    assert_eq!(sorted.len(), ids.len());
    Ok(())
}

#[test]
fn claim_orders_by_due_time_then_enqueue_order_and_limits() -> TestResult {
    let (outbox, _) = outbox();
    let a = outbox.enqueue(op(None), 10)?;
    let b = outbox.enqueue(op(None), 5)?;
    let c = outbox.enqueue(op(None), 5)?;
    let d = outbox.enqueue(op(None), 20)?;
    assert_eq!(
        ids(&outbox.claim(10, 2).map(crate::Claim::detach)?),
        [b.as_str(), c.as_str()]
    );
    assert_eq!(
        ids(&outbox.claim(10, 10).map(crate::Claim::detach)?),
        [a.as_str()],
        "claimed ops are not claimed twice"
    );
    assert_eq!(
        ids(&outbox.claim(20, 10).map(crate::Claim::detach)?),
        [d.as_str()]
    );
    Ok(())
}

#[test]
fn attempt_is_persisted_with_the_claim() -> TestResult {
    let (outbox, store) = outbox();
    let id = outbox.enqueue(op(None), 0)?;
    let claimed = outbox.claim(0, 1).map(crate::Claim::detach)?;
    assert_eq!(claimed[0].attempt, 1);
    assert_eq!(
        get(&store, &id)?,
        claimed[0],
        "what was handed out is what is stored"
    );
    assert_eq!(claimed[0].status, OperationStatus::InFlight);
    Ok(())
}

#[test]
fn per_key_fifo_and_failed_ops_do_not_block() -> TestResult {
    let (outbox, _) = outbox();
    let k1 = outbox.enqueue(op(Some("chat")), 0)?;
    let k2 = outbox.enqueue(op(Some("chat")), 0)?;
    let free = outbox.enqueue(op(None), 0)?;
    let other = outbox.enqueue(op(Some("other")), 0)?;
    assert_eq!(
        ids(&outbox.claim(0, 10).map(crate::Claim::detach)?),
        [k1.as_str(), free.as_str(), other.as_str()]
    );
    assert!(
        outbox.claim(0, 10).map(crate::Claim::detach)?.is_empty(),
        "k2 waits while k1 is in flight"
    );

    // A retry keeps k1 first: k2 still waits, even though it is due earlier.
    outbox.record(&k1, SendOutcome::retry_later("503", None), 0)?;
    assert!(outbox.claim(100, 10).map(crate::Claim::detach)?.is_empty());
    assert_eq!(
        ids(&outbox.claim(500, 10).map(crate::Claim::detach)?),
        [k1.as_str()]
    );
    // A permanent failure releases the key: no poison-message stall.
    outbox.record(&k1, SendOutcome::refused("400"), 500)?;
    assert_eq!(
        ids(&outbox.claim(500, 10).map(crate::Claim::detach)?),
        [k2.as_str()]
    );
    Ok(())
}

#[test]
fn blocked_ops_do_not_starve_the_claim_window() -> TestResult {
    let (outbox, _) = outbox();
    for _ in 0..50 {
        outbox.enqueue(op(Some("chat")), 0)?;
    }
    let free = outbox.enqueue(op(None), 0)?;
    assert_eq!(
        outbox.claim(0, 2).map(crate::Claim::detach)?.len(),
        2,
        "the head of chat and the free op"
    );
    let again = outbox.claim(0, 2).map(crate::Claim::detach)?;
    assert!(again.is_empty(), "{:?}", ids(&again));
    assert!(
        outbox
            .list(Some(OperationStatus::InFlight), 10)?
            .iter()
            .any(|o| o.id == free)
    );
    Ok(())
}

#[test]
fn stale_in_flight_ops_come_back() -> TestResult {
    let (outbox, store) = outbox();
    let id = outbox.enqueue(op(None), 0)?;
    outbox.claim(0, 1).map(crate::Claim::detach)?;
    assert_eq!(
        outbox.recover(9_999)?,
        RecoveryReport::default(),
        "an unheld claim of this process is not stale before the timeout"
    );
    // A new outbox over the same store: a restarted process. The claim's
    // sender is gone, so it comes back at once, not after the timeout.
    let restarted = Outbox::new(outbox.config().clone(), store.clone());
    assert_eq!(
        restarted.recover(1)?,
        RecoveryReport {
            requeued: 1,
            ..RecoveryReport::default()
        }
    );
    let back = get(&store, &id)?;
    assert_eq!(
        (back.status, back.attempt, back.next_retry_at_ms),
        (OperationStatus::Pending, 1, 1)
    );
    assert!(back.last_error.contains("interrupted"));

    // claim_ready's unheld claims time out; the last attempt's makes it Failed.
    restarted.claim(10_000, 1).map(crate::Claim::detach)?;
    restarted.record(&id, SendOutcome::retry_later("503", None), 10_000)?;
    restarted.claim(20_000, 1).map(crate::Claim::detach)?;
    assert_eq!(get(&store, &id)?.attempt, 3);
    assert!(
        restarted
            .claim(30_000, 1)
            .map(crate::Claim::detach)?
            .is_empty()
    );
    let failed = get(&store, &id)?;
    assert_eq!(failed.status, OperationStatus::Failed);
    assert!(failed.attempt <= 3);
    Ok(())
}

#[test]
fn times_far_ahead_are_pulled_back() -> TestResult {
    let (outbox, store) = outbox();
    let id = outbox.enqueue(op(None), 0)?;
    outbox.claim(0, 1).map(crate::Claim::detach)?;
    outbox.record(
        &id,
        SendOutcome::retry_later("503", Some(200_000)),
        1_000_000_000,
    )?;
    // The wall clock jumps back by a day.
    let now = 1_000_000_000 - 86_400_000;
    let restarted = Outbox::new(outbox.config().clone(), store.clone());
    assert_eq!(restarted.recover(now)?.rescheduled, 1);
    assert_eq!(get(&store, &id)?.next_retry_at_ms, now + 300_000);
    assert_eq!(
        ids(&restarted
            .claim(now + 300_000, 1)
            .map(crate::Claim::detach)?),
        [id.as_str()]
    );
    Ok(())
}

#[test]
fn coalescing_replaces_only_never_claimed_ops() -> TestResult {
    let (outbox, store) = outbox();
    let draft = |text: &str| Operation {
        coalesce_key: Some("draft:1".into()),
        ..Operation::new(
            "draft.save",
            "/api/drafts/1",
            format!(r#"{{"text":"{text}"}}"#),
        )
    };
    let first = outbox.enqueue(draft("a"), 0)?;
    assert_eq!(outbox.enqueue(draft("ab"), 1)?, first);
    assert_eq!(get(&store, &first)?.payload, r#"{"text":"ab"}"#);
    assert_eq!(store.load_all()?.len(), 1);

    outbox.claim(1, 1).map(crate::Claim::detach)?;
    let second = outbox.enqueue(draft("abc"), 2)?;
    assert_ne!(
        second, first,
        "an op that may have been sent is never touched"
    );
    assert_eq!(get(&store, &first)?.payload, r#"{"text":"ab"}"#);
    Ok(())
}

#[test]
fn housekeeping_retry_discard_purge_list_stats() -> TestResult {
    let (outbox, store) = outbox();
    let done = outbox.enqueue(op(None), 0)?;
    let failed = outbox.enqueue(op(None), 1)?;
    let pending = outbox.enqueue(op(None), 2)?;
    outbox.claim(1, 2).map(crate::Claim::detach)?;
    outbox.mark_done(&done, 10)?;
    outbox.record(&failed, SendOutcome::refused("400"), 10)?;

    let stats = outbox.stats()?;
    assert_eq!(
        (stats.pending, stats.in_flight, stats.done, stats.failed),
        (1, 0, 1, 1)
    );
    assert_eq!(stats.oldest_pending_age_ms(100), Some(98));
    assert_eq!(
        ids(&outbox.list(Some(OperationStatus::Failed), 10)?),
        [failed.as_str()]
    );
    assert_eq!(outbox.list(None, 2)?.len(), 2);

    outbox.retry_failed(&failed, 20)?;
    let retried = get(&store, &failed)?;
    assert_eq!(
        (retried.status, retried.attempt, retried.next_retry_at_ms),
        (OperationStatus::Pending, 0, 20)
    );

    assert_eq!(
        outbox.purge_done(10)?,
        0,
        "updated at 10 is not older than 10"
    );
    assert_eq!(outbox.purge_done(11)?, 1);
    assert_eq!(store.get(&done)?, None);
    outbox.discard(&pending)?;
    assert_eq!(store.get(&pending)?, None);
    assert_eq!(
        ids(&outbox.claim(20, 10).map(crate::Claim::detach)?),
        [failed.as_str()]
    );
    Ok(())
}

#[test]
fn a_new_outbox_continues_seq_and_key_order_from_the_store() -> TestResult {
    let (outbox, store) = outbox();
    let k1 = outbox.enqueue(op(Some("k")), 0)?;
    outbox.claim(0, 1).map(crate::Claim::detach)?;
    let restarted = Outbox::new(outbox.config().clone(), store.clone());
    let k2 = restarted.enqueue(op(Some("k")), 0)?;
    assert!(get(&store, &k2)?.seq > get(&store, &k1)?.seq);
    assert_eq!(
        ids(&restarted.claim(0, 10).map(crate::Claim::detach)?),
        [k1.as_str()],
        "k1, orphaned by the restart, is sent again first; k2 waits behind it"
    );
    assert_eq!(get(&store, &k1)?.attempt, 2);
    restarted.mark_done(&k1, 1)?;
    assert_eq!(
        ids(&restarted.claim(1, 10).map(crate::Claim::detach)?),
        [k2.as_str()]
    );
    Ok(())
}

#[test]
fn outbox_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Outbox>();
}

/// A store whose first batch write fails after storing its first operation.
#[derive(Debug, Default)]
struct FailingBatchStore {
    inner: MemoryOutboxStore,
    failed_once: std::sync::atomic::AtomicBool,
}

impl OutboxStore for FailingBatchStore {
    fn put(&self, op: &Operation) -> Result<(), OutboxError> {
        self.inner.put(op)
    }
    fn put_batch(&self, ops: &[Operation]) -> Result<(), OutboxError> {
        if self
            .failed_once
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return self.inner.put_batch(ops);
        }
        if let Some(first) = ops.first() {
            self.inner.put(first)?;
        }
        Err(OutboxError::store(std::io::Error::other("disk full")))
    }
    fn get(&self, id: &str) -> Result<Option<Operation>, OutboxError> {
        self.inner.get(id)
    }
    fn remove(&self, id: &str) -> Result<bool, OutboxError> {
        self.inner.remove(id)
    }
    fn load_all(&self) -> Result<Vec<Operation>, OutboxError> {
        self.inner.load_all()
    }
}

#[test]
fn a_claim_half_stored_by_a_failing_store_comes_back() -> TestResult {
    let store = Arc::new(FailingBatchStore::default());
    let config = OutboxConfig {
        retry: guide_retry(),
        inflight_timeout: std::time::Duration::from_millis(100),
        ..OutboxConfig::default()
    };
    let outbox = Outbox::new(config, store.clone());
    let a = outbox.enqueue(op(None), 0)?;
    let b = outbox.enqueue(op(None), 0)?;
    assert!(matches!(
        outbox.claim(0, 2).map(crate::Claim::detach),
        Err(OutboxError::Store { .. })
    ));
    assert_eq!(
        store.get(&a)?.map(|op| op.status),
        Some(OperationStatus::InFlight)
    );
    // Without a recover call: the half-stored claim of `a` was never handed
    // out, so the next claim finds it orphaned and requeues it at once.
    let again = outbox.claim(50, 10).map(crate::Claim::detach)?;
    assert_eq!(ids(&again), [b.as_str(), a.as_str()]);
    assert_eq!(
        again[1].attempt, 2,
        "the interrupted claim counted as an attempt"
    );
    Ok(())
}
