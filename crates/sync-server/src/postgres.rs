//! `PostgresIdempotencyStore`: keys in a PostgreSQL table shared by every
//! server instance; the primary key on `(scope, key)` and row locks are
//! what dedupe across instances. `PgEffect` is the transactional form.

use std::fmt;

use axum::response::{IntoResponse, Response};
use deadpool_postgres::{Object, Pool};
use tokio_postgres::Row;

use crate::error::ServerError;
use crate::feed::table::{
    CREATE as CREATE_FEED, CREATE_POSTGRES as CREATE_FEED_POSTGRES, FEED_SCHEMA_VERSION,
    FEED_TABLE, READ_VERSION as READ_FEED_VERSION,
};
use crate::fingerprint::Fingerprint;
use crate::handle::Idempotency;
use crate::key_table::{COMPLETE, CREATE, PURGE, UPGRADE_FROM_V1};
use crate::record::{KEY_COLUMNS, KeyRow, decide};
use crate::response::StoredResponse;
use crate::store::{Begin, IdempotencyStore, KeyClaim, KeyExpiry};
use sync_protocol::SYNC_VERSION;

const TABLE: &str = "sync_idempotency";
/// 1: the first; 2 adds `remembered_until_ms` (the key memory). A version 1
/// table is upgraded by `migrate`.
const SCHEMA_VERSION: u32 = 2;

/// Idempotency keys in PostgreSQL, for any number of server instances on
/// one database. Each call is one transaction on a pooled connection; `Ok`
/// means PostgreSQL committed it (durable as the server's `fsync` and
/// `synchronous_commit` settings make commits, by default on disk), except
/// a key begun: its claim commits without waiting for the WAL flush
/// (`SET LOCAL synchronous_commit TO OFF`). A crash may forget the claim,
/// which only lets the retry claim the key again; the effect it guards
/// commits later with a flush that covers the claim too (the WAL is written
/// in order).
///
/// # Examples
///
/// ```no_run
/// # async fn run() -> Result<(), sync_server::ServerError> {
/// use sync_server::{Idempotency, PostgresIdempotencyStore, ServerError, StoredResponse};
///
/// let store = PostgresIdempotencyStore::connect("host=/run/postgresql dbname=app", 16)?;
/// store.migrate().await?;
///
/// async fn create(store: &PostgresIdempotencyStore, idem: &Idempotency, text: &str)
///     -> Result<axum::response::Response, ServerError> {
///     let effect = store.transaction(idem).await?;
///     effect.client().execute("INSERT INTO notes (text) VALUES ($1)", &[&text]).await
///         .map_err(|source| ServerError::Postgres { op: "insert a note", source })?;
///     // The note and the key's response: one commit.
///     effect.commit(StoredResponse::new(http::StatusCode::CREATED)).await
/// }
/// # let _ = create;
/// # Ok(()) }
/// # let _ = run;
/// ```
#[derive(Clone)]
pub struct PostgresIdempotencyStore {
    pool: Pool,
}

impl fmt::Debug for PostgresIdempotencyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresIdempotencyStore")
            .field("pool", &self.pool.status())
            .finish()
    }
}

