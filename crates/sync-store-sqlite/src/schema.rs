//! The tables, their version, and how a row is an [`Operation`].
//!
//! ```sql
//! sync_meta(key TEXT PRIMARY KEY, value TEXT)        -- ('schema_version', '1')
//! sync_outbox(id TEXT PRIMARY KEY, kind, target, payload, status, attempt,
//!             next_retry_at_ms, last_error, created_at_ms, updated_at_ms,
//!             ordering_key, coalesce_key, owner, seq,
//!             ordering, idempotency_key, replaced_keys,     -- since version 2
//!             first_sent_at_ms, unanswered_sends,           -- since version 4
//!             server_version,                               -- since version 5
//!             payload_version, account,                     -- since version 6
//!             keep_answer, answer, needs,                   -- since version 7
//!             traceparent)                                  -- since version 8
//! index sync_outbox_due ON sync_outbox(status, next_retry_at_ms, seq)
//! sync_counts(status TEXT PRIMARY KEY, n INTEGER,   -- since version 3
//!             bytes INTEGER)                         -- since version 6: payload bytes
//! index sync_outbox_pending_age ON sync_outbox(created_at_ms) WHERE status = 'pending'
//! sync_download(key TEXT PRIMARY KEY, value TEXT)   -- since version 5: the pull cursor,
//!                                                   --   covers_below, last_version
//! sync_held(scope, entity, id, ordering_key, version, state)  -- since version 5: pulled
//!                                                   --   changes waiting for local operations
//! ```
//!
//! Since version 3, triggers on `sync_outbox` keep `sync_counts` (one row
//! per status) in step with every insert, delete and status change, in the
//! same transaction, so the counts cost two index lookups to read instead of
//! a scan, and are right whoever writes the table (the store, the app's own
//! transaction, a read-only `synctl` reading while the app runs). Rows are
//! written with `INSERT ... ON CONFLICT DO UPDATE`, never `INSERT OR
//! REPLACE`, whose hidden delete fires no trigger.
//!
//! `status` is stored as text (`pending`, `in_flight`, `done`, `failed`),
//! the names of the JSON form, so an app can read its queue with plain SQL;
//! so is `ordering` (NULL, `skip_failed`, `stop_on_failure`).
//! `replaced_keys` holds the keys one per line ('' for none); `needs` the
//! operation's needs as a JSON array ('' for none).
//!
//! Version 1 to 4 databases are upgraded on open for writing (in one
//! transaction: version 1 gets three `ALTER TABLE ... ADD COLUMN`s, 1 and 2
//! get the counts table, filled by one scan, its triggers and the age
//! index, 1 to 3 get the two columns of version 4, and all get version 5's
//! column and download tables, version 6's payload byte counts and
//! version 7's answer columns and version 8's `traceparent`) and read as
//! they are by `load_read_only`.

use std::path::Path;
use std::sync::LazyLock;

use rusqlite::{Connection, OptionalExtension, Row, params};
use sync_outbox::{Operation, OperationStatus, OrderingMode};

use crate::error::{SqliteStoreError, sql};

/// The schema this release reads and writes.
pub(crate) const SCHEMA_VERSION: u32 = 8;

/// Every column, in the order of `row_to_operation` and `put`.
pub(crate) const COLUMNS: &str = "id, kind, target, payload, status, attempt, next_retry_at_ms, \
     last_error, created_at_ms, updated_at_ms, ordering_key, coalesce_key, owner, seq, \
     ordering, idempotency_key, replaced_keys, first_sent_at_ms, unanswered_sends, server_version, \
     payload_version, account, keep_answer, answer, needs, traceparent";

/// What [`COLUMNS`] selects from a version 7 table.
const COLUMNS_V7: &str = "id, kind, target, payload, status, attempt, next_retry_at_ms, \
     last_error, created_at_ms, updated_at_ms, ordering_key, coalesce_key, owner, seq, \
     ordering, idempotency_key, replaced_keys, first_sent_at_ms, unanswered_sends, server_version, \
     payload_version, account, keep_answer, answer, needs, NULL";

