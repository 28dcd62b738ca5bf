//! [`SqliteTransaction`]: the app's writes and its operations in one SQLite
//! transaction.

use std::ops::Deref;
use std::sync::{Arc, MutexGuard};

use rusqlite::Connection;
use sync_outbox::{ExclusiveOutbox, Operation, Outbox, PreparedEnqueue};

use crate::error::{SqliteStoreError, sql};
use crate::schema;
use crate::store::{SqliteOutboxStore, exists};

/// A write transaction on the store's database, for the app's own tables and
/// its operations together.
///
/// Run the app's SQL through it (it derefs to [`rusqlite::Connection`]) and
/// [`enqueue`](Self::enqueue) its operations; then [`commit`](Self::commit).
/// On commit, the app's rows and the operations are durable together (as the
/// store's `SyncPolicy` promises), the [`Outbox`] knows the operations (per-key
/// order, coalescing) and its senders are woken. Dropping it without a commit
/// rolls everything back: no row, no operation, and the outbox's indexes as
/// they were. [`SqliteOutboxStore::with_transaction`] does the commit and the
/// rollback for a closure.
///
/// It holds the outbox (see `ExclusiveOutbox`) and then the database's write
/// lock (`BEGIN IMMEDIATE`) until it ends, always in that order, so it never
/// waits on the engine while the engine waits on it: the engine's claims and
/// records simply wait for it to end. Keep it short and make no network call
/// inside. On the thread that holds it, do not call the outbox (`enqueue`,
/// `stats`, ...) or begin a second transaction: those would wait for this
/// one. Do not use it from async code without `spawn_blocking`.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use sync_outbox::{Operation, Outbox, OutboxConfig, OutboxStore};
/// use sync_store_sqlite::{SqliteOutboxStore, SqliteOutboxStoreConfig};
///
/// let dir = tempfile::tempdir()?;
/// let store = Arc::new(SqliteOutboxStore::open(SqliteOutboxStoreConfig::new(dir.path().join("app.db")))?);
/// let outbox = Outbox::new(OutboxConfig::default(), store.clone());
///
/// let mut tx = store.transaction(&outbox)?;
/// tx.execute_batch("CREATE TABLE notes (id TEXT PRIMARY KEY, text TEXT)")?;
/// tx.execute("INSERT INTO notes VALUES ('n1', 'draft')", [])?;
/// tx.enqueue(Operation::new("note.create", "/notes", r#"{"id":"n1"}"#), 1_000)?;
/// drop(tx); // no commit: rolled back
/// assert!(store.load_all()?.is_empty());
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
pub struct SqliteTransaction<'a> {
    store: &'a SqliteOutboxStore,
    /// The outbox, held from begin to end; `None` once settled.
    held: Option<ExclusiveOutbox<'a>>,
    prepared: Vec<PreparedEnqueue>,
    /// The id each `enqueue` returned, in order.
    ids: Vec<String>,
    /// The trace in effect where the app started the transaction (an async
    /// transaction runs on a blocking thread, where the app's span is not):
    /// given to operations enqueued without one.
    trace: Option<String>,
    /// Declared last: the connection is released after the outbox and the
    /// prepared enqueues are settled, so the next transaction cannot see
    /// this one's reservations.
    conn: MutexGuard<'a, Connection>,
}

impl std::fmt::Debug for SqliteTransaction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteTransaction")
            .field("path", &self.store.path())
            .field("operations", &self.prepared.len())
            .finish_non_exhaustive()
    }
}

