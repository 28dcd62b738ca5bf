//! Crash test of the download half with real processes: a child pulls a
//! deterministic feed of 2,000 changes to six notes in pages of 1 to 60 and
//! applies them through `SqliteDownload`, its app writing each change into a
//! keyless counter table (`applied`, one row per apply: applying twice
//! shows) and into `notes`. Notes `n4` and `n5` get local edits now and
//! then, acknowledged at a later feed version, so their changes are held and
//! released. The parent SIGKILLs the child at random moments (most of its
//! time is inside a page's transaction) and restarts it until the feed is
//! drained, checking after every kill:
//! - no change was applied twice;
//! - no change at or past the stored `covers_below` was applied;
//! - every change of a note without local edits below `covers_below` was
//!   applied exactly once (none skipped), and its row is the newest;
//! - a note with local edits never shows a pulled version older than one
//!   already applied, and ends, once its edits are reflected, at the newest.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use rusqlite::Connection;
use sync_outbox::download::{Change, DownloadTarget, PullResponse};
use sync_outbox::{Operation, Outbox, OutboxConfig, SendOutcome};
use sync_store_sqlite::{
    ApplySqliteChanges, SqliteDownload, SqliteOutboxStore, SqliteOutboxStoreConfig,
};

use super::{Error, next};

/// Versions `1..=FEED` exist on the "server".
const FEED: i64 = 2_000;
/// Notes with local edits; the others only ever receive.
const EDITED: [&str; 2] = ["n4", "n5"];

/// The note a feed version changes (a fixed hash: parent and child agree).
fn note_of(version: i64) -> String {
    let mut h = version.unsigned_abs().wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^= h >> 29;
    format!("n{}", h % 6)
}

/// The page after `cursor` (the last version pulled, as text).
fn feed_page(cursor: Option<&str>) -> Result<PullResponse, Error> {
    let after: i64 = cursor.map_or(Ok(0), str::parse)?;
    let size = 1 + (after.unsigned_abs().wrapping_mul(2_654_435_761) >> 7) % 60;
    let end = (after + 1 + i64::try_from(size)?).min(FEED + 1);
    let changes: Vec<serde_json::Value> = (after + 1..end)
        .map(|v| {
            serde_json::json!({"scope": "u", "entity": "note", "id": note_of(v),
                "version": v, "op": "upsert", "state": {"v": v}})
        })
        .collect();
    Ok(serde_json::from_value(serde_json::json!({
        "changes": changes,
        "cursor": (end - 1).to_string(),
        "more": end <= FEED,
        "covers_below": end,
        "snapshot": cursor.is_none(),
    }))?)
}

/// Counts every apply in a table without a key, and keeps the notes;
/// says on stdout when it is inside a page's transaction, so the parent can
/// kill it there.
struct Counting;

impl ApplySqliteChanges for Counting {
    fn upsert(
        &mut self,
        db: &Connection,
        change: &Change,
        _state: &serde_json::Value,
    ) -> rusqlite::Result<()> {
        db.execute(
            "INSERT INTO applied (id, version) VALUES (?1, ?2)",
            (&change.id, change.version),
        )?;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "mid {}", change.version).and_then(|()| out.flush());
        db.execute(
            "INSERT INTO notes (id, version) VALUES (?1, ?2)
             ON CONFLICT (id) DO UPDATE SET version = excluded.version",
            (&change.id, change.version),
        )
        .map(drop)
    }
    fn delete(&mut self, db: &Connection, change: &Change) -> rusqlite::Result<()> {
        db.execute("DELETE FROM notes WHERE id = ?1", [&change.id])
            .map(drop)
    }
    fn reset(&mut self, db: &Connection, keep: &HashSet<String>) -> rusqlite::Result<()> {
        let mut ids: Vec<String> = Vec::new();
        for row in db
            .prepare("SELECT id FROM notes")?
            .query_map([], |r| r.get(0))?
        {
            ids.push(row?);
        }
        for id in ids {
            if !keep.contains(&format!("note/{id}")) {
                db.execute("DELETE FROM notes WHERE id = ?1", [&id])?;
            }
        }
        Ok(())
    }
    fn forget(&mut self, db: &Connection, key: &str) -> rusqlite::Result<()> {
        let id = key.strip_prefix("note/").unwrap_or(key);
        db.execute("DELETE FROM notes WHERE id = ?1", [id])
            .map(drop)
    }
}

fn open(dir: &Path) -> Result<(Arc<Outbox>, SqliteDownload<Counting>), Error> {
    let store = Arc::new(SqliteOutboxStore::open(SqliteOutboxStoreConfig::new(
        dir.join("device.db"),
    ))?);
    let outbox = Arc::new(Outbox::new(OutboxConfig::default(), store.clone()));
    store.with_transaction(&outbox, |tx| {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS applied (id TEXT NOT NULL, version INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS notes (id TEXT PRIMARY KEY, version INTEGER NOT NULL);",
        )
        .map_err(sync_store_sqlite::SqliteStoreError::from)
    })?;
    let download = SqliteDownload::new(store, outbox.clone(), Counting);
    Ok((outbox, download))
}

