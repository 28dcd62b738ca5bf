//! One device, several accounts: each operation carries the account it was
//! made under, and only the signed-in account's operations are sent.
//!
//! The outbox has a current account ([`Outbox::set_account`], `None`
//! until set: operations made without accounts). An enqueue that names no
//! account gets the current one; a claim hands out only operations of the
//! current account, so they go out with that account's credentials and a
//! signed-out user's queue stays where it is, not sent and not mixed with
//! the next user's: ordering keys are per account (the next user's
//! `note/1` does not wait behind the last user's) and coalescing never
//! merges two accounts' edits. When the first user signs in again, their
//! operations go out in their old order.
//!
//! Switching: stop the engine (its sends in flight finish with the old
//! credentials), call `set_account`, give the transport the new
//! credentials, start an engine again.

use super::Outbox;
use crate::error::OutboxError;
use crate::operation::Operation;

impl Outbox {
    /// Makes `account` the signed-in one: from now on, claims hand out
    /// only its operations, and enqueues that name no account are stamped
    /// with it. `None`: operations made without an account. The other
    /// accounts' operations are kept, not sent. Not stored: call it at
    /// every start, from the app's own session. Stop the engine around a
    /// switch (see the module docs), so no send in flight carries another
    /// account's credentials.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use sync_outbox::{MemoryOutboxStore, Operation, Outbox, OutboxConfig};
    ///
    /// let outbox = Outbox::new(OutboxConfig::default(), Arc::new(MemoryOutboxStore::new()));
    /// outbox.set_account(Some("ann"));
    /// let anns = outbox.enqueue(Operation::new("note.save", "/notes/1", "{}"), 0)?;
    /// outbox.set_account(Some("ben")); // Ann signed out
    /// let bens = outbox.enqueue(Operation::new("note.save", "/notes/1", "{}"), 0)?;
    /// let claimed: Vec<String> = outbox.claim(1, 10)?.detach().into_iter().map(|op| op.id).collect();
    /// assert_eq!(claimed, [bens], "Ann's edit waits for Ann");
    /// assert_eq!(outbox.account_operations("ann")?[0].id, anns);
    /// # Ok::<(), sync_outbox::OutboxError>(())
    /// ```
    pub fn set_account(&self, account: Option<&str>) {
        self.lock().account = account.map(str::to_owned);
        // The new account's operations may be due now.
        self.shared.notify_claimable();
    }

    /// The signed-in account ([`set_account`](Self::set_account)).
    #[must_use]
    pub fn account(&self) -> Option<String> {
        self.lock().account.clone()
    }

    /// Operations of the signed-in account not yet sent (pending or in
    /// flight): what a drain waits for. The store's live count while no
    /// account is signed in; with one, one
    /// [`OutboxStore::load_all`](crate::OutboxStore::load_all) (the other
    /// accounts' operations are not counted).
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`].
    pub fn unsent_of_account(&self) -> Result<usize, OutboxError> {
        let account = self.account();
        let unsent = self.store.stats()?.unsent();
        if account.is_none() || unsent == 0 {
            return Ok(unsent);
        }
        Ok(self
            .store
            .load_all()?
            .iter()
            .filter(|op| op.account == account && !op.status.is_terminal())
            .count())
    }

    /// Every operation of `account`, in enqueue order: to show a user what
    /// is still waiting, or to export it (operations serialize with serde).
    /// Costs one [`OutboxStore::load_all`](crate::OutboxStore::load_all).
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`].
    pub fn account_operations(&self, account: &str) -> Result<Vec<Operation>, OutboxError> {
        let mut ops: Vec<Operation> = self
            .store
            .load_all()?
            .into_iter()
            .filter(|op| op.account.as_deref() == Some(account))
            .collect();
        ops.sort_by(|a, b| (a.seq, &a.id).cmp(&(b.seq, &b.id)));
        Ok(ops)
    }

    /// Discards every operation of `account` (a user who removed their
    /// account from the device), whatever its status; returns how many.
    /// Durable on `Ok`. A send of one still in flight is not stopped.
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`]; operations removed before the failure stay
    /// removed.
    pub fn discard_account(&self, account: &str) -> Result<usize, OutboxError> {
        let mut n = 0;
        for op in self.account_operations(account)? {
            self.discard(&op.id)?;
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
