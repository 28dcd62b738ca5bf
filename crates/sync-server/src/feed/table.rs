//! The feed's tables, shared by both SQL stores where the dialects agree
//! (PostgreSQL's; the SQLite store swaps `$n` for `?n` and `BIGINT` for
//! `INTEGER`), and the parts where they differ: how a version is taken and
//! how the feed's random identity is made.
//!
//! `sync_feed` holds one row per entity: its latest change. `state` is the
//! entity's JSON, `NULL` for a delete (a tombstone). `(version, seq)` is the
//! row's position; `changed_at_ms` (the database's clock) is what
//! compaction ages tombstones by. `sync_feed_meta` holds the schema
//! version, the feed's id and cursor secret (hex), and the compaction
//! horizon.

use sync_protocol::{Change, ChangeOp};

use super::FeedKey;
use crate::error::ServerError;

/// The feed tables' version: 1, the first.
pub(crate) const FEED_SCHEMA_VERSION: u32 = 1;

/// The feed's table name, as errors name it.
pub(crate) const FEED_TABLE: &str = "sync_feed";

/// Reads the feed's version, if its tables exist.
pub(crate) const READ_VERSION: &str =
    "SELECT value FROM sync_feed_meta WHERE key = 'schema_version'";

/// Both dialects: the tables, the indexes (the pull's order within a scope;
/// compaction's tombstones by age) and the meta rows but the identity.
pub(crate) const CREATE: &str = "
CREATE TABLE sync_feed_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE sync_feed (
  scope TEXT NOT NULL, entity TEXT NOT NULL, id TEXT NOT NULL,
  version BIGINT NOT NULL, seq BIGINT NOT NULL, state TEXT,
  changed_at_ms BIGINT NOT NULL,
  PRIMARY KEY (scope, entity, id));
CREATE INDEX sync_feed_order ON sync_feed (scope, version, seq);
CREATE INDEX sync_feed_deletes ON sync_feed (changed_at_ms) WHERE state IS NULL;
INSERT INTO sync_feed_meta VALUES ('schema_version', '1');
INSERT INTO sync_feed_meta VALUES ('compacted_below', '-9223372036854775808');
";

/// SQLite: the version counter (writers are serialized, so the counter's
/// order is the commit order) and a random identity.
#[cfg(feature = "sqlite")]
pub(crate) const CREATE_SQLITE: &str = "
CREATE TABLE sync_feed_clock (last INTEGER NOT NULL);
INSERT INTO sync_feed_clock VALUES (0);
INSERT INTO sync_feed_meta VALUES ('id', lower(hex(randomblob(16))));
INSERT INTO sync_feed_meta VALUES ('secret', lower(hex(randomblob(32))));
";

/// PostgreSQL: the order of changes within a transaction, and a random
/// identity (`gen_random_uuid` draws from the server's strong random
/// source).
#[cfg(feature = "postgres")]
pub(crate) const CREATE_POSTGRES: &str = "
CREATE SEQUENCE sync_feed_seq;
INSERT INTO sync_feed_meta VALUES ('id', replace(gen_random_uuid()::text, '-', ''));
INSERT INTO sync_feed_meta VALUES ('secret',
  replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''));
";

/// Records a change at position `($4, $5)`: `$1` scope, `$2` entity, `$3`
/// id, `$6` state (`NULL`: deleted), `$7` the time.
pub(crate) const UPSERT: &str = "INSERT INTO sync_feed \
     (scope, entity, id, version, seq, state, changed_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (scope, entity, id) DO UPDATE SET version = excluded.version, \
     seq = excluded.seq, state = excluded.state, changed_at_ms = excluded.changed_at_ms";

/// The meta rows a read needs.
pub(crate) const READ_META: &str =
    "SELECT key, value FROM sync_feed_meta WHERE key IN ('id', 'secret', 'compacted_below')";

/// One page's rows: for each scope its own ordered range of the
/// `(scope, version, seq)` index, merged in position order, so the
/// database reads at most `limit` rows per scope and sorts nothing (one
/// `scope IN (...)` filter made PostgreSQL scan and sort every row of the
/// scopes: 5.8 ms against 0.7 ms for a page of 1,000 of 20,000). `$1`/`$2`
/// the position after, `$3` the visible horizon, `$4` where deletes start,
/// `$5` the limit, `$6`.. the scopes.
pub(crate) fn read_page(scopes: usize) -> String {
    let ranges: Vec<String> = (0..scopes)
        .map(|i| {
            format!(
                "SELECT * FROM (SELECT scope, entity, id, version, seq, state FROM sync_feed \
                 WHERE scope = ${} AND (version, seq) > ($1, $2) AND version < $3 \
                 AND (state IS NOT NULL OR version >= $4) ORDER BY version, seq LIMIT $5) AS s{i}",
                i + 6
            )
        })
        .collect();
    format!(
        "SELECT scope, entity, id, version, seq, state FROM ({}) AS page \
         ORDER BY version, seq LIMIT $5",
        ranges.join(" UNION ALL ")
    )
}

/// Moves the compaction horizon to at least `$1`.
pub(crate) const RAISE_COMPACTED_BELOW: &str = "UPDATE sync_feed_meta SET value = $1 \
     WHERE key = 'compacted_below'";

/// The meta rows as the feed key and the compaction horizon.
pub(crate) fn meta_from_rows(
    rows: impl IntoIterator<Item = (String, String)>,
) -> Result<(FeedKey, i64), ServerError> {
    let corrupt = |problem: String| ServerError::CorruptRecord {
        table: "sync_feed_meta",
        scope: String::new(),
        key: "feed".to_owned(),
        problem,
    };
    let (mut id, mut secret, mut compacted) = (None, None, None);
    for (key, value) in rows {
        match key.as_str() {
            "id" => id = super::cursor::unhex(&value),
            "secret" => secret = super::cursor::unhex(&value),
            "compacted_below" => compacted = value.parse::<i64>().ok(),
            _ => {}
        }
    }
    let id: [u8; 16] = id
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| corrupt("the feed id is not 16 hex bytes".to_owned()))?;
    let secret: [u8; 32] = secret
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| corrupt("the cursor secret is not 32 hex bytes".to_owned()))?;
    let compacted =
        compacted.ok_or_else(|| corrupt("the compaction horizon is not a number".to_owned()))?;
    Ok((FeedKey { id, secret }, compacted))
}

/// A row as a change; a state that is not JSON is a corrupt record.
pub(crate) fn change_from_row(
    scope: String,
    entity: String,
    id: String,
    version: i64,
    state: Option<&str>,
) -> Result<Change, ServerError> {
    let op = match state {
        None => ChangeOp::Delete,
        Some(text) => ChangeOp::Upsert {
            state: serde_json::from_str(text).map_err(|e| ServerError::CorruptRecord {
                table: FEED_TABLE,
                scope: scope.clone(),
                key: format!("{entity}/{id}"),
                problem: format!("the state is not JSON: {e}"),
            })?,
        },
    };
    Ok(Change {
        scope,
        entity,
        id,
        version,
        op,
    })
}
