//! [`NetworkProbe`]: whether sending is worth trying now, from a user check
//! plus the application's own connectivity events.

use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Settings of a [`NetworkProbe`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkProbeConfig {
    /// How long (ms) an "online" answer is trusted before the check runs again.
    /// Default 1,000.
    pub cache_ttl_ms: i64,
    /// How long (ms) an "offline" answer is trusted before the check runs
    /// again. Default 2,000.
    pub offline_recheck_ms: i64,
    /// When the network comes back, make operations waiting in backoff due at
    /// once, so the queue drains on reconnect rather than on the next local
    /// write or backoff expiry. Default `true`.
    pub drain_on_reconnect: bool,
}

impl Default for NetworkProbeConfig {
    fn default() -> Self {
        Self {
            cache_ttl_ms: 1_000,
            offline_recheck_ms: 2_000,
            drain_on_reconnect: true,
        }
    }
}

/// Tells the worker whether the network is worth trying.
///
/// It caches the user's check for `cache_ttl_ms` (online) or
/// `offline_recheck_ms` (offline); [`set_online`](Self::set_online) and
/// [`report_failure`](Self::report_failure) let the application's own
/// connectivity events override it at once. Every offline -> online flip is
/// counted as a reconnect.
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
    /// pull-to-refresh should not wait out an "offline" answer).
    pub fn expire(&self) {
        self.lock().next_check_at_ms = i64::MIN;
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
        let ttl = if online {
            self.config.cache_ttl_ms
        } else {
            self.config.offline_recheck_ms
        };
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
