//! Guards transactional enqueue: the app's rows and its operations commit
//! together and the outbox knows them at once (per-key order, coalescing, a
//! woken listener); a rollback, an explicit one or a failing closure, leaves
//! no row, no operation and the outbox's indexes as they were; a transaction
//! refuses an outbox over another store.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use sync_outbox::{Operation, OperationStatus, Outbox, OutboxConfig, OutboxStore};
use sync_store_sqlite::SqliteStoreError;

use crate::{TestResult, store_and_outbox};

const NOTES: &str = "CREATE TABLE IF NOT EXISTS notes (id TEXT PRIMARY KEY, text TEXT NOT NULL)";

fn note_op(note: &str, text: &str) -> Operation {
    Operation {
        ordering_key: Some(note.into()),
        ..Operation::new(
            "note.upsert",
            format!("/notes/{note}"),
            format!(r#"{{"text":"{text}"}}"#),
        )
    }
}

fn notes(conn: &rusqlite::Connection) -> Result<Vec<(String, String)>, rusqlite::Error> {
    let mut statement = conn.prepare("SELECT id, text FROM notes ORDER BY id")?;
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect()
}

#[test]
fn rows_and_operations_commit_together_and_the_outbox_knows_them() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, outbox) = store_and_outbox(dir.path())?;
    let woken = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&woken);
    outbox.on_claimable(move || {
        count.fetch_add(1, SeqCst);
    });
    let ids = store.with_transaction(&outbox, |tx| {
        tx.execute_batch(NOTES)?;
        tx.execute("INSERT INTO notes VALUES ('n1', 'buy milk')", [])?;
        let first = tx.enqueue(note_op("n1", "buy milk"), 1_000)?;
        tx.execute("UPDATE notes SET text = 'buy oat milk' WHERE id = 'n1'", [])?;
        let second = tx.enqueue(note_op("n1", "buy oat milk"), 1_000)?;
        Ok::<_, Box<dyn std::error::Error>>((first, second))
    })?;
    assert_eq!(woken.load(SeqCst), 2, "the engine is told at commit");
    let conn = rusqlite::Connection::open(dir.path().join("app.db"))?;
    assert_eq!(
        notes(&conn)?,
        [("n1".to_owned(), "buy oat milk".to_owned())]
    );
    assert_eq!(store.load_all()?.len(), 2);
    // Per-key order: the second waits for the first.
    let claimed: Vec<String> = outbox
        .claim(1_001, 10)
        .map(sync_outbox::Claim::detach)?
        .into_iter()
        .map(|op| op.id)
        .collect();
    assert_eq!(claimed, std::slice::from_ref(&ids.0));
    outbox.mark_done(&ids.0, 1_002)?;
    let claimed: Vec<String> = outbox
        .claim(1_003, 10)
        .map(sync_outbox::Claim::detach)?
        .into_iter()
        .map(|op| op.id)
        .collect();
    assert_eq!(claimed, [ids.1]);
    Ok(())
}

#[test]
fn a_rollback_leaves_no_row_no_operation_and_the_indexes_as_they_were() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, outbox) = store_and_outbox(dir.path())?;
    store.with_transaction(&outbox, |tx| {
        tx.execute_batch(NOTES)?;
        Ok::<_, SqliteStoreError>(())
    })?;
    // An explicit rollback, after an enqueue on key n1.
    let mut tx = store.transaction(&outbox)?;
    tx.execute("INSERT INTO notes VALUES ('n1', 'lost')", [])?;
    tx.enqueue(note_op("n1", "lost"), 1_000)?;
    tx.rollback();
    // A closure that fails after its enqueue.
    let failed: Result<(), Box<dyn std::error::Error>> = store.with_transaction(&outbox, |tx| {
        tx.execute("INSERT INTO notes VALUES ('n2', 'lost too')", [])?;
        tx.enqueue(note_op("n1", "lost too"), 1_000)?;
        Err("the app changed its mind".into())
    });
    assert!(failed.is_err());
    let conn = rusqlite::Connection::open(dir.path().join("app.db"))?;
    assert!(notes(&conn)?.is_empty());
    assert!(store.load_all()?.is_empty());
    // The key is free: a plain enqueue on n1 is claimable at once.
    let id = outbox.enqueue(note_op("n1", "kept"), 1_000)?;
    let claimed: Vec<String> = outbox
        .claim(1_001, 10)
        .map(sync_outbox::Claim::detach)?
        .into_iter()
        .map(|op| op.id)
        .collect();
    assert_eq!(claimed, [id]);
    Ok(())
}

