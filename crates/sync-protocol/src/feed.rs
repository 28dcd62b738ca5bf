//! The download half's wire (`docs/PROTOCOL.md`, "Pulling changes"): what a
//! device asks the change feed for, what the server answers, and the
//! answers that mean "start again". No I/O.
//!
//! A device pulls `GET {pull_target}?cursor=..&limit=..` until `more` is
//! false, applying each page's changes and keeping the answer's `cursor`
//! for the next pull. Without a cursor it gets a snapshot of its scopes
//! first (without the deletes from before it began), then follows the feed
//! from there.

use serde::{Deserialize, Serialize};

/// The header on a server's answer to an operation applied in its
/// transactional form: the version the operation's transaction committed
/// at (an integer). The operation is reflected in what a device has pulled
/// once a pull answer's [`PullResponse::covers_below`] is above it.
pub const SYNC_VERSION: &str = "sync-version";

/// How many changes a pull answers when the request names no limit.
pub const DEFAULT_PULL_LIMIT: u32 = 500;

/// The most changes one pull may ask for; a larger `limit` (or `0`) is
/// answered `400` with [`PullErrorCode::BadLimit`].
pub const MAX_PULL_LIMIT: u32 = 10_000;

/// A pull request, carried in the query string of a `GET`:
/// `cursor=<opaque>&limit=<n>&scope=<s>&scope=<t>`.
///
/// # Examples
///
/// ```
/// use sync_protocol::PullRequest;
///
/// let request = PullRequest { cursor: Some("c1".into()), limit: Some(100), scopes: vec!["team 7".into()] };
/// let query = request.to_query();
/// assert_eq!(query, "cursor=c1&limit=100&scope=team+7");
/// assert_eq!(PullRequest::from_query(&query)?, request);
/// # Ok::<_, sync_protocol::PullErrorCode>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PullRequest {
    /// The cursor of the previous answer; `None` for a device that has
    /// nothing yet (it gets a snapshot first).
    pub cursor: Option<String>,
    /// How many changes at most; `None` for [`DEFAULT_PULL_LIMIT`].
    pub limit: Option<u32>,
    /// The scopes to pull, a subset of those the server entitles the caller
    /// to; empty for all of them.
    pub scopes: Vec<String>,
}

impl PullRequest {
    /// The request as a query string (without the `?`), form-encoded.
    #[must_use]
    pub fn to_query(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(cursor) = &self.cursor {
            query.append_pair("cursor", cursor);
        }
        if let Some(limit) = self.limit {
            query.append_pair("limit", &limit.to_string());
        }
        for scope in &self.scopes {
            query.append_pair("scope", scope);
        }
        query.finish()
    }

    /// Reads a query string (without the `?`). Unknown parameters are
    /// ignored.
    ///
    /// # Errors
    ///
    /// [`PullErrorCode::BadLimit`] for a limit that is not a number in
    /// `1..=MAX_PULL_LIMIT`; [`PullErrorCode::BadQuery`] for a cursor or
    /// limit given twice.
    pub fn from_query(query: &str) -> Result<Self, PullErrorCode> {
        let mut request = Self::default();
        let mut limit_seen = false;
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*name {
                "cursor" if request.cursor.is_some() => return Err(PullErrorCode::BadQuery),
                "cursor" => request.cursor = Some(value.into_owned()),
                "limit" if limit_seen => return Err(PullErrorCode::BadQuery),
                "limit" => {
                    limit_seen = true;
                    let limit = value
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_PULL_LIMIT).contains(n))
                        .ok_or(PullErrorCode::BadLimit)?;
                    request.limit = Some(limit);
                }
                "scope" => request.scopes.push(value.into_owned()),
                _ => {}
            }
        }
        Ok(request)
    }
}

/// A successful pull's answer (`200`, JSON).
///
/// # Examples
///
/// ```
/// use sync_protocol::{ChangeOp, PullResponse};
///
/// let page: PullResponse = serde_json::from_str(r#"{
///     "changes": [
///         {"scope": "user:7", "entity": "note", "id": "n1", "version": 41, "op": "upsert", "state": {"text": "hi"}},
///         {"scope": "user:7", "entity": "note", "id": "n0", "version": 42, "op": "delete"}
///     ],
///     "cursor": "AQ..", "more": false, "covers_below": 43, "snapshot": false
/// }"#)?;
/// assert!(matches!(page.changes[1].op, ChangeOp::Delete));
/// // Every operation answered with `sync-version` below 43 is in this download.
/// assert!(page.covers(42) && !page.covers(43));
/// # Ok::<_, serde_json::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PullResponse {
    /// The changes, in version order.
    pub changes: Vec<Change>,
    /// Where the next pull starts: opaque, send it back as it is.
    pub cursor: String,
    /// Whether more changes are waiting now: pull again at once.
    pub more: bool,
    /// Every change of a version below this is in what the device has
    /// pulled so far (this page and the ones before it), for its scopes. An
    /// operation whose answer carried [`SYNC_VERSION`] `v` is reflected
    /// once `v < covers_below`.
    pub covers_below: i64,
    /// Whether this page is part of a snapshot (a download that began
    /// without a cursor): deletes from before it began are left out (the
    /// device has nothing to delete), and the device's copy is the server's
    /// state once a page says `more: false`; pages before that may mix
    /// older and newer states.
    pub snapshot: bool,
}

