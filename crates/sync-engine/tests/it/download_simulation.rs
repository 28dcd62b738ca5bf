//! Deterministic simulation of both directions: N devices and a server on
//! one manual clock. Each device edits and deletes shared notes (its local
//! table first, then an operation with the note's ordering key), pushes,
//! pulls, goes offline, restarts, and fails in the middle of applying a page
//! (the page is then pulled and applied again); the server applies every
//! operation once per key, loses answers, gets duplicates, and compacts its
//! deletes (cursors below the horizon start again from a snapshot).
//!
//! Checked at every step: no device's own edit was replaced by pulled data
//! before the server confirmed it (the edit's operations reflected in what
//! the device pulled). Checked at the end, after every device came online,
//! pushed everything and pulled to the end: every device's table equals the
//! server's. Over 300 worlds; the same worlds with the gate off (a change is
//! never held) must break the first check somewhere, or the simulation
//! tests nothing.
//!
//! A failing seed prints itself; `SYNC_SIM_SEED=n` replays one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sync_engine::{
    Clock, DownloadConfig, Downloader, ManualClock, NetworkProbe, NetworkProbeConfig, PullResult,
    PullTransport, SendResult, SyncTransport, SyncWorker, SyncWorkerConfig,
};
use sync_outbox::download::{
    AppDownload, ApplyChanges, Change, ChangeOp, DownloadStateStore, MemoryDownloadState,
    PullResponse, unreflected_keys,
};
use sync_outbox::{
    MemoryOutboxStore, Operation, OperationStatus, Outbox, OutboxConfig, OutboxStore, RetryPolicy,
};
use sync_protocol::PullRequest;

use crate::rng::{Rng, seeds};

const DEVICES: usize = 3;
const NOTES: u64 = 3;
const STEPS: usize = 160;

/// The server: one row per note (its latest change), operations applied
/// once per key, deletes compacted behind a horizon. The feed's rules as
/// `sync-server` serves them (one version per commit).
#[derive(Debug, Default)]
struct Server {
    head: i64,
    /// note id -> (version, value; `None` a tombstone).
    rows: BTreeMap<String, (i64, Option<i64>)>,
    /// idempotency key -> the version its commit took.
    applied: HashMap<String, i64>,
    compacted_below: i64,
}

impl Server {
    /// Applies `op` once per key; its version.
    fn apply(&mut self, op: &Operation) -> i64 {
        if let Some(version) = self.applied.get(op.idempotency_key()) {
            return *version;
        }
        let edit: serde_json::Value = serde_json::from_str(&op.payload).unwrap_or_default();
        let id = edit["id"].as_str().unwrap_or_default().to_owned();
        self.head += 1;
        self.rows.insert(id, (self.head, edit["value"].as_i64()));
        self.applied
            .insert(op.idempotency_key().to_owned(), self.head);
        self.head
    }

    /// The notes as they are.
    fn state(&self) -> BTreeMap<String, i64> {
        self.rows
            .iter()
            .filter_map(|(id, (_, value))| value.map(|v| (id.clone(), v)))
            .collect()
    }

    fn compact(&mut self) {
        let dropped: Vec<(String, i64)> = self
            .rows
            .iter()
            .filter(|(_, (_, value))| value.is_none())
            .map(|(id, (version, _))| (id.clone(), *version))
            .collect();
        for (id, version) in dropped {
            self.rows.remove(&id);
            self.compacted_below = self.compacted_below.max(version + 1);
        }
    }

    fn pull(&self, request: &PullRequest) -> PullResult {
        let horizon = self.head + 1;
        let limit = request.limit.unwrap_or(500) as usize;
        let (after, snapshot) = match request.cursor.as_deref().map(parse_cursor) {
            None => (0, Some(horizon)),
            Some(Some(cursor)) => cursor,
            Some(None) => {
                return PullResult::Restart {
                    reason: "bad_cursor".into(),
                };
            }
        };
        if request.cursor.is_some()
            && after.max(snapshot.unwrap_or(i64::MIN)) < self.compacted_below
        {
            return PullResult::Restart {
                reason: "cursor_compacted".into(),
            };
        }
        let deletes_from = if request.cursor.is_none() {
            i64::MAX
        } else {
            snapshot.unwrap_or(i64::MIN)
        };
        let mut rows: Vec<(i64, &String, Option<i64>)> = self
            .rows
            .iter()
            .filter(|(_, (version, value))| {
                *version > after
                    && *version < horizon
                    && (value.is_some() || *version >= deletes_from)
            })
            .map(|(id, (version, value))| (*version, id, *value))
            .collect();
        rows.sort_unstable();
        let more = rows.len() > limit;
        rows.truncate(limit);
        let changes: Vec<Change> = rows
            .iter()
            .map(|(version, id, value)| Change {
                scope: "shared".into(),
                entity: "note".into(),
                id: (*id).clone(),
                version: *version,
                op: match value {
                    Some(v) => ChangeOp::Upsert {
                        state: serde_json::json!({ "value": v }),
                    },
                    None => ChangeOp::Delete,
                },
            })
            .collect();
        let (cursor, covers_below) = match changes.last() {
            Some(last) if more => ((last.version, snapshot), last.version),
            _ => ((horizon - 1, None), horizon),
        };
        PullResult::Page(PullResponse {
            changes,
            cursor: format!("{}:{}", cursor.0, cursor.1.map_or(-1, |s| s)),
            more,
            covers_below,
            snapshot: snapshot.is_some(),
        })
    }
}

