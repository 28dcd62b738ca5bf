//! The change feed on PostgreSQL: a change's version is its transaction's
//! id, and a page is served only below the oldest transaction still
//! running, so a reader never passes a version still open (see the `feed`
//! module's docs).

use std::time::Duration;

use tokio_postgres::{GenericClient, IsolationLevel};

use super::{PgEffect, PostgresIdempotencyStore, pg};
use crate::error::ServerError;
use crate::feed::table::{
    RAISE_COMPACTED_BELOW, READ_META, UPSERT, change_from_row, meta_from_rows, read_page,
};
use crate::feed::{ChangeFeed, Compaction, FeedChange, FeedKey, FeedPage, FeedQuery, Position};

/// This transaction's id, as a version.
const XACT_VERSION: &str = "pg_current_xact_id()::text::bigint";
/// The oldest transaction id still running, as of this snapshot.
const HORIZON: &str = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint";
/// The database's clock in ms since the Unix epoch.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// The record statement: the version is the transaction's id, the order
/// within it a sequence value.
fn record_sql() -> String {
    UPSERT.replace(
        "VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &format!("VALUES ($1, $2, $3, {XACT_VERSION}, nextval('sync_feed_seq'), $4, {NOW_MS})"),
    ) + " RETURNING version"
}

impl PostgresIdempotencyStore {
    /// Records `change` in the change feed on `client`: a
    /// `tokio_postgres::Client` or `Transaction` (from a deadpool pool,
    /// `&*transaction`). Inside a transaction it commits with that
    /// transaction's other writes or not at all; on a client outside one it
    /// is a transaction of its own. Returns the change's version (the
    /// transaction's id). In the transactional form, use
    /// [`PgEffect::record`] so the operation's answer carries the version.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(store: &sync_server::PostgresIdempotencyStore) -> Result<(), Box<dyn std::error::Error>> {
    /// use sync_server::{FeedChange, PostgresIdempotencyStore};
    ///
    /// let mut client = store.pool().get().await?;
    /// let tx = client.transaction().await?;
    /// tx.execute("DELETE FROM notes WHERE id = $1", &[&"n1"]).await?;
    /// PostgresIdempotencyStore::record(&*tx, &FeedChange::delete("user:7", "note", "n1")).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// # let _ = run;
    /// ```
    ///
    /// # Errors
    ///
    /// [`ServerError::Postgres`] (the feed's tables are missing before
    /// [`migrate`](Self::migrate)).
    pub async fn record(
        client: &impl GenericClient,
        change: &FeedChange,
    ) -> Result<i64, ServerError> {
        let row = client
            .query_one(
                &record_sql(),
                &[&change.scope, &change.entity, &change.id, &change.state],
            )
            .await
            .map_err(pg("record a change"))?;
        row.try_get(0).map_err(pg("read a change's version"))
    }
}

impl PgEffect {
    /// Records `change` in the change feed inside this effect's
    /// transaction: it commits with the effect and the key's response, or
    /// not at all, and the response (and every replay of it) carries the
    /// version in `sync-version`. Returns the version.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(store: &sync_server::PostgresIdempotencyStore, idem: &sync_server::Idempotency) -> Result<(), sync_server::ServerError> {
    /// use sync_server::{FeedChange, StoredResponse};
    ///
    /// let effect = store.transaction(idem).await?;
    /// effect.client().execute("INSERT INTO notes (id, text) VALUES ($1, $2)", &[&"n1", &"hi"]).await
    ///     .map_err(|source| sync_server::ServerError::Postgres { op: "insert a note", source })?;
    /// effect.record(&FeedChange::upsert("user:7", "note", "n1", &serde_json::json!({"text": "hi"}))).await?;
    /// effect.commit(StoredResponse::new(http::StatusCode::CREATED)).await?;
    /// # Ok(()) }
    /// # let _ = run;
    /// ```
    ///
    /// # Errors
    ///
    /// [`ServerError::Postgres`]; the transaction is then aborted, and its
    /// commit fails.
    pub async fn record(&self, change: &FeedChange) -> Result<i64, ServerError> {
        let client = self.pooled();
        // Prepared once per pooled connection: one round trip per change.
        let statement = client
            .prepare_cached(&record_sql())
            .await
            .map_err(pg("prepare a change"))?;
        let version: i64 = client
            .query_one(
                &statement,
                &[&change.scope, &change.entity, &change.id, &change.state],
            )
            .await
            .map_err(pg("record a change"))?
            .try_get(0)
            .map_err(pg("read a change's version"))?;
        self.recorded
            .store(version, std::sync::atomic::Ordering::Relaxed);
        Ok(version)
    }
}

#[async_trait::async_trait]
impl ChangeFeed for PostgresIdempotencyStore {
    async fn feed_key(&self) -> Result<FeedKey, ServerError> {
        let client = self.client().await?;
        let rows = client
            .query(READ_META, &[])
            .await
            .map_err(pg("read the feed's meta"))?;
        meta_from_rows(rows.iter().map(|r| (r.get(0), r.get(1)))).map(|(key, _)| key)
    }

