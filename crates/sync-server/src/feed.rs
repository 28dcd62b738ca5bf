//! The change feed: what the server's state became, recorded in the same
//! transaction as the write that changed it, and served in pages that every
//! device can follow without missing a change.
//!
//! The feed keeps one row per entity (per scope): its latest change, an
//! upsert with the whole new state or a delete (a tombstone). A change moves
//! the entity's row to a new position `(version, seq)`; a reader that
//! passed the old position meets the row again at the new one. Tombstones
//! are dropped by [`ChangeFeed::compact`], which moves the feed's
//! *compaction horizon*; a cursor below it is told to start again.
//!
//! # Why a cursor never skips a change
//!
//! A reader serves only positions below the feed's *visible horizon*: a
//! version below which every transaction that could still record a change
//! has ended. On SQLite, writers are serialized, the version is a counter
//! taken inside the writing transaction, and the horizon is the last
//! committed version plus one. On PostgreSQL the version is the writing
//! transaction's id (`pg_current_xact_id()`), and the horizon is the oldest
//! transaction id still running (`pg_snapshot_xmin` of the reader's
//! snapshot): every transaction below it has committed or rolled back, and
//! every transaction that has not yet written gets a larger id. A
//! transaction that holds its version open therefore holds the feed back
//! (every reader waits for it, and for any long transaction on the
//! database), but never lets a reader move past it. A sequence value taken
//! at write time would not do: version 11 can commit while 10 is still
//! open, and a reader that saw 11 would pass 10 forever.

pub(crate) mod cursor;
mod pull;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod table;

use std::fmt;
use std::time::Duration;

pub use pull::{EntitledScopesFn, PullConfig, PullService};
use sync_protocol::Change;

use crate::error::ServerError;

/// A change to record: an entity's new state, or its deletion, in a scope.
/// Record it inside the transaction of the write it describes
/// (`SqliteIdempotencyStore::record`, `PgEffect::record`,
/// `PostgresIdempotencyStore::record`): it commits with that write, or not
/// at all.
///
/// An entity is identified by `(scope, entity, id)`: moving one to another
/// scope is a delete in the old scope and an upsert in the new one.
///
/// # Examples
///
/// ```
/// use sync_server::FeedChange;
///
/// let saved = FeedChange::upsert("user:7", "note", "n1", &serde_json::json!({"text": "hi"}));
/// let gone = FeedChange::delete("user:7", "note", "n0");
/// assert!(saved.state.is_some() && gone.state.is_none());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedChange {
    /// Who may read it: a user, a team, a project (what a pull's scopes
    /// are matched against).
    pub scope: String,
    /// The entity type (`"note"`).
    pub entity: String,
    /// The entity's id.
    pub id: String,
    /// The whole new state as JSON text; `None`: deleted.
    pub state: Option<String>,
}

impl FeedChange {
    /// The entity `(scope, entity, id)` now has `state` (serialized to
    /// JSON; a value that cannot be serialized records `null`).
    #[must_use]
    pub fn upsert(scope: &str, entity: &str, id: &str, state: &impl serde::Serialize) -> Self {
        Self {
            scope: scope.to_owned(),
            entity: entity.to_owned(),
            id: id.to_owned(),
            state: Some(serde_json::to_string(state).unwrap_or_else(|_| "null".to_owned())),
        }
    }

    /// The entity `(scope, entity, id)` is deleted.
    #[must_use]
    pub fn delete(scope: &str, entity: &str, id: &str) -> Self {
        Self {
            scope: scope.to_owned(),
            entity: entity.to_owned(),
            id: id.to_owned(),
            state: None,
        }
    }
}

/// A place in the feed: the version of the commit that made a change, and
/// the change's order within that version. Totally ordered; positions only
/// grow along the feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// The commit's version.
    pub version: i64,
    /// The order within the version.
    pub seq: i64,
}

impl Position {
    /// Before every change.
    pub const START: Self = Self {
        version: i64::MIN,
        seq: i64::MIN,
    };

