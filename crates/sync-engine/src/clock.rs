//! Time for the background engine: [`Clock`], [`SystemClock`], the
//! [`ManualClock`] tests drive, and [`Wakeup`], what a sleeping sender waits on.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A wake-up signal: a generation counter and a condition variable. A sender
/// reads the generation, looks for work, and sleeps only if the generation is
/// still the same, so a notification between the look and the sleep is never
/// lost.
#[derive(Debug, Default)]
pub struct Wakeup {
    state: Mutex<WakeState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct WakeState {
    generation: u64,
    /// Threads blocked in `wait` that no `notify` has woken yet.
    waiting: usize,
}

impl Wakeup {
    /// The current generation.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Wakes every sleeper.
    pub fn notify(&self) {
        let mut state = self.lock();
        state.generation += 1;
        // Every waiter wakes: none is blocked any more.
        state.waiting = 0;
        drop(state);
        self.changed.notify_all();
    }

    /// Sleeps until the generation differs from `seen` or `timeout` passes
    /// (measured by the monotonic clock of the condition variable).
    pub fn wait(&self, seen: u64, timeout: Option<Duration>) {
        let mut state = self.lock();
        if state.generation != seen {
            return;
        }
        state.waiting += 1;
        let wakeup = |state: &mut WakeState| state.generation == seen;
        let mut state = match timeout {
            Some(timeout) => self
                .changed
                .wait_timeout_while(state, timeout, wakeup)
                .map_or_else(|e| e.into_inner().0, |(state, _)| state),
            None => self
                .changed
                .wait_while(state, wakeup)
                .unwrap_or_else(PoisonError::into_inner),
        };
        // Woken by `notify`, the count was reset; by the timeout, not.
        if state.generation == seen {
            state.waiting = state.waiting.saturating_sub(1);
        }
    }

    /// How many threads are blocked in [`wait`](Self::wait) now, not yet
    /// woken: with a [`ManualClock`], a test waits for every sender to be
    /// asleep before it moves the clock again.
    #[must_use]
    pub fn waiting(&self) -> usize {
        self.lock().waiting
    }

    fn lock(&self) -> MutexGuard<'_, WakeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where the engine gets the time it persists, and how it sleeps until a
/// deadline on that time.
pub trait Clock: Send + Sync + 'static {
    /// Wall-clock milliseconds, passed to the outbox and persisted.
    fn now_ms(&self) -> i64;

    /// Sleeps until `wakeup` moves past `seen`, or until `deadline_ms` on this
    /// clock (`None`: no deadline).
    fn sleep_until(&self, wakeup: &Arc<Wakeup>, seen: u64, deadline_ms: Option<i64>);
}

/// The system's wall clock for `now_ms`; sleeps are measured on the monotonic
/// clock, so a wall-clock jump does not stretch a sleep.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }

    fn sleep_until(&self, wakeup: &Arc<Wakeup>, seen: u64, deadline_ms: Option<i64>) {
        let timeout = deadline_ms.map(|deadline| {
            Duration::from_millis(
                u64::try_from(deadline.saturating_sub(self.now_ms())).unwrap_or(0),
            )
        });
        wakeup.wait(seen, timeout);
    }
}

/// A clock that moves only when told: tests and simulations drive the engine
/// with it, deterministically and without sleeping.
///
/// # Examples
///
/// ```
/// use sync_engine::{Clock, ManualClock};
///
/// let clock = ManualClock::new(1_000);
/// clock.advance(500);
/// assert_eq!(clock.now_ms(), 1_500);
/// ```
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: AtomicI64,
    sleepers: Mutex<Vec<Arc<Wakeup>>>,
}

impl ManualClock {
    /// A clock reading `now_ms`.
    #[must_use]
    pub fn new(now_ms: i64) -> Self {
        Self {
            now_ms: AtomicI64::new(now_ms),
            sleepers: Mutex::new(Vec::new()),
        }
    }

    /// How many threads sleeping on this clock are blocked now, waiting
    /// for time to move or work to arrive: once it equals an engine's
    /// `worker_count`, every sender has done all it can at this time, and a
    /// test may move the clock again.
    #[must_use]
    pub fn sleeping(&self) -> usize {
        self.sleepers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|wakeup| wakeup.waiting())
            .sum()
    }

    /// Moves the clock forward by `ms` and wakes every sleeper to look again.
    pub fn advance(&self, ms: i64) {
        self.now_ms.fetch_add(ms, Ordering::SeqCst);
        for wakeup in self
            .sleepers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            wakeup.notify();
        }
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now_ms.load(Ordering::SeqCst)
    }

    fn sleep_until(&self, wakeup: &Arc<Wakeup>, seen: u64, deadline_ms: Option<i64>) {
        {
            let mut sleepers = self.sleepers.lock().unwrap_or_else(PoisonError::into_inner);
            if !sleepers.iter().any(|w| Arc::ptr_eq(w, wakeup)) {
                sleepers.push(Arc::clone(wakeup));
            }
        }
        if deadline_ms.is_some_and(|deadline| deadline <= self.now_ms()) {
            return;
        }
        // `advance` notifies: the sleeper wakes when time moves or work arrives.
        wakeup.wait(seen, None);
    }
}

impl<C: Clock> Clock for Arc<C> {
    fn now_ms(&self) -> i64 {
        (**self).now_ms()
    }

    fn sleep_until(&self, wakeup: &Arc<Wakeup>, seen: u64, deadline_ms: Option<i64>) {
        (**self).sleep_until(wakeup, seen, deadline_ms);
    }
}

/// Wall-clock milliseconds that move with tokio's clock: a start time read
/// once from the system, plus the runtime's monotonic time since. Under
/// `tokio::time::pause` (tests) it moves only when tokio's time does, so the
/// async engine runs deterministically; in production it is the wall clock
/// that a jump of the system time does not disturb. Feature `tokio`.
///
/// # Examples
///
/// ```
/// use sync_engine::{Clock, TokioClock};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build()?.block_on(async {
/// let clock = TokioClock::starting_at(1_000);
/// tokio::time::sleep(std::time::Duration::from_millis(250)).await;
/// assert_eq!(clock.now_ms(), 1_250);
/// # });
/// # Ok::<_, std::io::Error>(())
/// ```
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    base_ms: i64,
    start: tokio::time::Instant,
}

#[cfg(feature = "tokio")]
impl TokioClock {
    /// Reads `now_ms` as the system's wall clock now, moving on with tokio's
    /// clock from here.
    #[must_use]
    pub fn new() -> Self {
        Self::starting_at(SystemClock.now_ms())
    }

    /// Reads `now_ms` as `base_ms` now, moving on with tokio's clock.
    #[must_use]
    pub fn starting_at(base_ms: i64) -> Self {
        Self {
            base_ms,
            start: tokio::time::Instant::now(),
        }
    }
}

#[cfg(feature = "tokio")]
impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "tokio")]
impl Clock for TokioClock {
    fn now_ms(&self) -> i64 {
        let elapsed = i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.base_ms.saturating_add(elapsed)
    }

    /// For the threaded engine: a blocking wait on the real monotonic clock.
    /// The async engine sleeps on tokio's timer instead.
    fn sleep_until(&self, wakeup: &Arc<Wakeup>, seen: u64, deadline_ms: Option<i64>) {
        let timeout = deadline_ms.map(|deadline| {
            Duration::from_millis(
                u64::try_from(deadline.saturating_sub(self.now_ms())).unwrap_or(0),
            )
        });
        wakeup.wait(seen, timeout);
    }
}