/// Pulls and applies until the feed is drained, printing a line per page.
pub(crate) fn child(dir: &Path, seed: u64) -> Result<(), Error> {
    let (outbox, download) = open(dir)?;
    // Answer what the last life left in flight as it would come back.
    outbox.recover(0)?;
    let mut rng = seed | 1;
    let mut out = std::io::stdout().lock();
    for now in 1_000i64..3_000 {
        let state = download.state()?;
        // Edits while the feed still runs (their versions must exist).
        if state.covers_below <= FEED && next(&mut rng).is_multiple_of(4) {
            let note = EDITED[usize::try_from(next(&mut rng) % 2)?];
            outbox.enqueue(
                Operation {
                    ordering_key: Some(format!("note/{note}")),
                    ..Operation::new("note.update", format!("/notes/{note}"), "{}")
                },
                now,
            )?;
        }
        // Sent and acknowledged at a later feed version (one a kill left
        // unanswered too): its note's pulled changes hold until the feed
        // covers that version.
        let claimed = outbox.claim(now, 8).map(sync_outbox::Claim::detach)?;
        for op in &claimed {
            let version =
                (state.covers_below.max(1) + i64::try_from(next(&mut rng) % 50)?).min(FEED);
            outbox.record(&op.id, SendOutcome::AcknowledgedAt { version }, now)?;
        }
        if !claimed.is_empty() {
            download.release()?;
        }
        let page = feed_page(state.cursor.as_deref())?;
        let done = !page.more;
        download.commit_page(&page)?;
        writeln!(out, "page {}", page.cursor)?;
        out.flush()?;
        if done && download.state()?.held.is_empty() {
            writeln!(out, "drained")?;
            return Ok(());
        }
    }
    Err(format!("not drained: {:?}", download.state()?).into())
}

/// What a run did.
pub(crate) struct Figures {
    pub(crate) kills: u32,
    /// Kills sent right after the child said it was inside a page.
    pub(crate) mid_page: u32,
    pub(crate) pages: u64,
}

/// Runs children until the feed is drained, killing each at random, about
/// `rounds` times.
pub(crate) fn run(rounds: u32, rng: &mut u64) -> Result<Figures, Error> {
    let dir = tempfile::tempdir()?;
    let mut figures = Figures {
        kills: 0,
        mid_page: 0,
        pages: 0,
    };
    // One line per applied change, one per page: a kill every ~2,000/rounds.
    let one_in = (u64::try_from(FEED)? / u64::from(rounds.max(1))).max(1);
    for _life in 0..rounds + 200 {
        let mut child = Command::new(std::env::current_exe()?)
            .env("SYNC_CRASH_CHILD_DOWNLOAD", dir.path())
            .env("SYNC_CRASH_ROUND_SEED", next(rng).to_string())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut drained = false;
        let mut killed_mid_page = false;
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            drained |= line == "drained";
            figures.pages += u64::from(line.starts_with("page "));
            if figures.kills < rounds && next(rng).is_multiple_of(one_in) {
                killed_mid_page = line.starts_with("mid ");
                // Half the kills a moment later, wherever the child is
                // then: between a page's commit and the next, in a commit.
                if next(rng).is_multiple_of(2) {
                    killed_mid_page = false;
                    let spin = std::time::Duration::from_micros(next(rng) % 3_000);
                    let start = std::time::Instant::now();
                    while start.elapsed() < spin {
                        std::hint::spin_loop();
                    }
                }
                break;
            }
        }
        child.kill()?;
        child.wait()?;
        verify(dir.path(), drained).map_err(|e| format!("after kill {}: {e}", figures.kills))?;
        if drained {
            return Ok(figures);
        }
        figures.kills += 1;
        figures.mid_page += u32::from(killed_mid_page);
    }
    Err(format!("the feed was not drained in {} lives", rounds + 200).into())
}

/// The invariants after a kill; `drained`: the child finished the feed.
fn verify(dir: &Path, drained: bool) -> Result<(), Error> {
    let db = Connection::open(dir.join("device.db"))?;
    let state = SqliteOutboxStore::download_state_read_only(&dir.join("device.db"))?;
    let mut applied: BTreeMap<i64, (String, u32)> = BTreeMap::new();
    for row in db
        .prepare("SELECT id, version FROM applied")?
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
    {
        let (id, version) = row?;
        if note_of(version) != id {
            return Err(format!("version {version} applied to {id}").into());
        }
        let count = &mut applied.entry(version).or_insert((id, 0)).1;
        *count += 1;
        if *count > 1 {
            return Err(format!("version {version} applied twice").into());
        }
        if version >= state.covers_below {
            return Err(format!(
                "version {version} applied, past the stored covers_below {}",
                state.covers_below
            )
            .into());
        }
    }
    let mut rows: BTreeMap<String, i64> = BTreeMap::new();
    for row in db
        .prepare("SELECT id, version FROM notes")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
    {
        let (id, version) = row?;
        rows.insert(id, version);
    }
    let held: HashSet<&str> = state.held.iter().map(|h| h.change.id.as_str()).collect();
    for version in 1..state.covers_below.min(FEED + 1) {
        let note = note_of(version);
        let edited = EDITED.contains(&note.as_str());
        if !edited && !applied.contains_key(&version) {
            return Err(format!("version {version} of {note} was skipped").into());
        }
    }
    for n in 0..6 {
        let note = format!("n{n}");
        let newest = (1..state.covers_below.min(FEED + 1))
            .rev()
            .find(|v| note_of(*v) == note);
        let row = rows.get(&note).copied();
        let last_applied = applied
            .iter()
            .rev()
            .find(|(_, (id, _))| *id == note)
            .map(|(v, _)| *v);
        if row != last_applied {
            return Err(
                format!("{note} shows {row:?}, its last apply was {last_applied:?}").into(),
            );
        }
        let must_be_newest =
            !EDITED.contains(&note.as_str()) || (drained && !held.contains(note.as_str()));
        if must_be_newest && row != newest {
            return Err(format!("{note} shows {row:?}, the newest pulled is {newest:?}").into());
        }
    }
    if drained && !state.held.is_empty() {
        return Err("drained with changes still held".into());
    }
    Ok(())
}
