//! Crash test with real processes: a child appends and prints `ack <lsn>` after
//! each `Ok`; the parent SIGKILLs it at a random moment, reopens the log, and
//! checks that every acknowledged record is present and intact and that nothing
//! was invented. Repeated on one directory, so each round also recovers from
//! the previous kill.
//!
//! `SYNC_CRASH_ROUNDS` (default 20 per policy) and `SYNC_CRASH_SEED` tune a run;
//! `cargo xtask crash --rounds 1000` runs the long version.

#![expect(clippy::print_stdout, reason = "a harness-less test reports on stdout")]
#![expect(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    reason = "record contents are derived from small lsns; truncation is harmless"
)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use sync_wal::{RecordType, SyncPolicy, Wal, WalConfig, WalRecord};

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    if let Ok(policy) = std::env::var("SYNC_CRASH_CHILD") {
        let dir = std::env::var("SYNC_CRASH_DIR")?;
        return child(&policy, Path::new(&dir));
    }
    let rounds: u32 = std::env::var("SYNC_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("SYNC_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("crash: seed {seed} (replay with SYNC_CRASH_SEED={seed}), {rounds} rounds per policy");
    let mut rng = XorShift(seed | 1);
    let mut passed = 0;
    for policy in ["always", "never"] {
        let dir = tempfile::tempdir()?;
        let mut total_acked = 0;
        for round in 0..rounds {
            let acked = round_trip(policy, dir.path(), &mut rng)
                .map_err(|e| format!("policy {policy}, round {round}, seed {seed}: {e}"))?;
            total_acked += acked;
            passed += 1;
        }
        println!("crash: {policy}: {rounds} kills, {total_acked} acknowledged records checked");
    }
    println!("crash: {passed} passed, 0 failed");
    Ok(())
}

fn config(policy: &str, dir: &Path) -> WalConfig {
    let mut config = WalConfig::new(dir);
    config.sync = if policy == "always" {
        SyncPolicy::Always
    } else {
        SyncPolicy::Never
    };
    // Small segments so kills also land around segment rolls.
    config.segment_bytes = 16 << 10;
    config
}

/// Every record's content follows from its LSN, so the parent can check it.
fn record(lsn: u64) -> WalRecord {
    WalRecord {
        id: format!("op_{lsn}"),
        kind: RecordType::Custom((lsn % 256) as u8),
        ts_ms: lsn as i64,
        payload: (0..(lsn % 97) as u8).map(|i| i ^ (lsn as u8)).collect(),
    }
}

fn child(policy: &str, dir: &Path) -> Result<(), Error> {
    let wal = Wal::open(config(policy, dir))?;
    let mut out = std::io::stdout().lock();
    // Bounded, in case the parent is gone.
    for round in 0..200_000u64 {
        let next = wal.next_lsn();
        let lsns = if round % 4 == 3 {
            let batch: Vec<WalRecord> = (next..next + 5).map(record).collect();
            wal.append_batch(&batch)?
        } else {
            let lsn = wal.append(&record(next))?;
            lsn..lsn + 1
        };
        for lsn in lsns {
            writeln!(out, "ack {lsn}")?;
        }
        out.flush()?;
    }
    Ok(())
}

/// One kill and check; returns how many acknowledgements it checked.
fn round_trip(policy: &str, dir: &Path, rng: &mut XorShift) -> Result<usize, Error> {
    let mut child = Command::new(std::env::current_exe()?)
        .env("SYNC_CRASH_CHILD", policy)
        .env("SYNC_CRASH_DIR", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no child stdout")?;
    let kill_after = 1 + rng.next() % if policy == "always" { 60 } else { 3000 };
    let mut acked = Vec::new();
    let mut lines = BufReader::new(stdout).lines();
    // The child keeps appending while the parent reads: the kill lands at an
    // arbitrary point of an append, a batch or a roll.
    for line in lines.by_ref() {
        acked.push(parse_ack(&line?)?);
        if acked.len() as u64 >= kill_after {
            break;
        }
    }
    child.kill()?;
    child.wait()?;
    for line in lines {
        match line {
            Ok(line) => acked.push(parse_ack(&line)?),
            Err(_) => break,
        }
    }

    let wal = Wal::open(config(policy, dir))?;
    let mut present = Vec::new();
    for item in wal.iter_from(0)? {
        let (lsn, found) = item?;
        if found != record(lsn) {
            return Err(format!("record {lsn} differs from what was written: {found:?}").into());
        }
        present.push(lsn);
    }
    if present.iter().copied().ne(0..present.len() as u64) {
        return Err("lsns are not contiguous from 0".into());
    }
    if let Some(&missing) = acked.iter().find(|&&lsn| lsn >= wal.next_lsn()) {
        return Err(format!(
            "acknowledged record {missing} lost (log ends at {})",
            wal.next_lsn()
        )
        .into());
    }
    Ok(acked.len())
}

fn parse_ack(line: &str) -> Result<u64, Error> {
    Ok(line
        .strip_prefix("ack ")
        .ok_or_else(|| format!("unexpected child output {line:?}"))?
        .parse()?)
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
