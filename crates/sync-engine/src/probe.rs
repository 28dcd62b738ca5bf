//! [`NetworkProbe`]: whether sending is worth trying now, from a user check,
//! the application's own connectivity events, and what the last sends met:
//! after a send that got no answer, sending pauses and backs off, one
//! operation at a time, until something gets through.

use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Settings of a [`NetworkProbe`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkProbeConfig {
    /// How long an "online" answer is trusted before the check runs again.
    /// Default 1 s.
    pub cache_ttl: Duration,
    /// How long an "offline" answer is trusted before the check runs again.
    /// Default 2 s.
    pub offline_recheck: Duration,
    /// When the network comes back, make operations waiting in backoff due at
    /// once, so the queue drains on reconnect rather than on the next local
    /// write or backoff expiry. Default `true`.
    pub drain_on_reconnect: bool,
    /// After a send got no answer (the server or the network unreachable:
    /// [`SendResult::not_sent`], [`SendResult::no_answer`]), how long
    /// sending pauses before one operation is tried again; doubled after
    /// each try that gets no answer either, up to
    /// [`unreachable_backoff_max`](Self::unreachable_backoff_max). The
    /// first send that gets an answer ends the pause. Default 1 s.
    ///
    /// [`SendResult::not_sent`]: crate::SendResult::not_sent
    /// [`SendResult::no_answer`]: crate::SendResult::no_answer
    pub unreachable_backoff: Duration,
    /// The longest pause between tries while the server is unreachable.
    /// Default 60 s: a ten-minute outage costs about 15 requests.
    pub unreachable_backoff_max: Duration,
    /// The old form of [`cache_ttl`](Self::cache_ttl), in ms: read only
    /// while `cache_ttl` is at its default. Default 1,000.
    #[deprecated(since = "0.1.0", note = "use `cache_ttl: Duration`")]
    pub cache_ttl_ms: i64,
    /// The old form of [`offline_recheck`](Self::offline_recheck), in ms:
    /// read only while `offline_recheck` is at its default. Default 2,000.
    #[deprecated(since = "0.1.0", note = "use `offline_recheck: Duration`")]
    pub offline_recheck_ms: i64,
}

const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(1);
const DEFAULT_OFFLINE_RECHECK: Duration = Duration::from_secs(2);

impl Default for NetworkProbeConfig {
    #[expect(
        deprecated,
        reason = "the old fields keep their defaults for one release"
    )]
    fn default() -> Self {
        Self {
            cache_ttl: DEFAULT_CACHE_TTL,
            offline_recheck: DEFAULT_OFFLINE_RECHECK,
            drain_on_reconnect: true,
            unreachable_backoff: Duration::from_secs(1),
            unreachable_backoff_max: Duration::from_secs(60),
            cache_ttl_ms: millis(DEFAULT_CACHE_TTL),
            offline_recheck_ms: millis(DEFAULT_OFFLINE_RECHECK),
        }
    }
}

impl NetworkProbeConfig {
    /// How long an "online" or "offline" answer is trusted, in ms: the
    /// `Duration` setting, or its deprecated `_ms` form when only that was
    /// set.
    #[expect(deprecated, reason = "the old fields are honoured for one release")]
    fn trust_ms(&self, online: bool) -> i64 {
        let (new, default, old) = if online {
            (self.cache_ttl, DEFAULT_CACHE_TTL, self.cache_ttl_ms)
        } else {
            (
                self.offline_recheck,
                DEFAULT_OFFLINE_RECHECK,
                self.offline_recheck_ms,
            )
        };
        if new == default { old } else { millis(new) }
    }
}

/// `duration` in whole milliseconds, saturating at `i64::MAX`.
pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// How much a sender may send now, from [`NetworkProbe::permit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Permit {
    /// Nothing: offline, or paused while the server is unreachable.
    Wait,
    /// One operation, to find out whether the server is back. The sender
    /// must end it with `report_reached`, `report_unreachable` or
    /// `end_try`.
    Try,
    /// A whole batch.
    Send,
}

/// Why a sender that found work did not send, from
/// [`NetworkProbe::paused`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pause {
    /// The user's check says offline, or the server is unreachable: look
    /// again at this time.
    Until(i64),
    /// Another sender is trying one operation: wait to be woken.
    TryInFlight,
}

