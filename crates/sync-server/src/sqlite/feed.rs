//! The change feed on SQLite: its tables beside the key table, recording
//! inside the app's transaction, and pages read on a connection of their
//! own, so a pull never waits for the writer.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params_from_iter, types::Value};

use super::{SqliteIdempotencyStore, blocking};
use crate::error::ServerError;
use crate::feed::table::{
    CREATE, CREATE_SQLITE, FEED_SCHEMA_VERSION, FEED_TABLE, RAISE_COMPACTED_BELOW, READ_META,
    READ_VERSION, UPSERT, change_from_row, meta_from_rows, read_page,
};
use crate::feed::{ChangeFeed, Compaction, FeedChange, FeedKey, FeedPage, FeedQuery, Position};

/// The database's clock in ms since the Unix epoch, in SQL.
const NOW_MS: &str = "CAST(unixepoch('subsec') * 1000 AS INTEGER)";

fn sqlite(sql: &str) -> String {
    sql.replace('$', "?").replace("BIGINT", "INTEGER")
}

impl SqliteIdempotencyStore {
    /// Records `change` in the change feed, inside the transaction `conn`
    /// is in: the transactional form's `tx`, or any transaction of the
    /// app's on this database. It commits with that transaction's other
    /// writes or not at all; outside a transaction it runs in one of its
    /// own. Returns the change's version.
    ///
    /// Versions are taken from a counter inside the writing transaction;
    /// SQLite has one writer at a time, so versions commit in order and a
    /// reader never passes one still open.
    ///
    /// # Examples
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
    /// use sync_server::{FeedChange, SqliteIdempotencyStore};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = SqliteIdempotencyStore::open(dir.path().join("server.db")).await?;
    /// let version = store.call(|db| {
    ///     let tx = db.transaction()?;
    ///     tx.execute_batch("CREATE TABLE notes (id TEXT, text TEXT); INSERT INTO notes VALUES ('n1', 'hi')")?;
    ///     let v = SqliteIdempotencyStore::record(&tx, &FeedChange::upsert("user:7", "note", "n1", &"hi"))?;
    ///     tx.commit()?;
    ///     Ok(v)
    /// }).await?;
    /// assert_eq!(version, 1);
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// SQLite's error (the feed's tables are missing on a database the
    /// store never opened).
    pub fn record(conn: &Connection, change: &FeedChange) -> rusqlite::Result<i64> {
        if conn.is_autocommit() {
            let tx = conn.unchecked_transaction()?;
            let version = record_in(&tx, change)?;
            tx.commit()?;
            return Ok(version);
        }
        record_in(conn, change)
    }
}

fn record_in(conn: &Connection, change: &FeedChange) -> rusqlite::Result<i64> {
    let version: i64 = conn
        .prepare_cached("UPDATE sync_feed_clock SET last = last + 1 RETURNING last")?
        .query_row([], |r| r.get(0))?;
    let now: i64 = conn
        .prepare_cached(&format!("SELECT {NOW_MS}"))?
        .query_row([], |r| r.get(0))?;
    conn.prepare_cached(&sqlite(UPSERT))?
        .execute(rusqlite::params![
            change.scope,
            change.entity,
            change.id,
            version,
            version,
            change.state,
            now
        ])?;
    Ok(version)
}

/// The last version committed (or taken by the open transaction `conn`
/// is in).
pub(super) fn last_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT last FROM sync_feed_clock")?
        .query_row([], |r| r.get(0))
}

/// What the database says of the feed's tables, read without writing.
pub(super) fn read_feed_version(conn: &Connection) -> rusqlite::Result<Option<String>> {
    let exists: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'sync_feed_meta'",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(None);
    }
    conn.query_row(READ_VERSION, [], |r| r.get(0))
        .optional()
        .map(|v| Some(v.unwrap_or_else(|| "none".to_owned())))
}

