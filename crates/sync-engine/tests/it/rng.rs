//! The simulations' random numbers: xorshift, seeded, the same on every
//! machine, so a failing seed replays.

#[derive(Debug)]
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    /// A generator for `seed` (any value; 0 is mixed away).
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True `percent` times in 100.
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Seeds `1..=n`, or the one in `SYNC_SIM_SEED` (to replay a failure).
pub(crate) fn seeds(n: u64) -> Vec<u64> {
    match std::env::var("SYNC_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(seed) => vec![seed],
        None => (1..=n).collect(),
    }
}
