//! [`RetryPolicy`] and [`Jitter`]: how long a failed operation waits before
//! its next attempt, and when it stops trying.

use std::time::Duration;

/// Random spread added to backoff delays, so many clients that failed together
/// do not retry together.
///
/// The randomness is derived from the seed, the operation id and the attempt
/// number, so a test (or a replayed simulation) gets the same delays every run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Jitter {
    /// The exact backoff delay. Deterministic.
    #[default]
    None,
    /// A delay drawn uniformly from `0..=backoff`.
    Full {
        /// Seed of the pseudo-random draw.
        seed: u64,
    },
    /// Half the backoff plus a draw from `0..=backoff / 2`.
    Equal {
        /// Seed of the pseudo-random draw.
        seed: u64,
    },
}

/// When a failed operation is tried again.
///
/// After the n-th failed attempt (n starting at 1) an operation waits
/// `min(max_delay, base_delay * factor^(n-1))`, spread by `jitter`;
/// once `max_attempts` sends have failed it is `Failed`.
///
/// Like every duration setting of the workspace, the delays are
/// [`Duration`]s; points in time (`now_ms`, `next_retry_at_ms`) are `i64`
/// milliseconds since the Unix epoch.
///
/// # Examples
///
/// 500 ms, then 1000 ms, then give up.
///
/// ```
/// use std::time::Duration;
/// use sync_outbox::RetryPolicy;
///
/// let retry = RetryPolicy { max_attempts: 3, base_delay: Duration::from_millis(500), factor: 2.0, ..RetryPolicy::default() };
/// assert_eq!(retry.backoff_ms(1), 500);
/// assert_eq!(retry.backoff_ms(2), 1000);
/// assert!(retry.gives_up_after(3));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Sends allowed in all; the failure of the last one makes the operation
    /// `Failed`. Default 5.
    pub max_attempts: u32,
    /// Delay after the first failure. Default 1 s.
    pub base_delay: Duration,
    /// Growth of the delay per further failure. Default 2.0.
    pub factor: f64,
    /// Upper bound of any delay, server hints included. Default 5 minutes.
    pub max_delay: Duration,
    /// Random spread of delays. Default [`Jitter::None`].
    pub jitter: Jitter,
    /// The old form of [`base_delay`](Self::base_delay), in ms: read only
    /// while `base_delay` is at its default. Default 1,000.
    #[deprecated(since = "0.1.0", note = "use `base_delay: Duration`")]
    pub base_delay_ms: i64,
    /// The old form of [`max_delay`](Self::max_delay), in ms: read only
    /// while `max_delay` is at its default. Default 300,000.
    #[deprecated(since = "0.1.0", note = "use `max_delay: Duration`")]
    pub max_delay_ms: i64,
}

const DEFAULT_BASE_DELAY: Duration = Duration::from_secs(1);
const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(300);

impl Default for RetryPolicy {
    #[expect(
        deprecated,
        reason = "the old fields keep their defaults for one release"
    )]
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: DEFAULT_BASE_DELAY,
            factor: 2.0,
            max_delay: DEFAULT_MAX_DELAY,
            jitter: Jitter::None,
            base_delay_ms: millis(DEFAULT_BASE_DELAY),
            max_delay_ms: millis(DEFAULT_MAX_DELAY),
        }
    }
}

/// `duration` in whole milliseconds, saturating at `i64::MAX`.
#[must_use]
pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl RetryPolicy {
    /// The delay after the first failure, in ms: `base_delay`, or the
    /// deprecated `base_delay_ms` when only that was set.
    #[must_use]
    pub fn base_delay_in_ms(&self) -> i64 {
        #[expect(deprecated, reason = "the old field is honoured for one release")]
        let old = self.base_delay_ms;
        if self.base_delay == DEFAULT_BASE_DELAY {
            old
        } else {
            millis(self.base_delay)
        }
    }

    /// The longest delay, in ms: `max_delay`, or the deprecated
    /// `max_delay_ms` when only that was set.
    #[must_use]
    pub fn max_delay_in_ms(&self) -> i64 {
        #[expect(deprecated, reason = "the old field is honoured for one release")]
        let old = self.max_delay_ms;
        if self.max_delay == DEFAULT_MAX_DELAY {
            old
        } else {
            millis(self.max_delay)
        }
    }

    /// The delay after the `attempt`-th failed send, in ms, without jitter:
    /// `min(max_delay, base_delay * factor^(attempt-1))`, never negative.
    #[must_use]
    pub fn backoff_ms(&self, attempt: u32) -> i64 {
        let max = self.max_delay_in_ms().max(0);
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        #[expect(clippy::cast_precision_loss, reason = "delays are far below 2^53 ms")]
        let delay = self.base_delay_in_ms().max(0) as f64 * self.factor.powi(exponent);
        if delay.is_nan() || delay <= 0.0 {
            return 0;
        }
        #[expect(clippy::cast_precision_loss, reason = "delays are far below 2^53 ms")]
        if delay >= max as f64 {
            return max;
        }
        #[expect(
            clippy::cast_possible_truncation,
            reason = "0 < delay < max_delay_ms, an i64"
        )]
        let delay = delay as i64;
        delay
    }

    /// The delay after the `attempt`-th failed send of operation `id`, with
    /// jitter applied.
    #[must_use]
    pub fn delay_ms(&self, id: &str, attempt: u32) -> i64 {
        let backoff = self.backoff_ms(attempt);
        match self.jitter {
            Jitter::None => backoff,
            Jitter::Full { seed } => draw(seed, id, attempt, backoff),
            Jitter::Equal { seed } => backoff / 2 + draw(seed, id, attempt, backoff - backoff / 2),
        }
    }

    /// Whether an operation whose `attempt`-th send failed is out of attempts.
    #[must_use]
    pub fn gives_up_after(&self, attempt: u32) -> bool {
        attempt >= self.max_attempts
    }
}

/// A pseudo-random number in `0..=max`, a pure function of its inputs.
fn draw(seed: u64, id: &str, attempt: u32, max: i64) -> i64 {
    let Ok(span) = u64::try_from(max) else {
        return 0;
    };
    // FNV-1a over the id, then SplitMix64 finalization.
    let mut x = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    x ^= seed ^ u64::from(attempt).rotate_left(32);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    i64::try_from(x % span.saturating_add(1)).unwrap_or(0)
}

#[cfg(test)]
mod tests;
