//! [`SqliteOutboxStore`]: the outbox's operations in a table of an SQLite
//! database, which may also hold the app's own tables.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use sync_outbox::{MemoryOutboxStore, Operation, OutboxError, OutboxStats, OutboxStore};
use sync_wal::{LockedFile, SyncPolicy, WalError};

use crate::error::{SqliteStoreError, sql};
use crate::schema::{self, COLUMNS};

/// A database key: [`DatabaseKey`](crate::DatabaseKey) with feature
/// `sqlcipher`, nothing without.
#[cfg(feature = "sqlcipher")]
type Key = crate::DatabaseKey;
#[cfg(not(feature = "sqlcipher"))]
type Key = std::convert::Infallible;

/// The first 16 bytes of every SQLite database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Settings of a [`SqliteOutboxStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqliteOutboxStoreConfig {
    /// The database file; created if missing. It may be the app's own
    /// database: the store only touches its tables `sync_outbox` and
    /// `sync_meta`.
    pub path: PathBuf,
    /// What `Ok` promises (see the table on [`SqliteOutboxStore`]). Default
    /// `Always`.
    pub sync: SyncPolicy,
    /// How long a write waits for another connection's write transaction
    /// (the app's) before failing with "database is locked". Default 5 s.
    pub busy_timeout: Duration,
    /// Open the database encrypted with this key (feature `sqlcipher`):
    /// created encrypted, or refused with [`SqliteStoreError::KeyMismatch`]
    /// if the key does not open it. Every connection the store makes gets
    /// it, so the transactional enqueue and the download work as they do
    /// unencrypted. Default `None`: a plain database.
    #[cfg(feature = "sqlcipher")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlcipher")))]
    pub key: Option<crate::DatabaseKey>,
}

impl SqliteOutboxStoreConfig {
    /// The defaults for the database at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            sync: SyncPolicy::Always,
            busy_timeout: Duration::from_secs(5),
            #[cfg(feature = "sqlcipher")]
            key: None,
        }
    }

    /// These settings, with the database encrypted under `key` (feature
    /// `sqlcipher`; see [`key`](Self::key)).
    #[cfg(feature = "sqlcipher")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlcipher")))]
    #[must_use]
    pub fn with_key(mut self, key: crate::DatabaseKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Whether a key is set.
    #[cfg(feature = "sqlcipher")]
    fn encrypted(&self) -> bool {
        self.key.is_some()
    }

    /// Whether a key is set: never, without feature `sqlcipher`.
    #[cfg(not(feature = "sqlcipher"))]
    #[expect(
        clippy::unused_self,
        reason = "the same call as with feature `sqlcipher`"
    )]
    fn encrypted(&self) -> bool {
        false
    }
}