impl PostgresIdempotencyStore {
    /// A store on a pool of at most `max_connections` connections to the
    /// database `config` names (a libpq-style string: `host=... port=...
    /// user=... dbname=...`). No connection is made until one is needed.
    ///
    /// # Errors
    ///
    /// [`ServerError::Postgres`] if `config` cannot be parsed.
    pub fn connect(config: &str, max_connections: usize) -> Result<Self, ServerError> {
        let pg: tokio_postgres::Config =
            config.parse().map_err(|source| ServerError::Postgres {
                op: "parse the connection string",
                source,
            })?;
        let manager = deadpool_postgres::Manager::from_config(
            pg,
            tokio_postgres::NoTls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(1))
            // Waiting for a free connection, connecting, and checking a
            // pooled one are each bounded: a database that is gone or
            // saturated gives `ServerError::Pool` (503 from the layer and from
            // a handler's transaction) well within a key's lease, not a hang.
            .wait_timeout(Some(std::time::Duration::from_secs(5)))
            .create_timeout(Some(std::time::Duration::from_secs(5)))
            .recycle_timeout(Some(std::time::Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| ServerError::BadConfig(e.to_string()))?;
        Ok(Self { pool })
    }

    /// A store on a pool the app already has.
    #[must_use]
    pub fn from_pool(pool: Pool) -> Self {
        Self { pool }
    }

    /// The pool, for the app's own queries.
    #[must_use]
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Creates the key table if it is missing (safe to run from every
    /// instance at once), upgrades a version 1 table (its completed keys
    /// are remembered 30 days from their start), or checks the version of
    /// the one there; then the same for the change feed's tables
    /// (`sync_feed`, `sync_feed_meta`, `sync_feed_seq`). A database with
    /// another version of either, or with a table but no version, is
    /// refused and not written to.
    ///
    /// A feed restored into another cluster (a `pg_dump` loaded elsewhere)
    /// carries versions from the old cluster's transaction ids, which may
    /// be far above the new one's: no reader would see those changes until
    /// the new ids caught up. `migrate` notices (it keeps the last
    /// transaction id it ran under) and moves every change to its own
    /// version, in their order, and the compaction horizon with them, so
    /// devices start again from a snapshot that has everything.
    ///
    /// # Errors
    ///
    /// [`ServerError::UnknownSchema`]; [`ServerError::Postgres`];
    /// [`ServerError::Pool`].
    pub async fn migrate(&self) -> Result<(), ServerError> {
        let mut client = self.client().await?;
        // One transaction under a transaction-scoped advisory lock: instances
        // migrating at once wait for each other, and nothing is left locked
        // whatever fails. The version is read before anything is written.
        let tx = client
            .transaction()
            .await
            .map_err(pg("begin the migration"))?;
        tx.batch_execute("SELECT pg_advisory_xact_lock(7305310452)")
            .await
            .map_err(pg("lock the migration"))?;
        let has_meta: bool = tx
            .query_one(
                "SELECT to_regclass('sync_idempotency_meta') IS NOT NULL",
                &[],
            )
            .await
            .map_err(pg("look for the key table"))?
            .get(0);
        let found: Option<String> = if has_meta {
            tx.query_opt(
                "SELECT value FROM sync_idempotency_meta WHERE key = 'schema_version'",
                &[],
            )
            .await
            .map_err(pg("read the schema version"))?
            .map(|row| row.get(0))
        } else {
            None
        };
        let found = match found {
            None if has_table(&tx, TABLE).await? => Some("none".to_owned()),
            found => found,
        };
        let ddl = match found {
            Some(found) if found == SCHEMA_VERSION.to_string() => "",
            Some(found) if found == "1" => UPGRADE_FROM_V1,
            Some(found) => {
                return Err(ServerError::UnknownSchema {
                    table: TABLE,
                    found,
                    expected: SCHEMA_VERSION,
                });
            }
            None => CREATE,
        };
        let ddl = ddl
            .replace("{TABLE}", TABLE)
            .replace("{SCHEMA_VERSION}", &SCHEMA_VERSION.to_string());
        tx.batch_execute(&ddl)
            .await
            .map_err(pg("create the key table"))?;
        // The change feed's tables, checked before anything is written to
        // them and made if missing.
        let feed = if has_table(&tx, "sync_feed_meta").await? {
            tx.query_opt(READ_FEED_VERSION, &[])
                .await
                .map_err(pg("read the feed's version"))?
                .map_or_else(|| "none".to_owned(), |row| row.get(0))
        } else {
            tx.batch_execute(&format!("{CREATE_FEED}{CREATE_FEED_POSTGRES}"))
                .await
                .map_err(pg("create the feed's tables"))?;
            FEED_SCHEMA_VERSION.to_string()
        };
        if feed != FEED_SCHEMA_VERSION.to_string() {
            return Err(ServerError::UnknownSchema {
                table: FEED_TABLE,
                found: feed,
                expected: FEED_SCHEMA_VERSION,
            });
        }
        feed::rebase_after_restore(&tx).await?;
        tx.commit().await.map_err(pg("commit the migration"))
    }

    /// The transactional form: a transaction on its own connection, for the
    /// handler's effect; [`PgEffect::commit`] stores the response under
    /// `idem`'s key in the same transaction and commits both. Dropped
    /// without a commit, the transaction is rolled back (its connection is
    /// closed rather than returned to the pool).
    ///
    /// # Errors
    ///
    /// [`ServerError::Pool`]; [`ServerError::Postgres`].
    pub async fn transaction(&self, idem: &Idempotency) -> Result<PgEffect, ServerError> {
        // Built before BEGIN is sent: if this future is dropped mid-BEGIN,
        // the effect's Drop closes the connection rather than pooling it.
        let effect = PgEffect {
            client: Some(self.client().await?),
            idem: idem.clone(),
            recorded: std::sync::atomic::AtomicI64::new(i64::MIN),
        };
        effect
            .client()
            .batch_execute("BEGIN")
            .await
            .map_err(pg("begin a transaction"))?;
        Ok(effect)
    }

    async fn client(&self) -> Result<Object, ServerError> {
        self.pool.get().await.map_err(ServerError::Pool)
    }
}

mod feed;

/// A transaction of the transactional form, from
/// [`PostgresIdempotencyStore::transaction`]: the handler writes its effect
/// through [`client`](Self::client), then [`commit`](Self::commit)s it with
/// the key's response.
pub struct PgEffect {
    /// `None` only once committed.
    client: Option<Object>,
    idem: Idempotency,
    /// The version of the changes [`record`](Self::record)ed, `i64::MIN`
    /// while none was.
    recorded: std::sync::atomic::AtomicI64,
}

impl fmt::Debug for PgEffect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgEffect")
            .field("key", &self.idem.key())
            .finish_non_exhaustive()
    }
}