fn parse_cursor(text: &str) -> Option<(i64, Option<i64>)> {
    let (position, snapshot) = text.split_once(':')?;
    let snapshot: i64 = snapshot.parse().ok()?;
    Some((position.parse().ok()?, (snapshot >= 0).then_some(snapshot)))
}

/// What the network does to one device: offline, answers lost on the way
/// back, duplicates.
#[derive(Debug)]
struct Link {
    server: Arc<Mutex<Server>>,
    online: AtomicBool,
    faults: Mutex<Rng>,
    /// No more faults: the end of the world, where everything settles.
    calm: AtomicBool,
}

impl Link {
    fn server(&self) -> std::sync::MutexGuard<'_, Server> {
        self.server.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn roll(&self, percent: u64) -> bool {
        !self.calm.load(SeqCst)
            && self
                .faults
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .chance(percent)
    }
}

impl SyncTransport for Link {
    fn send(&self, op: &Operation) -> SendResult {
        if !self.online.load(SeqCst) {
            return SendResult::not_sent("offline");
        }
        let version = self.server().apply(op);
        if self.roll(5) {
            // Delivered twice: the key makes the second harmless.
            self.server().apply(op);
        }
        if self.roll(10) {
            return SendResult::no_answer("answer lost");
        }
        SendResult::ok_at(version)
    }
}

impl PullTransport for Link {
    fn pull(&self, request: &PullRequest) -> PullResult {
        if !self.online.load(SeqCst) {
            return PullResult::Unanswered {
                error: "offline".into(),
            };
        }
        if self.roll(5) {
            return PullResult::Unanswered {
                error: "answer lost".into(),
            };
        }
        self.server().pull(request)
    }
}

/// A device's notes: id -> (value, version; `None` deleted). Its own edits
/// have version `i64::MIN`, so any pulled change is newer; pulled ones skip
/// what is not newer (a page applied again after a failure).
type Notes = Arc<Mutex<BTreeMap<String, (Option<i64>, i64)>>>;

struct Table {
    notes: Notes,
    /// Fails the next upsert after a few, once armed: a crash mid-page.
    fail_after: Arc<Mutex<Option<usize>>>,
    gate: bool,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

impl Table {
    fn notes(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (Option<i64>, i64)>> {
        self.notes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, change: &Change, value: Option<i64>) -> Result<(), Error> {
        {
            let mut fail = self
                .fail_after
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match *fail {
                Some(0) => {
                    *fail = None;
                    return Err("crashed mid-page".into());
                }
                Some(n) => *fail = Some(n - 1),
                None => {}
            }
        }
        let mut notes = self.notes();
        let newer = notes
            .get(&change.id)
            .is_none_or(|(_, version)| *version < change.version);
        if newer {
            notes.insert(change.id.clone(), (value, change.version));
        }
        Ok(())
    }
}

impl ApplyChanges for Table {
    fn upsert(&mut self, change: &Change, state: &serde_json::Value) -> Result<(), Error> {
        self.set(change, state["value"].as_i64())
    }

    fn delete(&mut self, change: &Change) -> Result<(), Error> {
        self.set(change, None)
    }

    fn reset(&mut self, keep: &HashSet<String>) -> Result<(), Error> {
        self.notes()
            .retain(|id, _| keep.contains(&format!("note/{id}")));
        Ok(())
    }

    fn forget(&mut self, key: &str) -> Result<(), Error> {
        if let Some(id) = key.strip_prefix("note/") {
            self.notes().remove(id);
        }
        Ok(())
    }

    fn ordering_key(&self, change: &Change) -> Option<String> {
        self.gate.then(|| format!("note/{}", change.id))
    }
}

/// One device: what survives a restart (store, download state, notes) and
/// what a restart makes anew (outbox, worker, downloader).
struct Device {
    store: Arc<MemoryOutboxStore>,
    state: Arc<MemoryDownloadState>,
    notes: Notes,
    fail_after: Arc<Mutex<Option<usize>>>,
    link: Arc<Link>,
    gate: bool,
    outbox: Arc<Outbox>,
    worker: SyncWorker,
    downloader: Downloader,
    /// The device's latest own edit of each note: kept visible until its
    /// operations are reflected.
    own: BTreeMap<String, Option<i64>>,
    /// A page failed in the middle of its apply (a crash): the table shows
    /// part of it until a pull applies it whole again. Apps on the file
    /// stores apply without a transaction; the SQLite store rolls back.
    torn: bool,
}

fn retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 10_000,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
        ..RetryPolicy::default()
    }
}

