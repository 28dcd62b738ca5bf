//! Crash test with real processes: a child runs transactions "insert or
//! update a note row + enqueue its operation" on one SQLite database (one in
//! five rolls back on purpose; some completed operations are claimed and
//! marked done, as an engine would), printing `ack <note> <version> <op>`
//! after each commit. The parent SIGKILLs it at a random moment, reopens the
//! store, and checks: every note's operations are exactly the versions
//! `1..=V` of its committed row, one each (no operation without its row, no
//! committed change without its operation, nothing from a rollback), and
//! every acknowledged commit survived. `SYNC_CRASH_ROUNDS` (default 20) and
//! `SYNC_CRASH_SEED` tune a run; `cargo xtask crash` runs 1,000.
//!
//! Then the same for the download half ([`download`]): a device killed
//! mid-page applies no pulled change twice and skips none; and for payload
//! upgrades ([`upgrade`]): an upgrade killed midway leaves every operation
//! whole and finishes on a later start; and for dependent operations
//! ([`dependent`]): items that name a note's temporary id go out with its
//! real id, filled in durably, never half, whatever the kill.

#![expect(clippy::print_stdout, reason = "a harness-less test reports on stdout")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use sync_outbox::{Operation, Outbox, OutboxConfig, OutboxStore};
use sync_store_sqlite::{SqliteOutboxStore, SqliteOutboxStoreConfig, SqliteStoreError};

#[path = "crash/dependent.rs"]
mod dependent;
#[path = "crash/download.rs"]
mod download;
#[path = "crash/upgrade.rs"]
mod upgrade;

type Error = Box<dyn std::error::Error>;

const NOTES: u64 = 6;

fn main() -> Result<(), Error> {
    if let Ok(dir) = std::env::var("SYNC_CRASH_CHILD_SQLITE") {
        let seed: u64 = std::env::var("SYNC_CRASH_ROUND_SEED")?.parse()?;
        return child(Path::new(&dir), seed);
    }
    if let Ok(dir) = std::env::var("SYNC_CRASH_CHILD_UPGRADE") {
        return upgrade::child(Path::new(&dir));
    }
    if let Ok(dir) = std::env::var("SYNC_CRASH_CHILD_DEPENDENT") {
        return dependent::child(Path::new(&dir));
    }
    if let Ok(dir) = std::env::var("SYNC_CRASH_CHILD_DOWNLOAD") {
        let seed: u64 = std::env::var("SYNC_CRASH_ROUND_SEED")?.parse()?;
        return download::child(Path::new(&dir), seed);
    }
    let rounds: u32 = std::env::var("SYNC_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("SYNC_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs())
        });
    println!("crash: seed {seed} (replay with SYNC_CRASH_SEED={seed}), {rounds} rounds");
    let dir = tempfile::tempdir()?;
    let mut rng = seed | 1;
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut commits = 0;
    for round in 0..rounds {
        commits += check_round(dir.path(), &mut rng, &mut acked)
            .map_err(|e| format!("round {round}, seed {seed}: {e}"))?;
    }
    println!(
        "crash: sqlite: {rounds} kills, {commits} acknowledged commits, {} notes",
        acked.len()
    );
    let figures =
        download::run(rounds, &mut rng).map_err(|e| format!("download, seed {seed}: {e}"))?;
    println!(
        "crash: sqlite download: {} kills ({} inside a page's transaction), {} page commits seen, \
         nothing applied twice or skipped",
        figures.kills, figures.mid_page, figures.pages
    );
    let (kills, inside, lives) =
        upgrade::run(rounds, &mut rng).map_err(|e| format!("upgrade, seed {seed}: {e}"))?;
    println!(
        "crash: sqlite payload upgrade: {kills} kills ({inside} inside the hook) over {lives} lives, \
         every operation whole, none upgraded twice"
    );
    let figures =
        dependent::run(rounds, &mut rng).map_err(|e| format!("dependent, seed {seed}: {e}"))?;
    println!(
        "crash: sqlite dependent operations: {} kills ({} right after a send) over {} lives, \
         {} item sends, each with its note's real id, none before its create's answer, \
         no item ever half filled",
        figures.kills, figures.after_send, figures.lives, figures.item_sends
    );
    // The plain closing line CI reads.
    println!("crash: {rounds} passed, 0 failed");
    Ok(())
}

fn next(rng: &mut u64) -> u64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    *rng
}

fn open(dir: &Path) -> Result<(Arc<SqliteOutboxStore>, Outbox), SqliteStoreError> {
    let store = Arc::new(SqliteOutboxStore::open(SqliteOutboxStoreConfig::new(
        dir.join("notes.db"),
    ))?);
    let outbox = Outbox::new(OutboxConfig::default(), store.clone());
    Ok((store, outbox))
}