/// Tells the worker whether the network is worth trying.
///
/// It caches the user's check for `cache_ttl_ms` (online) or
/// `offline_recheck_ms` (offline); [`set_online`](Self::set_online) and
/// [`report_failure`](Self::report_failure) let the application's own
/// connectivity events override it at once. Every offline -> online flip is
/// counted as a reconnect.
///
/// The workers also tell it what their sends met. A send that got no
/// answer ([`report_unreachable`](Self::report_unreachable)) pauses sending
/// even while the check says online (a phone on Wi-Fi whose server is
/// down): after `unreachable_backoff_ms`, one operation is tried, by one
/// sender; no answer again doubles the pause (up to
/// `unreachable_backoff_max_ms`), and the first answer
/// ([`report_reached`](Self::report_reached)) ends it and counts as a
/// reconnect, so the queue drains at once.
///
/// # Examples
///
/// ```
/// use sync_engine::{NetworkProbe, NetworkProbeConfig};
///
/// let probe = NetworkProbe::new(NetworkProbeConfig::default(), || true);
/// assert!(probe.is_online(0));
/// probe.report_failure(10);
/// assert!(!probe.is_online(11), "trusted until the re-check");
/// assert!(probe.is_online(2_010), "re-checked after offline_recheck_ms");
/// assert_eq!(probe.reconnects(), 1);
/// ```
pub struct NetworkProbe {
    config: NetworkProbeConfig,
    check: Box<dyn Fn() -> bool + Send + Sync>,
    state: Mutex<ProbeState>,
    /// Called on every offline -> online flip (a background sender wakes).
    listeners: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
}

#[derive(Debug, Default)]
struct ProbeState {
    online: Option<bool>,
    next_check_at_ms: i64,
    reconnects: u64,
    /// Set while the last sends got no answer.
    unreachable: Option<Unreachable>,
}

/// The pause while the server is unreachable.
#[derive(Debug, Clone, Copy)]
struct Unreachable {
    /// Tries in a row that got no answer (the send that started the pause
    /// counts as the first).
    streak: u32,
    /// When the next single try may start.
    next_try_at_ms: i64,
    /// Whether a sender is trying one operation now.
    trying: bool,
}

impl fmt::Debug for NetworkProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetworkProbe")
            .field("config", &self.config)
            .field("state", &*self.lock())
            .finish_non_exhaustive()
    }
}

