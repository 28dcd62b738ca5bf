//! Crash test of payload upgrades with real processes: 300 never-sent
//! operations of payload version 1 (`{"text":..}`) are upgraded to version
//! 2 (`{"body":..}`) by a child that is killed (`SIGKILL`) at random, half the
//! time right after its hook says it is upgrading one, and restarted until
//! a life finishes. After every kill each operation is whole: version 1
//! with the old payload or version 2 with the new one, never a mix, none
//! made a dead letter, none lost; the upgraded count never goes back; and
//! the hook never sees an operation twice in the new format (it would fail
//! it, which the check catches).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use sync_outbox::{Operation, OperationStatus, Outbox, OutboxConfig, OutboxStore};
use sync_store_sqlite::{SqliteOutboxStore, SqliteOutboxStoreConfig};

use super::{Error, next};

const OPERATIONS: usize = 300;

fn open(dir: &Path) -> Result<(Arc<SqliteOutboxStore>, Outbox), Error> {
    let store = Arc::new(SqliteOutboxStore::open(SqliteOutboxStoreConfig::new(
        dir.join("upgrade.db"),
    ))?);
    let outbox = Outbox::new(OutboxConfig::default(), store.clone());
    Ok((store, outbox))
}

/// The upgrade, as a release would ship it; says when it is inside one.
fn to_v2(op: &mut Operation) -> Result<(), String> {
    let old: serde_json::Value = serde_json::from_str(&op.payload).map_err(|e| e.to_string())?;
    let Some(text) = old["text"].as_str() else {
        return Err(format!("not a version 1 payload: {}", op.payload));
    };
    op.payload = serde_json::json!({ "body": text, "v": 2 }).to_string();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "mid {}", op.id).and_then(|()| out.flush());
    Ok(())
}

/// Upgrades what is left, then says so.
pub(crate) fn child(dir: &Path) -> Result<(), Error> {
    let (_, outbox) = open(dir)?;
    outbox.upgrade_payloads(2, 1, to_v2)?;
    println!("finished");
    Ok(())
}

/// Fills the store, then kills upgrading children until one finishes.
/// Returns (kills, kills inside the hook, lives).
pub(crate) fn run(rounds: u32, rng: &mut u64) -> Result<(u32, u32, u32), Error> {
    let dir = tempfile::tempdir()?;
    {
        let (_, outbox) = open(dir.path())?;
        for i in 0..OPERATIONS {
            outbox.enqueue(
                Operation {
                    payload_version: 1,
                    ..Operation::new(
                        "note.save",
                        format!("/notes/{i}"),
                        format!(r#"{{"text":"note {i}"}}"#),
                    )
                },
                0,
            )?;
        }
    }
    let (mut kills, mut inside, mut upgraded) = (0, 0, 0);
    for life in 1..=rounds + 50 {
        let mut child = Command::new(std::env::current_exe()?)
            .env("SYNC_CRASH_CHILD_UPGRADE", dir.path())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut finished = false;
        let one_in = (OPERATIONS as u64 / u64::from(rounds.max(1))).max(2);
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            finished |= line == "finished";
            if kills < rounds && next(rng).is_multiple_of(one_in) {
                let mut in_hook = line.starts_with("mid ");
                // Half the kills a moment later, wherever the child is:
                // in a write, between two.
                if next(rng).is_multiple_of(2) {
                    in_hook = false;
                    let spin = std::time::Duration::from_micros(next(rng) % 3_000);
                    let start = std::time::Instant::now();
                    while start.elapsed() < spin {
                        std::hint::spin_loop();
                    }
                }
                inside += u32::from(in_hook);
                kills += 1;
                break;
            }
        }
        child.kill()?;
        child.wait()?;
        let now = verify(dir.path(), upgraded)?;
        upgraded = now;
        if finished || upgraded == OPERATIONS {
            if upgraded != OPERATIONS {
                return Err(format!("finished with {upgraded} of {OPERATIONS} upgraded").into());
            }
            return Ok((kills, inside, life));
        }
    }
    Err("never finished".into())
}

/// Every operation whole; returns how many are upgraded.
fn verify(dir: &Path, before: usize) -> Result<usize, Error> {
    let ops = SqliteOutboxStore::load_read_only(&dir.join("upgrade.db"))?.load_all()?;
    if ops.len() != OPERATIONS {
        return Err(format!("{} operations, expected {OPERATIONS}", ops.len()).into());
    }
    let mut upgraded = 0;
    for op in &ops {
        if op.status != OperationStatus::Pending {
            return Err(format!("{} is {:?}: {}", op.id, op.status, op.last_error).into());
        }
        let new = op.payload.contains("\"body\"");
        match (op.payload_version, new) {
            (1, false) => {}
            (2, true) => upgraded += 1,
            (version, _) => {
                return Err(format!(
                    "{} is half upgraded: version {version}, {}",
                    op.id, op.payload
                )
                .into());
            }
        }
    }
    if upgraded < before {
        return Err(format!("upgraded went back from {before} to {upgraded}").into());
    }
    Ok(upgraded)
}
