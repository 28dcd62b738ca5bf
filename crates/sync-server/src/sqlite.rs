//! `SqliteIdempotencyStore`: keys in a table of the app's own SQLite
//! database, so a handler's rows and its key's response commit together.
//! Every call runs on tokio's blocking pool, never on a runtime worker.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use axum::response::IntoResponse;
use axum::response::Response;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::error::ServerError;
use crate::fingerprint::Fingerprint;
use crate::group::Member;
use crate::handle::Idempotency;
use crate::key_table::{COMPLETE, CREATE, PURGE, UPGRADE_FROM_V1};
use crate::record::{KEY_COLUMNS, KeyRow, decide};
use crate::response::StoredResponse;
use crate::store::{Begin, IdempotencyStore, KeyClaim, KeyExpiry};
use sync_protocol::SYNC_VERSION;

const TABLE: &str = "sync_idempotency";
/// 1: the first; 2 adds `remembered_until_ms` (the key memory after the
/// response expires). A version 1 table is upgraded on open.
const SCHEMA_VERSION: u32 = 2;

/// Idempotency keys in SQLite, for one server process (SQLite has one
/// writer; a second process on the same file would wait for it).
///
/// The database may hold the app's tables too: that is what
/// [`transaction`](Self::transaction) is for. It is opened in WAL mode with
/// `synchronous=FULL`, so every `Ok` of a write that exactly-once rests on
/// (a response stored, a transaction committed, the app's SQL through
/// [`call`](Self::call)) has been fsynced and survives power loss. A key
/// begun is committed without an fsync of its own: a power loss may forget
/// the claim, which only lets the retry claim the key again, and the effect
/// it guards commits later with an fsync that covers the claim too (the WAL
/// is written in order): one fsync per request, not two. A database whose key table has a version this build does not know
/// is refused, and not written to; one of version 1 is upgraded in one
/// transaction (its completed keys are remembered 30 days from their start).
///
/// # Examples
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// use std::sync::Arc;
/// use axum::{Router, routing::post};
/// use sync_server::{Idempotency, IdempotencyConfig, IdempotencyLayer, ServerError,
///                   SqliteIdempotencyStore, StoredResponse};
///
/// let dir = tempfile::tempdir()?;
/// let store = Arc::new(SqliteIdempotencyStore::open(dir.path().join("server.db")).await?);
/// store.call(|db| db.execute_batch("CREATE TABLE notes (text TEXT)")).await?;
///
/// async fn create(
///     axum::extract::State(store): axum::extract::State<Arc<SqliteIdempotencyStore>>,
///     idem: Idempotency,
///     text: String,
/// ) -> Result<axum::response::Response, ServerError> {
///     // The note and the key's response: one commit.
///     store.transaction(&idem, move |tx| {
///         tx.execute("INSERT INTO notes (text) VALUES (?1)", [&text])?;
///         Ok(StoredResponse::new(http::StatusCode::CREATED))
///     }).await
/// }
///
/// let app: Router = Router::new()
///     .route("/notes", post(create))
///     .layer(IdempotencyLayer::new(store.clone(), IdempotencyConfig::default()))
///     .with_state(store);
/// # let _ = app;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct SqliteIdempotencyStore {
    conn: Arc<Mutex<Connection>>,
    /// The change feed's pulls read here, beside the writer (WAL mode lets
    /// a reader and the writer run at once).
    reader: Arc<Mutex<Connection>>,
    path: Arc<PathBuf>,
    /// Set while the writer may still be at `synchronous=NORMAL` (a key
    /// was begun and restoring `FULL` failed): every write first restores
    /// it, or fails, so no effect ever commits without its fsync.
    relaxed: Arc<std::sync::atomic::AtomicBool>,
}

mod feed;