/// Creates the feed's tables in a database that has none, in one `BEGIN
/// IMMEDIATE` transaction that looks again first (another process may have
/// made them meanwhile). Returns the version found then, `None` if it made
/// them.
pub(super) fn create_feed(conn: &Connection) -> rusqlite::Result<Option<String>> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let created = read_feed_version(conn).and_then(|found| {
        if found.is_none() {
            conn.execute_batch(&sqlite(CREATE))?;
            conn.execute_batch(CREATE_SQLITE)?;
        }
        Ok(found)
    });
    match created {
        Ok(found) => conn.execute_batch("COMMIT").map(|()| found),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Checks that a version found is this build's.
pub(super) fn check_feed_version(found: Option<String>) -> Result<(), ServerError> {
    match found {
        Some(v) if v != FEED_SCHEMA_VERSION.to_string() => Err(ServerError::UnknownSchema {
            table: FEED_TABLE,
            found: v,
            expected: FEED_SCHEMA_VERSION,
        }),
        _ => Ok(()),
    }
}

impl SqliteIdempotencyStore {
    fn read_blocking(&self, query: &FeedQuery) -> Result<FeedPage, ServerError> {
        let err = |op| move |e| self.error(op, e);
        let mut conn = self.lock_reader();
        // One read transaction: the horizon, the compaction horizon and the
        // rows come from one snapshot.
        let tx = conn.transaction().map_err(err("begin a feed read"))?;
        let horizon = last_version(&tx).map_err(err("read the feed's clock"))? + 1;
        let meta: Vec<(String, String)> = tx
            .prepare_cached(READ_META)
            .and_then(|mut s| {
                s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()
            })
            .map_err(err("read the feed's meta"))?;
        let (_, compacted_below) = meta_from_rows(meta)?;
        let sql = sqlite(&read_page(query.scopes.len()));
        let fetch = i64::try_from(query.limit.saturating_add(1)).unwrap_or(i64::MAX);
        let mut values: Vec<Value> = vec![
            Value::Integer(query.after.version),
            Value::Integer(query.after.seq),
            Value::Integer(horizon),
            Value::Integer(query.deletes_from),
            Value::Integer(fetch),
        ];
        values.extend(query.scopes.iter().cloned().map(Value::Text));
        let mut statement = tx
            .prepare_cached(&sql)
            .map_err(err("prepare a feed read"))?;
        let mut rows = statement
            .query(params_from_iter(values))
            .map_err(err("read the feed"))?;
        let mut page = FeedPage {
            changes: Vec::new(),
            more: false,
            horizon,
            compacted_below,
        };
        let mut bytes = 0usize;
        while let Some(row) = rows.next().map_err(err("read the feed"))? {
            if page.changes.len() == query.limit
                || (!page.changes.is_empty() && bytes >= query.max_bytes)
            {
                page.more = true;
                break;
            }
            let get = |e| self.error("read a feed row", e);
            let state: Option<String> = row.get(5).map_err(get)?;
            bytes += state.as_ref().map_or(0, String::len);
            let version: i64 = row.get(3).map_err(get)?;
            let position = Position {
                version,
                seq: row.get(4).map_err(get)?,
            };
            let change = change_from_row(
                row.get(0).map_err(get)?,
                row.get(1).map_err(get)?,
                row.get(2).map_err(get)?,
                version,
                state.as_deref(),
            )?;
            page.changes.push((position, change));
        }
        Ok(page)
    }

    fn compact_blocking(&self, keep_deletes: Duration) -> Result<Compaction, ServerError> {
        let err = |op| move |e| self.error(op, e);
        let keep_ms = i64::try_from(keep_deletes.as_millis()).unwrap_or(i64::MAX);
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err("begin a compaction"))?;
        // RETURNING: the horizon moves past exactly the deletes dropped.
        let versions: Vec<i64> = tx
            .prepare(&format!(
                "DELETE FROM sync_feed WHERE state IS NULL AND changed_at_ms < {NOW_MS} - ?1 \
                 RETURNING version"
            ))
            .and_then(|mut s| {
                s.query_map([keep_ms], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()
            })
            .map_err(err("drop old deletes"))?;
        let newest = versions.iter().copied().max();
        let current: String = tx
            .query_row(
                "SELECT value FROM sync_feed_meta WHERE key = 'compacted_below'",
                [],
                |r| r.get(0),
            )
            .map_err(err("read the compaction horizon"))?;
        let current = current.parse::<i64>().unwrap_or(i64::MIN);
        let compacted_below = newest.map_or(current, |v| current.max(v.saturating_add(1)));
        tx.execute(
            &sqlite(RAISE_COMPACTED_BELOW),
            [compacted_below.to_string()],
        )
        .map_err(err("raise the compaction horizon"))?;
        tx.commit().map_err(err("commit a compaction"))?;
        Ok(Compaction {
            deletes_dropped: versions.len() as u64,
            compacted_below,
        })
    }
}

#[async_trait::async_trait]
impl ChangeFeed for SqliteIdempotencyStore {
    async fn feed_key(&self) -> Result<FeedKey, ServerError> {
        let this = self.clone();
        blocking(move || {
            let conn = this.lock_reader();
            let meta: Vec<(String, String)> = conn
                .prepare_cached(READ_META)
                .and_then(|mut s| {
                    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<rusqlite::Result<_>>()
                })
                .map_err(|e| this.error("read the feed's meta", e))?;
            meta_from_rows(meta).map(|(key, _)| key)
        })
        .await
    }

    async fn read(&self, query: FeedQuery) -> Result<FeedPage, ServerError> {
        let this = self.clone();
        blocking(move || this.read_blocking(&query)).await
    }

    async fn compact(&self, keep_deletes: Duration) -> Result<Compaction, ServerError> {
        let this = self.clone();
        blocking(move || this.compact_blocking(keep_deletes)).await
    }
}
