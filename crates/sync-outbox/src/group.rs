//! All-or-nothing groups: several operations enqueued as one unit
//! ([`Operation::group`]).
//!
//! A group is **one** queued operation whose payload is the wire's
//! [`GroupRequest`] holding its members, sent as one request under one
//! idempotency key to [`GROUP_TARGET`], which a server applies in one
//! transaction (`sync-server`: `SqliteIdempotencyStore::apply_group`,
//! `PgEffect::refuse`). So every store writes it in one record, every claim
//! takes it whole, every retry resends it whole under the same key, and a
//! batch carries it as one element: no crash, retry or batch boundary can
//! split it.

use sync_protocol::{GROUP_TARGET, GroupOperation, GroupRequest};

use crate::error::OutboxError;
use crate::operation::Operation;

impl Operation {
    /// One operation that carries `members` to the server together, to be
    /// applied all or not at all (a transfer's debit and credit). `kind`
    /// names the unit for the app (`"transfer"`); the target is
    /// [`GROUP_TARGET`] and the payload the members as a [`GroupRequest`]
    /// (`docs/PROTOCOL.md`, "Groups").
    ///
    /// Each member keeps its kind, target and payload; everything else about
    /// queueing (ordering and coalesce keys, account, payload version) is
    /// the group's, set on the returned operation. Members' [needs](crate::Need)
    /// become the group's (their placeholders are in its payload), and a
    /// member that keeps its answer makes the group keep its answer (the
    /// server's [`GroupResponse`](sync_protocol::GroupResponse)).
    ///
    /// # Errors
    ///
    /// [`OutboxError::InvalidOperation`] for an empty group or a member
    /// that can never be sent ([`Operation::unsendable`]);
    /// [`OutboxError::Payload`] if the members cannot be written as JSON.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use sync_outbox::{MemoryOutboxStore, Operation, Outbox, OutboxConfig};
    ///
    /// let outbox = Outbox::new(OutboxConfig::default(), Arc::new(MemoryOutboxStore::new()));
    /// let transfer = Operation::group("transfer", [
    ///     Operation::new("account.debit", "/accounts/a", r#"{"cents":500}"#),
    ///     Operation::new("account.credit", "/accounts/b", r#"{"cents":500}"#),
    /// ])?;
    /// assert_eq!(transfer.target, sync_outbox::GROUP_TARGET);
    /// let id = outbox.enqueue(transfer, 0)?;
    ///
    /// // One claim, one request, one key: the members never travel apart.
    /// let claim = outbox.claim(1, 10)?;
    /// let members = claim.ops()[0].group_members()?;
    /// assert_eq!((claim.ops()[0].id.as_str(), members.len()), (id.as_str(), 2));
    /// # Ok::<_, sync_outbox::OutboxError>(())
    /// ```
    pub fn group(
        kind: impl Into<String>,
        members: impl IntoIterator<Item = Operation>,
    ) -> Result<Self, OutboxError> {
        let mut group = Self::new(kind, GROUP_TARGET, String::new());
        let mut operations = Vec::new();
        for member in members {
            if let Some(problem) = member.unsendable() {
                return Err(OutboxError::InvalidOperation {
                    id: member.id,
                    kind: member.kind,
                    problem,
                });
            }
            group.keep_answer |= member.keep_answer;
            group.needs.extend(member.needs);
            operations.push(GroupOperation::new(
                member.kind,
                member.target,
                member.payload,
            ));
        }
        if operations.is_empty() {
            return Err(OutboxError::InvalidOperation {
                id: String::new(),
                kind: group.kind,
                problem: "a group has no members",
            });
        }
        group.payload = serde_json::to_string(&GroupRequest { operations }).map_err(|_| {
            OutboxError::Payload {
                id: String::new(),
                kind: group.kind.clone(),
                problem: "the group's members cannot be written as JSON",
                line: 0,
                column: 0,
            }
        })?;
        Ok(group)
    }

    /// The members of a group made by [`Operation::group`], read back from
    /// its payload.
    ///
    /// # Errors
    ///
    /// [`OutboxError::Payload`] if the payload is not a group's.
    pub fn group_members(&self) -> Result<Vec<GroupOperation>, OutboxError> {
        Ok(self.payload_json::<GroupRequest>()?.operations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_round_trip_and_bad_groups_are_refused() -> Result<(), OutboxError> {
        let group = Operation::group(
            "transfer",
            [
                Operation::new("a.debit", "/a", "{\"x\":\"\\\"\"}").keeping_answer(),
                Operation::new("b.credit", "/b", "")
                    .needing(crate::Need::new("op_1", "/id", "tmp")),
            ],
        );
        // The need's placeholder is not in the member: still carried (the
        // outbox refuses it at enqueue).
        let group = group?;
        assert!(group.keep_answer);
        assert_eq!(group.needs.len(), 1);
        let members = group.group_members()?;
        assert_eq!(members[0].payload, "{\"x\":\"\\\"\"}");
        assert_eq!(members[1].target, "/b");

        assert!(matches!(
            Operation::group("empty", []),
            Err(OutboxError::InvalidOperation { .. })
        ));
        assert!(matches!(
            Operation::group("bad", [Operation::new("k", "no-slash", "")]),
            Err(OutboxError::InvalidOperation { .. })
        ));
        assert!(Operation::new("k", "/t", "{}").group_members().is_err());
        Ok(())
    }
}