/// An [`OutboxStore`] in SQLite (compiled in through `rusqlite`'s `bundled`
/// feature), in WAL journal mode.
///
/// Its reason to exist is [`transaction`](Self::transaction): the app writes
/// its own tables and enqueues operations in one SQLite transaction, so a
/// crash can never leave a change without its operation or an operation
/// without its change.
///
/// # Durability
///
/// | `SyncPolicy` | SQLite settings | `Ok` means |
/// | --- | --- | --- |
/// | `Always` (default) | `journal_mode=WAL`, `synchronous=FULL` | the commit's WAL frames were synced: survives power loss |
/// | `Interval(d)` | `journal_mode=WAL`, `synchronous=NORMAL`, a checkpoint every `d` | written to the WAL: survives a process crash; a power loss loses at most about `d` |
/// | `Never` | `journal_mode=WAL`, `synchronous=NORMAL` | written to the WAL: survives a process crash; a power loss may lose commits since the last checkpoint, and the database stays consistent |
///
/// # Ownership and bad input
///
/// Like the file stores, one store object per database: it takes an
/// exclusive lock on `<file>.sync-lock` (a second open gets
/// [`SqliteStoreError::Locked`]). A file that is not an SQLite database, or
/// that holds this crate's tables in a schema version it does not know, is
/// refused with a typed error naming the file, and nothing is written to it.
/// Files are created readable by the owner only.
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
/// // The app's row and its operation, committed together.
/// store.with_transaction(&outbox, |tx| {
///     tx.execute_batch("CREATE TABLE IF NOT EXISTS notes (id TEXT PRIMARY KEY, text TEXT)")?;
///     tx.execute("INSERT INTO notes VALUES ('n1', 'buy milk')", [])?;
///     tx.enqueue(Operation::new("note.create", "/notes", r#"{"id":"n1"}"#), 1_000)?;
///     Ok::<_, Box<dyn std::error::Error>>(())
/// })?;
/// assert_eq!(store.load_all()?.len(), 1);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
pub struct SqliteOutboxStore {
    path: PathBuf,
    /// The store's own connection, for the `OutboxStore` calls.
    conn: Mutex<Connection>,
    /// The connection app transactions run on, so an engine's store call
    /// never waits on a mutex an app transaction holds (SQLite serializes
    /// the writes themselves, with `busy_timeout`).
    app: Mutex<Connection>,
    checkpointer: Option<Checkpointer>,
    /// The policy `conn` was opened with.
    policy: SyncPolicy,
    /// Whether `conn` committed with `synchronous=NORMAL` under `Always`
    /// since the last synced commit (`put_unsynced` without a `sync`).
    unsynced: AtomicBool,
    _lock: LockedFile,
}