/// Runs one child until the kill; returns how many commits it acknowledged.
fn check_round(dir: &Path, rng: &mut u64, acked: &mut BTreeMap<String, u64>) -> Result<u64, Error> {
    let mut child = Command::new(std::env::current_exe()?)
        .env("SYNC_CRASH_CHILD_SQLITE", dir)
        .env("SYNC_CRASH_ROUND_SEED", next(rng).to_string())
        .stdout(Stdio::piped())
        .spawn()?;
    let kill_after = 1 + next(rng) % 40;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut n_acks = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        let mut words = line.split(' ');
        if words.next() != Some("ack") {
            continue;
        }
        let (Some(note), Some(version)) = (words.next(), words.next()) else {
            return Err(format!("bad line {line:?}").into());
        };
        let version: u64 = version.parse()?;
        let known = acked.entry(note.to_owned()).or_default();
        *known = (*known).max(version);
        n_acks += 1;
        if n_acks >= kill_after {
            break;
        }
    }
    child.kill()?;
    child.wait()?;
    verify(dir, acked)?;
    Ok(n_acks)
}

/// The database after a kill: each note's operations are exactly its
/// committed versions, and every acknowledged version is there.
fn verify(dir: &Path, acked: &BTreeMap<String, u64>) -> Result<(), Error> {
    let (store, outbox) = open(dir)?;
    let conn = rusqlite::Connection::open(dir.join("notes.db"))?;
    let mut rows: BTreeMap<String, u64> = BTreeMap::new();
    let has_notes: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'notes'",
        [],
        |row| row.get(0),
    )?;
    if has_notes {
        let mut statement = conn.prepare("SELECT id, version FROM notes")?;
        for row in statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))? {
            let (id, version): (String, u64) = row?;
            rows.insert(id, version);
        }
    }
    let mut ops: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for op in store.load_all()? {
        let (note, version) = op
            .payload
            .split_once(':')
            .ok_or_else(|| format!("unexpected payload {:?}", op.payload))?;
        ops.entry(note.to_owned())
            .or_default()
            .push(version.parse()?);
    }
    for (note, versions) in &mut ops {
        versions.sort_unstable();
        let committed = rows
            .get(note)
            .ok_or_else(|| format!("operations for {note}, which has no row"))?;
        let want: Vec<u64> = (1..=*committed).collect();
        if *versions != want {
            return Err(format!(
                "note {note} at version {committed} has operations for versions {versions:?}"
            )
            .into());
        }
    }
    for (note, version) in &rows {
        if !ops.contains_key(note) && *version > 0 {
            return Err(format!("note {note} at version {version} has no operation").into());
        }
    }
    for (note, version) in acked {
        if rows.get(note).copied().unwrap_or(0) < *version {
            return Err(format!("acknowledged {note} v{version} was lost").into());
        }
    }
    // The reopened outbox sees the ones left in flight as orphans.
    outbox.recover(0)?;
    let in_flight = store.stats()?.in_flight;
    if in_flight != 0 {
        return Err(format!("{in_flight} operations still in flight after recover").into());
    }
    Ok(())
}

/// Runs transactions until killed.
fn child(dir: &Path, seed: u64) -> Result<(), Error> {
    let (store, outbox) = open(dir)?;
    store.with_transaction(&outbox, |tx| {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS notes (id TEXT PRIMARY KEY, version INTEGER NOT NULL)",
        )
        .map_err(SqliteStoreError::from)
    })?;
    let mut rng = seed | 1;
    let mut out = std::io::stdout().lock();
    for now in 1_000i64.. {
        let note = format!("n{}", next(&mut rng) % NOTES);
        let roll_back = next(&mut rng).is_multiple_of(5);
        let mut tx = store.transaction(&outbox)?;
        let version: u64 = tx
            .query_row("SELECT version FROM notes WHERE id = ?1", [&note], |row| {
                row.get(0)
            })
            .unwrap_or(0)
            + 1;
        tx.execute(
            "INSERT OR REPLACE INTO notes (id, version) VALUES (?1, ?2)",
            rusqlite::params![note, version],
        )?;
        let op = Operation {
            ordering_key: Some(note.clone()),
            ..Operation::new(
                "note.upsert",
                format!("/notes/{note}"),
                format!("{note}:{version}"),
            )
        };
        let id = tx.enqueue(op, now)?;
        if roll_back {
            tx.rollback();
            continue;
        }
        tx.commit()?;
        writeln!(out, "ack {note} {version} {id}")?;
        out.flush()?;
        if next(&mut rng).is_multiple_of(3) {
            for claimed in outbox.claim(now, 2).map(sync_outbox::Claim::detach)? {
                outbox.mark_done(&claimed.id, now)?;
            }
        }
    }
    Ok(())
}