    /// After every change of versions below `version`.
    #[must_use]
    pub fn below(version: i64) -> Self {
        Self {
            version: version.saturating_sub(1),
            seq: i64::MAX,
        }
    }
}

/// What [`ChangeFeed::read`] is asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedQuery {
    /// The scopes to read (already checked against the caller's).
    pub scopes: Vec<String>,
    /// Changes after this position.
    pub after: Position,
    /// Deletes of a version below this are left out (a snapshot's device
    /// has nothing to delete from before it began); `i64::MIN` keeps all.
    pub deletes_from: i64,
    /// At most this many changes.
    pub limit: usize,
    /// The page stops once its entity states add up to this many bytes
    /// (with at least one change), with `more` set.
    pub max_bytes: usize,
}

/// One page of the feed, read in one consistent snapshot of the database.
#[derive(Clone, Debug, PartialEq)]
pub struct FeedPage {
    /// The changes after the query's position, in position order, all
    /// below `horizon`.
    pub changes: Vec<(Position, Change)>,
    /// Whether more changes below `horizon` were left out (by the limit or
    /// the byte bound).
    pub more: bool,
    /// The visible horizon: every change of a version below it is
    /// committed and was visible to this read; none of a version at or
    /// above it was served.
    pub horizon: i64,
    /// The compaction horizon: deletes of versions below it may have been
    /// dropped.
    pub compacted_below: i64,
}

/// What [`ChangeFeed::compact`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compaction {
    /// How many tombstones were dropped.
    pub deletes_dropped: u64,
    /// The compaction horizon now: cursors below it must start again.
    pub compacted_below: i64,
}

/// The secret a feed signs its cursors with, and its identity: made with
/// the feed's tables, kept in the database, the same for every server
/// instance on it and across restarts.
#[derive(Clone, PartialEq, Eq)]
pub struct FeedKey {
    /// The feed's random identity: a cursor of another feed is refused.
    pub id: [u8; 16],
    /// The key cursors are authenticated with (HMAC-SHA-256).
    pub secret: [u8; 32],
}

impl fmt::Debug for FeedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeedKey")
            .field("id", &cursor::hex(&self.id))
            .finish_non_exhaustive()
    }
}

/// Where the change feed lives: implemented by `SqliteIdempotencyStore`
/// (feature `sqlite`) and `PostgresIdempotencyStore` (feature `postgres`),
/// on tables next to the key table. [`PullService`] serves it.
#[async_trait::async_trait]
pub trait ChangeFeed: Send + Sync + fmt::Debug + 'static {
    /// The feed's identity and cursor secret.
    ///
    /// # Errors
    ///
    /// The store's own errors; [`ServerError::CorruptRecord`] if the stored
    /// key is unreadable.
    async fn feed_key(&self) -> Result<FeedKey, ServerError>;

    /// Reads one page, in one snapshot: the changes of `query.scopes` after
    /// `query.after` and below the visible horizon, in position order.
    ///
    /// # Errors
    ///
    /// The store's own errors; [`ServerError::CorruptRecord`] for a row
    /// whose state is not JSON.
    async fn read(&self, query: FeedQuery) -> Result<FeedPage, ServerError>;

    /// Drops the tombstones older than `keep_deletes` (by the database's
    /// clock) that are below the visible horizon, and moves the compaction
    /// horizon past the newest one dropped, in one transaction. Upserts are
    /// never dropped: each entity has one row, its latest change, already.
    /// A device whose cursor is older than the horizon is told to start
    /// again ([`RestartReason::CursorCompacted`]), so `keep_deletes` is how
    /// long a device may stay offline and still catch up by changes alone.
    ///
    /// [`RestartReason::CursorCompacted`]: sync_protocol::RestartReason::CursorCompacted
    ///
    /// # Errors
    ///
    /// The store's own errors.
    async fn compact(&self, keep_deletes: Duration) -> Result<Compaction, ServerError>;
}
