//! Unit tests of the handle: when it syncs under each policy, and its LSN
//! bookkeeping.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::record::RecordType;

fn record(n: u64) -> WalRecord {
    WalRecord {
        id: format!("r{n}"),
        kind: RecordType::Custom(1),
        ts_ms: 0,
        payload: vec![1; 16],
    }
}

fn open(dir: &Path, sync: SyncPolicy) -> Result<Wal, WalError> {
    let mut config = WalConfig::new(dir);
    config.sync = sync;
    Wal::open(config)
}

#[test]
fn never_syncs_only_on_request() -> Result<(), WalError> {
    let dir = tempfile::tempdir().map_err(|e| io_error("tempdir", "", e))?;
    let wal = open(dir.path(), SyncPolicy::Never)?;
    for n in 0..10 {
        wal.append(&record(n))?;
    }
    assert_eq!(wal.sync_count(), 0);
    wal.sync()?;
    assert_eq!(wal.sync_count(), 1);
    // Nothing new to sync: no second call.
    wal.sync()?;
    assert_eq!(wal.sync_count(), 1);
    Ok(())
}

#[test]
fn always_syncs_each_lone_append() -> Result<(), WalError> {
    let dir = tempfile::tempdir().map_err(|e| io_error("tempdir", "", e))?;
    let wal = open(dir.path(), SyncPolicy::Always)?;
    for n in 0..5 {
        wal.append(&record(n))?;
    }
    assert_eq!(wal.sync_count(), 5);
    wal.append_batch(&[record(5), record(6), record(7)])?;
    assert_eq!(wal.sync_count(), 6, "a batch shares one sync");
    assert_eq!(lock(&wal.shared.commit).durable_lsn, 8);
    Ok(())
}

#[test]
fn concurrent_always_appends_are_all_durable_with_at_most_one_sync_each() -> Result<(), WalError> {
    let dir = tempfile::tempdir().map_err(|e| io_error("tempdir", "", e))?;
    let wal = Arc::new(open(dir.path(), SyncPolicy::Always)?);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                (0..20).try_for_each(|n| wal.append(&record(t * 100 + n)).map(drop))
            })
        })
        .collect();
    for thread in threads {
        thread.join().map_err(|_| WalError::Poisoned)??;
    }
    assert_eq!(wal.next_lsn(), 160);
    assert_eq!(lock(&wal.shared.commit).durable_lsn, 160);
    assert!(wal.sync_count() <= 160);
    Ok(())
}

#[test]
fn interval_flusher_syncs_in_the_background() -> Result<(), WalError> {
    let dir = tempfile::tempdir().map_err(|e| io_error("tempdir", "", e))?;
    let wal = open(dir.path(), SyncPolicy::Interval(Duration::from_millis(2)))?;
    wal.append(&record(0))?;
    assert_eq!(wal.sync_count(), 0, "append does not sync under Interval");
    // Waits for a background thread whose job is time-based; bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    while lock(&wal.shared.commit).durable_lsn < 1 {
        assert!(Instant::now() < deadline, "the flusher never synced");
        std::thread::yield_now();
    }
    assert!(wal.sync_count() >= 1);
    Ok(())
}

#[test]
fn a_new_handle_counts_recovered_records_as_durable() -> Result<(), WalError> {
    let dir = tempfile::tempdir().map_err(|e| io_error("tempdir", "", e))?;
    {
        let wal = open(dir.path(), SyncPolicy::Never)?;
        wal.append_batch(&[record(0), record(1), record(2)])?;
    }
    let wal = open(dir.path(), SyncPolicy::Always)?;
    assert_eq!(wal.next_lsn(), 3);
    assert_eq!(wal.first_lsn(), 0);
    assert_eq!(lock(&wal.shared.commit).durable_lsn, 3);
    wal.sync()?;
    assert_eq!(wal.sync_count(), 0);
    Ok(())
}