impl PgEffect {
    /// The connection the transaction is open on: every statement run
    /// through it is part of the transaction.
    ///
    /// # Panics
    ///
    /// Never: the connection is only taken once `commit` has committed,
    /// and `commit` consumes the value.
    #[must_use]
    pub fn client(&self) -> &tokio_postgres::Client {
        self.pooled()
    }

    /// The pooled connection (with its statement cache).
    fn pooled(&self) -> &Object {
        match &self.client {
            Some(client) => client,
            None => unreachable!("a PgEffect is consumed by its commit"),
        }
    }

    /// Stores `response` under the request's key and commits it together
    /// with the effect (and the changes [`record`](Self::record)ed, whose
    /// version the stored response then carries in `sync-version`). On `Ok`, PostgreSQL has committed both, except for a
    /// response the client retries (5xx, 408, 409, 425, 429): that one is
    /// returned but not stored, the effect is rolled back, and the layer
    /// releases the key so the retry runs again. Dropped before it returns
    /// (a client gone, a timeout), nothing is committed.
    ///
    /// # Errors
    ///
    /// [`ServerError::KeyLost`] if the request's lease was taken over (the
    /// effect is rolled back); [`ServerError::Postgres`] (rolled back, or,
    /// for an error of the commit itself, unknown: the key's retry shows
    /// which).
    pub async fn commit(mut self, mut response: StoredResponse) -> Result<Response, ServerError> {
        if !response.is_storable() {
            // A status the client retries is not stored: roll the effect
            // back and let the layer release the key. A rolled-back
            // connection goes back to the pool; if the ROLLBACK fails or is
            // cancelled, Drop closes it.
            if self.client().batch_execute("ROLLBACK").await.is_ok() {
                drop(self.client.take());
            }
            return Ok(response.into_response());
        }
        // The connection stays in `self` until COMMIT has succeeded: on any
        // error, and if this future is dropped at any await, Drop closes it
        // and the server rolls the transaction back. It never goes back to
        // the pool mid-transaction.
        let recorded = self.recorded.load(std::sync::atomic::Ordering::Relaxed);
        if recorded != i64::MIN {
            // The answer (and every replay) says the version the recorded
            // changes commit at.
            response = response.with_header(SYNC_VERSION, &recorded.to_string());
        }
        let claim = self.idem.claim.clone();
        let changed = complete_on(self.pooled(), &claim, &response, self.idem.expiry)
            .await
            .map_err(pg("store the response"))?;
        if changed != 1 {
            return Err(ServerError::KeyLost { key: claim.key });
        }
        self.client()
            .batch_execute("COMMIT")
            .await
            .map_err(pg("commit"))?;
        // Committed: the connection is clean, back to the pool with it.
        drop(self.client.take());
        self.idem.mark_committed();
        Ok(response.into_response())
    }

