//! When a sleeping sender looks again: shared by the threaded and the tokio
//! engine, so both sleep by the same rules.

use sync_outbox::Outbox;

use crate::probe::{NetworkProbe, Pause};

/// How long a sender waits (ms) after a failed pass before trying again,
/// unless woken: a store that keeps failing must not be retried in a loop.
pub(crate) const ERROR_BACKOFF_MS: i64 = 1_000;

/// When to look again, at the latest, if nothing wakes the sender sooner:
/// the next claimable time; the probe's next check while offline, or the
/// next try while the server is unreachable; the expiry of a claim no
/// sender holds (at most `inflight_recheck_ms` away). `None`: sleep until
/// woken (a sibling trying the unreachable server wakes us when it is done).
pub(crate) fn next_wake_at(
    outbox: &Outbox,
    probe: &NetworkProbe,
    now: i64,
    inflight_recheck_ms: i64,
) -> Option<i64> {
    let mut deadline: Option<i64> = None;
    let mut consider = |at: i64| deadline = Some(deadline.map_or(at, |d| d.min(at)));
    match outbox.next_claimable_at_ms() {
        // Claimable later: sleep until then.
        Ok(Some(at)) if at > now => consider(at),
        // Claimable now but nothing was sent: offline or paused (look again
        // then), a sibling is trying the unreachable server (wait to be
        // woken), or another sender claimed it first (look again at once).
        Ok(Some(_)) => match probe.paused(now) {
            Some(Pause::Until(at)) => consider(at),
            Some(Pause::TryInFlight) => {}
            None => consider(now),
        },
        // Nothing pending, or all behind in-flight keys: a finished batch,
        // a claimable change or an expiry wakes us.
        Ok(None) => {}
        // The store failed: try again shortly rather than spin.
        Err(_) => consider(now + 1_000),
    }
    // Claims no sender holds come back when they time out.
    if let Some(at) = outbox.next_expiry_at_ms() {
        consider(at.clamp(now, now + inflight_recheck_ms));
    }
    deadline
}