/// What [`COLUMNS`] selects from a version 6 table.
const COLUMNS_V6: &str = "id, kind, target, payload, status, attempt, next_retry_at_ms, \
     last_error, created_at_ms, updated_at_ms, ordering_key, coalesce_key, owner, seq, \
     ordering, idempotency_key, replaced_keys, first_sent_at_ms, unanswered_sends, server_version, \
     payload_version, account, 0, NULL, '', NULL";

/// What [`COLUMNS`] selects from a version 5 table.
const COLUMNS_V5: &str = "id, kind, target, payload, status, attempt, next_retry_at_ms, \
     last_error, created_at_ms, updated_at_ms, ordering_key, coalesce_key, owner, seq, \
     ordering, idempotency_key, replaced_keys, first_sent_at_ms, unanswered_sends, server_version, \
     0, NULL, 0, NULL, '', NULL";

/// What [`COLUMNS`] selects from a version 4 table.
const COLUMNS_V4: &str = "id, kind, target, payload, status, attempt, next_retry_at_ms, \
     last_error, created_at_ms, updated_at_ms, ordering_key, coalesce_key, owner, seq, \
     ordering, idempotency_key, replaced_keys, first_sent_at_ms, unanswered_sends, NULL, 0, NULL, \
     0, NULL, '', NULL";

/// What [`COLUMNS`] selects from a version 1 table; `first_sent_at_ms` as
/// the upgrade sets it ([`SENT`]).
const COLUMNS_V1: &str = "id, kind, target, payload, status, attempt, next_retry_at_ms, \
     last_error, created_at_ms, updated_at_ms, ordering_key, coalesce_key, owner, seq, \
     NULL, '', '', CASE WHEN attempt > 0 THEN updated_at_ms END, 0, NULL, 0, NULL, 0, NULL, '', NULL";

/// What [`COLUMNS`] selects from a version 2 or 3 table.
const COLUMNS_V2: &str = "id, kind, target, payload, status, attempt, next_retry_at_ms, \
     last_error, created_at_ms, updated_at_ms, ordering_key, coalesce_key, owner, seq, \
     ordering, idempotency_key, replaced_keys, CASE WHEN attempt > 0 THEN updated_at_ms END, 0, \
     NULL, 0, NULL, 0, NULL, '', NULL";

/// The versions this release reads (and upgrades, when it writes).
pub(crate) fn is_known_version(found: &str) -> bool {
    matches!(found, "1" | "2" | "3" | "4" | "5" | "6" | "7") || found == SCHEMA_VERSION.to_string()
}

/// The select list that reads a table of schema `version` as [`COLUMNS`].
pub(crate) fn columns_of(version: &str) -> &'static str {
    match version {
        "1" => COLUMNS_V1,
        "2" | "3" => COLUMNS_V2,
        "4" => COLUMNS_V4,
        "5" => COLUMNS_V5,
        "6" => COLUMNS_V6,
        "7" => COLUMNS_V7,
        _ => COLUMNS,
    }
}

