//! [`WalConfig`]: where a log lives and how it writes and recovers.

use std::path::PathBuf;

use crate::recovery::RecoveryMode;
use crate::sync_policy::SyncPolicy;

/// Settings for [`Wal::open`](crate::Wal::open).
///
/// # Examples
///
/// ```
/// use sync_wal::{RecoveryMode, SyncPolicy, WalConfig};
///
/// let mut config = WalConfig::new("./build/wal-demo");
/// config.sync = SyncPolicy::Never;
/// config.segment_bytes = 8 << 20;
/// config.recovery = RecoveryMode::Strict;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalConfig {
    /// The log's directory; created on open if missing.
    pub dir: PathBuf,
    /// When appended records are forced to disk. Default [`SyncPolicy::Always`].
    pub sync: SyncPolicy,
    /// Size in bytes at which the active segment is closed and a new one
    /// started. A record larger than this gets a segment of its own.
    /// Default 64 MiB.
    pub segment_bytes: u64,
    /// Largest record body accepted on append and on read; a larger length
    /// read from disk is corruption, never an allocation. Default 16 MiB.
    pub max_record_bytes: u32,
    /// The active segment is extended with zeros ahead of its frames (64 KiB
    /// at first, then doubling up to this many bytes at a time, never past
    /// `segment_bytes`), and frames are written into them at their offset. A sync then commits data only, not also a change
    /// of the file's size and block allocation in the file system's journal:
    /// about 25% less time per `sync_data` on ext4 (see the README's
    /// benchmarks). Costs writing the zeros once. `0` turns it off (frames
    /// are appended); so do [`SyncPolicy::Never`] (nothing syncs, so the
    /// zeros would only double the bytes written) and a
    /// [`Storage`](crate::Storage) without positional writes. Default 1 MiB.
    pub preallocate_bytes: u64,
    /// What to do with a damaged newest segment on open.
    /// Default [`RecoveryMode::TolerateTornTail`].
    pub recovery: RecoveryMode,
}

impl WalConfig {
    /// Default 64 MiB segments.
    pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
    /// Default 1 MiB of preallocation ahead of the frames.
    pub const DEFAULT_PREALLOCATE_BYTES: u64 = 1 << 20;
    /// Default 16 MiB record limit.
    pub const DEFAULT_MAX_RECORD_BYTES: u32 = 16 << 20;

    /// A configuration with every default, for the log in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            sync: SyncPolicy::default(),
            segment_bytes: Self::DEFAULT_SEGMENT_BYTES,
            max_record_bytes: Self::DEFAULT_MAX_RECORD_BYTES,
            preallocate_bytes: Self::DEFAULT_PREALLOCATE_BYTES,
            recovery: RecoveryMode::default(),
        }
    }
}