impl SqliteIdempotencyStore {
    /// Opens (creating if needed) the database at `path` and its key table.
    ///
    /// # Errors
    ///
    /// [`ServerError::Sqlite`] if the file cannot be opened or is not a
    /// database; [`ServerError::UnknownSchema`] for a key table of another
    /// version, or one without a version; [`ServerError::BadConfig`] if the
    /// database cannot be put in WAL mode (an in-memory database, say);
    /// [`ServerError::Blocking`].
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, ServerError> {
        let path = path.as_ref().to_path_buf();
        let shown = path.clone();
        let conn = blocking(move || {
            let err = |op| {
                let path = shown.clone();
                move |source| ServerError::Sqlite { op, path, source }
            };
            let conn = Connection::open(&shown).map_err(err("open"))?;
            conn.busy_timeout(std::time::Duration::from_secs(30))
                .map_err(err("set busy_timeout"))?;
            // Read before anything is written: a file that is not a
            // database, or holds a key table this build does not know, is
            // refused as it is.
            let version = read_version(&conn).map_err(err("read the key table's version"))?;
            if let Version::Other(found) = version {
                return Err(ServerError::UnknownSchema {
                    table: TABLE,
                    found,
                    expected: SCHEMA_VERSION,
                });
            }
            let mode: String = conn
                .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
                .map_err(err("set journal_mode"))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(ServerError::BadConfig(format!(
                    "{} stays in journal mode {mode}, not WAL",
                    shown.display()
                )));
            }
            conn.pragma_update(None, "synchronous", "FULL")
                .map_err(err("set synchronous"))?;
            if matches!(version, Version::None | Version::V1)
                && let Version::Other(found) = create(&conn).map_err(err("create the key table"))?
            {
                return Err(ServerError::UnknownSchema {
                    table: TABLE,
                    found,
                    expected: SCHEMA_VERSION,
                });
            }
            // The change feed's tables: checked before anything is written
            // to them, made if missing.
            let found = feed::read_feed_version(&conn).map_err(err("read the feed's version"))?;
            feed::check_feed_version(found.clone())?;
            if found.is_none() {
                feed::check_feed_version(
                    feed::create_feed(&conn).map_err(err("create the feed's tables"))?,
                )?;
            }
            let reader = Connection::open(&shown).map_err(err("open a reader"))?;
            reader
                .busy_timeout(std::time::Duration::from_secs(30))
                .map_err(err("set busy_timeout"))?;
            reader
                .pragma_update(None, "query_only", true)
                .map_err(err("make the reader read-only"))?;
            Ok((conn, reader))
        })
        .await?;
        let (conn, reader) = conn;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            reader: Arc::new(Mutex::new(reader)),
            path: Arc::new(path),
            relaxed: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        })
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the store's connection, on the blocking pool: the app's
    /// own SQL (schema, reads). Writes made here are durable on `Ok` when
    /// they committed (autocommit statements do).
    ///
    /// # Errors
    ///
    /// [`ServerError::Sqlite`] with `f`'s error; [`ServerError::Blocking`].
    pub async fn call<T, F>(&self, f: F) -> Result<T, ServerError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let this = self.clone();
        blocking(move || {
            let mut conn = this.lock();
            this.ensure_synced(&conn)?;
            f(&mut conn).map_err(|e| this.error("run the app's SQL", e))
        })
        .await
    }

    /// The transactional form: runs `f` in one `BEGIN IMMEDIATE` transaction
    /// together with storing the response `f` returns under `idem`'s key,
    /// and commits both at once. On `Ok` the commit has been fsynced: the
    /// effect and the key's record survive any crash together, and a crash
    /// before leaves neither (the retry runs `f` again, once).
    ///
    /// Changes `f` records in the feed ([`SqliteIdempotencyStore::record`])
    /// commit with it, and the response (stored, and so replayed) carries
    /// their version in `sync-version`; a response of an `f` that recorded
    /// nothing has no such header.
    ///
    /// `f` runs on the blocking pool, holding the store's one connection:
    /// it must not call the store itself (that would wait on itself). A 4xx
    /// it returns is stored and replayed like any response. A response the
    /// client retries (5xx, 408, 409, 425, 429) is returned but not stored:
    /// the effect is rolled back and the layer releases the key. An `Err`
    /// (or a panic) rolls everything back too, and the handler's error
    /// response (a 5xx) releases the key, so the retry runs again.
    ///
    /// # Errors
    ///
    /// [`ServerError::Sqlite`] with `f`'s error or the commit's;
    /// [`ServerError::KeyLost`] if the request's lease was taken over (the
    /// effect is rolled back); [`ServerError::Blocking`].
    pub async fn transaction<F>(&self, idem: &Idempotency, f: F) -> Result<Response, ServerError>
    where
        F: FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<StoredResponse> + Send + 'static,
    {
        let this = self.clone();
        let claim = idem.claim.clone();
        let expiry = idem.expiry;
        let (response, committed) = blocking(move || {
            let mut conn = this.lock();
            this.ensure_synced(&conn)?;
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| this.error("begin a transaction", e))?;
            let before =
                feed::last_version(&tx).map_err(|e| this.error("read the feed's clock", e))?;
            let mut response =
                f(&tx).map_err(|e| this.error("run the handler's transaction", e))?;
            if !response.is_storable() {
                // Dropping `tx` rolls the effect back; the layer releases
                // the key.
                return Ok((response, false));
            }
            // The handler recorded changes: its answer (and every replay)
            // says the version they committed at.
            let after =
                feed::last_version(&tx).map_err(|e| this.error("read the feed's clock", e))?;
            if after > before {
                response = response.with_header(SYNC_VERSION, &after.to_string());
            }
            if !complete_in(&tx, &claim, &response, expiry)
                .map_err(|e| this.error("store the response", e))?
            {
                // Dropping `tx` rolls the effect back.
                return Err(ServerError::KeyLost { key: claim.key });
            }
            tx.commit().map_err(|e| this.error("commit", e))?;
            Ok((response, true))
        })
        .await?;
        if committed {
            idem.mark_committed();
        }
        Ok(response.into_response())
    }

    /// Applies a group's members with `apply`, in order, inside `tx` (the
    /// transactional form's, from [`SqliteIdempotencyStore::transaction`]),
    /// all or none: under a savepoint, so a member `apply` refuses
    /// ([`Member::Refused`]) undoes every member applied before it, feed
    /// changes included, and its refusal is the group's response (stored
    /// under the key with nothing applied). All applied: `200` with the
    /// [`GroupResponse`](sync_protocol::GroupResponse) of their results,
    /// committed with them by `transaction`. An empty group is refused
    /// (`422`, `empty_group`).
    ///
    /// # Errors
    ///
    /// `apply`'s error (every member undone; `transaction` then rolls back
    /// and the key is released, so the retry runs the group again), or the
    /// savepoint's.
    ///
    /// # Examples
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
    /// use http::StatusCode;
    /// use sync_server::{GroupRequest, Idempotency, Member, ServerError, SqliteIdempotencyStore, StoredResponse};
    ///
    /// /// `POST /sync/group`: a transfer's debit and credit, together or not at all.
    /// async fn group(
    ///     store: SqliteIdempotencyStore,
    ///     idem: Idempotency,
    ///     group: GroupRequest, // parsed from the body (axum's `Json` does it)
    /// ) -> Result<axum::response::Response, ServerError> {
    ///     store
    ///         .transaction(&idem, move |tx| {
    ///             SqliteIdempotencyStore::apply_group(tx, &group, |tx, op| {
    ///                 let cents: i64 = serde_json::from_str::<serde_json::Value>(&op.payload)
    ///                     .ok()
    ///                     .and_then(|v| v["cents"].as_i64())
    ///                     .unwrap_or(0);
    ///                 let delta = if op.kind == "account.debit" { -cents } else { cents };
    ///                 let balance: i64 = tx.query_row(
    ///                     "UPDATE accounts SET balance = balance + ?1 WHERE path = ?2 RETURNING balance",
    ///                     sync_server::rusqlite::params![delta, op.target],
    ///                     |row| row.get(0),
    ///                 )?;
    ///                 if balance < 0 {
    ///                     let refusal = serde_json::json!({ "error": "insufficient_funds" });
    ///                     return Ok(Member::Refused(StoredResponse::json(StatusCode::UNPROCESSABLE_ENTITY, &refusal)));
    ///                 }
    ///                 Ok(Member::Applied(serde_json::json!({ "balance": balance })))
    ///             })
    ///         })
    ///         .await
    /// }
    /// # let _ = group;
    /// # });
    /// # Ok::<_, std::io::Error>(())
    /// ```
    pub fn apply_group<F>(
        tx: &rusqlite::Transaction<'_>,
        group: &sync_protocol::GroupRequest,
        mut apply: F,
    ) -> rusqlite::Result<StoredResponse>
    where
        F: FnMut(
            &rusqlite::Transaction<'_>,
            &sync_protocol::GroupOperation,
        ) -> rusqlite::Result<Member>,
    {
        if group.operations.is_empty() {
            return Ok(crate::group::empty_group());
        }
        tx.execute_batch("SAVEPOINT sync_group")?;
        let undo = || tx.execute_batch("ROLLBACK TO sync_group; RELEASE sync_group");
        let mut results = Vec::with_capacity(group.operations.len());
        for op in &group.operations {
            match apply(tx, op) {
                Ok(Member::Applied(result)) => results.push(result),
                Ok(Member::Refused(refusal)) => {
                    undo()?;
                    return Ok(refusal);
                }
                Err(e) => {
                    // The transaction rolls back anyway; undo so nothing
                    // of the group stays even for a caller that commits.
                    let _ = undo();
                    return Err(e);
                }
            }
        }
        tx.execute_batch("RELEASE sync_group")?;
        Ok(crate::group::group_applied(results))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn error(&self, op: &'static str, source: rusqlite::Error) -> ServerError {
        ServerError::Sqlite {
            op,
            path: self.path.to_path_buf(),
            source,
        }
    }

    fn begin_blocking(
        &self,
        scope: &str,
        key: &str,
        fingerprint: Fingerprint,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Begin, ServerError> {
        let mut conn = self.lock();
        self.ensure_synced(&conn)?;
        // A claim is committed without an fsync of its own: nothing depends
        // on it surviving a power loss (the retry would claim the key
        // again), and the effect it guards commits later with an fsync that
        // covers it too, since the WAL is written in order. One fsync per
        // request instead of two.
        self.relaxed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| self.error("relax synchronous for a claim", e))?;
        let begun = self.claim_in(&mut conn, scope, key, fingerprint, now_ms, lease_ms);
        self.ensure_synced(&conn)?;
        begun
    }

    /// Restores `synchronous=FULL` on the writer if a claim left it relaxed.
    fn ensure_synced(&self, conn: &Connection) -> Result<(), ServerError> {
        if self.relaxed.load(std::sync::atomic::Ordering::SeqCst) {
            conn.pragma_update(None, "synchronous", "FULL")
                .map_err(|e| self.error("restore synchronous=FULL", e))?;
            self.relaxed
                .store(false, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(())
    }

    /// The claim's transaction of [`begin_blocking`](Self::begin_blocking).
    fn claim_in(
        &self,
        conn: &mut Connection,
        scope: &str,
        key: &str,
        fingerprint: Fingerprint,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Begin, ServerError> {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.error("begin a transaction", e))?;
        let row = tx
            .query_row(
                &format!("SELECT {KEY_COLUMNS} FROM {TABLE} WHERE scope = ?1 AND key = ?2"),
                params![scope, key],
                |r| {
                    Ok(KeyRow {
                        scope: scope.to_owned(),
                        key: key.to_owned(),
                        fingerprint: r.get(0)?,
                        state: r.get(1)?,
                        token: r.get(2)?,
                        lease_until_ms: r.get(3)?,
                        status: r.get(4)?,
                        headers: r.get(5)?,
                        body: r.get(6)?,
                        expires_at_ms: r.get(7)?,
                        remembered_until_ms: r.get(8)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.error("read a key", e))?;
        let record = row.map(|row| row.into_record(TABLE)).transpose()?;
        let begin = if let Some(answer) = decide(record.as_ref(), &fingerprint, now_ms).answer() {
            answer
        } else {
            let claim = KeyClaim::new(scope, key, fingerprint);
            tx.execute(
                &format!(
                    "INSERT OR REPLACE INTO {TABLE} (scope, key, fingerprint, state, token, \
                     lease_until_ms, created_at_ms) VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6)"
                ),
                params![
                    scope,
                    key,
                    fingerprint.as_bytes().as_slice(),
                    claim.token,
                    now_ms.saturating_add(lease_ms),
                    now_ms
                ],
            )
            .map_err(|e| self.error("claim a key", e))?;
            Begin::Started(claim)
        };
        tx.commit().map_err(|e| self.error("commit a key", e))?;
        Ok(begin)
    }
}

#[async_trait::async_trait]
impl IdempotencyStore for SqliteIdempotencyStore {
    async fn begin(
        &self,
        scope: &str,
        key: &str,
        fingerprint: Fingerprint,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Begin, ServerError> {
        let this = self.clone();
        let (scope, key) = (scope.to_owned(), key.to_owned());
        blocking(move || this.begin_blocking(&scope, &key, fingerprint, now_ms, lease_ms)).await
    }

    async fn complete(
        &self,
        claim: &KeyClaim,
        response: &StoredResponse,
        expiry: KeyExpiry,
    ) -> Result<(), ServerError> {
        let this = self.clone();
        let (claim, response) = (claim.clone(), response.clone());
        blocking(move || {
            let mut conn = this.lock();
            this.ensure_synced(&conn)?;
            let tx = conn
                .transaction()
                .map_err(|e| this.error("begin a transaction", e))?;
            if !complete_in(&tx, &claim, &response, expiry)
                .map_err(|e| this.error("store the response", e))?
            {
                return Err(ServerError::KeyLost { key: claim.key });
            }
            tx.commit().map_err(|e| this.error("commit", e))
        })
        .await
    }

    async fn release(&self, claim: &KeyClaim) -> Result<(), ServerError> {
        let this = self.clone();
        let claim = claim.clone();
        blocking(move || {
            this.lock()
                .execute(
                    &format!(
                        "DELETE FROM {TABLE} WHERE scope = ?1 AND key = ?2 AND state = 0 AND token = ?3"
                    ),
                    params![claim.scope, claim.key, claim.token],
                )
                .map(drop)
                .map_err(|e| this.error("release a key", e))
        })
        .await
    }

    async fn purge_expired(&self, now_ms: i64) -> Result<u64, ServerError> {
        let this = self.clone();
        blocking(move || {
            let conn = this.lock();
            // Three statements, each on its own partial index; the first
            // trims responses and forgets no key.
            let mut purged = 0;
            for (i, sql) in PURGE.iter().enumerate() {
                let sql = sql.replace("{TABLE}", TABLE).replace("$1", "?1");
                let changed = conn
                    .execute(&sql, [now_ms])
                    .map_err(|e| this.error("purge expired keys", e))?;
                if i > 0 {
                    purged += changed;
                }
            }
            Ok(purged as u64)
        })
        .await
    }
}

/// Marks the claim's key completed with `response`, inside `tx`; `false` if
/// the claim no longer holds the key (taken over).
fn complete_in(
    tx: &rusqlite::Transaction<'_>,
    claim: &KeyClaim,
    response: &StoredResponse,
    expiry: KeyExpiry,
) -> rusqlite::Result<bool> {
    let changed = tx.execute(
        &COMPLETE.replace("{TABLE}", TABLE).replace('$', "?"),
        params![
            i64::from(response.status),
            response.headers_json(),
            response.body,
            expiry.response_until_ms,
            expiry.remembered_until_ms,
            claim.scope,
            claim.key,
            claim.token
        ],
    )?;
    Ok(changed == 1)
}

/// What a database says of its key table.
enum Version {
    /// This build's version.
    Known,
    /// Version 1: upgraded on open.
    V1,
    /// No key table and no version: a new database.
    None,
    /// Another version, or a key table without one (`"none"`).
    Other(String),
}

/// Reads the key table's version without writing anything.
fn read_version(conn: &Connection) -> rusqlite::Result<Version> {
    let has = |name: &str| -> rusqlite::Result<bool> {
        conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [name],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)
    };
    let found: Option<String> = if has("sync_idempotency_meta")? {
        conn.query_row(
            "SELECT value FROM sync_idempotency_meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()?
    } else {
        None
    };
    Ok(match found {
        Some(v) if v == SCHEMA_VERSION.to_string() => Version::Known,
        Some(v) if v == "1" => Version::V1,
        Some(v) => Version::Other(v),
        None if has(TABLE)? => Version::Other("none".to_owned()),
        None => Version::None,
    })
}

/// Creates the key table and its version in a new database, or upgrades a
/// version 1 table, in one `BEGIN IMMEDIATE` transaction that reads the
/// version again first (another process may have done it meanwhile).
/// Returns what it found then.
fn create(conn: &Connection) -> rusqlite::Result<Version> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let created = read_version(conn).and_then(|version| {
        let sql = match version {
            Version::None => CREATE,
            Version::V1 => UPGRADE_FROM_V1,
            Version::Known | Version::Other(_) => return Ok(version),
        };
        conn.execute_batch(
            &sql.replace("{TABLE}", TABLE)
                .replace("{SCHEMA_VERSION}", &SCHEMA_VERSION.to_string())
                .replace("BYTEA", "BLOB")
                .replace("BIGINT", "INTEGER"),
        )?;
        Ok(version)
    });
    match created {
        Ok(version) => conn.execute_batch("COMMIT").map(|()| version),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Runs `f` on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ServerError> + Send + 'static,
) -> Result<T, ServerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ServerError::Blocking)?
}