impl SqliteOutboxStore {
    /// Begins a write transaction (`BEGIN IMMEDIATE`) for the app's rows and
    /// `outbox`'s operations. One at a time: a second call waits for the
    /// first to end.
    ///
    /// # Errors
    ///
    /// [`SqliteStoreError::WrongOutbox`] if `outbox` is not over this store;
    /// [`SqliteStoreError::Sql`] if the transaction cannot begin (another
    /// writer past `busy_timeout`).
    pub fn transaction<'a>(
        &'a self,
        outbox: &'a Outbox,
    ) -> Result<SqliteTransaction<'a>, SqliteStoreError> {
        let ours = std::ptr::addr_eq(Arc::as_ptr(outbox.store()), std::ptr::from_ref(self));
        if !ours {
            return Err(SqliteStoreError::WrongOutbox);
        }
        // The outbox first, then SQLite's write lock: the order the engine
        // takes them in (it writes while holding the outbox).
        let held = outbox.lock_for_transaction()?;
        let conn = self.app_connection();
        conn.execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| sql("begin a transaction on", self.path(), e))?;
        Ok(SqliteTransaction {
            store: self,
            held: Some(held),
            prepared: Vec::new(),
            ids: Vec::new(),
            trace: None,
            conn,
        })
    }

    /// Runs `work` in a [`transaction`](Self::transaction): commits if it
    /// returns `Ok`, rolls back if it returns `Err` (or panics).
    ///
    /// # Errors
    ///
    /// `work`'s error, or the store's as `E` (beginning or committing).
    pub fn with_transaction<T, E>(
        &self,
        outbox: &Outbox,
        work: impl FnOnce(&mut SqliteTransaction<'_>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<SqliteStoreError>,
    {
        let mut tx = self.transaction(outbox)?;
        let value = work(&mut tx)?;
        tx.commit()?;
        Ok(value)
    }
}

#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
impl SqliteOutboxStore {
    /// [`with_transaction`](Self::with_transaction) as a future, for async
    /// code: `work` runs on tokio's blocking pool (`spawn_blocking`), never
    /// on a runtime worker, since it holds SQLite's write lock and commits
    /// with an fsync. Commits if `work` returns `Ok`, rolls back if it
    /// returns `Err` or panics (the panic is then resumed here). Durable on
    /// `Ok` as the store's `SyncPolicy` promises. Feature `tokio` of this
    /// crate; in the `sync` facade, on with `tokio` and `sqlite`.
    ///
    /// Dropping the future does not stop `work`: the transaction runs to its
    /// end on the pool, committed or rolled back.
    ///
    /// # Errors
    ///
    /// `work`'s error, or the store's as `E` (beginning or committing).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use sync_outbox::{Operation, Outbox, OutboxConfig, OutboxStore};
    /// use sync_store_sqlite::{SqliteOutboxStore, SqliteOutboxStoreConfig};
    ///
    /// type Error = Box<dyn std::error::Error + Send + Sync>;
    ///
    /// async fn add_note(store: &Arc<SqliteOutboxStore>, outbox: Arc<Outbox>) -> Result<String, Error> {
    ///     // The note and its operation: one commit, off the runtime's threads.
    ///     store.with_transaction_async(outbox, |tx| {
    ///         tx.execute_batch("CREATE TABLE IF NOT EXISTS notes (id TEXT PRIMARY KEY, text TEXT)")?;
    ///         tx.execute("INSERT INTO notes VALUES ('n1', 'buy milk')", [])?;
    ///         Ok(tx.enqueue_now(Operation::new("note.create", "/notes", r#"{"id":"n1"}"#))?)
    ///     }).await
    /// }
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Arc::new(SqliteOutboxStore::open(SqliteOutboxStoreConfig::new(dir.path().join("app.db")))?);
    /// let outbox = Arc::new(Outbox::new(OutboxConfig::default(), store.clone()));
    /// let runtime = tokio::runtime::Builder::new_multi_thread().build()?;
    /// let id = runtime.block_on(add_note(&store, outbox))?;
    /// assert_eq!(store.get(&id)?.map(|op| op.kind), Some("note.create".to_owned()));
    /// # Ok::<_, Error>(())
    /// ```
    pub async fn with_transaction_async<T, E>(
        self: &Arc<Self>,
        outbox: Arc<Outbox>,
        work: impl FnOnce(&mut SqliteTransaction<'_>) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<SqliteStoreError> + Send + 'static,
    {
        let store = Arc::clone(self);
        // The app's trace is on this task, not on the blocking thread.
        let trace = outbox
            .config()
            .trace_context
            .as_ref()
            .and_then(sync_outbox::TraceContext::current);
        let run = move || {
            store.with_transaction(&outbox, |tx| {
                tx.trace = trace;
                work(tx)
            })
        };
        match tokio::task::spawn_blocking(run).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only a runtime shutting down cancels a blocking task.
            Err(_) => Err(E::from(SqliteStoreError::RuntimeGone)),
        }
    }
}

impl SqliteTransaction<'_> {
    /// [`enqueue`](Self::enqueue) at the system clock's time (ms since the
    /// Unix epoch): what an app that does not drive a clock of its own
    /// wants.
    ///
    /// # Errors
    ///
    /// As [`enqueue`](Self::enqueue).
    pub fn enqueue_now(&mut self, op: Operation) -> Result<String, SqliteStoreError> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        self.enqueue(op, now_ms)
    }

    /// Enqueues `op` inside the transaction, as [`Outbox::enqueue`] would
    /// (an id if it has none, coalescing into a pending, never-sent operation
    /// with its `coalesce_key`), and returns its id. Nothing is sent, and the
    /// operation is not known to the outbox, until [`commit`](Self::commit).
    ///
    /// # Errors
    ///
    /// [`SqliteStoreError::Outbox`] (a duplicate id);
    /// [`SqliteStoreError::Sql`]; [`SqliteStoreError::InvalidOperation`].
    /// The transaction stays open: the app may roll it back.
    pub fn enqueue(&mut self, mut op: Operation, now_ms: i64) -> Result<String, SqliteStoreError> {
        if op.traceparent.is_none() {
            op.traceparent.clone_from(&self.trace);
        }
        let path = self.store.path();
        let Some(held) = self.held.as_mut() else {
            return Err(SqliteStoreError::InvalidOperation {
                reason: "the transaction has ended",
            });
        };
        let prepared = held.prepare_enqueue(op.clone(), now_ms)?;
        let prepared = if prepared.replaces_existing() {
            let target = prepared.operation();
            if exists(&self.conn, path, &target.id)? {
                // The whole coalesced operation, as the outbox's own
                // coalescing writes it: kind, target, payload, needs,
                // answer keeping and trace, not only the first three.
                schema::put(&self.conn, target, path)?;
                prepared
            } else {
                // Discarded meanwhile: enqueue it as a new operation. (The
                // replace plan is settled with the others, at the end.)
                self.prepared.push(prepared);
                let fresh = held.prepare_enqueue_new(op, now_ms)?;
                schema::put(&self.conn, fresh.operation(), path)?;
                fresh
            }
        } else {
            schema::put(&self.conn, prepared.operation(), path)?;
            prepared
        };
        let id = prepared.operation().id.clone();
        self.prepared.push(prepared);
        self.ids.push(id.clone());
        Ok(id)
    }

    /// Commits the app's rows and the operations together, then hands the
    /// operations to the outbox (which wakes its senders). Returns their
    /// ids, in enqueue order.
    ///
    /// # Errors
    ///
    /// [`SqliteStoreError::Sql`] if the commit fails; everything is then
    /// rolled back.
    pub fn commit(mut self) -> Result<Vec<String>, SqliteStoreError> {
        self.conn
            .execute_batch("COMMIT")
            .map_err(|e| sql("commit a transaction on", self.store.path(), e))?;
        let prepared = std::mem::take(&mut self.prepared);
        let Some(held) = self.held.take() else {
            return Ok(Vec::new());
        };
        // Registered in the held outbox, never by taking it again while the
        // connection is held: a thread holding the outbox and waiting for
        // the connection (the downloader, another transaction) would wait
        // on us while we waited on it.
        let _ = held.commit(prepared);
        Ok(std::mem::take(&mut self.ids))
    }

    /// Rolls everything back (as dropping it does).
    pub fn rollback(self) {
        drop(self);
    }
}

impl Deref for SqliteTransaction<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl Drop for SqliteTransaction<'_> {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            // A failed rollback leaves SQLite to roll back when the
            // connection next begins; nothing was committed either way.
            let _ = self.conn.execute_batch("ROLLBACK");
            held.rollback(std::mem::take(&mut self.prepared));
        }
    }
}
