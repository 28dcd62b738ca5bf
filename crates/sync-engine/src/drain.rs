//! A bounded drain, for the background time a mobile OS grants (iOS: about
//! 25-30 seconds): send what can be sent before a deadline, and say what
//! went and what is left.
//!
//! A drain asks the engine to sync now (operations waiting in backoff
//! become due), then waits on the outbox's counts, without polling, until
//! nothing is left to send or the deadline passes. Sends still in flight at
//! the deadline are not cut: the threaded engine cannot stop a blocking
//! request, and the async engine lets its tasks finish the request they
//! are in, so nothing is left half-recorded; they are reported as
//! `in_flight`, and if the app is suspended before they finish, their
//! operations are back in the queue at the next start (a `Claim` never
//! recorded is an orphan, requeued by recovery). An operation that fails
//! with a retryable error during the drain waits for its backoff like any
//! other: a drain does not hammer a failing server.

use std::time::Duration;

use sync_outbox::OutboxStats;

/// What a drain did, from the outbox's counts before and after it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Operations that became `Done` during the drain.
    pub sent: usize,
    /// Operations that became dead letters during the drain.
    pub failed: usize,
    /// Operations still waiting to be sent at the end (`Pending`), of every
    /// account.
    pub left: usize,
    /// Operations still being sent at the end: their requests finish, and
    /// are recorded, if the process lives on.
    pub in_flight: usize,
    /// Nothing of the signed-in account was left to send
    /// (`Outbox::unsent_of_account`): the queue drained before the
    /// deadline. Other accounts' operations wait for their user.
    pub complete: bool,
    /// How long the drain took.
    pub elapsed: Duration,
}

impl DrainReport {
    /// The report for counts `before` and `after`.
    pub(crate) fn between(before: &OutboxStats, after: &OutboxStats, elapsed: Duration) -> Self {
        Self {
            sent: after.done.saturating_sub(before.done),
            failed: after.failed.saturating_sub(before.failed),
            left: after.pending,
            in_flight: after.in_flight,
            complete: after.unsent() == 0,
            elapsed,
        }
    }
}