impl std::fmt::Debug for SqliteOutboxStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteOutboxStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteOutboxStore {
    /// Opens (or creates) the store in the database at `config.path`.
    ///
    /// # Errors
    ///
    /// - [`SqliteStoreError::Locked`] if another handle has it open;
    /// - [`SqliteStoreError::NotADatabase`], [`SqliteStoreError::ForeignSchema`]
    ///   (nothing written);
    /// - [`SqliteStoreError::Sql`], [`SqliteStoreError::Io`].
    #[expect(
        clippy::needless_pass_by_value,
        reason = "takes its config by value, like the other stores' open"
    )]
    pub fn open(config: SqliteOutboxStoreConfig) -> Result<Self, SqliteStoreError> {
        let path = config.path.clone();
        let lock = lock(&path, false)?.ok_or_else(|| SqliteStoreError::Io {
            op: "lock",
            path: path.clone(),
            source: std::io::ErrorKind::NotFound.into(),
        })?;
        // An encrypted file's first bytes are random: the key's check is
        // what refuses a file that is not ours. It runs first on a
        // read-only connection: a read-write one closed after a wrong key
        // could still checkpoint a leftover `-wal` into the file.
        if config.encrypted() {
            #[cfg(feature = "sqlcipher")]
            if let Some(key) = &config.key
                && std::fs::metadata(&path).is_ok_and(|m| m.len() > 0)
            {
                unlock(&read_only_connection(&path)?, &path, key)?;
            }
        } else {
            check_header(&path)?;
        }
        create_private(&path)?;
        let conn = connect(&path, &config, OpenFlags::default())?;
        // Read before any write: refuse a file that is not ours to change.
        match schema::read_version(&conn, &path)? {
            Some(found) if !schema::is_known_version(&found) => {
                return Err(SqliteStoreError::ForeignSchema {
                    path,
                    found,
                    expected: schema::SCHEMA_VERSION,
                });
            }
            _ => {}
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| sql("set journal_mode on", &path, e))?;
        schema::check_or_create(&conn, &path)?;
        let app = connect(&path, &config, OpenFlags::default())?;
        let checkpointer = match config.sync {
            SyncPolicy::Interval(every) => Some(Checkpointer::start(
                connect(&path, &config, OpenFlags::default())?,
                every,
            )),
            SyncPolicy::Always | SyncPolicy::Never => None,
        };
        Ok(Self {
            path,
            conn: Mutex::new(conn),
            app: Mutex::new(app),
            checkpointer,
            policy: config.sync,
            unsynced: AtomicBool::new(false),
            _lock: lock,
        })
    }

    /// Reads every operation of the store at `path` without changing it,
    /// on a read-only connection, into a [`MemoryOutboxStore`]. For
    /// inspection tools such as `synctl`. The database file is never
    /// written; after a crash left a `-wal` file, SQLite may create the
    /// `-shm` file beside it.
    ///
    /// It works while an application has the store open: the read is one
    /// SQLite read transaction, a snapshot of the last commit, which never
    /// blocks the application's writes. With no application, it holds a
    /// shared lock so that none opens the store meanwhile.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open); [`SqliteStoreError::Io`] if the file is
    /// missing.
    pub fn load_read_only(path: &Path) -> Result<MemoryOutboxStore, SqliteStoreError> {
        Self::load_read_only_keyed(path, None)
    }

    /// [`load_read_only`](Self::load_read_only) of an encrypted database
    /// (feature `sqlcipher`).
    ///
    /// # Errors
    ///
    /// As [`load_read_only`](Self::load_read_only);
    /// [`SqliteStoreError::KeyMismatch`] if `key` does not open it.
    #[cfg(feature = "sqlcipher")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlcipher")))]
    pub fn load_read_only_with_key(
        path: &Path,
        key: &crate::DatabaseKey,
    ) -> Result<MemoryOutboxStore, SqliteStoreError> {
        Self::load_read_only_keyed(path, Some(key))
    }

    fn load_read_only_keyed(
        path: &Path,
        key: Option<&Key>,
    ) -> Result<MemoryOutboxStore, SqliteStoreError> {
        // With no application, hold the lock so none opens meanwhile; with
        // one, read beside it: SQLite's WAL mode gives this connection a
        // snapshot of the last commit and never blocks the writer.
        let _lock = match lock(path, true) {
            Err(SqliteStoreError::Locked { .. }) => None,
            other => other?,
        };
        if key.is_none() {
            check_header(path)?;
        }
        if !path.exists() {
            return Err(SqliteStoreError::Io {
                op: "open",
                path: path.to_path_buf(),
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        let mut conn = read_only_connection(path)?;
        #[cfg(feature = "sqlcipher")]
        if let Some(key) = key {
            unlock(&conn, path, key)?;
        }
        // One read transaction: the version and the rows come from one
        // snapshot, even while the app commits or upgrades the schema.
        let snapshot = conn
            .transaction()
            .map_err(|e| sql("start a read of", path, e))?;
        let conn = &*snapshot;
        let store = MemoryOutboxStore::new();
        let version = match schema::read_version(conn, path)? {
            None => return Ok(store),
            Some(found) if !schema::is_known_version(&found) => {
                return Err(SqliteStoreError::ForeignSchema {
                    path: path.to_path_buf(),
                    found,
                    expected: schema::SCHEMA_VERSION,
                });
            }
            Some(found) => found,
        };
        let columns = schema::columns_of(&version);
        for op in select_from(conn, path, columns, "", params![])? {
            store.put(&op)?;
        }
        Ok(store)
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn app_connection(&self) -> MutexGuard<'_, Connection> {
        self.app.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `ops` in one transaction on `conn`.
    fn put_all(&self, conn: &mut Connection, ops: &[Operation]) -> Result<(), OutboxError> {
        let tx = conn
            .transaction()
            .map_err(|e| OutboxError::from(sql("begin a transaction on", &self.path, e)))?;
        for op in ops {
            schema::put(&tx, op, &self.path)?;
        }
        tx.commit()
            .map_err(|e| OutboxError::from(sql("commit a transaction on", &self.path, e)))
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for SqliteOutboxStore {
    fn drop(&mut self) {
        if let Some(checkpointer) = self.checkpointer.take() {
            checkpointer.stop();
        }
    }
}

impl OutboxStore for SqliteOutboxStore {
    /// Durable on `Ok` as the `SyncPolicy` says (one SQLite transaction).
    fn put(&self, op: &Operation) -> Result<(), OutboxError> {
        schema::put(&self.conn(), op, &self.path).map_err(OutboxError::from)
    }

    /// All in one SQLite transaction: one sync under `Always`.
    fn put_batch(&self, ops: &[Operation]) -> Result<(), OutboxError> {
        self.put_all(&mut self.conn(), ops)
    }

    /// One SQLite transaction, committed with `synchronous=NORMAL` even
    /// under `Always`: in the WAL file on `Ok`, so it survives a process
    /// crash; the next synced commit or [`sync`](OutboxStore::sync) syncs
    /// the WAL file, and with it this commit. Under `Interval` and `Never`
    /// the same as `put_batch`.
    fn put_unsynced(&self, ops: &[Operation]) -> Result<(), OutboxError> {
        let mut conn = self.conn();
        if self.policy != SyncPolicy::Always {
            return self.put_all(&mut conn, ops);
        }
        let set = |conn: &Connection, level| {
            conn.pragma_update(None, "synchronous", level)
                .map_err(|e| OutboxError::from(sql("set synchronous on", &self.path, e)))
        };
        set(&conn, "NORMAL")?;
        let put = self.put_all(&mut conn, ops);
        if put.is_ok() {
            self.unsynced.store(true, Ordering::Release);
        }
        // Back to FULL whatever happened: every other write is synced.
        set(&conn, "FULL")?;
        put
    }

    /// Under `Always`, after an unsynced commit: one small synced commit (a
    /// counter in `sync_meta` goes up), whose sync of the WAL file covers
    /// every commit before it. Otherwise nothing.
    fn sync(&self) -> Result<(), OutboxError> {
        if self.policy != SyncPolicy::Always || !self.unsynced.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let synced = self
            .conn()
            .prepare_cached(
                "INSERT INTO sync_meta (key, value) VALUES ('syncs', '1') \
                 ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
            )
            .and_then(|mut statement| statement.execute([]));
        if let Err(e) = synced {
            self.unsynced.store(true, Ordering::Release);
            return Err(OutboxError::from(sql("sync", &self.path, e)));
        }
        Ok(())
    }

    fn get(&self, id: &str) -> Result<Option<Operation>, OutboxError> {
        Ok(select(&self.conn(), &self.path, "WHERE id = ?1", params![id])?.pop())
    }

    fn remove(&self, id: &str) -> Result<bool, OutboxError> {
        let removed = self
            .conn()
            .prepare_cached("DELETE FROM sync_outbox WHERE id = ?1")
            .and_then(|mut statement| statement.execute(params![id]))
            .map_err(|e| OutboxError::from(sql("remove an operation from", &self.path, e)))?;
        Ok(removed > 0)
    }

    fn load_all(&self) -> Result<Vec<Operation>, OutboxError> {
        Ok(select(&self.conn(), &self.path, "", params![])?)
    }

    /// An index range scan on `(status, next_retry_at_ms, seq)`.
    fn ready(&self, now_ms: i64, limit: usize) -> Result<Vec<Operation>, OutboxError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(select(
            &self.conn(),
            &self.path,
            "WHERE status = 'pending' AND next_retry_at_ms <= ?1 \
             ORDER BY next_retry_at_ms, seq LIMIT ?2",
            params![now_ms, limit],
        )?)
    }

    fn next_due_ms(&self) -> Result<Option<i64>, OutboxError> {
        self.conn()
            .prepare_cached(
                "SELECT min(next_retry_at_ms) FROM sync_outbox WHERE status = 'pending'",
            )
            .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
            .map_err(|e| OutboxError::from(sql("read the next due time from", &self.path, e)))
    }

    /// Reads the counts the triggers keep (see the schema) and the oldest
    /// pending operation through its partial index: O(log n).
    fn stats(&self) -> Result<OutboxStats, OutboxError> {
        let count = |n: i64| usize::try_from(n).unwrap_or(0);
        self.conn()
            .prepare_cached(schema::STATS_QUERY)
            .and_then(|mut statement| {
                statement.query_row([], |row| {
                    Ok(OutboxStats {
                        pending: count(row.get(0)?),
                        in_flight: count(row.get(1)?),
                        done: count(row.get(2)?),
                        failed: count(row.get(3)?),
                        oldest_pending_created_at_ms: row.get(4)?,
                        queued_bytes: u64::try_from(row.get::<_, i64>(5)?).unwrap_or(0),
                    })
                })
            })
            .map_err(|e| OutboxError::from(sql("read the counts of", &self.path, e)))
    }
}

/// Rows of the outbox table matching `filter` (SQL after `FROM`), as
/// operations.
pub(crate) fn select(
    conn: &Connection,
    path: &Path,
    filter: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<Vec<Operation>, SqliteStoreError> {
    select_from(conn, path, COLUMNS, filter, params)
}

/// [`select`], with `columns` as the select list (see `schema::columns_of`).
fn select_from(
    conn: &Connection,
    path: &Path,
    columns: &str,
    filter: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<Vec<Operation>, SqliteStoreError> {
    let mut statement = conn
        .prepare_cached(&format!("SELECT {columns} FROM sync_outbox {filter}"))
        .map_err(|e| sql("read operations from", path, e))?;
    let mut rows = statement
        .query(params)
        .map_err(|e| sql("read operations from", path, e))?;
    let mut ops = Vec::new();
    while let Some(row) = rows
        .next()
        .map_err(|e| sql("read operations from", path, e))?
    {
        ops.push(schema::row_to_operation(row, path)?);
    }
    Ok(ops)
}

/// Whether a row with `id` exists; used by the coalescing update, whose target
/// the outbox keeps unclaimable while the transaction is open (so it can only
/// have been discarded).
pub(crate) fn exists(conn: &Connection, path: &Path, id: &str) -> Result<bool, SqliteStoreError> {
    conn.prepare_cached("SELECT 1 FROM sync_outbox WHERE id = ?1")
        .and_then(|mut statement| statement.query_row(params![id], |_| Ok(())).optional())
        .map(|found| found.is_some())
        .map_err(|e| sql("read an operation from", path, e))
}

/// A read-only connection. Without a `-wal` file the database is fully
/// checkpointed, so it is opened `immutable` and creates no file (a plain
/// read-only open of a WAL database would create `-wal` and `-shm` files);
/// with one (a crash left it), read-only, so its committed frames are read,
/// which may create a missing `-shm` file. The database file itself is never
/// written.
pub(crate) fn read_only_connection(path: &Path) -> Result<Connection, SqliteStoreError> {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    if Path::new(&wal).exists() {
        return Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| sql("open", path, e));
    }
    let absolute = std::path::absolute(path).map_err(|source| SqliteStoreError::Io {
        op: "resolve",
        path: path.to_path_buf(),
        source,
    })?;
    let mut uri = String::from("file:");
    for c in absolute.to_string_lossy().chars() {
        match c {
            // The characters a URI path must escape for SQLite.
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3F"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push_str("?immutable=1");
    Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|e| sql("open", path, e))
}

/// A connection with the config's busy timeout and `SyncPolicy`.
fn connect(
    path: &Path,
    config: &SqliteOutboxStoreConfig,
    flags: OpenFlags,
) -> Result<Connection, SqliteStoreError> {
    let conn = Connection::open_with_flags(path, flags).map_err(|e| sql("open", path, e))?;
    #[cfg(feature = "sqlcipher")]
    if let Some(key) = &config.key {
        unlock(&conn, path, key)?;
    }
    conn.busy_timeout(config.busy_timeout)
        .map_err(|e| sql("set busy_timeout on", path, e))?;
    let synchronous = match config.sync {
        SyncPolicy::Always => "FULL",
        SyncPolicy::Interval(_) | SyncPolicy::Never => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(|e| sql("set synchronous on", path, e))?;
    Ok(conn)
}

/// Gives `conn` the key, and checks it opens the database: SQLCipher only
/// finds out at the first read, so read the schema now. Nothing is written
/// before this succeeds.
#[cfg(feature = "sqlcipher")]
fn unlock(
    conn: &Connection,
    path: &Path,
    key: &crate::DatabaseKey,
) -> Result<(), SqliteStoreError> {
    let plain = {
        let mut header = [0u8; 16];
        File::open(path)
            .and_then(|mut file| file.read_exact(&mut header))
            .is_ok_and(|()| &header == SQLITE_HEADER)
    };
    if plain {
        return Err(SqliteStoreError::KeyMismatch {
            path: path.to_path_buf(),
            reason: "a key was given, but the database is not encrypted",
        });
    }
    conn.pragma_update(None, "key", key.pragma())
        .map_err(|e| sql("set the key of", path, e))?;
    match conn.query_row("SELECT count(*) FROM sqlite_master", [], |row| {
        row.get::<_, i64>(0)
    }) {
        Ok(_) => Ok(()),
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) => {
            Err(SqliteStoreError::KeyMismatch {
                path: path.to_path_buf(),
                reason: "the key does not open this database (a wrong key, or not an SQLCipher \
                         database)",
            })
        }
        Err(e) => Err(sql("read the schema of", path, e)),
    }
}

/// Refuses, before SQLite sees it, a non-empty file whose first bytes are not
/// SQLite's: a file that is not a database is never written to.
fn check_header(path: &Path) -> Result<(), SqliteStoreError> {
    let mut header = [0u8; 16];
    let read = match File::open(path) {
        Ok(mut file) => file.read(&mut header),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(SqliteStoreError::Io {
                op: "open",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    match read {
        Ok(0) => Ok(()),
        Ok(n) if n == header.len() && &header == SQLITE_HEADER => Ok(()),
        Ok(_) => Err(SqliteStoreError::NotADatabase {
            path: path.to_path_buf(),
        }),
        Err(source) => Err(SqliteStoreError::Io {
            op: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Creates the database file owner-only (SQLite gives its `-wal` and `-shm`
/// files the same mode).
fn create_private(path: &Path) -> Result<(), SqliteStoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .map(drop)
        .map_err(|source| SqliteStoreError::Io {
            op: "create",
            path: path.to_path_buf(),
            source,
        })
}

/// The lock next to the database (`<file>.sync-lock`): exclusive for a
/// store, shared for a reader (`None`: no lock file, so no store was ever
/// opened there).
fn lock(path: &Path, shared: bool) -> Result<Option<LockedFile>, SqliteStoreError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".sync-lock");
    let lock_path = PathBuf::from(lock_path);
    let taken = if shared {
        LockedFile::shared(&lock_path)
    } else {
        LockedFile::exclusive(&lock_path).map(Some)
    };
    taken.map_err(|e| match e {
        WalError::Locked { holder, .. } => SqliteStoreError::Locked {
            path: path.to_path_buf(),
            holder,
        },
        WalError::Io { op, path, source } => SqliteStoreError::Io { op, path, source },
        other => SqliteStoreError::Io {
            op: "lock",
            path: lock_path.clone(),
            source: std::io::Error::other(other),
        },
    })
}

/// Under `SyncPolicy::Interval`: checkpoints (which sync the WAL) on a
/// connection of its own, every interval.
struct Checkpointer {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl Checkpointer {
    fn start(conn: Connection, every: Duration) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                // A busy database checkpoints next time: nothing is lost.
                let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            }
        });
        Self { stop, thread }
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}