    /// Undoes every statement run in the transaction so far (the effect,
    /// changes [`record`](Self::record)ed) and then stores `refusal` under
    /// the request's key and commits that alone, as
    /// [`commit`](Self::commit) would: for a handler that finds, part-way
    /// through, that it must refuse: a group member refused
    /// ([`Member::Refused`](crate::Member::Refused)) must undo the members
    /// applied before it, so the group is all or nothing
    /// (`docs/PROTOCOL.md`, "Groups"). A refusal the client retries (5xx,
    /// 408, 409, 425, 429) is not stored, as with `commit`.
    ///
    /// # Errors
    ///
    /// As [`commit`](Self::commit); [`ServerError::Postgres`] if the undo
    /// fails (nothing is committed then).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use http::StatusCode;
    /// use sync_server::{GroupRequest, Idempotency, PostgresIdempotencyStore, ServerError, StoredResponse};
    ///
    /// async fn group(
    ///     store: &PostgresIdempotencyStore,
    ///     idem: Idempotency,
    ///     group: GroupRequest, // parsed from the body (axum's `Json` does it)
    /// ) -> Result<axum::response::Response, ServerError> {
    ///     let effect = store.transaction(&idem).await?;
    ///     let mut results = Vec::new();
    ///     for op in &group.operations {
    ///         let row = effect
    ///             .client()
    ///             .query_one(
    ///                 "UPDATE accounts SET balance = balance + $1 WHERE path = $2 RETURNING balance",
    ///                 &[&if op.kind == "account.debit" { -500_i64 } else { 500 }, &op.target],
    ///             )
    ///             .await
    ///             .map_err(|source| ServerError::Postgres { op: "apply a member", source })?;
    ///         let balance: i64 = row.get(0);
    ///         if balance < 0 {
    ///             let refusal = serde_json::json!({ "error": "insufficient_funds" });
    ///             return effect.refuse(StoredResponse::json(StatusCode::UNPROCESSABLE_ENTITY, &refusal)).await;
    ///         }
    ///         results.push(serde_json::json!({ "balance": balance }));
    ///     }
    ///     effect.commit(sync_server::group_applied(results)).await
    /// }
    /// # let _ = group;
    /// ```
    pub async fn refuse(self, refusal: StoredResponse) -> Result<Response, ServerError> {
        // ROLLBACK and a new BEGIN: the key's claim was committed by the
        // layer before the handler ran, so storing the refusal needs
        // nothing of what is undone. If this future is dropped in between,
        // Drop closes the connection.
        self.client()
            .batch_execute("ROLLBACK")
            .await
            .map_err(pg("undo the refused effect"))?;
        self.recorded
            .store(i64::MIN, std::sync::atomic::Ordering::Relaxed);
        self.client()
            .batch_execute("BEGIN")
            .await
            .map_err(pg("begin a transaction"))?;
        self.commit(refusal).await
    }
}

impl Drop for PgEffect {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Not committed: close the connection instead of handing it back
            // mid-transaction; the server rolls back.
            drop(Object::take(client));
        }
    }
}