#[test]
fn coalescing_inside_a_transaction_updates_the_unsent_operation() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, outbox) = store_and_outbox(dir.path())?;
    let draft = |text: &str| Operation {
        coalesce_key: Some("draft-1".into()),
        ..Operation::new("draft.save", "/drafts/1", text)
    };
    let first = store.with_transaction(&outbox, |tx| tx.enqueue(draft("a"), 0))?;
    let second = store.with_transaction(&outbox, |tx| tx.enqueue(draft("ab"), 1))?;
    assert_eq!(first, second, "the latest state replaces the unsent one");
    let ops = store.load_all()?;
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].payload, "ab");
    // A rolled-back coalescing leaves the payload and the op claimable.
    let mut tx = store.transaction(&outbox)?;
    assert_eq!(tx.enqueue(draft("abc"), 2)?, first);
    drop(tx);
    let sent = outbox.claim(3, 10).map(sync_outbox::Claim::detach)?;
    assert_eq!((sent.len(), sent[0].payload.as_str()), (1, "ab"));
    Ok(())
}

#[test]
fn a_transaction_refuses_an_outbox_over_another_store() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, _) = store_and_outbox(dir.path())?;
    let other = Outbox::new(
        OutboxConfig::default(),
        Arc::new(sync_outbox::MemoryOutboxStore::new()),
    );
    assert!(matches!(
        store.transaction(&other),
        Err(SqliteStoreError::WrongOutbox)
    ));
    Ok(())
}

#[test]
fn the_app_can_read_its_queue_with_plain_sql() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, outbox) = store_and_outbox(dir.path())?;
    store.with_transaction(&outbox, |tx| {
        tx.enqueue(Operation::new("k", "/t", "{}"), 0)?;
        tx.enqueue(Operation::new("k", "/t", "{}"), 0)
    })?;
    let claimed = outbox.claim(1, 1).map(sync_outbox::Claim::detach)?;
    outbox.mark_done(&claimed[0].id, 2)?;
    let conn = rusqlite::Connection::open(dir.path().join("app.db"))?;
    let pending: i64 = conn.query_row(
        "SELECT count(*) FROM sync_outbox WHERE status = 'pending'",
        [],
        |row| row.get(0),
    )?;
    assert_eq!(pending, 1);
    assert_eq!(
        store.get(&claimed[0].id)?.map(|op| op.status),
        Some(OperationStatus::Done)
    );
    Ok(())
}

#[test]
fn an_open_transaction_makes_the_outbox_wait_not_fail() -> TestResult {
    // A busy timeout far shorter than the transaction: if the outbox waited
    // for SQLite's write lock while holding itself (the old lock order), its
    // write would fail with "database is locked" after 100 ms.
    let dir = tempfile::tempdir()?;
    let config = sync_store_sqlite::SqliteOutboxStoreConfig {
        busy_timeout: std::time::Duration::from_millis(100),
        ..sync_store_sqlite::SqliteOutboxStoreConfig::new(dir.path().join("app.db"))
    };
    let store = Arc::new(sync_store_sqlite::SqliteOutboxStore::open(config)?);
    let outbox = Arc::new(Outbox::new(OutboxConfig::default(), store.clone()));
    let mut tx = store.transaction(&outbox)?;
    tx.execute_batch(NOTES)?;
    let (started, started_rx) = std::sync::mpsc::channel();
    let other = {
        let outbox = Arc::clone(&outbox);
        std::thread::spawn(move || {
            let _ = started.send(());
            outbox.enqueue(note_op("n2", "from another thread"), 1_000)
        })
    };
    started_rx.recv()?;
    // Hold the transaction past the busy timeout, writing and enqueueing.
    // Real time, because SQLite's busy timeout is wall-clock: no clock of
    // ours can move it.
    std::thread::sleep(std::time::Duration::from_millis(300));
    tx.execute("INSERT INTO notes VALUES ('n1', 'kept')", [])?;
    tx.enqueue(note_op("n1", "kept"), 1_000)?;
    tx.commit()?;
    let enqueued = other.join().map_err(|_| "enqueuer panicked")?;
    assert!(enqueued.is_ok(), "the other enqueue failed: {enqueued:?}");
    assert_eq!(store.load_all()?.len(), 2);
    Ok(())
}

