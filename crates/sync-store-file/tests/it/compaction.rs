//! Guards compaction of the WAL store: it triggers by ratio, shrinks the log,
//! loses nothing written before or after it, and a crash between its steps
//! (a leftover temp snapshot, a snapshot without truncation) recovers.

use std::fs;

use sync_outbox::testing::sample;
use sync_outbox::{Operation, OperationStatus, OutboxStore};
use sync_store_file::{WalOutboxStore, WalOutboxStoreConfig};

use crate::TestResult;

fn config(dir: &std::path::Path) -> WalOutboxStoreConfig {
    let mut config = WalOutboxStoreConfig::new(dir.join("outbox-wal"));
    config.sync = sync_wal::SyncPolicy::Never;
    config.segment_bytes = 4096;
    config.compact_min_records = 200;
    config.compact_ratio = 4.0;
    config
}

fn sorted(mut ops: Vec<Operation>) -> Vec<Operation> {
    ops.sort_by(|a, b| a.id.cmp(&b.id));
    ops
}

#[test]
fn churn_compacts_and_keeps_the_live_set() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = WalOutboxStore::open(config(dir.path()))?;
    let mut live = Vec::new();
    for i in 0..2_000u64 {
        let mut op = sample(&format!("op{}", i % 20), i, 0);
        op.attempt = u32::try_from(i)?;
        if i % 7 == 0 {
            op.status = OperationStatus::Done;
        }
        store.put(&op)?;
        if i >= 1_980 {
            live.push(op);
        }
    }
    assert!(
        store.compaction_count() >= 5,
        "compacted {} times",
        store.compaction_count()
    );
    assert_eq!(store.last_compaction_error(), None);
    assert!(
        store.wal().segment_count() <= 3,
        "{} segments left",
        store.wal().segment_count()
    );
    assert_eq!(sorted(store.load_all()?), sorted(live.clone()));
    drop(store);
    let store = WalOutboxStore::open(config(dir.path()))?;
    assert_eq!(sorted(store.load_all()?), sorted(live));
    Ok(())
}

#[test]
fn removals_survive_compaction_and_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = WalOutboxStore::open(config(dir.path()))?;
    for i in 0..50 {
        store.put(&sample(&format!("op{i}"), i, 0))?;
    }
    store.compact()?;
    for i in 0..25 {
        assert!(store.remove(&format!("op{i}"))?);
    }
    drop(store);
    let store = WalOutboxStore::open(config(dir.path()))?;
    assert_eq!(store.load_all()?.len(), 25);
    assert_eq!(store.get("op3")?, None);
    assert!(store.get("op30")?.is_some());
    Ok(())
}

#[test]
fn a_crash_between_compaction_steps_recovers() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = WalOutboxStore::open(config(dir.path()))?;
    for i in 0..30 {
        store.put(&sample(&format!("op{i}"), i, 0))?;
    }
    store.compact()?;
    store.put(&sample("late", 99, 0))?;
    let expected = sorted(store.load_all()?);
    drop(store);
    let snapshot = dir.path().join("outbox-wal/snapshot");

    // Crash after writing the temp snapshot, before the rename: a garbage temp file.
    fs::write(
        dir.path().join("outbox-wal/snapshot.tmp"),
        b"half a snapshot",
    )?;
    let store = WalOutboxStore::open(config(dir.path()))?;
    assert_eq!(sorted(store.load_all()?), expected);
    assert!(!dir.path().join("outbox-wal/snapshot.tmp").exists());
    drop(store);

    // Crash after the rename, before truncation: a new snapshot over the old,
    // whole log. Simulated by putting a copy of the log from before the
    // compaction back under the snapshot.
    let other = tempfile::tempdir()?;
    let log = other.path().join("outbox-wal/log");
    let backup = other.path().join("log-backup");
    {
        let store = WalOutboxStore::open(config(other.path()))?;
        for i in 0..30 {
            store.put(&sample(&format!("op{i}"), i, 0))?;
        }
    }
    fs::create_dir_all(&backup)?;
    for entry in fs::read_dir(&log)? {
        let entry = entry?;
        fs::copy(entry.path(), backup.join(entry.file_name()))?;
    }
    let before = {
        let store = WalOutboxStore::open(config(other.path()))?;
        store.compact()?;
        assert!(store.wal().first_lsn() > 0, "compaction truncated the log");
        sorted(store.load_all()?)
    };
    fs::remove_dir_all(&log)?;
    fs::rename(&backup, &log)?;
    let store = WalOutboxStore::open(config(other.path()))?;
    assert_eq!(store.wal().first_lsn(), 0, "the whole old log is back");
    assert_eq!(sorted(store.load_all()?), before);
    assert!(snapshot.exists());
    Ok(())
}
