//! Integration tests of `sync-wal`: one binary, one module per behaviour.

mod concurrency;
mod errors;
mod faults;
mod fixtures;
mod inspect;
mod power_loss;
mod preallocation;
mod roundtrip;
mod segments;
mod torn_tail;

use std::path::{Path, PathBuf};

use sync_wal::{RecordType, SyncPolicy, Wal, WalConfig, WalError, WalRecord};

/// A record whose every field follows from `n`, so a reader can check it.
pub(crate) fn record(n: u64) -> WalRecord {
    let payload_len = n % 50;
    WalRecord {
        id: format!("op_{n}"),
        kind: if n.is_multiple_of(3) {
            RecordType::PutOperation
        } else {
            RecordType::Custom(u8::try_from(n % 256).unwrap_or(0))
        },
        ts_ms: i64::try_from(n).unwrap_or(i64::MAX) * 10,
        payload: (0..payload_len)
            .map(|i| u8::try_from((n + i) % 251).unwrap_or(0))
            .collect(),
    }
}

pub(crate) fn config(dir: &Path) -> WalConfig {
    let mut config = WalConfig::new(dir);
    config.sync = SyncPolicy::Never;
    config
}

/// [`config`] with frames appended, not preallocated: for tests that cut,
/// flip or count the writes of a segment's bytes as appending lays them out
/// (`preallocation.rs` covers preallocated segments).
pub(crate) fn appending_config(dir: &Path) -> WalConfig {
    let mut config = config(dir);
    config.preallocate_bytes = 0;
    config
}

pub(crate) fn read_all(wal: &Wal) -> Result<Vec<(u64, WalRecord)>, WalError> {
    wal.iter_from(0)?.collect()
}

/// The segment files in `dir`, sorted.
pub(crate) fn segment_paths(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "wal"))
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    paths
}

pub(crate) type TestResult = Result<(), Box<dyn std::error::Error>>;