impl Device {
    fn new(server: &Arc<Mutex<Server>>, seed: u64, gate: bool) -> Self {
        let store = Arc::new(MemoryOutboxStore::new());
        let state = Arc::new(MemoryDownloadState::default());
        let notes: Notes = Arc::default();
        let fail_after = Arc::new(Mutex::new(None));
        let link = Arc::new(Link {
            server: Arc::clone(server),
            online: AtomicBool::new(true),
            faults: Mutex::new(Rng(seed | 1)),
            calm: AtomicBool::new(false),
        });
        let (outbox, worker, downloader) =
            Self::parts(&store, &state, &notes, &fail_after, &link, gate);
        Self {
            store,
            state,
            notes,
            fail_after,
            link,
            gate,
            outbox,
            worker,
            downloader,
            own: BTreeMap::new(),
            torn: false,
        }
    }

    fn parts(
        store: &Arc<MemoryOutboxStore>,
        state: &Arc<MemoryDownloadState>,
        notes: &Notes,
        fail_after: &Arc<Mutex<Option<usize>>>,
        link: &Arc<Link>,
        gate: bool,
    ) -> (Arc<Outbox>, SyncWorker, Downloader) {
        let outbox = Arc::new(Outbox::new(
            OutboxConfig {
                retry: retry(),
                ..OutboxConfig::default()
            },
            store.clone(),
        ));
        let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
        let worker = SyncWorker::new(
            SyncWorkerConfig { batch_limit: 4 },
            Arc::clone(&outbox),
            probe,
            Arc::clone(link) as Arc<dyn SyncTransport>,
        );
        let table = Table {
            notes: Arc::clone(notes),
            fail_after: Arc::clone(fail_after),
            gate,
        };
        let target = Arc::new(AppDownload::new(
            Arc::clone(&outbox),
            table,
            Arc::clone(state) as Arc<dyn DownloadStateStore>,
        ));
        let downloader = Downloader::new(
            DownloadConfig {
                page_limit: 2,
                max_pages_per_run: 3,
                ..DownloadConfig::default()
            },
            Arc::clone(&outbox),
            Arc::clone(link) as Arc<dyn PullTransport>,
            target,
        );
        (outbox, worker, downloader)
    }