#[test]
fn the_async_transaction_commits_or_rolls_back_off_the_runtime_thread() -> TestResult {
    type Error = Box<dyn std::error::Error + Send + Sync>;
    let dir = tempfile::tempdir()?;
    let (store, outbox) = store_and_outbox(dir.path())?;
    store
        .with_transaction(&outbox, |tx| -> Result<(), Error> {
            Ok(tx.execute_batch("CREATE TABLE notes (id TEXT PRIMARY KEY, text TEXT)")?)
        })
        .map_err(|e| e.to_string())?;
    // One runtime thread: the test's. The work must run on another.
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let runtime_thread = std::thread::current().id();
    let committed: Result<(String, bool), Error> = runtime.block_on(store.with_transaction_async(
        Arc::clone(&outbox),
        move |tx| {
            tx.execute("INSERT INTO notes VALUES ('n1', 'kept')", [])?;
            let id = tx.enqueue_now(note_op("n1", "kept"))?;
            Ok((id, std::thread::current().id() != runtime_thread))
        },
    ));
    let (id, off_the_runtime) = committed.map_err(|e| e.to_string())?;
    assert!(
        off_the_runtime,
        "the transaction ran on the runtime's thread"
    );
    assert!(
        store.get(&id)?.is_some_and(|op| op.created_at_ms > 0),
        "enqueued now"
    );

    let refused: Result<(), Error> =
        runtime.block_on(store.with_transaction_async(Arc::clone(&outbox), |tx| {
            tx.execute("INSERT INTO notes VALUES ('n2', 'dropped')", [])?;
            tx.enqueue_now(note_op("n2", "dropped"))?;
            Err("the app changed its mind".into())
        }));
    assert!(refused.is_err());
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(store.with_transaction_async(Arc::clone(&outbox), |tx| {
            tx.execute("INSERT INTO notes VALUES ('n3', 'panicked')", [])?;
            if tx.is_autocommit() {
                return Ok::<(), Error>(());
            }
            panic!("a bug in the app's closure");
        }))
    }));
    assert!(panicked.is_err(), "the panic is resumed in the caller");
    assert_eq!(
        notes(&rusqlite::Connection::open(dir.path().join("app.db"))?)?,
        [("n1".to_owned(), "kept".to_owned())],
        "only the committed row"
    );
    assert_eq!(store.load_all()?.len(), 1, "only the committed operation");
    Ok(())
}

#[test]
fn a_full_queue_refuses_the_enqueue_and_the_transaction_rolls_back() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(crate::open(&dir.path().join("app.db"))?);
    let outbox = Arc::new(Outbox::new(
        OutboxConfig {
            max_queued: Some(2),
            ..OutboxConfig::default()
        },
        store.clone(),
    ));
    store.with_transaction(&outbox, |tx| {
        tx.execute_batch(NOTES)?;
        Ok::<_, SqliteStoreError>(())
    })?;
    outbox.enqueue(note_op("n1", "first"), 1_000)?;
    // The second fits; the third in the same transaction (the second not
    // yet committed) does not, and the app's write goes with it.
    let full: Result<(), SqliteStoreError> = store.with_transaction(&outbox, |tx| {
        tx.execute("INSERT INTO notes VALUES ('n2', 'second')", [])?;
        tx.enqueue(note_op("n2", "second"), 1_000)?;
        tx.execute("INSERT INTO notes VALUES ('n3', 'third')", [])?;
        tx.enqueue(note_op("n3", "third"), 1_000)?;
        Ok(())
    });
    match full {
        Err(SqliteStoreError::Outbox(sync_outbox::OutboxError::QueueFull {
            what: "operations",
            queued: 3,
            limit: 2,
        })) => {}
        other => return Err(format!("expected a full queue, got {other:?}").into()),
    }
    let conn = rusqlite::Connection::open(dir.path().join("app.db"))?;
    assert!(notes(&conn)?.is_empty());
    assert_eq!(outbox.stats()?.queued(), 1);
    // Done operations do not count: once the first is sent, two fit.
    for op in outbox.claim(1_000, 1)?.detach() {
        outbox.mark_done(&op.id, 1_001)?;
    }
    outbox.enqueue(note_op("n2", "second"), 1_002)?;
    outbox.enqueue(note_op("n3", "third"), 1_002)?;
    let stats = outbox.stats()?;
    assert_eq!((stats.queued(), stats.done), (2, 1));
    assert_eq!(
        stats.queued_bytes,
        2 * r#"{"text":"second"}"#.len() as u64 - 1
    );
    Ok(())
}

