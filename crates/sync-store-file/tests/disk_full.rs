//! Disk-full test with real processes: a child runs under `RLIMIT_FSIZE`
//! (`ulimit -f`, with `SIGXFSZ` ignored so a write past the limit fails with
//! `EFBIG` instead of killing it), so files stop growing exactly as on a full
//! disk. Three scenarios:
//!
//! - `json`: a `JsonOutboxStore` rewrite whose temp file hits the limit;
//! - `wal-append`: a `WalOutboxStore` append whose segment hits the limit;
//! - `wal-snapshot`: small segments that fit, but a snapshot that does not,
//!   so every compaction fails while changes go on.
//!
//! In each, the child enqueues until the scenario's fault happens, printing
//! `ack <id>` after every `Ok`, and keeps trying a few more times. The
//! parent then reopens the store without a limit and checks that it opens,
//! that every acknowledged operation is there, and that nothing else is.

#![expect(clippy::print_stdout, reason = "a harness-less test reports on stdout")]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use sync_outbox::{Operation, Outbox, OutboxConfig, OutboxStore};
use sync_store_file::{
    JsonOutboxStore, JsonOutboxStoreConfig, WalOutboxStore, WalOutboxStoreConfig,
};

type Error = Box<dyn std::error::Error>;

/// The file size limit of the child, in 512-byte blocks (`ulimit -f` in a
/// POSIX shell), per scenario.
const SCENARIOS: [(&str, u32); 3] = [("json", 16), ("wal-append", 32), ("wal-snapshot", 48)];

/// Operations a child attempts at most.
const MAX_OPS: usize = 400;

fn main() -> Result<(), Error> {
    if let Ok(scenario) = std::env::var("SYNC_DISK_FULL_CHILD") {
        let dir = std::env::var("SYNC_DISK_FULL_DIR")?;
        return child(&scenario, Path::new(&dir));
    }
    for (scenario, blocks) in SCENARIOS {
        let dir = tempfile::tempdir()?;
        let output = Command::new("sh")
            .arg("-c")
            .arg(format!("trap '' XFSZ; ulimit -f {blocks} && exec \"$0\""))
            .arg(std::env::current_exe()?)
            .env("SYNC_DISK_FULL_CHILD", scenario)
            .env("SYNC_DISK_FULL_DIR", dir.path())
            .output()?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            return Err(format!(
                "{scenario}: the child failed ({}): {}\n{stdout}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        check(scenario, dir.path(), &stdout).map_err(|e| format!("{scenario}: {e}"))?;
    }
    println!("disk_full: 3 scenarios passed");
    Ok(())
}

fn open(scenario: &str, dir: &Path) -> Result<Arc<dyn OutboxStore>, Error> {
    Ok(match scenario {
        "json" => Arc::new(JsonOutboxStore::open(JsonOutboxStoreConfig::new(
            dir.join("outbox.json"),
        ))?),
        "wal-append" => {
            let mut config = WalOutboxStoreConfig::new(dir.join("outbox-wal"));
            config.compact_min_records = u64::MAX;
            Arc::new(WalOutboxStore::open(config)?)
        }
        _ => {
            let mut config = WalOutboxStoreConfig::new(dir.join("outbox-wal"));
            config.segment_bytes = 4 << 10;
            config.compact_min_records = 20;
            config.compact_ratio = 0.0;
            Arc::new(WalOutboxStore::open(config)?)
        }
    })
}

fn child(scenario: &str, dir: &Path) -> Result<(), Error> {
    let store = open(scenario, dir)?;
    let outbox = Outbox::new(OutboxConfig::default(), Arc::clone(&store));
    let mut failures = 0;
    for n in 0..MAX_OPS {
        let op = Operation::new(
            "message.send",
            "/api/messages",
            format!(r#"{{"n":{n},"text":"{}"}}"#, "x".repeat(200)),
        );
        match outbox.enqueue(op, 1_000 + i64::try_from(n)?) {
            Ok(id) => println!("ack {id}"),
            Err(e) => {
                println!("fail {e}");
                failures += 1;
                if failures == 5 {
                    break;
                }
            }
        }
    }
    drop(outbox);
    if scenario == "wal-snapshot" {
        // Downcast through the trait object is not possible; reopen in this
        // process is: the store reports its own compaction error.
        drop(store);
        let mut config = WalOutboxStoreConfig::new(dir.join("outbox-wal"));
        config.segment_bytes = 4 << 10;
        let store = WalOutboxStore::open(config)?;
        match store.compact() {
            Ok(()) => println!("compaction ok"),
            Err(e) => println!("compaction-failed {}", chain(&e)),
        }
    }
    Ok(())
}

fn check(scenario: &str, dir: &Path, stdout: &str) -> Result<(), Error> {
    let acked: BTreeSet<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ack "))
        .collect();
    let failed = stdout.lines().filter(|l| l.starts_with("fail ")).count();
    if scenario == "wal-snapshot" {
        if failed != 0 || acked.len() != MAX_OPS {
            return Err(format!("changes failed with the log fitting: {failed} failures").into());
        }
        if !stdout.lines().any(|l| l.starts_with("compaction-failed")) {
            return Err(format!("the snapshot never hit the limit:\n{stdout}").into());
        }
    } else if failed == 0 {
        return Err("the limit was never hit".into());
    } else if acked.is_empty() {
        return Err("nothing fit under the limit".into());
    }
    let store = open(scenario, dir)?;
    let stored: BTreeSet<String> = store.load_all()?.into_iter().map(|op| op.id).collect();
    let stored: BTreeSet<&str> = stored.iter().map(String::as_str).collect();
    if stored != acked {
        let lost: Vec<_> = acked.difference(&stored).collect();
        let extra: Vec<_> = stored.difference(&acked).collect();
        return Err(format!("lost {lost:?}, unacknowledged but stored {extra:?}").into());
    }
    println!(
        "disk_full: {scenario}: {} acknowledged, {failed} refused, all there after reopen",
        acked.len()
    );
    Ok(())
}

fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
