//! Guards what each `SyncPolicy` keeps through a power loss, modelled by
//! `CrashStorage`: only synced bytes survive, plus a torn prefix of the
//! rest, and files whose directory entry was never synced vanish.
//!
//! - `Always`: every acknowledged record survives.
//! - `Interval` and `Never`: what survives is a prefix of what was
//!   acknowledged, always at least what an explicit `sync` covered, and the
//!   log always opens: a loss is a lost suffix, never damage.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use sync_wal::{SyncPolicy, Wal, WalConfig, WalError, WalRecord};

use crate::{config, read_all, record};
use sync_wal::testing::CrashStorage;

/// Appends `n` records through a `CrashStorage` (an explicit `sync` after
/// record `sync_at`, if any), cuts the power, and reopens on the real file
/// system. Returns (acknowledged, synced explicitly, survived).
fn run(
    sync: SyncPolicy,
    n: u64,
    segment_bytes: u64,
    sync_at: Option<u64>,
    torn: &mut dyn FnMut(u64) -> u64,
) -> Result<(Vec<WalRecord>, usize, Vec<WalRecord>), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let storage = CrashStorage::default();
    let mut cfg = config(dir.path());
    cfg.sync = sync;
    cfg.segment_bytes = segment_bytes;
    let wal = Wal::open_with_storage(cfg, Arc::new(storage.clone()))
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut acked = Vec::new();
    let mut synced = 0;
    for i in 0..n {
        wal.append(&record(i))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        acked.push(record(i));
        if sync_at == Some(i) {
            wal.sync().map_err(|e| TestCaseError::fail(e.to_string()))?;
            synced = acked.len();
        }
    }
    storage
        .crash(torn)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    drop(wal);
    let survived = Wal::open(WalConfig::new(dir.path()))
        .and_then(|w| read_all(&w))
        .map_err(|e: WalError| {
            TestCaseError::fail(format!("the log did not open after a power loss: {e}"))
        })?
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    Ok((acked, synced, survived))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn always_keeps_every_acknowledged_record(n in 0u64..40, segment_bytes in 100u64..2_000, seed in any::<u64>()) {
        let mut torn = |unsynced: u64| if unsynced == 0 { 0 } else { seed % (unsynced + 1) };
        let (acked, _, survived) = run(SyncPolicy::Always, n, segment_bytes, None, &mut torn)?;
        prop_assert_eq!(survived, acked);
    }

    #[test]
    fn never_loses_at_most_a_suffix_and_always_reopens(
        n in 0u64..40, segment_bytes in 100u64..2_000, seed in any::<u64>(), sync_at in prop::option::of(0u64..40),
    ) {
        let mut torn = |unsynced: u64| if unsynced == 0 { 0 } else { seed % (unsynced + 1) };
        let (acked, synced, survived) = run(SyncPolicy::Never, n, segment_bytes, sync_at, &mut torn)?;
        prop_assert!(survived.len() <= acked.len());
        prop_assert_eq!(&acked[..survived.len()], &survived[..], "not a prefix");
        prop_assert!(survived.len() >= synced, "an explicit sync was lost");
    }

    #[test]
    fn interval_loses_at_most_a_suffix_and_keeps_what_was_synced(
        n in 0u64..40, seed in any::<u64>(), sync_at in prop::option::of(0u64..40),
    ) {
        let mut torn = |unsynced: u64| if unsynced == 0 { 0 } else { seed % (unsynced + 1) };
        let policy = SyncPolicy::Interval(Duration::from_millis(1));
        let (acked, synced, survived) = run(policy, n, 600, sync_at, &mut torn)?;
        prop_assert_eq!(&acked[..survived.len()], &survived[..], "not a prefix");
        prop_assert!(survived.len() >= synced, "an explicit sync was lost");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The power goes out inside a call (an append, a sync, a segment roll's
    /// create, rename or directory sync), not between calls.
    #[test]
    fn always_keeps_every_acknowledged_record_whatever_call_the_power_fails_in(
        n in 1u64..30, segment_bytes in 100u64..1_000, crash_at in 1u64..120, seed in any::<u64>(),
    ) {
        let dir = tempfile::tempdir()?;
        let storage = CrashStorage::crash_at_call(crash_at, seed);
        let mut cfg = config(dir.path());
        cfg.sync = SyncPolicy::Always;
        cfg.segment_bytes = segment_bytes;
        let mut acked = Vec::new();
        let mut in_doubt = None;
        if let Ok(wal) = Wal::open_with_storage(cfg, Arc::new(storage.clone())) {
            for i in 0..n {
                if wal.append(&record(i)).is_ok() {
                    acked.push(record(i));
                } else {
                    in_doubt = Some(record(i));
                    break;
                }
            }
        }
        if !storage.crashed() {
            storage.crash(|_| 0)?;
        }
        let survived: Vec<WalRecord> = Wal::open(WalConfig::new(dir.path()))
            .and_then(|w| read_all(&w))
            .map_err(|e| TestCaseError::fail(format!("no reopen after the power failed at call {crash_at}: {e}")))?
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        // The append the power failed in may have reached the disk or not.
        let mut with_doubt = acked.clone();
        with_doubt.extend(in_doubt);
        prop_assert!(survived == acked || survived == with_doubt, "acked {}, survived {}", acked.len(), survived.len());
    }
}

#[test]
fn never_really_can_lose_acknowledged_records() -> Result<(), TestCaseError> {
    // The worst case of the model: nothing unsynced reached the disk.
    let (acked, _, survived) = run(SyncPolicy::Never, 10, 1 << 20, None, &mut |_| 0)?;
    assert_eq!(acked.len(), 10);
    assert!(
        survived.is_empty(),
        "unsynced records survived a power loss: {survived:?}"
    );
    let (_, _, survived) = run(SyncPolicy::Always, 10, 1 << 20, None, &mut |_| 0)?;
    assert_eq!(survived.len(), 10);
    Ok(())
}

#[test]
fn an_unsynced_append_survives_power_loss_once_a_later_append_is_synced()
-> Result<(), Box<dyn std::error::Error>> {
    for then_synced in [false, true] {
        let dir = tempfile::tempdir()?;
        let storage = CrashStorage::default();
        let mut cfg = config(dir.path());
        cfg.sync = SyncPolicy::Always;
        let wal = Wal::open_with_storage(cfg, Arc::new(storage.clone()))?;
        wal.append(&record(0))?;
        wal.append_batch_unsynced(&[record(1), record(2)])?;
        if then_synced {
            wal.append(&record(3))?;
        }
        storage.crash(|_| 0)?;
        drop(wal);
        let survived: Vec<WalRecord> = read_all(&Wal::open(WalConfig::new(dir.path()))?)?
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        let expected: Vec<WalRecord> = if then_synced {
            (0..4).map(record).collect()
        } else {
            // Not synced: the model keeps none of it, and the log reopens.
            vec![record(0)]
        };
        assert_eq!(survived, expected, "then_synced: {then_synced}");
    }
    Ok(())
}
