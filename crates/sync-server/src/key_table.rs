//! The key table's SQL, written once for both SQL stores in PostgreSQL's
//! dialect; the SQLite store swaps `$n` for `?n`, `BYTEA` for `BLOB` and
//! `BIGINT` for `INTEGER`. `{TABLE}` and `{SCHEMA_VERSION}` are filled in by
//! the store.
//!
//! A completed key keeps its whole response until `expires_at_ms`; then
//! `purge_expired` drops its headers and body, and the row (scope, key,
//! fingerprint, status) stays until `remembered_until_ms`, so a late repeat
//! is answered, never run again.

/// A new database: the version table, the key table and its partial
/// indexes (one per purge statement).
pub(crate) const CREATE: &str = "
CREATE TABLE IF NOT EXISTS sync_idempotency_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO sync_idempotency_meta VALUES ('schema_version', '{SCHEMA_VERSION}');
CREATE TABLE {TABLE} (
  scope TEXT NOT NULL, key TEXT NOT NULL, fingerprint BYTEA NOT NULL,
  state BIGINT NOT NULL, token TEXT, lease_until_ms BIGINT,
  status BIGINT, headers TEXT, body BYTEA, expires_at_ms BIGINT,
  created_at_ms BIGINT NOT NULL, remembered_until_ms BIGINT,
  PRIMARY KEY (scope, key));
CREATE INDEX {TABLE}_expiry ON {TABLE} (expires_at_ms) WHERE state = 1 AND headers IS NOT NULL;
CREATE INDEX {TABLE}_memory ON {TABLE} (remembered_until_ms) WHERE state = 1;
CREATE INDEX {TABLE}_lease ON {TABLE} (lease_until_ms) WHERE state = 0;
";

/// Version 1 to 2: the key memory. A completed key of version 1 is
/// remembered 30 days (`sync_protocol::DEFAULT_KEY_MEMORY`) from its start,
/// and never less than its response.
pub(crate) const UPGRADE_FROM_V1: &str = "
ALTER TABLE {TABLE} ADD COLUMN remembered_until_ms BIGINT;
UPDATE {TABLE} SET remembered_until_ms = CASE
    WHEN expires_at_ms > created_at_ms + 2592000000 THEN expires_at_ms
    ELSE created_at_ms + 2592000000 END
  WHERE state = 1;
DROP INDEX {TABLE}_expiry;
CREATE INDEX {TABLE}_expiry ON {TABLE} (expires_at_ms) WHERE state = 1 AND headers IS NOT NULL;
CREATE INDEX {TABLE}_memory ON {TABLE} (remembered_until_ms) WHERE state = 1;
UPDATE sync_idempotency_meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version';
";

/// Marks a running key completed, if the claim's token still holds it:
/// `$1` status, `$2` headers, `$3` body, `$4` response expiry, `$5` memory
/// end, `$6` scope, `$7` key, `$8` token.
pub(crate) const COMPLETE: &str = "UPDATE {TABLE} SET state = 1, token = NULL, \
     lease_until_ms = NULL, status = $1, headers = $2, body = $3, expires_at_ms = $4, \
     remembered_until_ms = $5 WHERE scope = $6 AND key = $7 AND state = 0 AND token = $8";

/// `purge_expired` at `$1`: drop the response of keys past their ttl (the
/// status stays), forget keys past their memory, forget running keys past
/// their lease. Each on its own partial index; the first is not counted
/// (it forgets no key).
pub(crate) const PURGE: [&str; 3] = [
    "UPDATE {TABLE} SET headers = NULL, body = NULL \
     WHERE state = 1 AND headers IS NOT NULL AND expires_at_ms <= $1",
    "DELETE FROM {TABLE} WHERE state = 1 AND remembered_until_ms <= $1",
    "DELETE FROM {TABLE} WHERE state = 0 AND lease_until_ms <= $1",
];