#[async_trait::async_trait]
impl IdempotencyStore for PostgresIdempotencyStore {
    async fn begin(
        &self,
        scope: &str,
        key: &str,
        fingerprint: Fingerprint,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Begin, ServerError> {
        let mut client = self.client().await?;
        // A key deleted between our insert and our read (a released 5xx) is
        // simply tried again.
        for _ in 0..3 {
            if let Some(claim) =
                claim_new(&client, scope, key, fingerprint, now_ms, lease_ms).await?
            {
                return Ok(Begin::Started(claim));
            }
            // The key exists: read it, and take it over if it may be. A
            // takeover commits as a claim does, without waiting for its WAL
            // flush (`claim_new`); the SET travels with the read.
            let tx = client
                .transaction()
                .await
                .map_err(pg("begin a transaction"))?;
            let read = format!(
                "SELECT {KEY_COLUMNS} FROM {TABLE} WHERE scope = $1 AND key = $2 FOR UPDATE"
            );
            let ((), row) = tokio::try_join!(
                async {
                    tx.batch_execute("SET LOCAL synchronous_commit TO OFF")
                        .await
                        .map_err(pg("relax the claim's commit"))
                },
                async {
                    tx.query_opt(&read, &[&scope, &key])
                        .await
                        .map_err(pg("read a key"))
                }
            )?;
            let Some(row) = row else {
                continue;
            };
            let claim = KeyClaim::new(scope, key, fingerprint);
            let record = key_row(scope, key, &row)?.into_record(TABLE)?;
            let begin = if let Some(answer) = decide(Some(&record), &fingerprint, now_ms).answer() {
                answer
            } else {
                tx.execute(
                    &format!(
                        "UPDATE {TABLE} SET fingerprint = $3, state = 0, token = $4, \
                         lease_until_ms = $5, status = NULL, headers = NULL, body = NULL, \
                         expires_at_ms = NULL, remembered_until_ms = NULL, created_at_ms = $6 \
                         WHERE scope = $1 AND key = $2"
                    ),
                    &[
                        &scope,
                        &key,
                        &fingerprint.as_bytes().as_slice(),
                        &claim.token,
                        &now_ms.saturating_add(lease_ms),
                        &now_ms,
                    ],
                )
                .await
                .map_err(pg("take a key over"))?;
                Begin::Started(claim)
            };
            tx.commit().await.map_err(pg("commit a key"))?;
            return Ok(begin);
        }
        // Claimed and released three times while we looked: say "busy".
        Ok(Begin::InProgress {
            retry_after_ms: 1_000,
        })
    }

    async fn complete(
        &self,
        claim: &KeyClaim,
        response: &StoredResponse,
        expiry: KeyExpiry,
    ) -> Result<(), ServerError> {
        let client = self.client().await?;
        let changed = complete_on(&client, claim, response, expiry)
            .await
            .map_err(pg("store the response"))?;
        if changed == 1 {
            Ok(())
        } else {
            Err(ServerError::KeyLost {
                key: claim.key.clone(),
            })
        }
    }

    async fn release(&self, claim: &KeyClaim) -> Result<(), ServerError> {
        let client = self.client().await?;
        client
            .execute(
                &format!(
                    "DELETE FROM {TABLE} WHERE scope = $1 AND key = $2 AND state = 0 AND token = $3"
                ),
                &[&claim.scope, &claim.key, &claim.token],
            )
            .await
            .map_err(pg("release a key"))?;
        Ok(())
    }

    async fn purge_expired(&self, now_ms: i64) -> Result<u64, ServerError> {
        let client = self.client().await?;
        // Three statements, each on its own partial index; the first trims
        // responses and forgets no key.
        let mut purged = 0;
        for (i, sql) in PURGE.iter().enumerate() {
            let changed = client
                .execute(&sql.replace("{TABLE}", TABLE), &[&now_ms])
                .await
                .map_err(pg("purge expired keys"))?;
            if i > 0 {
                purged += changed;
            }
        }
        Ok(purged)
    }
}

/// Whether `table` exists (in the search path).
async fn has_table(
    tx: &deadpool_postgres::Transaction<'_>,
    table: &str,
) -> Result<bool, ServerError> {
    Ok(tx
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await
        .map_err(pg("look for a table"))?
        .get(0))
}

/// The common case of [`IdempotencyStore::begin`], a key never seen, in one
/// round trip: `BEGIN`, `SET LOCAL synchronous_commit TO OFF`, the insert
/// (a statement prepared once per connection) and `COMMIT`, pipelined.
/// `None`: the key exists (nothing was written: the insert does nothing on
/// a conflict), and the caller reads it in a transaction of its own.
///
/// The claim commits without waiting for its WAL flush: nothing depends on
/// it surviving a crash (the retry would claim the key again), and the
/// effect it guards commits later with a flush that covers it, since the
/// WAL is written in order. One flush per request instead of two.
///
/// Every message is queued on the connection at the first poll, in order,
/// so a future dropped part-way still has the server run all three: the
/// connection never goes back to the pool inside the transaction.
async fn claim_new(
    client: &Object,
    scope: &str,
    key: &str,
    fingerprint: Fingerprint,
    now_ms: i64,
    lease_ms: i64,
) -> Result<Option<KeyClaim>, ServerError> {
    let insert = client
        .prepare_cached(&format!(
            "INSERT INTO {TABLE} (scope, key, fingerprint, state, token, lease_until_ms, \
             created_at_ms) VALUES ($1, $2, $3, 0, $4, $5, $6) ON CONFLICT (scope, key) DO NOTHING"
        ))
        .await
        .map_err(pg("prepare the claim"))?;
    let claim = KeyClaim::new(scope, key, fingerprint);
    let lease_until = now_ms.saturating_add(lease_ms);
    let fingerprint_bytes = fingerprint.as_bytes();
    let fingerprint_slice = fingerprint_bytes.as_slice();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
        &scope,
        &key,
        &fingerprint_slice,
        &claim.token,
        &lease_until,
        &now_ms,
    ];
    let (begun, inserted, committed) = tokio::join!(
        client.batch_execute("BEGIN; SET LOCAL synchronous_commit TO OFF"),
        client.execute(&insert, &params),
        client.batch_execute("COMMIT"),
    );
    begun.map_err(pg("begin a claim"))?;
    let inserted = inserted.map_err(pg("claim a key"))?;
    // A failed insert aborts the transaction and COMMIT then rolls it
    // back: the error above is what is reported.
    committed.map_err(pg("commit a key"))?;
    Ok((inserted == 1).then_some(claim))
}