impl NetworkProbe {
    /// A probe that asks `check` when its cached answer has expired.
    pub fn new(
        config: NetworkProbeConfig,
        check: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Self {
        Self {
            config,
            check: Box::new(check),
            state: Mutex::new(ProbeState::default()),
            listeners: Mutex::new(Vec::new()),
        }
    }

    /// Calls `listener` on every offline -> online flip, on the thread that
    /// saw it. Keep it short and non-blocking.
    pub fn on_reconnect(&self, listener: impl Fn() + Send + Sync + 'static) {
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::new(listener));
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &NetworkProbeConfig {
        &self.config
    }

    /// Whether the network is up at `now_ms`: the cached answer while it is
    /// fresh, else the user's check.
    pub fn is_online(&self, now_ms: i64) -> bool {
        let mut state = self.lock();
        if let Some(online) = state.online
            && now_ms < state.next_check_at_ms
        {
            return online;
        }
        drop(state);
        // The check may be slow (a DNS lookup); it runs without the lock.
        let online = (self.check)();
        state = self.lock();
        let reconnected = self.record(&mut state, online, now_ms);
        drop(state);
        if reconnected {
            self.notify();
        }
        online
    }

    /// The application knows the network state (an OS connectivity event):
    /// use it until the next check is due.
    pub fn set_online(&self, online: bool, now_ms: i64) {
        let mut state = self.lock();
        let reconnected = self.record(&mut state, online, now_ms);
        drop(state);
        if reconnected {
            self.notify();
        }
    }

    /// A send failed for network reasons: treat the network as down until the
    /// next re-check.
    pub fn report_failure(&self, now_ms: i64) {
        self.set_online(false, now_ms);
    }

    /// Forgets when the cached answer expires, keeping the answer itself:
    /// the next [`is_online`](Self::is_online) runs the check (a
    /// pull-to-refresh should not wait out an "offline" answer), and while
    /// the server is unreachable the next pass tries one operation at once.
    pub fn expire(&self) {
        let mut state = self.lock();
        state.next_check_at_ms = i64::MIN;
        if let Some(unreachable) = &mut state.unreachable {
            unreachable.next_try_at_ms = i64::MIN;
        }
    }

    /// A send got no answer at `now_ms` (the server or the network is
    /// unreachable): pause sending. The first time, for
    /// `unreachable_backoff_ms`; after a try that got no answer either, for
    /// twice the last pause, up to `unreachable_backoff_max_ms`. Other
    /// sends of the same batches that got no answer change nothing more.
    pub fn report_unreachable(&self, now_ms: i64) {
        self.report_unreachable_for(now_ms, None);
    }

    /// [`report_unreachable`](Self::report_unreachable), pausing at least
    /// `hint_ms` (a 503's `Retry-After`, capped at
    /// `unreachable_backoff_max_ms`).
    pub(crate) fn report_unreachable_for(&self, now_ms: i64, hint_ms: Option<i64>) {
        let mut state = self.lock();
        let streak = match state.unreachable {
            None => 1,
            Some(Unreachable {
                trying: true,
                streak,
                ..
            }) => streak.saturating_add(1),
            Some(Unreachable { trying: false, .. }) => return,
        };
        let base = millis(self.config.unreachable_backoff);
        let max = millis(self.config.unreachable_backoff_max).max(base);
        let pause = base
            .saturating_mul(1_i64 << (streak - 1).min(40))
            .min(max)
            .max(hint_ms.unwrap_or(0).clamp(0, max));
        state.unreachable = Some(Unreachable {
            streak,
            next_try_at_ms: now_ms.saturating_add(pause),
            trying: false,
        });
    }

    /// A send got an answer at `now_ms`: the server is reachable. Ends a
    /// pause (counted as a reconnect: the queue drains, sleeping senders
    /// wake).
    pub fn report_reached(&self, _now_ms: i64) {
        let mut state = self.lock();
        if state.unreachable.take().is_none() {
            return;
        }
        state.reconnects += 1;
        drop(state);
        self.notify();
    }

    /// Whether the last sends got an answer: `false` while sending is paused
    /// because the server was unreachable.
    #[must_use]
    pub fn is_reachable(&self) -> bool {
        self.lock().unreachable.is_none()
    }

    /// What a sender may send at `now_ms`, given the user's check (already
    /// asked) and the pause. Hands out at most one [`Permit::Try`] at a
    /// time.
    pub(crate) fn permit(&self, now_ms: i64) -> Permit {
        let mut state = self.lock();
        match &mut state.unreachable {
            None => Permit::Send,
            Some(u) if u.trying || now_ms < u.next_try_at_ms => Permit::Wait,
            Some(u) => {
                u.trying = true;
                Permit::Try
            }
        }
    }

    /// Ends a [`Permit::Try`] that sent nothing (nothing was due, or the
    /// transport gave no result): the next pass may try at once.
    pub(crate) fn end_try(&self) {
        if let Some(u) = &mut self.lock().unreachable {
            u.trying = false;
        }
    }

    /// Why a sender that has work should not send at `now_ms`, if it
    /// should not: the check's cached "offline", or the pause.
    pub(crate) fn paused(&self, now_ms: i64) -> Option<Pause> {
        let state = self.lock();
        let offline_until = (state.online == Some(false)).then_some(state.next_check_at_ms);
        let unreachable_until = match state.unreachable {
            Some(Unreachable { trying: true, .. }) if offline_until.is_none() => {
                return Some(Pause::TryInFlight);
            }
            Some(u) => Some(u.next_try_at_ms),
            None => None,
        };
        let until = match (offline_until, unreachable_until) {
            (Some(a), Some(b)) => a.max(b),
            (a, b) => a.or(b)?,
        };
        Some(Pause::Until(until.max(now_ms.saturating_add(1))))
    }

    /// How many offline -> online flips the probe has seen.
    #[must_use]
    pub fn reconnects(&self) -> u64 {
        self.lock().reconnects
    }

    /// When the cached answer expires (ms), if there is one.
    #[must_use]
    pub fn next_check_at_ms(&self) -> Option<i64> {
        let state = self.lock();
        state.online.map(|_| state.next_check_at_ms)
    }

    /// Stores an answer; returns whether it was a reconnect.
    fn record(&self, state: &mut ProbeState, online: bool, now_ms: i64) -> bool {
        let reconnected = online && state.online == Some(false);
        if reconnected {
            state.reconnects += 1;
        }
        state.online = Some(online);
        let ttl = self.config.trust_ms(online);
        state.next_check_at_ms = now_ms.saturating_add(ttl.max(0));
        reconnected
    }

    /// The last answer, if any, without running the check.
    #[must_use]
    pub fn last_known(&self) -> Option<bool> {
        self.lock().online
    }

    fn notify(&self) {
        for listener in self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            listener();
        }
    }

    fn lock(&self) -> MutexGuard<'_, ProbeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
