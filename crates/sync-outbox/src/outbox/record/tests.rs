//! Unit tests of batch recording: one store write for the whole batch, the
//! same rules as one result at a time, and per-result errors that do not
//! stop the others.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use crate::memory_store::MemoryOutboxStore;
use crate::{
    Operation, OperationStatus, Outbox, OutboxConfig, OutboxError, OutboxStore, RetryPolicy,
    SendOutcome,
};

type TestResult = Result<(), OutboxError>;

/// Counts the store's writes: `put` and `put_batch` calls.
#[derive(Debug, Default)]
struct CountingStore {
    inner: MemoryOutboxStore,
    puts: AtomicUsize,
    batches: AtomicUsize,
    fail_batches: std::sync::atomic::AtomicBool,
}

impl OutboxStore for CountingStore {
    fn put(&self, op: &Operation) -> Result<(), OutboxError> {
        self.puts.fetch_add(1, SeqCst);
        self.inner.put(op)
    }
    fn put_batch(&self, ops: &[Operation]) -> Result<(), OutboxError> {
        self.batches.fetch_add(1, SeqCst);
        if self.fail_batches.load(SeqCst) {
            return Err(OutboxError::store(std::io::Error::other("disk full")));
        }
        self.inner.put_batch(ops)
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

fn outbox() -> (Outbox, Arc<CountingStore>) {
    let store = Arc::new(CountingStore::default());
    let config = OutboxConfig {
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: std::time::Duration::from_millis(100),
            jitter: crate::Jitter::None,
            ..RetryPolicy::default()
        },
        ..OutboxConfig::default()
    };
    (Outbox::new(config, store.clone()), store)
}

fn keyed(key: &str) -> Operation {
    Operation {
        ordering_key: Some(key.into()),
        ..Operation::new("note.update", "/notes/1", "{}")
    }
}

fn status(store: &CountingStore, id: &str) -> Option<OperationStatus> {
    store.inner.get(id).ok().flatten().map(|op| op.status)
}

const REFUSED: SendOutcome<'static> = SendOutcome::Failed {
    error: "HTTP 422",
    retryable: false,
    retry_after_ms: None,
};

const BUSY: SendOutcome<'static> = SendOutcome::Failed {
    error: "HTTP 503",
    retryable: true,
    retry_after_ms: Some(5_000),
};

#[test]
fn a_batch_of_results_is_one_store_write_with_each_rule_applied() -> TestResult {
    let (outbox, store) = outbox();
    let ids: Vec<String> = (0..3)
        .map(|_| outbox.enqueue(Operation::new("k", "/t", "{}"), 0))
        .collect::<Result<_, _>>()?;
    let claim = outbox.claim(10, 10)?;
    let (puts, batches) = (store.puts.load(SeqCst), store.batches.load(SeqCst));
    let results = outbox.record_results(
        [
            (ids[0].as_str(), SendOutcome::Acknowledged),
            (ids[1].as_str(), REFUSED),
            (ids[2].as_str(), BUSY),
        ],
        20,
    )?;
    drop(claim);
    assert_eq!(store.puts.load(SeqCst), puts, "no single puts");
    assert_eq!(store.batches.load(SeqCst), batches + 1, "one batch write");
    let statuses: Vec<_> = results.into_iter().collect::<Result<_, _>>()?;
    assert_eq!(
        statuses,
        [
            OperationStatus::Done,
            OperationStatus::Failed,
            OperationStatus::Pending
        ]
    );
    let busy = store
        .inner
        .get(&ids[2])?
        .ok_or(OutboxError::UnknownId { id: ids[2].clone() })?;
    assert_eq!(busy.next_retry_at_ms, 20 + 5_000, "the server's hint wins");
    assert_eq!(busy.last_error, "HTTP 503");
    assert_eq!(
        status(&store, &ids[1]).map(|s| s == OperationStatus::Failed),
        Some(true)
    );
    // Nothing left in flight: the next claim at the retry time takes the busy one alone.
    let again = outbox.claim(20 + 5_000, 10)?;
    assert_eq!(again.len(), 1);
    assert_eq!(again.ops()[0].id, ids[2]);
    Ok(())
}

