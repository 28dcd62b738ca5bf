//! Crash test of dependent operations with real processes: 40 notes are
//! created offline under temporary ids (`tmp-{n}`), each with 3 items whose
//! target and payload name the temporary id and that need the create's
//! answer. A child sends them as an engine would (claim, "send" by writing
//! the request to stdout, then record the answer, the server's real id
//! `real-{create id}` for a create) and is killed (`SIGKILL`) at random
//! moments, half right after a send line (the answer not recorded yet),
//! and restarted until everything is `Done`.
//!
//! After every kill each stored item is whole: untouched (its need, the
//! temporary id) or filled (no need, the real id everywhere), never half.
//! Over all lives, every request an item went out with names its note's
//! real id and never a temporary one, and no item went out before its
//! note's create had been answered.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use sync_outbox::{
    Need, Operation, OperationStatus, Outbox, OutboxConfig, OutboxStore, SendOutcome,
};
use sync_store_sqlite::{SqliteOutboxStore, SqliteOutboxStoreConfig};

use super::{Error, next};

const NOTES: usize = 40;
const ITEMS_PER_NOTE: usize = 3;

fn open(dir: &Path) -> Result<Outbox, Error> {
    let store = Arc::new(SqliteOutboxStore::open(SqliteOutboxStoreConfig::new(
        dir.join("dependent.db"),
    ))?);
    // Every kill interrupts a send and so counts an attempt: with the
    // default 5 attempts an operation killed 5 times would end a dead
    // letter, which is right, but not what this test is about.
    let config = OutboxConfig {
        retry: sync_outbox::RetryPolicy {
            max_attempts: 10_000,
            ..sync_outbox::RetryPolicy::default()
        },
        ..OutboxConfig::default()
    };
    Ok(Outbox::new(config, store))
}

fn real_id(create: &str) -> String {
    format!("real-{create}")
}