/// Marks the claim's key completed with `response` on `client` (in its
/// transaction, if one is open); returns the rows changed, 0 if the claim no
/// longer holds the key.
async fn complete_on(
    client: &Object,
    claim: &KeyClaim,
    response: &StoredResponse,
    expiry: KeyExpiry,
) -> Result<u64, tokio_postgres::Error> {
    // Prepared once per connection (the pool's statement cache): a
    // statement by text is parsed again, one more round trip, each time.
    let statement = client
        .prepare_cached(&COMPLETE.replace("{TABLE}", TABLE))
        .await?;
    client
        .execute(
            &statement,
            &[
                &i64::from(response.status),
                &response.headers_json(),
                &response.body,
                &expiry.response_until_ms,
                &expiry.remembered_until_ms,
                &claim.scope,
                &claim.key,
                &claim.token,
            ],
        )
        .await
}

fn key_row(scope: &str, key: &str, row: &Row) -> Result<KeyRow, ServerError> {
    let get = |source| ServerError::Postgres {
        op: "read a key's columns",
        source,
    };
    Ok(KeyRow {
        scope: scope.to_owned(),
        key: key.to_owned(),
        fingerprint: row.try_get(0).map_err(get)?,
        state: row.try_get(1).map_err(get)?,
        token: row.try_get(2).map_err(get)?,
        lease_until_ms: row.try_get(3).map_err(get)?,
        status: row.try_get(4).map_err(get)?,
        headers: row.try_get(5).map_err(get)?,
        body: row.try_get(6).map_err(get)?,
        expires_at_ms: row.try_get(7).map_err(get)?,
        remembered_until_ms: row.try_get(8).map_err(get)?,
    })
}

fn pg(op: &'static str) -> impl Fn(tokio_postgres::Error) -> ServerError {
    move |source| ServerError::Postgres { op, source }
}