impl PullResponse {
    /// Whether an operation answered with [`SYNC_VERSION`] `version` is
    /// reflected in the changes pulled up to this answer.
    #[must_use]
    pub fn covers(&self, version: i64) -> bool {
        version < self.covers_below
    }
}

/// One change of one entity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The scope it belongs to (a user, a team, a project).
    pub scope: String,
    /// The entity type (`"note"`).
    pub entity: String,
    /// The entity's id.
    pub id: String,
    /// The version of the commit that made it. Non-decreasing along the
    /// feed; the changes of one transaction share it on PostgreSQL.
    pub version: i64,
    /// What happened.
    #[serde(flatten)]
    pub op: ChangeOp,
}

/// What a change did: `"op": "upsert"` with the entity's whole new state, or
/// `"op": "delete"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ChangeOp {
    /// The entity now has this state (created or changed).
    Upsert {
        /// The entity's whole state, as the app's JSON.
        state: serde_json::Value,
    },
    /// The entity is gone.
    Delete,
}

/// The body of a pull's error answer: `{"error": "<code>"}`, plus
/// `"reason"` on a `410`.
///
/// # Examples
///
/// ```
/// use sync_protocol::{PullError, PullErrorCode, RestartReason};
///
/// let answer: PullError = serde_json::from_str(r#"{"error":"restart","reason":"cursor_compacted"}"#)?;
/// assert_eq!(answer.error, PullErrorCode::Restart);
/// assert_eq!(answer.error.status(), 410);
/// assert_eq!(answer.reason, Some(RestartReason::CursorCompacted));
/// # Ok::<_, serde_json::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullError {
    /// What is wrong.
    pub error: PullErrorCode,
    /// Why the device must start again (only with
    /// [`PullErrorCode::Restart`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<RestartReason>,
}

/// The error codes of a pull, each with one status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PullErrorCode {
    /// `400`: the cursor is not one this feed issued (garbled, cut, from
    /// another server's feed). Nothing was read.
    BadCursor,
    /// `400`: `limit` is not a number in `1..=MAX_PULL_LIMIT`.
    BadLimit,
    /// `400`: the query string is malformed (a parameter given twice).
    BadQuery,
    /// `403`: a requested scope is not one the caller is entitled to.
    ScopeForbidden,
    /// `403`: the caller is entitled to no scope at all.
    NoScopes,
    /// `410`: the cursor cannot be continued without a gap; drop it (and the
    /// server state it brought) and pull again without a cursor, keeping
    /// the device's own unsent edits. [`PullError::reason`] says why.
    Restart,
}

impl PullErrorCode {
    /// The HTTP status this code is answered with.
    #[must_use]
    pub fn status(self) -> u16 {
        match self {
            Self::BadCursor | Self::BadLimit | Self::BadQuery => 400,
            Self::ScopeForbidden | Self::NoScopes => 403,
            Self::Restart => 410,
        }
    }
}

impl std::fmt::Display for PullErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::BadCursor => "bad_cursor",
            Self::BadLimit => "bad_limit",
            Self::BadQuery => "bad_query",
            Self::ScopeForbidden => "scope_forbidden",
            Self::NoScopes => "no_scopes",
            Self::Restart => "restart",
        })
    }
}

impl std::error::Error for PullErrorCode {}

/// Why a cursor cannot be continued (a `410`'s `"reason"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RestartReason {
    /// The feed dropped deletes the cursor has not seen yet (it is older
    /// than the compaction horizon).
    CursorCompacted,
    /// The caller's scopes are not the ones the cursor was issued for (a
    /// user added to a team, or another user's cursor): what was pulled so
    /// far does not cover the new set.
    ScopesChanged,
    /// The cursor is ahead of the feed: the server's database is older than
    /// the cursor (restored from a backup).
    CursorAhead,
}
