//! [`SyncPolicy`]: when appended bytes are forced from the page cache to disk.

use std::time::Duration;

/// When the log forces appended records to disk, and so what survives which crash.
///
/// Under every policy an `append` that returned `Ok` has handed its bytes to
/// the operating system with a `write` call (no user-space buffer is left
/// behind), so a crash of the process alone never loses an acknowledged record.
/// The policies differ on power loss or a kernel crash:
///
/// | policy | `append` returns after | at risk on power loss |
/// | --- | --- | --- |
/// | `Always` | `write` and `sync_data` (shared between concurrent appenders) | nothing acknowledged |
/// | `Interval(d)` | `write`; a background thread syncs every `d` | at most the last `d` of acknowledged records |
/// | `Never` | `write` | any record not yet written back by the OS |
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sync_wal::{SyncPolicy, WalConfig};
///
/// let mut config = WalConfig::new("/tmp/some-log");
/// assert_eq!(config.sync, SyncPolicy::Always);
/// config.sync = SyncPolicy::Interval(Duration::from_millis(50));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Every `append` returns only after its frame is on disk (`sync_data`).
    /// A thread that finds a sync in progress waits for the next one instead of
    /// issuing its own (group commit), so many appenders share one `sync_data`.
    #[default]
    Always,
    /// Appends return after `write`; a background thread calls `sync_data`
    /// at least once per interval while there is unsynced data.
    Interval(Duration),
    /// Appends return after `write`; the log never calls `sync_data` on its own
    /// (only [`Wal::sync`](crate::Wal::sync) does). Survives a process crash;
    /// power loss may lose any record the OS has not yet written back.
    Never,
}
