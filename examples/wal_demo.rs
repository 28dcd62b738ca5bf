//! The write-ahead log alone: two appends (`PutOperation`,
//! `MarkDone`) to a log in `./build/wal-demo`, then a replay that prints every
//! record. The log persists: run it twice and the replay shows both runs.
//!
//! ```text
//! cargo run --example wal_demo
//! ```

#![expect(
    clippy::print_stdout,
    reason = "an example prints for the person running it"
)]

use std::time::{SystemTime, UNIX_EPOCH};

use sync::wal::{RecordType, SyncPolicy, Wal, WalConfig, WalError, WalRecord};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn main() -> Result<(), WalError> {
    // No fsync per append (`fsync_on_write = false`): every append reaches the OS
    // (survives a process crash) without waiting for the disk.
    let mut config = WalConfig::new("./build/wal-demo");
    config.sync = SyncPolicy::Never;
    let wal = Wal::open(config)?;
    let t0 = now_ms();

    wal.append(&WalRecord {
        id: "op_1".into(),
        kind: RecordType::PutOperation,
        ts_ms: t0,
        payload: br#"{"kind":"message.send","target":"/api/messages"}"#.to_vec(),
    })?;
    wal.append(&WalRecord {
        id: "op_1".into(),
        kind: RecordType::MarkDone,
        ts_ms: t0 + 1,
        payload: Vec::new(),
    })?;

    println!("replay:");
    wal.replay(0, |r| {
        println!("  id={} type={} ts={}", r.id, r.kind.code(), r.ts_ms);
    })?;
    Ok(())
}
