//! All-or-nothing groups on the server (`docs/PROTOCOL.md`, "Groups"): a
//! group request carries several operations under one key; the handler
//! applies them in the key's transaction, and a member refused undoes the
//! members applied before it, so the group commits whole or not at all,
//! with its one response.
//!
//! - SQLite: [`SqliteIdempotencyStore::apply_group`](crate::SqliteIdempotencyStore::apply_group)
//!   inside [`SqliteIdempotencyStore::transaction`](crate::SqliteIdempotencyStore::transaction).
//! - PostgreSQL: apply each member through [`PgEffect::client`](crate::PgEffect::client),
//!   then [`PgEffect::commit`](crate::PgEffect::commit) the
//!   [`GroupResponse`](sync_protocol::GroupResponse), or
//!   [`PgEffect::refuse`](crate::PgEffect::refuse) at the first refusal.

use http::StatusCode;
use sync_protocol::GroupResponse;

use crate::response::StoredResponse;

/// What applying one member of a group came to, from the app's closure.
#[derive(Clone, Debug, PartialEq)]
pub enum Member {
    /// Applied: what a single request for it would have answered (its entry
    /// in the group's [`GroupResponse`]; `Value::Null` for nothing).
    Applied(serde_json::Value),
    /// Refused (a 4xx: insufficient funds, a closed account): the whole
    /// group is undone, and this is its response, stored under the group's
    /// key so a retry gets it again.
    Refused(StoredResponse),
}

/// The response of a group whose members were all applied: `200` with
/// `{"results": [...]}`.
#[must_use]
pub fn group_applied(results: Vec<serde_json::Value>) -> StoredResponse {
    StoredResponse::json(StatusCode::OK, &GroupResponse { results })
}

/// The refusal of a group that has no members (a client never sends one).
pub(crate) fn empty_group() -> StoredResponse {
    StoredResponse::json(
        StatusCode::UNPROCESSABLE_ENTITY,
        &serde_json::json!({ "error": "empty_group" }),
    )
}
