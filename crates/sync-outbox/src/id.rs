//! Operation ids: unique and sortable by creation time.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

/// Makes ids of the form `{ms:012x}-{counter:06x}-{node:08x}`: hex milliseconds
/// (so ids sort by the caller's clock), a per-generator counter (so ids of the
/// same millisecond sort by creation), and a random node number (so two
/// processes never make the same id).
#[derive(Debug)]
pub(crate) struct IdGenerator {
    counter: AtomicU64,
    node: u32,
}

impl Default for IdGenerator {
    fn default() -> Self {
        // std's RandomState is seeded from the OS per process: randomness
        // without a dependency.
        let node = RandomState::new().hash_one(0u8);
        Self {
            counter: AtomicU64::new(0),
            node: u32::try_from(node & 0xffff_ffff).unwrap_or(0),
        }
    }
}

impl IdGenerator {
    pub(crate) fn next(&self, now_ms: i64) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) & 0xff_ffff;
        let ms = u64::try_from(now_ms).unwrap_or(0) & 0xffff_ffff_ffff;
        format!("{ms:012x}-{n:06x}-{:08x}", self.node)
    }
}