#[test]
fn an_operations_account_and_payload_version_survive_a_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let id = {
        let (_store, outbox) = store_and_outbox(dir.path())?;
        outbox.set_account(Some("ann"));
        outbox.enqueue(
            Operation {
                payload_version: 3,
                ..note_op("n1", "versioned")
            },
            1_000,
        )?
    };
    let (store, outbox) = store_and_outbox(dir.path())?;
    let op = store.get(&id)?.ok_or("lost")?;
    assert_eq!(
        (op.account.as_deref(), op.payload_version),
        (Some("ann"), 3)
    );
    // Not signed in as Ann: not sent; as Ann: sent.
    assert!(outbox.claim(2_000, 10)?.is_empty());
    outbox.set_account(Some("ann"));
    assert_eq!(outbox.claim(2_000, 10)?.len(), 1);
    Ok(())
}

/// Two threads committing transactions with enqueues, as an app's writer
/// and the downloader (which also holds the outbox, then the connection)
/// do: a commit used to register its operations in the outbox while still
/// holding the connection, so a thread holding the outbox and waiting for
/// the connection deadlocked with it. Found by the chaos harness's devices.
#[test]
fn concurrent_transactions_with_enqueues_never_deadlock() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, outbox) = store_and_outbox(dir.path())?;
    let (done, finished) = std::sync::mpsc::channel();
    for t in 0..3 {
        let (store, outbox, done) = (Arc::clone(&store), Arc::clone(&outbox), done.clone());
        std::thread::spawn(move || {
            // Every third transaction rolls back after its enqueue: the
            // rollback releases its reservation without deadlocking either.
            let result = (0..1_000).try_for_each(|i| {
                let outcome = store.with_transaction(&outbox, |tx| {
                    let id = tx.enqueue_now(Operation::new(
                        "note.save",
                        format!("/notes/{t}-{i}"),
                        "{}",
                    ))?;
                    if i % 3 == 0 {
                        return Err(SqliteStoreError::InvalidOperation {
                            reason: "rolled back",
                        });
                    }
                    Ok(id)
                });
                match outcome {
                    Ok(_) | Err(SqliteStoreError::InvalidOperation { .. }) => Ok(()),
                    Err(e) => Err(e),
                }
            });
            let _ = done.send(result.map_err(|e| e.to_string()));
        });
    }
    for _ in 0..3 {
        let ended = finished.recv_timeout(std::time::Duration::from_secs(60));
        assert!(
            matches!(ended, Ok(Ok(()))),
            "a writer deadlocked or failed: {ended:?}"
        );
    }
    // 334 of each writer's 1,000 rolled back.
    assert_eq!(outbox.stats()?.pending, 3 * 666);
    Ok(())
}

/// An edit coalesced into an unsent operation inside a transaction writes
/// everything the outbox's own coalescing changes: the new needs (a draft
/// that now names a note created offline), whether it keeps its answer,
/// and its trace; a reopen reads them back.
#[test]
fn coalescing_inside_a_transaction_writes_needs_answer_keeping_and_trace() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, outbox) = store_and_outbox(dir.path())?;
    let create = outbox.enqueue(
        Operation::new("note.create", "/notes", "{}").keeping_answer(),
        0,
    )?;
    let draft = |payload: &str| Operation {
        coalesce_key: Some("draft-1".into()),
        ..Operation::new("draft.save", "/drafts/1", payload)
    };
    let first = store.with_transaction(&outbox, |tx| tx.enqueue(draft("{}"), 1))?;
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let edited = Operation {
        traceparent: Some(trace.into()),
        ..draft(r#"{"note":"tmp-1"}"#)
            .needing(sync_outbox::Need::new(&create, "/id", "tmp-1"))
            .keeping_answer()
    };
    let second = store.with_transaction(&outbox, |tx| tx.enqueue(edited, 2))?;
    assert_eq!(first, second, "coalesced");
    drop(outbox);
    drop(store);
    let reopened = crate::open(&dir.path().join("app.db"))?;
    let stored = reopened.get(&first)?.ok_or("the draft is gone")?;
    assert_eq!(stored.payload, r#"{"note":"tmp-1"}"#);
    assert_eq!(
        stored.needs,
        [sync_outbox::Need::new(&create, "/id", "tmp-1")]
    );
    assert!(stored.keep_answer);
    assert_eq!(stored.traceparent.as_deref(), Some(trace));
    Ok(())
}
