//! [`RetryPolicy`] and [`Jitter`]: how long a failed operation waits before
//! its next attempt, and when it stops trying.

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
/// `min(max_delay_ms, base_delay_ms * factor^(n-1))`, spread by `jitter`;
/// once `max_attempts` sends have failed it is `Failed`.
///
/// # Examples
///
/// The guide's policy: 500 ms, then 1000 ms, then give up.
///
/// ```
/// use sync_outbox::RetryPolicy;
///
/// let retry = RetryPolicy { max_attempts: 3, base_delay_ms: 500, factor: 2.0, ..RetryPolicy::default() };
/// assert_eq!(retry.backoff_ms(1), 500);
/// assert_eq!(retry.backoff_ms(2), 1000);
/// assert!(retry.gives_up_after(3));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Sends allowed in all; the failure of the last one makes the operation
    /// `Failed`. Default 5.
    pub max_attempts: u32,
    /// Delay after the first failure, in ms. Default 1,000.
    pub base_delay_ms: i64,
    /// Growth of the delay per further failure. Default 2.0.
    pub factor: f64,
    /// Upper bound of any delay, server hints included, in ms. Default 300,000
    /// (5 minutes).
    pub max_delay_ms: i64,
    /// Random spread of delays. Default [`Jitter::None`].
    pub jitter: Jitter,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay_ms: 1_000,
            factor: 2.0,
            max_delay_ms: 300_000,
            jitter: Jitter::None,
        }
    }
}

impl RetryPolicy {
    /// The delay after the `attempt`-th failed send, without jitter:
    /// `min(max_delay_ms, base_delay_ms * factor^(attempt-1))`, never negative.
    #[must_use]
    pub fn backoff_ms(&self, attempt: u32) -> i64 {
        let max = self.max_delay_ms.max(0);
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        #[expect(clippy::cast_precision_loss, reason = "delays are far below 2^53 ms")]
        let delay = self.base_delay_ms.max(0) as f64 * self.factor.powi(exponent);
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