    /// The process dies and starts again: what was in memory is gone.
    fn restart(&mut self, now: i64) -> Result<(), String> {
        let (outbox, worker, downloader) = Self::parts(
            &self.store,
            &self.state,
            &self.notes,
            &self.fail_after,
            &self.link,
            self.gate,
        );
        (self.outbox, self.worker, self.downloader) = (outbox, worker, downloader);
        self.outbox.recover(now).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// The user edits (or deletes) a note: the table first, then the
    /// operation, keyed by the note.
    fn edit(&mut self, id: &str, value: Option<i64>, now: i64) -> Result<(), String> {
        self.notes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_owned(), (value, i64::MIN));
        self.own.insert(id.to_owned(), value);
        let payload = serde_json::json!({ "id": id, "value": value }).to_string();
        let op = Operation {
            ordering_key: Some(format!("note/{id}")),
            ..Operation::new("note.set", "/notes", payload)
        };
        self.outbox.enqueue(op, now).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// No own edit was written over before the server had it: for each note
    /// still unreflected, the table shows the device's latest own edit.
    fn check_own_edits(&mut self) -> Result<(), String> {
        if self.torn {
            return Ok(());
        }
        let covers = self.state.load().map_err(|e| e.to_string())?.covers_below;
        let ops = self.store.load_all().map_err(|e| e.to_string())?;
        let unreflected = unreflected_keys(&ops, covers);
        let notes = self.notes.lock().unwrap_or_else(PoisonError::into_inner);
        for (id, value) in &self.own {
            if !unreflected.contains(&format!("note/{id}")) {
                continue;
            }
            let shown = notes.get(id).and_then(|(v, _)| *v);
            if shown != *value {
                return Err(format!(
                    "note {id}: own edit {value:?} replaced by {shown:?} before the server had it"
                ));
            }
        }
        drop(notes);
        self.own
            .retain(|id, _| unreflected.contains(&format!("note/{id}")));
        Ok(())
    }

    /// One run of pulls; notes a crash mid-page, and its repair.
    fn pull(&mut self) {
        match self.downloader.pull() {
            Ok(report) if report.pages > 0 => self.torn = false,
            Err(sync_engine::EngineError::OutboxStep {
                source: sync_outbox::OutboxError::Apply { .. },
                ..
            }) => self.torn = true,
            _ => {}
        }
    }

    fn shown(&self) -> BTreeMap<String, i64> {
        self.notes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(|(id, (value, _))| value.map(|v| (id.clone(), v)))
            .collect()
    }
}

/// Everyone online, no more faults; push and pull until quiet: nothing
/// left to send, and every device pulled to the server's head.
fn settle(
    seed: u64,
    devices: &mut [Device],
    server: &Arc<Mutex<Server>>,
    clock: &ManualClock,
) -> Result<(), String> {
    for device in devices.iter() {
        device.link.online.store(true, SeqCst);
        device.link.calm.store(true, SeqCst);
        *device
            .fail_after
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }
    for round in 0..200 {
        clock.advance(2_000);
        let now = clock.now_ms();
        let mut quiet = true;
        for (d, device) in devices.iter_mut().enumerate() {
            let _ = device.worker.tick(now);
            device.pull();
            let _ = device.downloader.release();
            device
                .check_own_edits()
                .map_err(|e| format!("seed {seed}, drain {round}, device {d}: {e}"))?;
            let stats = device.store.stats().map_err(|e| e.to_string())?;
            quiet &= stats.unsent() == 0 && stats.in_flight == 0 && device.own.is_empty();
        }
        let head = server.lock().unwrap_or_else(PoisonError::into_inner).head;
        for device in devices.iter() {
            quiet &= device.state.load().map_err(|e| e.to_string())?.covers_below == head + 1;
        }
        if quiet {
            break;
        }
    }
    Ok(())
}

/// One world; `Err` says what broke and when.
fn world(seed: u64, gate: bool) -> Result<(), String> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let server = Arc::new(Mutex::new(Server::default()));
    let clock = ManualClock::new(1_000_000);
    let mut devices: Vec<Device> = (0..DEVICES)
        .map(|d| Device::new(&server, seed.wrapping_add(d as u64 * 7_919), gate))
        .collect();
    let mut value = 0;
    for step in 0..STEPS {
        let d = usize::try_from(rng.below(DEVICES as u64)).unwrap_or(0);
        let now = clock.now_ms();
        let device = &mut devices[d];
        let at =
            |what: &str, e: String| format!("seed {seed}, step {step}, device {d}, {what}: {e}");
        match rng.below(100) {
            0..=24 => {
                value += 1;
                let id = format!("n{}", rng.below(NOTES));
                let edit = if rng.chance(20) { None } else { Some(value) };
                device.edit(&id, edit, now).map_err(|e| at("edit", e))?;
            }
            25..=49 => {
                let _ = device.worker.tick(now);
            }
            50..=74 => {
                if rng.chance(10) {
                    *device
                        .fail_after
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) =
                        Some(usize::try_from(rng.below(2)).unwrap_or(0));
                }
                // A failed pull (offline, a crash mid-page) is tried again later.
                device.pull();
            }
            75..=79 => {
                let _ = device.downloader.release();
            }
            80..=86 => {
                let online = !device.link.online.load(SeqCst);
                device.link.online.store(online, SeqCst);
            }
            87..=90 => device.restart(now).map_err(|e| at("restart", e))?,
            91..=92 => server
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .compact(),
            _ => clock.advance(i64::try_from(rng.below(1_500)).unwrap_or(0)),
        }
        device.check_own_edits().map_err(|e| at("own edits", e))?;
    }
    settle(seed, &mut devices, &server, &clock)?;
    let expected = server
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .state();
    for (d, device) in devices.iter_mut().enumerate() {
        let all_done = device
            .store
            .load_all()
            .map_err(|e| e.to_string())?
            .iter()
            .all(|op| op.status == OperationStatus::Done);
        if !all_done {
            return Err(format!(
                "seed {seed}: device {d} still has operations not done"
            ));
        }
        if device.shown() != expected {
            return Err(format!(
                "seed {seed}: device {d} ended with {:?}, the server has {expected:?}",
                device.shown()
            ));
        }
    }
    Ok(())
}

#[test]
fn devices_converge_and_no_own_edit_is_written_over_in_three_hundred_worlds() -> Result<(), String>
{
    for seed in seeds(300) {
        world(seed, true)?;
    }
    Ok(())
}

#[test]
fn without_the_gate_a_pulled_change_writes_over_an_own_edit() {
    let broken = seeds(300)
        .into_iter()
        .filter_map(|seed| world(seed, false).err())
        .filter(|e| e.contains("before the server had it"))
        .count();
    eprintln!("without the gate, {broken} of 300 worlds wrote a pulled change over an own edit");
    assert!(
        broken > 0,
        "no world caught a device applying pulled changes without the gate"
    );
}