const CREATE: &str = "
CREATE TABLE IF NOT EXISTS sync_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sync_outbox (
    id TEXT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    next_retry_at_ms INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    ordering_key TEXT,
    coalesce_key TEXT,
    owner TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ordering TEXT,
    idempotency_key TEXT NOT NULL DEFAULT '',
    replaced_keys TEXT NOT NULL DEFAULT '',
    first_sent_at_ms INTEGER,
    unanswered_sends INTEGER NOT NULL DEFAULT 0,
    server_version INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sync_outbox_due ON sync_outbox (status, next_retry_at_ms, seq);
";

/// What version 3 adds: counts per status kept by triggers, and pending
/// operations indexed by age. Fills the counts from the table as it is.
const COUNTS: &str = "
CREATE TABLE IF NOT EXISTS sync_counts (status TEXT PRIMARY KEY NOT NULL, n INTEGER NOT NULL)
    WITHOUT ROWID;
INSERT OR IGNORE INTO sync_counts (status, n)
    VALUES ('pending', 0), ('in_flight', 0), ('done', 0), ('failed', 0);
UPDATE sync_counts
    SET n = (SELECT count(*) FROM sync_outbox WHERE sync_outbox.status = sync_counts.status);
CREATE TRIGGER IF NOT EXISTS sync_outbox_count_insert AFTER INSERT ON sync_outbox BEGIN
    UPDATE sync_counts SET n = n + 1 WHERE status = NEW.status;
END;
CREATE TRIGGER IF NOT EXISTS sync_outbox_count_delete AFTER DELETE ON sync_outbox BEGIN
    UPDATE sync_counts SET n = n - 1 WHERE status = OLD.status;
END;
CREATE TRIGGER IF NOT EXISTS sync_outbox_count_update AFTER UPDATE OF status ON sync_outbox
    WHEN OLD.status IS NOT NEW.status BEGIN
    UPDATE sync_counts SET n = n - 1 WHERE status = OLD.status;
    UPDATE sync_counts SET n = n + 1 WHERE status = NEW.status;
END;
CREATE INDEX IF NOT EXISTS sync_outbox_pending_age ON sync_outbox (created_at_ms)
    WHERE status = 'pending';
";

/// An operation of an older schema that was sent (its attempt counted) may
/// have reached the server: its resend window starts at its last change,
/// the closest time kept (a later start, so a longer window: never an early
/// dead letter).
const SENT: &str = "UPDATE sync_outbox SET first_sent_at_ms = updated_at_ms WHERE attempt > 0;";

/// What version 4 adds to a version 1 to 3 table: when an operation's key
/// may first have reached the server, and its sends without an answer.
const V4_COLUMNS: &str = "
ALTER TABLE sync_outbox ADD COLUMN first_sent_at_ms INTEGER;
ALTER TABLE sync_outbox ADD COLUMN unanswered_sends INTEGER NOT NULL DEFAULT 0;
";

/// What version 5 adds to a version 1 to 4 table: the version the
/// server's answer named.
const V5_COLUMN: &str = "ALTER TABLE sync_outbox ADD COLUMN server_version INTEGER;";

/// What version 5 adds to every database: where the device is in the
/// server's change feed, and the pulled changes held for local operations.
const DOWNLOAD: &str = "
CREATE TABLE IF NOT EXISTS sync_download (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sync_held (
    scope TEXT NOT NULL,
    entity TEXT NOT NULL,
    id TEXT NOT NULL,
    ordering_key TEXT NOT NULL,
    version INTEGER NOT NULL,
    state TEXT,
    PRIMARY KEY (scope, entity, id)
) WITHOUT ROWID;
";

/// What version 6 adds: each operation's payload format version and
/// account, and
/// payload bytes per status beside the counts, for
/// the queue limits, kept by the same triggers (which now also see a
/// payload replaced in place: a coalesced edit, a correction). Filled by
/// one scan.
const BYTES: &str = "
ALTER TABLE sync_outbox ADD COLUMN payload_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sync_outbox ADD COLUMN account TEXT;
ALTER TABLE sync_counts ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
UPDATE sync_counts SET bytes = (SELECT coalesce(sum(length(CAST(payload AS BLOB))), 0)
    FROM sync_outbox WHERE sync_outbox.status = sync_counts.status);
DROP TRIGGER IF EXISTS sync_outbox_count_insert;
DROP TRIGGER IF EXISTS sync_outbox_count_delete;
DROP TRIGGER IF EXISTS sync_outbox_count_update;
CREATE TRIGGER sync_outbox_count_insert AFTER INSERT ON sync_outbox BEGIN
    UPDATE sync_counts SET n = n + 1, bytes = bytes + length(CAST(NEW.payload AS BLOB))
        WHERE status = NEW.status;
END;
CREATE TRIGGER sync_outbox_count_delete AFTER DELETE ON sync_outbox BEGIN
    UPDATE sync_counts SET n = n - 1, bytes = bytes - length(CAST(OLD.payload AS BLOB))
        WHERE status = OLD.status;
END;
CREATE TRIGGER sync_outbox_count_update AFTER UPDATE OF status, payload ON sync_outbox
    WHEN OLD.status IS NOT NEW.status OR OLD.payload IS NOT NEW.payload BEGIN
    UPDATE sync_counts SET n = n - 1, bytes = bytes - length(CAST(OLD.payload AS BLOB))
        WHERE status = OLD.status;
    UPDATE sync_counts SET n = n + 1, bytes = bytes + length(CAST(NEW.payload AS BLOB))
        WHERE status = NEW.status;
END;
";

/// What version 7 adds: whether an operation keeps its success answer, the
/// answer, and what it needs from earlier operations' answers.
const ANSWERS: &str = "
ALTER TABLE sync_outbox ADD COLUMN keep_answer INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sync_outbox ADD COLUMN answer TEXT;
ALTER TABLE sync_outbox ADD COLUMN needs TEXT NOT NULL DEFAULT '';
";

/// What version 8 adds: the W3C `traceparent` an operation was enqueued in.
const TRACE: &str = "ALTER TABLE sync_outbox ADD COLUMN traceparent TEXT;";

/// The counts and the oldest pending operation's age, from a version 3
/// database: `(pending, in_flight, done, failed, oldest pending created_at_ms)`.
///
/// The age index is named: without `ANALYZE` statistics SQLite's planner
/// prefers `sync_outbox_due` for `status = 'pending'` and reads every
/// pending row for the `min` (81 ms at 100,000 pending, in `benches/outbox.rs`);
/// through the partial index it is one lookup.
pub(crate) const STATS_QUERY: &str = "SELECT \
    (SELECT n FROM sync_counts WHERE status = 'pending'), \
    (SELECT n FROM sync_counts WHERE status = 'in_flight'), \
    (SELECT n FROM sync_counts WHERE status = 'done'), \
    (SELECT n FROM sync_counts WHERE status = 'failed'), \
    (SELECT min(created_at_ms) FROM sync_outbox INDEXED BY sync_outbox_pending_age \
     WHERE status = 'pending'), \
    (SELECT sum(bytes) FROM sync_counts WHERE status <> 'done')";

/// Checks the schema, and creates it in a database that has none. Reads
/// first: a file that is not a database, or has a schema version this
/// release does not know, is refused before anything is written.
pub(crate) fn check_or_create(conn: &Connection, path: &Path) -> Result<(), SqliteStoreError> {
    // What each known version still lacks, in the order it was added.
    let missing = match read_version(conn, path)? {
        Some(version) if version == SCHEMA_VERSION.to_string() => return Ok(()),
        Some(version) if version == "1" => format!(
            "ALTER TABLE sync_outbox ADD COLUMN ordering TEXT;
             ALTER TABLE sync_outbox ADD COLUMN idempotency_key TEXT NOT NULL DEFAULT '';
             ALTER TABLE sync_outbox ADD COLUMN replaced_keys TEXT NOT NULL DEFAULT '';
             {COUNTS} {V4_COLUMNS} {SENT} {V5_COLUMN} {DOWNLOAD} {BYTES} {ANSWERS} {TRACE}"
        ),
        Some(version) if version == "2" => {
            format!("{COUNTS} {V4_COLUMNS} {SENT} {V5_COLUMN} {DOWNLOAD} {BYTES} {ANSWERS} {TRACE}")
        }
        Some(version) if version == "3" => {
            format!("{V4_COLUMNS} {SENT} {V5_COLUMN} {DOWNLOAD} {BYTES} {ANSWERS} {TRACE}")
        }
        Some(version) if version == "4" => {
            format!("{V5_COLUMN} {DOWNLOAD} {BYTES} {ANSWERS} {TRACE}")
        }
        Some(version) if version == "5" => format!("{BYTES} {ANSWERS} {TRACE}"),
        Some(version) if version == "6" => format!("{ANSWERS} {TRACE}"),
        Some(version) if version == "7" => TRACE.to_owned(),
        Some(found) => {
            return Err(SqliteStoreError::ForeignSchema {
                path: path.to_path_buf(),
                found,
                expected: SCHEMA_VERSION,
            });
        }
        None => {
            return conn
                .execute_batch(&format!(
                    "BEGIN IMMEDIATE; {CREATE} {COUNTS} {DOWNLOAD} {BYTES} {ANSWERS} {TRACE}
                     INSERT INTO sync_meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}');
                     COMMIT;"
                ))
                .map_err(|e| sql("create the outbox tables in", path, e));
        }
    };
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE; {missing}
         UPDATE sync_meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version';
         COMMIT;"
    ))
    .map_err(|e| sql("upgrade the outbox tables in", path, e))
}

