//! A conformance suite for [`OutboxStore`] implementations (feature `testing`).
//!
//! Call [`check_store`] from a test with a function that opens the store under
//! test; a persistent store also passes [`check_reopen`].
//!
//! ```
//! use std::sync::Arc;
//! use sync_outbox::MemoryOutboxStore;
//! use sync_outbox::testing::check_store;
//!
//! check_store(&mut || Ok(Arc::new(MemoryOutboxStore::new())))?;
//! # Ok::<_, sync_outbox::OutboxError>(())
//! ```

use std::sync::Arc;

use crate::error::OutboxError;
use crate::operation::{Operation, OperationStatus};
use crate::outbox::OutboxStats;
use crate::store::OutboxStore;

/// Opens a fresh, empty store (for [`check_store`]) or reopens the same store
/// (for [`check_reopen`]).
pub type OpenStore<'a> = dyn FnMut() -> Result<Arc<dyn OutboxStore>, OutboxError> + 'a;

/// A pending operation with the given id, due at `due`, enqueued `seq`-th.
#[must_use]
pub fn sample(id: &str, seq: u64, due: i64) -> Operation {
    Operation {
        id: id.into(),
        kind: "message.send".into(),
        target: "/api/messages".into(),
        payload: format!(r#"{{"id":"{id}","text":"caf{} \"quoted\""}}"#, '\u{e9}'),
        next_retry_at_ms: due,
        created_at_ms: due,
        updated_at_ms: due,
        ordering_key: seq.is_multiple_of(2).then(|| "chat".into()),
        owner: "conformance".into(),
        seq,
        ..Operation::default()
    }
}

/// Checks put/get/remove, replacement, `ready`'s order, limit and filters,
/// `put_batch`, `load_all` and `stats` (which must agree
/// with a scan of `load_all` after every kind of change). Panics (as a test failure)
/// on the first violation.
///
/// # Errors
///
/// Whatever the store returns where it should have succeeded.
///
/// # Panics
///
/// When the store breaks the [`OutboxStore`] contract.
#[expect(
    clippy::too_many_lines,
    reason = "one contract, checked in the order a reader follows it"
)]
pub fn check_store(open: &mut OpenStore<'_>) -> Result<(), OutboxError> {
    let store = open()?;
    assert_eq!(store.load_all()?, Vec::new(), "a fresh store is empty");
    assert_eq!(store.get("missing")?, None);
    assert!(
        !store.remove("missing")?,
        "removing a missing id reports false"
    );

    // put / get round trip, every field.
    let mut op = sample("a", 1, 100);
    op.last_error = "503".into();
    op.attempt = 2;
    op.coalesce_key = Some("draft".into());
    op.first_sent_at_ms = Some(-5);
    op.unanswered_sends = 3;
    op.server_version = Some(9);
    op.payload_version = 2;
    op.account = Some("ada".into());
    op.keep_answer = true;
    op.answer = Some(r#"{"id":"n\u00e9 \"1\""}"#.into());
    op.needs = vec![
        crate::Need::new("op_create", "/id", "tmp-1"),
        crate::Need::new("op_other", "", "tmp-2"),
    ];
    op.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    store.put(&op)?;
    assert_eq!(store.get("a")?, Some(op.clone()));

    // put replaces.
    op.status = OperationStatus::InFlight;
    op.payload = "{}".into();
    store.put(&op)?;
    assert_eq!(store.get("a")?, Some(op.clone()));
    assert_eq!(store.load_all()?.len(), 1);
    assert!(
        store.ready(i64::MAX, 10)?.is_empty(),
        "an in-flight op is not ready"
    );

    // ready: due pending only, ordered by (next_retry_at_ms, seq), limited.
    store.put_batch(&[
        sample("b", 5, 300),
        sample("c", 3, 200),
        sample("d", 2, 200),
        sample("e", 4, 900),
    ])?;
    let mut done = sample("f", 6, 0);
    done.status = OperationStatus::Done;
    let mut failed = sample("g", 7, 0);
    failed.status = OperationStatus::Failed;
    store.put_batch(&[done, failed])?;
    let ids = |ops: Vec<Operation>| ops.into_iter().map(|op| op.id).collect::<Vec<_>>();
    assert_eq!(ids(store.ready(300, 10)?), ["d", "c", "b"]);
    assert_eq!(ids(store.ready(300, 2)?), ["d", "c"]);
    assert_eq!(ids(store.ready(199, 10)?), Vec::<String>::new());
    assert_eq!(ids(store.ready(i64::MAX, 0)?), Vec::<String>::new());

    // A rescheduled op moves in the order; an unsynced write is read back
    // at once, and a sync after it succeeds.
    let mut c = sample("c", 3, 200);
    c.next_retry_at_ms = 1000;
    store.put_unsynced(std::slice::from_ref(&c))?;
    assert_eq!(store.get("c")?, Some(c.clone()));
    store.sync()?;
    assert_eq!(ids(store.ready(i64::MAX, 10)?), ["d", "b", "e", "c"]);

    assert_eq!(counts(store.as_ref())?, [4, 1, 1, 1]);
    assert_stats_match_scan(store.as_ref())?;
    let mut all = ids(store.load_all()?);
    all.sort();
    assert_eq!(all, ["a", "b", "c", "d", "e", "f", "g"]);

    assert!(store.remove("b")?);
    assert_eq!(store.get("b")?, None);
    assert_eq!(ids(store.ready(i64::MAX, 10)?), ["d", "e", "c"]);
    assert_eq!(counts(store.as_ref())?, [3, 1, 1, 1]);
    assert_stats_match_scan(store.as_ref())?;

    // Stats follow every kind of change: a status change each way, a
    // rewrite that keeps the status, a removal of each status.
    let stats = store.stats()?;
    assert_eq!(
        (stats.pending, stats.in_flight, stats.done, stats.failed),
        (3, 1, 1, 1)
    );
    assert_eq!(stats.oldest_pending_created_at_ms, Some(200));
    let mut d = sample("d", 2, 200);
    d.status = OperationStatus::InFlight;
    store.put(&d)?;
    assert_eq!(
        store.stats()?.oldest_pending_created_at_ms,
        Some(200),
        "c is still pending"
    );
    store.put(&c)?; // the same status, rewritten
    d.status = OperationStatus::Done;
    store.put(&d)?;
    let mut a = store.get("a")?.unwrap_or_default();
    a.status = OperationStatus::Pending;
    store.put(&a)?;
    assert_stats_match_scan(store.as_ref())?;
    for id in ["c", "e", "f", "g"] {
        assert!(store.remove(id)?);
        assert_stats_match_scan(store.as_ref())?;
    }
    let stats = store.stats()?;
    assert_eq!(
        (
            stats.pending,
            stats.in_flight,
            stats.done,
            stats.failed,
            stats.oldest_pending_created_at_ms
        ),
        (1, 0, 1, 0, Some(100))
    );
    Ok(())
}

/// `[pending, in_flight, done, failed]` from the store's stats.
fn counts(store: &dyn OutboxStore) -> Result<[usize; 4], OutboxError> {
    let stats = store.stats()?;
    Ok([stats.pending, stats.in_flight, stats.done, stats.failed])
}

/// Asserts that `store.stats()` equals the stats of a scan of its operations.
fn assert_stats_match_scan(store: &dyn OutboxStore) -> Result<(), OutboxError> {
    let mut scanned = OutboxStats::default();
    for op in store.load_all()? {
        scanned.add(&op);
    }
    assert_eq!(
        store.stats()?,
        scanned,
        "stats must agree with the operations stored"
    );
    Ok(())
}

/// Checks that everything acknowledged survives closing and reopening the
/// store: `open` must reopen the same store, and the previous handle is
/// dropped first.
///
/// # Errors
///
/// Whatever the store returns where it should have succeeded.
///
/// # Panics
///
/// When a change acknowledged before the reopen is missing after it.
pub fn check_reopen(open: &mut OpenStore<'_>) -> Result<(), OutboxError> {
    let store = open()?;
    let mut expected: Vec<Operation> = (0..20)
        .map(|i| sample(&format!("op{i}"), i, 1000 + i64::try_from(i).unwrap_or(0)))
        .collect();
    store.put_batch(&expected)?;
    expected[3].status = OperationStatus::InFlight;
    expected[3].attempt = 1;
    store.put(&expected[3])?;
    expected[4].status = OperationStatus::Done;
    store.put(&expected[4])?;
    // Every field survives, the ones a correction and an ordering set too.
    expected[6].ordering = Some(crate::OrderingMode::StopOnFailure);
    expected[6].idempotency_key = "op6.2".into();
    expected[6].replaced_keys = vec!["op6".into(), "op6.1".into()];
    expected[7].ordering = Some(crate::OrderingMode::SkipFailed);
    expected[7].first_sent_at_ms = Some(1_007);
    expected[7].unanswered_sends = 2;
    expected[7].keep_answer = true;
    expected[7].answer = Some(r#"{"id":42}"#.into());
    expected[6].needs = vec![crate::Need::new("op7", "/id", "tmp")];
    expected[7].traceparent =
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00".into());
    store.put_batch(&expected[6..8])?;
    // Unsynced writes followed by a sync survive a reopen too.
    expected[8].status = OperationStatus::Done;
    expected[9].attempt = 1;
    store.put_unsynced(&expected[8..10])?;
    store.sync()?;
    assert!(store.remove("op5")?);
    expected.remove(5);
    drop(store);

    let store = open()?;
    let mut all = store.load_all()?;
    all.sort_by_key(|op| op.seq);
    assert_eq!(
        all, expected,
        "reopened store holds every acknowledged change"
    );
    assert_eq!(
        store
            .ready(1002, 10)?
            .into_iter()
            .map(|op| op.id)
            .collect::<Vec<_>>(),
        ["op0", "op1", "op2"]
    );
    assert_stats_match_scan(store.as_ref())?;
    Ok(())
}
