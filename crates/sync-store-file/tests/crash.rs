//! Crash test with real processes for both stores: a child enqueues, claims
//! and completes operations through an `Outbox`, printing `enq|claim|done <id>`
//! after each `Ok`; the parent SIGKILLs it at a random moment, reopens the
//! store, and checks that every acknowledged state is there, that nothing was
//! invented, and that `recover` brings every `InFlight` operation back.
//! For the WAL store, compaction runs every few dozen records, so kills also
//! land during compaction. `SYNC_CRASH_ROUNDS` (default 20 per store) and
//! `SYNC_CRASH_SEED` tune a run.

#![expect(clippy::print_stdout, reason = "a harness-less test reports on stdout")]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use sync_outbox::{Operation, OperationStatus, Outbox, OutboxConfig, OutboxStore};
use sync_store_file::{
    JsonOutboxStore, JsonOutboxStoreConfig, WalOutboxStore, WalOutboxStoreConfig,
};

type Error = Box<dyn std::error::Error>;

/// The furthest state a child acknowledged for an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Acked {
    Enqueued,
    Claimed,
    Done,
}

fn main() -> Result<(), Error> {
    if let Ok(kind) = std::env::var("SYNC_CRASH_CHILD") {
        let dir = std::env::var("SYNC_CRASH_DIR")?;
        let round = std::env::var("SYNC_CRASH_ROUND")?;
        return child(&kind, Path::new(&dir), &round);
    }
    let rounds: u32 = std::env::var("SYNC_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("SYNC_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_ms().unsigned_abs());
    println!("crash: seed {seed} (replay with SYNC_CRASH_SEED={seed}), {rounds} rounds per store");
    let mut rng = seed | 1;
    let mut passed = 0;
    for kind in ["json", "wal"] {
        let dir = tempfile::tempdir()?;
        let mut acked: HashMap<String, Acked> = HashMap::new();
        for round in 0..rounds {
            check_round(kind, dir.path(), round, &mut rng, &mut acked)
                .map_err(|e| format!("store {kind}, round {round}, seed {seed}: {e}"))?;
            passed += 1;
        }
        if kind == "wal" && rounds > 0 && !dir.path().join("outbox-wal/snapshot").exists() {
            return Err("no compaction ran: the kills never met one".into());
        }
        println!(
            "crash: {kind}: {rounds} kills, {} operations tracked",
            acked.len()
        );
    }
    println!("crash: {passed} passed, 0 failed");
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn open(kind: &str, dir: &Path) -> Result<Arc<dyn OutboxStore>, Error> {
    Ok(if kind == "json" {
        Arc::new(JsonOutboxStore::open(JsonOutboxStoreConfig {
            pretty_json: false,
            ..JsonOutboxStoreConfig::new(dir.join("outbox.json"))
        })?)
    } else {
        let mut config = WalOutboxStoreConfig::new(dir.join("outbox-wal"));
        config.segment_bytes = 8 << 10;
        config.compact_min_records = 40;
        config.compact_ratio = 0.5;
        Arc::new(WalOutboxStore::open(config)?)
    })
}

fn outbox(store: Arc<dyn OutboxStore>) -> Outbox {
    Outbox::new(
        OutboxConfig {
            inflight_timeout: std::time::Duration::from_secs(60),
            ..OutboxConfig::default()
        },
        store,
    )
}

fn child(kind: &str, dir: &Path, round: &str) -> Result<(), Error> {
    let outbox = outbox(open(kind, dir)?);
    let mut out = std::io::stdout().lock();
    for n in 0..100_000u64 {
        let id = format!("r{round}-{n}");
        let op = Operation {
            id: id.clone(),
            ..Operation::new("message.send", "/api/messages", format!("{{\"n\":{n}}}"))
        };
        outbox.enqueue(op, now_ms())?;
        writeln!(out, "enq {id}")?;
        out.flush()?;
        let claimed = outbox.claim(now_ms(), 2).map(sync_outbox::Claim::detach)?;
        for op in &claimed {
            writeln!(out, "claim {}", op.id)?;
        }
        out.flush()?;
        // Complete one of them: the other stays in flight for recovery to find.
        if let Some(op) = claimed.first() {
            outbox.mark_done(&op.id, now_ms())?;
            writeln!(out, "done {}", op.id)?;
            out.flush()?;
        }
    }
    Ok(())
}

fn check_round(
    kind: &str,
    dir: &Path,
    round: u32,
    rng: &mut u64,
    acked: &mut HashMap<String, Acked>,
) -> Result<(), Error> {
    let mut child = Command::new(std::env::current_exe()?)
        .env("SYNC_CRASH_CHILD", kind)
        .env("SYNC_CRASH_DIR", dir)
        .env("SYNC_CRASH_ROUND", round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no child stdout")?;
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let kill_after = 1 + *rng % if kind == "json" { 40 } else { 300 };
    let mut lines = BufReader::new(stdout).lines();
    let mut n_acks = 0;
    let record = |line: &str, acked: &mut HashMap<String, Acked>| -> Result<(), Error> {
        let (what, id) = line
            .split_once(' ')
            .ok_or_else(|| format!("unexpected child output {line:?}"))?;
        let state = match what {
            "enq" => Acked::Enqueued,
            "claim" => Acked::Claimed,
            "done" => Acked::Done,
            _ => return Err(format!("unexpected child output {line:?}").into()),
        };
        let entry = acked.entry(id.to_owned()).or_insert(state);
        *entry = (*entry).max(state);
        Ok(())
    };
    for line in lines.by_ref() {
        record(&line?, acked)?;
        n_acks += 1;
        if n_acks >= kill_after {
            break;
        }
    }
    child.kill()?;
    child.wait()?;
    for line in lines.map_while(Result::ok) {
        record(&line, acked)?;
    }

    let store = open(kind, dir)?;
    for op in store.load_all()? {
        if !op.id.starts_with('r') || op.kind != "message.send" {
            return Err(format!("invented operation {op:?}").into());
        }
    }
    for (id, state) in acked.iter() {
        let op = store
            .get(id)?
            .ok_or_else(|| format!("acknowledged operation {id} ({state:?}) lost"))?;
        let ok = match state {
            Acked::Enqueued => true,
            Acked::Claimed => {
                matches!(op.status, OperationStatus::InFlight | OperationStatus::Done)
                    && op.attempt >= 1
            }
            Acked::Done => op.status == OperationStatus::Done,
        };
        if !ok {
            return Err(format!(
                "{id}: acknowledged {state:?}, found {:?} attempt {}",
                op.status, op.attempt
            )
            .into());
        }
    }
    // A restarted app recovers interrupted sends once the timeout has passed.
    let outbox = outbox(store.clone());
    outbox.recover(now_ms() + 120_000)?;
    if let Some(op) = store
        .load_all()?
        .into_iter()
        .find(|op| op.status == OperationStatus::InFlight)
    {
        return Err(format!("{} still in flight after recover", op.id).into());
    }
    // What was claimed but not done is pending (or failed) again now.
    for state in acked.values_mut() {
        if *state == Acked::Claimed {
            *state = Acked::Enqueued;
        }
    }
    Ok(())
}