/// The schema version, if the outbox tables exist. A `sync_outbox` table
/// without `sync_meta` is someone else's: [`SqliteStoreError::ForeignSchema`].
pub(crate) fn read_version(
    conn: &Connection,
    path: &Path,
) -> Result<Option<String>, SqliteStoreError> {
    let has_table = |name: &str| -> Result<bool, SqliteStoreError> {
        conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [name],
            |row| row.get(0),
        )
        .map_err(|e| sql("read the schema of", path, e))
    };
    if !has_table("sync_meta")? {
        if has_table("sync_outbox")? {
            return Err(SqliteStoreError::ForeignSchema {
                path: path.to_path_buf(),
                found: "a sync_outbox table without sync_meta".to_owned(),
                expected: SCHEMA_VERSION,
            });
        }
        return Ok(None);
    }
    conn.query_row(
        "SELECT value FROM sync_meta WHERE key = 'schema_version'",
        [],
        |row| row.get::<_, String>(0),
    )
    .optional()
    .map_err(|e| sql("read the schema version of", path, e))
    .map(|found| Some(found.unwrap_or_else(|| "missing".to_owned())))
}

/// The text form of a status.
pub(crate) fn status_text(status: OperationStatus) -> &'static str {
    match status {
        OperationStatus::Pending => "pending",
        OperationStatus::InFlight => "in_flight",
        OperationStatus::Done => "done",
        OperationStatus::Failed => "failed",
    }
}

