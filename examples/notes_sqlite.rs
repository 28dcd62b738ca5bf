//! A notes app on SQLite: the notes table and the operations that sync it
//! live in one database, written in one transaction, so a crash can never
//! leave a note without its operation or an operation without its note.
//!
//! Offline, the app creates two notes, edits one twice (the edits coalesce:
//! only the latest state is sent), deletes the other (sent after its create:
//! each note is an ordering key), and fails one transaction on validation
//! (nothing of it is stored or queued). Then the network comes back and
//! everything syncs, in order. The database is `./build/notes-sqlite/notes.db`;
//! open it with `sqlite3` to look, or with `synctl outbox list`.
//!
//! ```text
//! cargo run --example notes_sqlite
//! ```

#![expect(
    clippy::print_stdout,
    reason = "an example prints for the person running it"
)]

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};

use sync::prelude::*;
use sync::sqlite::{SqliteStoreError, SqliteTransaction};

type Error = Box<dyn std::error::Error>;

/// The server: offline at first; records what it receives.
#[derive(Default)]
struct Server {
    online: AtomicBool,
    received: Mutex<Vec<String>>,
}

impl SyncTransport for Server {
    fn send(&self, op: &Operation) -> SendResult {
        if !self.online.load(SeqCst) {
            return SendResult::retryable("network offline");
        }
        let line = format!("{} {} {}", op.kind, op.target, op.payload);
        println!("[server] {line}");
        self.received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
        SendResult::ok()
    }
}

/// Writes a note and queues its operation, in the caller's transaction.
fn save_note(
    tx: &mut SqliteTransaction<'_>,
    id: &str,
    text: &str,
    now: i64,
) -> Result<(), SqliteStoreError> {
    if text.trim().is_empty() {
        return Err(SqliteStoreError::InvalidOperation {
            reason: "a note needs text",
        });
    }
    tx.execute(
        "INSERT INTO notes (id, text) VALUES (?1, ?2) ON CONFLICT(id) DO UPDATE SET text = ?2",
        [id, text],
    )?;
    let payload = format!(r#"{{"text":"{text}"}}"#);
    let op = Operation {
        // The key a pulled change of this note is held under.
        ordering_key: Some(format!("note/{id}")),
        // Unsent edits of one note collapse into the latest.
        coalesce_key: Some(format!("note-text:{id}")),
        ..Operation::new("note.save", format!("/notes/{id}"), payload)
    };
    tx.enqueue(op, now)?;
    Ok(())
}

fn delete_note(tx: &mut SqliteTransaction<'_>, id: &str, now: i64) -> Result<(), SqliteStoreError> {
    tx.execute("DELETE FROM notes WHERE id = ?1", [id])?;
    let op = Operation {
        ordering_key: Some(format!("note/{id}")),
        ..Operation::new("note.delete", format!("/notes/{id}"), "")
    };
    tx.enqueue(op, now)?;
    Ok(())
}

fn print_state(store: &SqliteOutboxStore) -> Result<(), Error> {
    let conn = rusqlite_like(store)?;
    let mut notes = conn.prepare("SELECT id, text FROM notes ORDER BY id")?;
    for row in notes.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
    })? {
        let (id, text) = row?;
        println!("[db] note {id}: {text:?}");
    }
    let mut queue = conn.prepare("SELECT kind, target, status FROM sync_outbox ORDER BY seq")?;
    for row in queue.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
        ))
    })? {
        let (kind, target, status) = row?;
        println!("[db] queued {kind} {target}: {status}");
    }
    Ok(())
}

/// A read connection of the app's own on the same file (what a UI would use).
fn rusqlite_like(store: &SqliteOutboxStore) -> Result<sync::sqlite::rusqlite::Connection, Error> {
    Ok(sync::sqlite::rusqlite::Connection::open(store.path())?)
}

fn main() -> Result<(), Error> {
    let dir = std::path::Path::new("build").join("notes-sqlite");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let store = Arc::new(SqliteOutboxStore::open(SqliteOutboxStoreConfig::new(
        dir.join("notes.db"),
    ))?);
    let outbox = Arc::new(Outbox::new(OutboxConfig::default(), store.clone()));
    store.with_transaction(&outbox, |tx| {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS notes (id TEXT PRIMARY KEY, text TEXT NOT NULL)",
        )
        .map_err(SqliteStoreError::from)
    })?;
    let server = Arc::new(Server::default());
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    let worker = SyncWorker::new(
        SyncWorkerConfig::default(),
        outbox.clone(),
        probe,
        server.clone(),
    );

    let mut now = 1_000;
    println!("[app] offline: create, edit twice, delete, and one invalid save");
    store.with_transaction(&outbox, |tx| save_note(tx, "a", "buy milk", now))?;
    store.with_transaction(&outbox, |tx| save_note(tx, "b", "call Ada", now))?;
    worker.tick(now)?; // the network is down: the first attempt fails
    store.with_transaction(&outbox, |tx| save_note(tx, "a", "buy oat milk", now))?;
    store.with_transaction(&outbox, |tx| {
        save_note(tx, "a", "buy oat milk and eggs", now)
    })?;
    store.with_transaction(&outbox, |tx| delete_note(tx, "b", now))?;
    let invalid = store.with_transaction(&outbox, |tx| {
        save_note(tx, "c", "kept?", now)?;
        save_note(tx, "c", "   ", now)
    });
    println!(
        "[app] invalid save refused: {}",
        invalid.err().map(|e| e.to_string()).unwrap_or_default()
    );
    print_state(&store)?;

    println!("[app] the network is back");
    server.online.store(true, SeqCst);
    while outbox.stats()?.pending + outbox.stats()?.in_flight > 0 {
        now += 1_000;
        worker.tick(now)?;
    }
    print_state(&store)?;
    let received = server
        .received
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    println!(
        "[app] synced: the server got {} requests for 5 saves and deletes (edits coalesced)",
        received.len()
    );
    Ok(())
}
