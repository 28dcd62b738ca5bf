//! Payload versions: an app that ships a new payload format upgrades the
//! operations still queued in the old one, once, durably, at open.
//!
//! Each operation records the version of its payload's format
//! ([`Operation::payload_version`], 0 for operations made before versions
//! existed). [`Outbox::upgrade_payloads`] runs the app's upgrade on every
//! queued operation older than the current version and stores each result
//! in one write, payload and version together: a crash leaves every
//! operation either upgraded or not, never half, and the next run upgrades
//! the rest; an upgraded operation is never upgraded again.
//!
//! Only operations that never left the device are rewritten. One that may
//! have reached the server keeps its body: a resend under its idempotency
//! key must carry the same bytes (the server's layer refuses a changed body
//! with `422`), and the server already has, or replays, what it sent.
//! An operation whose version the app cannot upgrade (its hook says why)
//! or does not know (newer than current: a downgrade) becomes a dead
//! letter whose `last_error` gives the reason, never a crash.

use super::Outbox;
use crate::error::OutboxError;
use crate::operation::{Operation, OperationStatus};

/// What [`Outbox::upgrade_payloads`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PayloadUpgrade {
    /// Operations rewritten to the current version.
    pub upgraded: usize,
    /// Operations made dead letters: the hook refused them, or their
    /// version is newer than the current one.
    pub failed: usize,
    /// Operations of an older version left as they are because they may
    /// have reached the server.
    pub kept_as_sent: usize,
}

impl Outbox {
    /// Upgrades every queued operation (pending, or a dead letter) whose
    /// [`payload_version`](Operation::payload_version) is below `current`
    /// and that was never sent: `upgrade` gets it, rewrites its `payload`
    /// (and `kind` or `target` if the format moved them) and returns `Ok`;
    /// the outbox then sets its version to `current` and stores it, durable
    /// on return as the store promises. `Err(reason)` makes it a dead
    /// letter with that reason. An operation of a version above `current`
    /// becomes a dead letter too. Call it after opening the store and
    /// before starting an engine: operations in flight in this process are
    /// left alone. Costs one [`OutboxStore::load_all`](crate::OutboxStore::load_all).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use sync_outbox::{MemoryOutboxStore, Operation, Outbox, OutboxConfig};
    ///
    /// let outbox = Outbox::new(OutboxConfig::default(), Arc::new(MemoryOutboxStore::new()));
    /// // Queued by the previous release, whose notes had `text`.
    /// let id = outbox.enqueue(Operation::new("note.save", "/notes/1", r#"{"text":"milk"}"#), 0)?;
    /// // This release sends `body` (version 2).
    /// let report = outbox.upgrade_payloads(2, 10, |op| {
    ///     let old: serde_json::Value = serde_json::from_str(&op.payload).map_err(|e| e.to_string())?;
    ///     op.payload = serde_json::json!({ "body": old["text"] }).to_string();
    ///     Ok(())
    /// })?;
    /// assert_eq!(report.upgraded, 1);
    /// let op = outbox.store().get(&id)?.expect("kept");
    /// assert_eq!((op.payload.as_str(), op.payload_version), (r#"{"body":"milk"}"#, 2));
    /// # Ok::<(), sync_outbox::OutboxError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`]; operations stored before the failure stay
    /// upgraded, and a second call goes on from there.
    pub fn upgrade_payloads(
        &self,
        current: u32,
        now_ms: i64,
        mut upgrade: impl FnMut(&mut Operation) -> Result<(), String>,
    ) -> Result<PayloadUpgrade, OutboxError> {
        let mut report = PayloadUpgrade::default();
        let mut state = self.lock_loaded()?;
        let mut changed = false;
        for op in self.store.load_all()? {
            let queued = matches!(
                op.status,
                OperationStatus::Pending | OperationStatus::Failed
            );
            if !queued || op.payload_version == current {
                continue;
            }
            let mut next = op.clone();
            if op.payload_version > current {
                let why = format!(
                    "payload version {} is newer than this app's {current}",
                    op.payload_version
                );
                if already_failed(&op, &why) {
                    continue;
                }
                fail(&mut next, why, now_ms);
                report.failed += 1;
            } else if op.was_sent() {
                report.kept_as_sent += 1;
                continue;
            } else {
                match upgrade(&mut next) {
                    Ok(()) => {
                        // What the hook may not change: who the operation is.
                        next.id.clone_from(&op.id);
                        next.status = op.status;
                        next.seq = op.seq;
                        next.payload_version = current;
                        next.updated_at_ms = now_ms;
                        report.upgraded += 1;
                    }
                    Err(reason) => {
                        let why = format!(
                            "payload version {} cannot be upgraded to {current}: {reason}",
                            op.payload_version
                        );
                        if already_failed(&op, &why) {
                            continue;
                        }
                        next = op.clone();
                        fail(&mut next, why, now_ms);
                        report.failed += 1;
                    }
                }
            }
            self.store.put(&next)?;
            changed = true;
        }
        if changed {
            // A dead letter may free its key's queue, and coalescing must
            // not merge into an upgraded payload's old form: the indexes
            // are rebuilt from the store on next use.
            state.loaded = false;
        }
        drop(state);
        if changed {
            self.shared.notify_claimable();
        }
        Ok(report)
    }
}

/// Whether `op` is a dead letter for `why` already (a second run: nothing
/// to write, nothing to count).
fn already_failed(op: &Operation, why: &str) -> bool {
    op.status == OperationStatus::Failed && op.last_error == why
}

/// Makes `op` a dead letter saying `why`.
fn fail(op: &mut Operation, why: String, now_ms: i64) {
    op.status = OperationStatus::Failed;
    op.last_error = why;
    op.updated_at_ms = now_ms;
}

#[cfg(test)]
mod tests;