#[test]
fn errors_of_single_results_do_not_stop_the_batch() -> TestResult {
    let (outbox, store) = outbox();
    let sent = outbox.enqueue(Operation::new("k", "/t", "{}"), 0)?;
    let claim = outbox.claim(1, 1)?;
    let never_sent = outbox.enqueue(Operation::new("k", "/t", "{}"), 1)?;
    let results = outbox.record_results(
        [
            ("no-such-id", SendOutcome::Acknowledged),
            (never_sent.as_str(), SendOutcome::Acknowledged),
            (sent.as_str(), SendOutcome::Acknowledged),
        ],
        2,
    )?;
    drop(claim);
    assert!(matches!(results[0], Err(OutboxError::UnknownId { .. })));
    assert!(matches!(
        results[1],
        Err(OutboxError::InvalidTransition { .. })
    ));
    assert_eq!(results[2].as_ref().ok(), Some(&OperationStatus::Done));
    assert_eq!(status(&store, &sent), Some(OperationStatus::Done));
    assert_eq!(status(&store, &never_sent), Some(OperationStatus::Pending));
    Ok(())
}

#[test]
fn a_failed_batch_write_leaves_the_claim_to_come_back() -> TestResult {
    let (outbox, store) = outbox();
    let a = outbox.enqueue(Operation::new("k", "/t", "{}"), 0)?;
    let b = outbox.enqueue(Operation::new("k", "/t", "{}"), 0)?;
    let claim = outbox.claim(1, 10)?;
    store.fail_batches.store(true, SeqCst);
    let recorded = outbox.record_results(
        [
            (a.as_str(), SendOutcome::Acknowledged),
            (b.as_str(), SendOutcome::Acknowledged),
        ],
        2,
    );
    assert!(matches!(recorded, Err(OutboxError::Store { .. })));
    store.fail_batches.store(false, SeqCst);
    drop(claim);
    // Both unrecorded: orphans, claimed again at once.
    let again = outbox.claim(3, 10)?;
    assert_eq!(again.len(), 2);
    assert!(again.iter().all(|op| op.attempt == 2));
    Ok(())
}

#[test]
fn a_finished_head_in_a_batch_unblocks_its_key_and_wakes() -> TestResult {
    let (outbox, _store) = outbox();
    let wakes = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&wakes);
    outbox.on_claimable(move || {
        seen.fetch_add(1, SeqCst);
    });
    let head = outbox.enqueue(keyed("note-1"), 0)?;
    let next = outbox.enqueue(keyed("note-1"), 0)?;
    let claim = outbox.claim(1, 10)?;
    assert_eq!(claim.len(), 1, "the key's second op waits for its head");
    let before = wakes.load(SeqCst);
    outbox.record_results([(head.as_str(), REFUSED)], 2)?;
    assert_eq!(wakes.load(SeqCst), before + 1);
    let after = outbox.claim(3, 10)?;
    assert_eq!(after.ops()[0].id, next);
    drop(claim);
    Ok(())
}

#[test]
fn the_same_id_twice_in_a_batch_sees_its_own_first_result() -> TestResult {
    let (outbox, store) = outbox();
    let id = outbox.enqueue(Operation::new("k", "/t", "{}"), 0)?;
    let claim = outbox.claim(1, 1)?;
    let results = outbox.record_results(
        [
            (id.as_str(), SendOutcome::Acknowledged),
            (id.as_str(), BUSY),
        ],
        2,
    )?;
    drop(claim);
    // The late failure after the ack changes nothing: Done stays.
    assert_eq!(results[0].as_ref().ok(), Some(&OperationStatus::Done));
    assert_eq!(results[1].as_ref().ok(), Some(&OperationStatus::Done));
    assert_eq!(status(&store, &id), Some(OperationStatus::Done));
    Ok(())
}

#[test]
fn a_repeated_id_in_a_big_batch_sees_its_own_first_result() -> TestResult {
    let (outbox, store) = outbox();
    let ids: Vec<String> = (0..40)
        .map(|_| outbox.enqueue(Operation::new("k", "/t", "{}"), 0))
        .collect::<Result<_, _>>()?;
    let claim = outbox.claim(1, 40)?;
    // 40 acks, then a late failure for the 30th: past the linear search.
    let mut results: Vec<(&str, SendOutcome<'_>)> = ids
        .iter()
        .map(|id| (id.as_str(), SendOutcome::Acknowledged))
        .collect();
    results.push((ids[29].as_str(), BUSY));
    let statuses = outbox.record_results(results, 2)?;
    drop(claim);
    assert_eq!(statuses.len(), 41);
    assert_eq!(statuses[40].as_ref().ok(), Some(&OperationStatus::Done));
    assert!(
        ids.iter()
            .all(|id| status(&store, id) == Some(OperationStatus::Done))
    );
    Ok(())
}