fn status_of(text: &str) -> Option<OperationStatus> {
    Some(match text {
        "pending" => OperationStatus::Pending,
        "in_flight" => OperationStatus::InFlight,
        "done" => OperationStatus::Done,
        "failed" => OperationStatus::Failed,
        _ => return None,
    })
}

fn ordering_text(mode: OrderingMode) -> &'static str {
    match mode {
        OrderingMode::SkipFailed => "skip_failed",
        OrderingMode::StopOnFailure => "stop_on_failure",
    }
}

fn ordering_of(text: &str) -> Option<OrderingMode> {
    Some(match text {
        "skip_failed" => OrderingMode::SkipFailed,
        "stop_on_failure" => OrderingMode::StopOnFailure,
        _ => return None,
    })
}

/// A row (selected with [`COLUMNS`]) as an operation.
pub(crate) fn row_to_operation(row: &Row<'_>, path: &Path) -> Result<Operation, SqliteStoreError> {
    let read = |e| sql("read an operation from", path, e);
    let id: String = row.get(0).map_err(read)?;
    let invalid = |column| SqliteStoreError::InvalidRow {
        path: path.to_path_buf(),
        id: id.clone(),
        column,
    };
    let status: String = row.get(4).map_err(read)?;
    let attempt: i64 = row.get(5).map_err(read)?;
    let seq: i64 = row.get(13).map_err(read)?;
    let mut op = Operation {
        kind: row.get(1).map_err(read)?,
        target: row.get(2).map_err(read)?,
        payload: row.get(3).map_err(read)?,
        status: status_of(&status).ok_or_else(|| invalid("status"))?,
        attempt: u32::try_from(attempt).map_err(|_| invalid("attempt"))?,
        next_retry_at_ms: row.get(6).map_err(read)?,
        last_error: row.get(7).map_err(read)?,
        created_at_ms: row.get(8).map_err(read)?,
        updated_at_ms: row.get(9).map_err(read)?,
        ordering_key: row.get(10).map_err(read)?,
        coalesce_key: row.get(11).map_err(read)?,
        owner: row.get(12).map_err(read)?,
        seq: u64::try_from(seq).map_err(|_| invalid("seq"))?,
        ..Operation::default()
    };
    let ordering: Option<String> = row.get(14).map_err(read)?;
    op.ordering = match ordering.as_deref() {
        None => None,
        Some(text) => Some(ordering_of(text).ok_or_else(|| invalid("ordering"))?),
    };
    op.idempotency_key = row.get(15).map_err(read)?;
    let replaced: String = row.get(16).map_err(read)?;
    op.replaced_keys = replaced.lines().map(str::to_owned).collect();
    op.first_sent_at_ms = row.get(17).map_err(read)?;
    let unanswered: i64 = row.get(18).map_err(read)?;
    op.unanswered_sends = u32::try_from(unanswered).map_err(|_| invalid("unanswered_sends"))?;
    op.server_version = row.get(19).map_err(read)?;
    let payload_version: i64 = row.get(20).map_err(read)?;
    op.payload_version = u32::try_from(payload_version).map_err(|_| invalid("payload_version"))?;
    op.account = row.get(21).map_err(read)?;
    op.keep_answer = row.get(22).map_err(read)?;
    op.answer = row.get(23).map_err(read)?;
    let needs: String = row.get(24).map_err(read)?;
    if !needs.is_empty() {
        op.needs = serde_json::from_str(&needs).map_err(|_| invalid("needs"))?;
    }
    op.traceparent = row.get(25).map_err(read)?;
    op.id = id;
    Ok(op)
}