/// Sends everything claimable, recording each answer, until all is done.
pub(crate) fn child(dir: &Path) -> Result<(), Error> {
    let outbox = open(dir)?;
    outbox.recover(1)?;
    let mut out = std::io::stdout().lock();
    loop {
        let claim = outbox.claim(1, 4)?;
        if claim.is_empty() {
            break;
        }
        for op in &claim {
            // The request leaves before its answer is recorded.
            writeln!(out, "sent {} {} {}", op.id, op.target, op.payload)?;
            out.flush()?;
            if op.kind == "note.create" {
                let answer = format!(r#"{{"id":"{}"}}"#, real_id(&op.id));
                outbox.record(
                    &op.id,
                    SendOutcome::AcknowledgedWith {
                        version: None,
                        answer: &answer,
                    },
                    2,
                )?;
                writeln!(out, "answered {}", op.id)?;
                out.flush()?;
            } else {
                outbox.mark_done(&op.id, 2)?;
            }
        }
    }
    writeln!(out, "finished")?;
    out.flush()?;
    Ok(())
}

/// What the run saw.
pub(crate) struct Figures {
    pub(crate) kills: u32,
    pub(crate) after_send: u32,
    pub(crate) lives: u32,
    pub(crate) item_sends: usize,
}

/// Fills the store, then kills sending children until one finishes.
pub(crate) fn run(rounds: u32, rng: &mut u64) -> Result<Figures, Error> {
    let dir = tempfile::tempdir()?;
    // item id -> (create id, temporary id)
    let mut items: HashMap<String, (String, String)> = HashMap::new();
    {
        let outbox = open(dir.path())?;
        for n in 0..NOTES {
            let tmp = format!("tmp-{n}");
            let create = outbox.enqueue(
                Operation::new("note.create", "/notes", format!(r#"{{"tmp":"{tmp}"}}"#))
                    .keeping_answer(),
                0,
            )?;
            for i in 0..ITEMS_PER_NOTE {
                let item = Operation::new(
                    "item.add",
                    format!("/notes/{tmp}/items"),
                    format!(r#"{{"note":"{tmp}","text":"item {i}"}}"#),
                )
                .needing(Need::new(&create, "/id", &tmp));
                let id = outbox.enqueue(item, 0)?;
                items.insert(id, (create.clone(), tmp.clone()));
            }
        }
    }
    let total = NOTES * (1 + ITEMS_PER_NOTE);
    let mut answered: HashSet<String> = HashSet::new();
    let mut figures = Figures {
        kills: 0,
        after_send: 0,
        lives: 0,
        item_sends: 0,
    };
    for life in 1..=rounds + 50 {
        figures.lives = life;
        let mut child = Command::new(std::env::current_exe()?)
            .env("SYNC_CRASH_CHILD_DEPENDENT", dir.path())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut finished = false;
        let one_in = (total as u64 * 2 / u64::from(rounds.max(1))).max(2);
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            finished |= line == "finished";
            let mut words = line.splitn(4, ' ');
            match (words.next(), words.next(), words.next(), words.next()) {
                (Some("answered"), Some(id), _, _) => {
                    answered.insert(id.to_owned());
                }
                (Some("sent"), Some(id), Some(target), Some(payload)) => {
                    if let Some((create, tmp)) = items.get(id) {
                        figures.item_sends += 1;
                        let real = real_id(create);
                        if !answered.contains(create) {
                            return Err(
                                format!("{id} went out before {create} was answered").into()
                            );
                        }
                        if target != format!("/notes/{real}/items")
                            || !payload.contains(&real)
                            || payload.contains(tmp.as_str())
                        {
                            return Err(format!("{id} went out as {target} {payload}").into());
                        }
                    }
                }
                _ => {}
            }
            if figures.kills < rounds && next(rng).is_multiple_of(one_in) {
                let mut after_send = line.starts_with("sent ");
                if next(rng).is_multiple_of(2) {
                    // A moment later, wherever the child is: inside a claim's
                    // rewrite, a record, between two.
                    after_send = false;
                    let spin = std::time::Duration::from_micros(next(rng) % 2_000);
                    let start = std::time::Instant::now();
                    while start.elapsed() < spin {
                        std::hint::spin_loop();
                    }
                }
                figures.after_send += u32::from(after_send);
                figures.kills += 1;
                break;
            }
        }
        child.kill()?;
        child.wait()?;
        let done = verify(dir.path(), &items, total, &mut answered)?;
        if finished || done == total {
            if done != total {
                return Err(format!("finished with {done} of {total} done").into());
            }
            return Ok(figures);
        }
    }
    Err("never finished".into())
}

/// Every item whole; returns how many operations are done. Adds the
/// creates stored `Done` to `answered` (the child may have died between
/// recording an answer and saying so).
fn verify(
    dir: &Path,
    items: &HashMap<String, (String, String)>,
    total: usize,
    answered: &mut HashSet<String>,
) -> Result<usize, Error> {
    let ops = SqliteOutboxStore::load_read_only(&dir.join("dependent.db"))?.load_all()?;
    if ops.len() != total {
        return Err(format!("{} operations, expected {total}", ops.len()).into());
    }
    let mut done = 0;
    for op in &ops {
        if op.status == OperationStatus::Failed {
            return Err(format!("{} failed: {}", op.id, op.last_error).into());
        }
        done += usize::from(op.status == OperationStatus::Done);
        let Some((create, tmp)) = items.get(&op.id) else {
            if op.status == OperationStatus::Done {
                answered.insert(op.id.clone());
            }
            continue;
        };
        let real = real_id(create);
        let untouched = op.needs.len() == 1 && op.target.contains(tmp.as_str());
        let filled = op.needs.is_empty()
            && op.target == format!("/notes/{real}/items")
            && op.payload.contains(&real)
            && !op.payload.contains(tmp.as_str());
        if !(untouched || filled) || (untouched && op.status != OperationStatus::Pending) {
            return Err(format!("{} is half filled or sent unfilled: {op:?}", op.id).into());
        }
    }
    Ok(done)
}
