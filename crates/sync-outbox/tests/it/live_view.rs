//! The live view of a queue: `Outbox::stats` read from the store's own
//! counts, and `StatsWatch` telling a UI when they change, on every kind of
//! write, without polling.

use std::sync::Arc;

use sync_outbox::{
    Correction, MemoryOutboxStore, Operation, OperationStatus, Outbox, OutboxConfig, OutboxStats,
    OutboxStore, RetryPolicy, SendOutcome, StatsWatch,
};

fn outbox() -> Outbox {
    let config = OutboxConfig {
        retry: RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        },
        ..OutboxConfig::default()
    };
    Outbox::new(config, Arc::new(MemoryOutboxStore::new()))
}

/// The change the last write published: it must be there already (the
/// outbox publishes before the write returns), so a missing one fails the
/// test instead of hanging it.
fn next(watch: &mut StatsWatch) -> Result<OutboxStats, String> {
    if !watch.has_changed() {
        return Err(format!("no change published; still {:?}", watch.current()));
    }
    watch.wait_changed().ok_or_else(|| "closed".to_owned())
}

fn counts(stats: OutboxStats) -> (usize, usize, usize, usize) {
    (stats.pending, stats.in_flight, stats.done, stats.failed)
}

#[test]
fn every_write_that_changes_the_counts_is_seen_and_others_are_not()
-> Result<(), Box<dyn std::error::Error>> {
    let outbox = outbox();
    let mut watch = outbox.watch_stats()?;
    assert_eq!(counts(watch.current()), (0, 0, 0, 0));
    assert!(!watch.has_changed());

    let mut draft = Operation::new("note.save", "/notes/1", r#"{"v":1}"#);
    draft.coalesce_key = Some("note-1".into());
    let id = outbox.enqueue(draft.clone(), 10)?;
    assert!(watch.has_changed());
    let stats = next(&mut watch)?;
    assert_eq!(
        (counts(stats), stats.oldest_pending_created_at_ms),
        ((1, 0, 0, 0), Some(10))
    );

    // Coalesced into the same pending operation: the counts stay, nobody wakes.
    draft.payload = r#"{"v":2}"#.into();
    assert_eq!(outbox.enqueue(draft, 11)?, id);
    assert!(!watch.has_changed());

    let claim = outbox.claim(20, 10)?;
    assert_eq!(counts(next(&mut watch)?), (0, 1, 0, 0));
    outbox.mark_done(&id, 21)?;
    drop(claim);
    assert_eq!(counts(next(&mut watch)?), (0, 0, 1, 0));
    assert_eq!(outbox.purge_done(22)?, 1);
    assert_eq!(counts(next(&mut watch)?), (0, 0, 0, 0));

    // A dead letter: failed, corrected, discarded.
    let bad = outbox.enqueue(Operation::new("note.create", "/notes", "{}"), 30)?;
    let claim = outbox.claim(31, 10)?;
    outbox.record(&bad, SendOutcome::refused("HTTP 422"), 32)?;
    drop(claim);
    // Changes in between are merged: the watch sees the latest counts.
    assert_eq!(counts(next(&mut watch)?), (0, 0, 0, 1));
    outbox.correct(&bad, Correction::payload(r#"{"title":"x"}"#), 33)?;
    assert_eq!(counts(next(&mut watch)?), (1, 0, 0, 0));
    outbox.discard(&bad)?;
    assert_eq!(counts(next(&mut watch)?), (0, 0, 0, 0));
    assert_eq!(outbox.stats()?, watch.current());
    assert!(!watch.has_changed());

    drop(outbox);
    assert!(watch.is_closed());
    assert_eq!(
        watch.wait_changed(),
        None,
        "no change comes from a dropped outbox"
    );
    Ok(())
}

#[test]
fn a_blocked_ui_thread_wakes_on_a_write_from_another_thread()
-> Result<(), Box<dyn std::error::Error>> {
    let outbox = Arc::new(outbox());
    let watch = outbox.watch_stats()?;
    let (seen_tx, seen_rx) = std::sync::mpsc::channel();
    let ui = std::thread::spawn(move || {
        // Iterating blocks until each change, and ends when the outbox goes.
        for stats in watch {
            if seen_tx.send(stats.unsent()).is_err() {
                break;
            }
        }
    });
    for n in 1..=3 {
        outbox.enqueue(Operation::new("note.edit", "/notes/1", "{}"), n)?;
        // Wait for the UI to see this one before the next, so none is merged.
        assert_eq!(seen_rx.recv()?, usize::try_from(n)?);
    }
    let Ok(outbox) = Arc::try_unwrap(outbox) else {
        return Err("the outbox is still shared".into());
    };
    drop(outbox);
    ui.join().map_err(|_| "the UI thread panicked")?;
    assert!(seen_rx.recv().is_err(), "the UI loop ended with the outbox");
    Ok(())
}

#[test]
fn stats_come_from_the_store_without_loading_it() -> Result<(), sync_outbox::OutboxError> {
    /// A store whose `load_all` fails: `stats` must not need it.
    #[derive(Debug, Default)]
    struct NoScans(MemoryOutboxStore);
    impl OutboxStore for NoScans {
        fn put(&self, op: &Operation) -> Result<(), sync_outbox::OutboxError> {
            self.0.put(op)
        }
        fn get(&self, id: &str) -> Result<Option<Operation>, sync_outbox::OutboxError> {
            self.0.get(id)
        }
        fn remove(&self, id: &str) -> Result<bool, sync_outbox::OutboxError> {
            self.0.remove(id)
        }
        fn load_all(&self) -> Result<Vec<Operation>, sync_outbox::OutboxError> {
            Err(sync_outbox::OutboxError::store(std::io::Error::other(
                "a full scan",
            )))
        }
        fn stats(&self) -> Result<OutboxStats, sync_outbox::OutboxError> {
            self.0.stats()
        }
    }
    let store = Arc::new(NoScans::default());
    let mut op = Operation::new("note.edit", "/notes/1", "{}");
    op.id = "op_1".into();
    op.created_at_ms = 5;
    store.put(&op)?;
    op.id = "op_2".into();
    op.status = OperationStatus::Failed;
    store.put(&op)?;
    let outbox = Outbox::new(OutboxConfig::default(), store);
    let stats = outbox.stats()?;
    assert_eq!(
        (counts(stats), stats.oldest_pending_created_at_ms),
        ((1, 0, 0, 1), Some(5))
    );
    assert_eq!(
        (
            stats.unsent(),
            stats.total(),
            stats.count(OperationStatus::Failed)
        ),
        (1, 2, 1)
    );
    Ok(())
}
