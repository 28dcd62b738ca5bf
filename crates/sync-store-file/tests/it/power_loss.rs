//! Guards both stores through a power loss in the middle of any call (an
//! append, a sync, a snapshot's write, rename or directory sync, a log
//! truncation, a JSON rewrite), modelled by `sync_wal::testing::CrashStorage`:
//! after it the store reopens and holds exactly the acknowledged changes,
//! plus possibly the one change the power failed in.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use sync_outbox::testing::sample;
use sync_outbox::{Operation, OutboxStore};
use sync_store_file::{
    FileOutboxStore, FileOutboxStoreConfig, WalOutboxStore, WalOutboxStoreConfig,
};
use sync_wal::testing::CrashStorage;
use sync_wal::{Storage, SyncPolicy};

use crate::json_config;

/// One change to a store.
#[derive(Clone, Debug)]
enum Change {
    Put { id: u8, version: u32 },
    Remove { id: u8 },
}

fn op(id: u8, version: u32) -> Operation {
    let mut op = sample(&format!("op{id}"), u64::from(id), i64::from(version));
    op.payload = format!(r#"{{"version":{version}}}"#);
    op
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        3 => (0u8..8, any::<u32>()).prop_map(|(id, version)| Change::Put { id, version }),
        1 => (0u8..8).prop_map(|id| Change::Remove { id }),
    ]
}

type State = BTreeMap<String, Operation>;

fn apply(state: &mut State, change: &Change) {
    match *change {
        Change::Put { id, version } => {
            let op = op(id, version);
            state.insert(op.id.clone(), op);
        }
        Change::Remove { id } => {
            state.remove(&format!("op{id}"));
        }
    }
}

fn run_change(store: &dyn OutboxStore, change: &Change) -> bool {
    match *change {
        Change::Put { id, version } => store.put(&op(id, version)).is_ok(),
        Change::Remove { id } => store.remove(&format!("op{id}")).is_ok(),
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Wal,
    Json,
}

fn wal_config(dir: &std::path::Path) -> WalOutboxStoreConfig {
    let mut config = WalOutboxStoreConfig::new(dir.join("outbox-wal"));
    config.sync = SyncPolicy::Always;
    config.segment_bytes = 600;
    // Compact every few changes, so the power often fails inside one.
    config.compact_min_records = 4;
    config.compact_ratio = 0.5;
    config
}

fn open(
    kind: Kind,
    dir: &std::path::Path,
    storage: Arc<dyn Storage>,
) -> Option<Arc<dyn OutboxStore>> {
    match kind {
        Kind::Wal => WalOutboxStore::open_with_storage(wal_config(dir), storage)
            .ok()
            .map(|s| Arc::new(s) as Arc<dyn OutboxStore>),
        Kind::Json => FileOutboxStore::open_with_storage(json_config(dir), storage)
            .ok()
            .map(|s| Arc::new(s) as Arc<dyn OutboxStore>),
    }
}

fn reopened_state(kind: Kind, dir: &std::path::Path) -> Result<State, String> {
    let ops = match kind {
        Kind::Wal => WalOutboxStore::open(wal_config(dir))
            .map_err(|e| e.to_string())?
            .load_all(),
        Kind::Json => FileOutboxStore::open(FileOutboxStoreConfig { ..json_config(dir) })
            .map_err(|e| e.to_string())?
            .load_all(),
    }
    .map_err(|e| e.to_string())?;
    Ok(ops.into_iter().map(|op| (op.id.clone(), op)).collect())
}

fn check(kind: Kind, changes: &[Change], crash_at: u64, seed: u64) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir()?;
    let storage = CrashStorage::crash_at_call(crash_at, seed);
    let mut acked = State::new();
    let mut with_doubt = None;
    if let Some(store) = open(kind, dir.path(), Arc::new(storage.clone())) {
        for change in changes {
            if run_change(store.as_ref(), change) {
                apply(&mut acked, change);
            } else {
                let mut doubt = acked.clone();
                apply(&mut doubt, change);
                with_doubt = Some(doubt);
                break;
            }
        }
    }
    if !storage.crashed() {
        storage.crash(|_| 0)?;
    }
    let survived = reopened_state(kind, dir.path()).map_err(|e| {
        TestCaseError::fail(format!(
            "{kind:?} did not reopen after the power failed at call {crash_at}: {e}"
        ))
    })?;
    prop_assert!(
        survived == acked || Some(&survived) == with_doubt.as_ref(),
        "{:?}, power failed at call {}: {} acknowledged ops, {} survived",
        kind,
        crash_at,
        acked.len(),
        survived.len()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_wal_store_keeps_every_acknowledged_change_through_a_power_loss(
        changes in prop::collection::vec(change(), 1..40), crash_at in 1u64..250, seed in any::<u64>(),
    ) {
        check(Kind::Wal, &changes, crash_at, seed)?;
    }

    #[test]
    fn the_json_store_keeps_every_acknowledged_change_through_a_power_loss(
        changes in prop::collection::vec(change(), 1..20), crash_at in 1u64..100, seed in any::<u64>(),
    ) {
        check(Kind::Json, &changes, crash_at, seed)?;
    }
}