/// The statement of [`put`]: an upsert, not `INSERT OR REPLACE`, because the
/// counting triggers must see an update of the row, not a silent delete.
static UPSERT: LazyLock<String> = LazyLock::new(|| {
    let updates = COLUMNS
        .split(", ")
        .skip(1)
        .map(|column| format!("{column} = excluded.{column}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO sync_outbox ({COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
         ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26) \
         ON CONFLICT (id) DO UPDATE SET {updates}"
    )
});

/// Inserts `op`, or replaces the row with its id.
pub(crate) fn put(conn: &Connection, op: &Operation, path: &Path) -> Result<(), SqliteStoreError> {
    if op.id.is_empty() {
        return Err(SqliteStoreError::InvalidOperation {
            reason: "the id is empty",
        });
    }
    let seq = i64::try_from(op.seq).map_err(|_| SqliteStoreError::InvalidOperation {
        reason: "seq is beyond what SQLite stores",
    })?;
    let needs = if op.needs.is_empty() {
        String::new()
    } else {
        serde_json::to_string(&op.needs).map_err(|_| SqliteStoreError::InvalidOperation {
            reason: "its needs cannot be written as JSON",
        })?
    };
    conn.prepare_cached(&UPSERT)
        .and_then(|mut statement| {
            statement.execute(params![
                op.id,
                op.kind,
                op.target,
                op.payload,
                status_text(op.status),
                i64::from(op.attempt),
                op.next_retry_at_ms,
                op.last_error,
                op.created_at_ms,
                op.updated_at_ms,
                op.ordering_key,
                op.coalesce_key,
                op.owner,
                seq,
                op.ordering.map(ordering_text),
                op.idempotency_key,
                op.replaced_keys.join("\n"),
                op.first_sent_at_ms,
                i64::from(op.unanswered_sends),
                op.server_version,
                i64::from(op.payload_version),
                op.account,
                op.keep_answer,
                op.answer,
                needs,
                op.traceparent,
            ])
        })
        .map_err(|e| sql("write an operation to", path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests;