    async fn read(&self, query: FeedQuery) -> Result<FeedPage, ServerError> {
        let mut client = self.client().await?;
        // One snapshot for the horizon, the meta and the rows: every
        // transaction below the horizon has ended and its rows are visible
        // in this snapshot.
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg("begin a feed read"))?;
        // Prepared once per connection (deadpool's statement cache): a pull
        // is then one round trip per statement.
        let prepare = |sql: String| {
            let tx = &tx;
            async move {
                tx.prepare_cached(&sql)
                    .await
                    .map_err(pg("prepare a feed read"))
            }
        };
        let horizon: i64 = tx
            .query_one(&prepare(HORIZON.to_owned()).await?, &[])
            .await
            .map_err(pg("read the feed's horizon"))?
            .get(0);
        let meta = tx
            .query(&prepare(READ_META.to_owned()).await?, &[])
            .await
            .map_err(pg("read the feed's meta"))?;
        let (_, compacted_below) = meta_from_rows(meta.iter().map(|r| (r.get(0), r.get(1))))?;
        let fetch = i64::try_from(query.limit.saturating_add(1)).unwrap_or(i64::MAX);
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
            &query.after.version,
            &query.after.seq,
            &horizon,
            &query.deletes_from,
            &fetch,
        ];
        params.extend(
            query
                .scopes
                .iter()
                .map(|s| s as &(dyn tokio_postgres::types::ToSql + Sync)),
        );
        let rows = tx
            .query(&prepare(read_page(query.scopes.len())).await?, &params)
            .await
            .map_err(pg("read the feed"))?;
        tx.commit().await.map_err(pg("end a feed read"))?;
        let mut page = FeedPage {
            changes: Vec::with_capacity(rows.len().min(query.limit)),
            more: false,
            horizon,
            compacted_below,
        };
        let mut bytes = 0usize;
        for row in rows {
            if page.changes.len() == query.limit
                || (!page.changes.is_empty() && bytes >= query.max_bytes)
            {
                page.more = true;
                break;
            }
            let get = pg("read a feed row");
            let state: Option<String> = row.try_get(5).map_err(&get)?;
            bytes += state.as_ref().map_or(0, String::len);
            let version: i64 = row.try_get(3).map_err(&get)?;
            let position = Position {
                version,
                seq: row.try_get(4).map_err(&get)?,
            };
            let change = change_from_row(
                row.try_get(0).map_err(&get)?,
                row.try_get(1).map_err(&get)?,
                row.try_get(2).map_err(&get)?,
                version,
                state.as_deref(),
            )?;
            page.changes.push((position, change));
        }
        Ok(page)
    }

    async fn compact(&self, keep_deletes: Duration) -> Result<Compaction, ServerError> {
        let keep_ms = i64::try_from(keep_deletes.as_millis()).unwrap_or(i64::MAX);
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(pg("begin a compaction"))?;
        // Only deletes below the horizon: every one of them has committed.
        let horizon: i64 = tx
            .query_one(HORIZON, &[])
            .await
            .map_err(pg("read the feed's horizon"))?
            .get(0);
        let dropped = tx
            .query(
                &format!(
                    "DELETE FROM sync_feed WHERE state IS NULL AND version < $1 \
                     AND changed_at_ms < {NOW_MS} - $2 RETURNING version"
                ),
                &[&horizon, &keep_ms],
            )
            .await
            .map_err(pg("drop old deletes"))?;
        let newest = dropped.iter().map(|r| r.get::<_, i64>(0)).max();
        // Instances compacting at once: the row lock orders them, and the
        // horizon only grows.
        let current: String = tx
            .query_one(
                "SELECT value FROM sync_feed_meta WHERE key = 'compacted_below' FOR UPDATE",
                &[],
            )
            .await
            .map_err(pg("read the compaction horizon"))?
            .get(0);
        let current = current.parse::<i64>().unwrap_or(i64::MIN);
        let compacted_below = newest.map_or(current, |v| current.max(v.saturating_add(1)));
        tx.execute(RAISE_COMPACTED_BELOW, &[&compacted_below.to_string()])
            .await
            .map_err(pg("raise the compaction horizon"))?;
        tx.commit().await.map_err(pg("commit a compaction"))?;
        Ok(Compaction {
            deletes_dropped: dropped.len() as u64,
            compacted_below,
        })
    }
}

/// Inside `migrate`'s transaction: if the feed's versions come from a
/// cluster whose transaction ids ran ahead of this one's (the database was
/// restored from a logical backup elsewhere), moves every change to this
/// transaction's version, in their `seq` order, and the compaction horizon
/// to it (every older cursor starts again). Then remembers this
/// transaction's id for the next `migrate`.
pub(super) async fn rebase_after_restore(
    tx: &deadpool_postgres::Transaction<'_>,
) -> Result<(), ServerError> {
    let now: i64 = tx
        .query_one(&format!("SELECT {XACT_VERSION}"), &[])
        .await
        .map_err(pg("read the migration's transaction id"))?
        .get(0);
    let seen: Option<i64> = tx
        .query_opt(
            "SELECT value::bigint FROM sync_feed_meta WHERE key = 'xact_seen'",
            &[],
        )
        .await
        .map_err(pg("read the last transaction id seen"))?
        .map(|row| row.get(0));
    if seen.is_some_and(|seen| seen > now) {
        tracing::warn!(
            seen,
            now,
            "the change feed's versions are ahead of this cluster's transaction ids (restored \
             from a backup?): moving them to the current one; devices start again"
        );
        tx.execute("UPDATE sync_feed SET version = $1", &[&now])
            .await
            .map_err(pg("rebase the feed's versions"))?;
        tx.execute(RAISE_COMPACTED_BELOW, &[&now.to_string()])
            .await
            .map_err(pg("rebase the compaction horizon"))?;
    }
    tx.execute(
        "INSERT INTO sync_feed_meta VALUES ('xact_seen', $1) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[&now.to_string()],
    )
    .await
    .map_err(pg("remember the transaction id"))?;
    Ok(())
}
