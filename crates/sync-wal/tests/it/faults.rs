//! Guards the log under injected faults: a full disk during an append or a
//! segment roll, a failed rename, a failed removal, and a failed fsync. The
//! call reports the error, the directory stays openable, and every record
//! acknowledged before the fault reads back. A failed fsync poisons the
//! handle for good: it is never retried.

use std::sync::Arc;

use sync_wal::{SyncPolicy, Wal, WalConfig, WalError, WalRecord};

use crate::{TestResult, appending_config, read_all, record, segment_paths};
use sync_wal::testing::{Fault, FaultyStorage};

fn open(
    dir: &std::path::Path,
    storage: &FaultyStorage,
    sync: SyncPolicy,
    segment_bytes: u64,
) -> Result<Wal, WalError> {
    let mut cfg = appending_config(dir);
    cfg.sync = sync;
    cfg.segment_bytes = segment_bytes;
    Wal::open_with_storage(cfg, Arc::new(storage.clone()))
}

/// Reopens on the real file system and returns the records.
fn reopen(dir: &std::path::Path) -> Result<Vec<WalRecord>, WalError> {
    let wal = Wal::open(WalConfig::new(dir))?;
    Ok(read_all(&wal)?.into_iter().map(|(_, r)| r).collect())
}

fn io_kind(error: &WalError) -> Option<i32> {
    match error {
        WalError::Io { source, .. } => source.raw_os_error(),
        _ => None,
    }
}

#[test]
fn a_full_disk_mid_append_fails_the_append_and_loses_nothing_acknowledged() -> TestResult {
    for keep in [0, 5, 30] {
        let dir = tempfile::tempdir()?;
        let storage = FaultyStorage::new(Fault::DiskFullFromWrite { n: 10, keep });
        // The segment header is write 0; records 0..9 are writes 1..9.
        let wal = open(dir.path(), &storage, SyncPolicy::Always, 1 << 20)?;
        let mut acked = Vec::new();
        for n in 0..20 {
            match wal.append(&record(n)) {
                Ok(_) => acked.push(record(n)),
                Err(e) => assert_eq!(io_kind(&e), Some(28), "{e}"),
            }
        }
        assert_eq!(acked.len(), 9, "keep {keep}");
        // The partial frame was cut back: once there is room, appends go on.
        storage.clear();
        wal.append(&record(100))?;
        acked.push(record(100));
        drop(wal);
        assert_eq!(reopen(dir.path())?, acked, "keep {keep}");
    }
    Ok(())
}

#[test]
fn a_partial_write_that_cannot_be_cut_poisons_and_recovery_cuts_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let storage = FaultyStorage::new(Fault::DiskFullAndStuck { n: 4, keep: 11 });
    let wal = open(dir.path(), &storage, SyncPolicy::Always, 1 << 20)?;
    for n in 0..3 {
        wal.append(&record(n))?;
    }
    assert!(wal.append(&record(3)).is_err());
    storage.clear();
    assert!(matches!(wal.append(&record(4)), Err(WalError::Poisoned)));
    drop(wal);
    assert_eq!(reopen(dir.path())?, (0..3).map(record).collect::<Vec<_>>());
    Ok(())
}

#[test]
fn a_failed_fsync_is_reported_once_then_the_handle_refuses_everything() -> TestResult {
    let dir = tempfile::tempdir()?;
    // Sync 0 is the new segment's header; syncs 1.. are appends.
    let storage = FaultyStorage::new(Fault::SyncFails { n: 6 });
    let wal = open(dir.path(), &storage, SyncPolicy::Always, 1 << 20)?;
    for n in 0..5 {
        wal.append(&record(n))?;
    }
    let failed = wal
        .append(&record(5))
        .err()
        .ok_or("the fsync fault was not seen")?;
    assert_eq!(io_kind(&failed), Some(5), "{failed}");
    // The device works again, but the page cache may have dropped the data:
    // no retry may report it durable.
    for attempt in [wal.append(&record(6)).err(), wal.sync().err()] {
        assert!(matches!(attempt, Some(WalError::Poisoned)), "{attempt:?}");
    }
    drop(wal);
    let records = reopen(dir.path())?;
    assert_eq!(
        records.get(..5),
        Some(&(0..5).map(record).collect::<Vec<_>>()[..])
    );
    assert!(records.len() <= 6, "nothing after the failed record");
    Ok(())
}

#[test]
fn a_full_disk_at_a_segment_roll_fails_the_append_and_recovery_cleans_up() -> TestResult {
    for fault in [Fault::CreateFails, Fault::RenameFails] {
        let dir = tempfile::tempdir()?;
        let storage = FaultyStorage::new(Fault::None);
        let wal = open(dir.path(), &storage, SyncPolicy::Always, 200)?;
        let mut acked = Vec::new();
        let mut n = 0;
        // Fill the first segment, then fail the roll.
        while segment_paths(dir.path()).len() == 1 && n < 50 {
            if n == 3 {
                storage.set(fault);
            }
            match wal.append(&record(n)) {
                Ok(_) => acked.push(record(n)),
                Err(e) => {
                    assert!(matches!(e, WalError::Io { .. }), "{fault:?}: {e}");
                    break;
                }
            }
            n += 1;
        }
        storage.clear();
        assert!(
            matches!(wal.append(&record(99)), Err(WalError::Poisoned)),
            "{fault:?}: appends must not continue behind a failed roll"
        );
        drop(wal);
        assert_eq!(reopen(dir.path())?, acked, "{fault:?}");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "{fault:?}: temp segment left: {leftovers:?}"
        );
    }
    Ok(())
}

#[test]
fn a_failed_truncation_keeps_every_record_readable() -> TestResult {
    let dir = tempfile::tempdir()?;
    let storage = FaultyStorage::new(Fault::None);
    let wal = open(dir.path(), &storage, SyncPolicy::Never, 200)?;
    for n in 0..40 {
        wal.append(&record(n))?;
    }
    storage.set(Fault::RemoveFails);
    assert!(wal.truncate_before(30).is_err());
    storage.clear();
    wal.append(&record(40))?;
    drop(wal);
    assert_eq!(
        reopen(dir.path())?,
        (0..=40).map(record).collect::<Vec<_>>()
    );
    Ok(())
}
