//! Deterministic simulation over `AsyncSyncEngine`, on paused tokio time: a
//! seeded upstream (latency; ok, 503, 429 with retry-after, 400, and a send
//! future that panics), a flapping network, operations on three ordering keys
//! enqueued through `AsyncOutbox`, and a "crash": the engine is stopped with a
//! deadline that cancels sends mid-way, and a new `Outbox` (new indexes, as a
//! restarted process has) and engine take over the store. After a final
//! drain: every operation ended `Done` or `Failed`, none was lost, `Done`
//! only after an ok answer, no operation was ever on the wire twice at once,
//! attempts stayed within the policy, and per key the first ok answers came
//! in enqueue order. The first process ends with a bounded `drain` of a
//! random length (its report must match its deadline), and the restarted
//! one waits for every operation's end with `AsyncOutbox::wait`, woken by
//! the outbox through the crash. Some operations create notes (keeping
//! the server's real id) and later ones add items under the note's
//! temporary id: an item always goes out with the real id; a create's
//! completion carries its answer; when a create ends a dead letter the app
//! discards it, and its unsent items end `Failed` too. Transfers go as
//! all-or-nothing groups, each send carrying both members. 200 seeds in `cargo test` (`SYNC_ASYNC_SIM_SEEDS=n` for
//! more); a failing seed prints itself and `SYNC_ASYNC_SIM_SEED=n` replays it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sync_engine::{
    AsyncOutbox, AsyncSyncEngine, AsyncSyncTransport, NetworkProbe, NetworkProbeConfig, SendResult,
    SyncEngineConfig, TokioClock, async_trait,
};
use sync_outbox::{
    Completion, MemoryOutboxStore, Operation, OperationStatus, Outbox, OutboxConfig, OutboxStore,
    RetryPolicy,
};

use crate::rng::Rng;

const MAX_ATTEMPTS: u32 = 4;
const N_OPS: usize = 40;

/// What the upstream saw.
#[derive(Debug, Default)]
struct Seen {
    in_progress: HashSet<String>,
    overlaps: Vec<String>,
    ok: HashSet<String>,
    /// `(ordering_key, seq)` of each first ok answer, in order.
    first_ok_order: Vec<(String, u64)>,
    /// Items that went out without their note's real id, and groups that
    /// went out without both members.
    unfilled: Vec<String>,
}

/// The id the server gives the note created by operation `create`.
fn real_id(create: &str) -> String {
    format!("real-{create}")
}

#[derive(Debug)]
struct SimUpstream {
    rng: Mutex<Rng>,
    seen: Arc<Mutex<Seen>>,
}

/// Removes its operation from `in_progress` however the send ends (an
/// answer, a panic, a cancellation).
struct OnTheWire {
    seen: Arc<Mutex<Seen>>,
    id: String,
}

impl Drop for OnTheWire {
    fn drop(&mut self) {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .in_progress
            .remove(&self.id);
    }
}

#[async_trait]
impl AsyncSyncTransport for SimUpstream {
    async fn send(&self, op: &Operation) -> SendResult {
        let (latency_ms, roll) = {
            let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
            (rng.below(400), rng.below(100))
        };
        let wire = {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            if !seen.in_progress.insert(op.id.clone()) {
                seen.overlaps.push(op.id.clone());
            }
            if op.kind == "item.add" && (op.target.contains("tmp-") || !op.needs.is_empty()) {
                seen.unfilled.push(format!("{} as {}", op.id, op.target));
            }
            let members = op.group_members().map(|m| m.len()).unwrap_or_default();
            if op.kind == "transfer" && members != 2 {
                seen.unfilled
                    .push(format!("group {} sent with {members} members", op.id));
            }
            OnTheWire {
                seen: Arc::clone(&self.seen),
                id: op.id.clone(),
            }
        };
        tokio::time::sleep(Duration::from_millis(latency_ms)).await;
        let result = match roll {
            0..=54 if op.kind == "note.create" => {
                SendResult::ok().with_answer(format!(r#"{{"id":"{}"}}"#, real_id(&op.id)))
            }
            0..=54 => SendResult::ok(),
            55..=74 => SendResult::retryable("503"),
            75..=84 => SendResult::retry_after(1_500, "429"),
            85..=89 => SendResult::permanent("400"),
            _ => panic!("upstream bug"),
        };
        if result.ok {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            if seen.ok.insert(op.id.clone()) {
                let key = op.ordering_key.clone().unwrap_or_default();
                seen.first_ok_order.push((key, op.seq));
            }
        }
        drop(wire);
        result
    }
}

fn outbox_over(store: &Arc<MemoryOutboxStore>) -> Arc<Outbox> {
    let retry = RetryPolicy {
        max_attempts: MAX_ATTEMPTS,
        base_delay: std::time::Duration::from_millis(100),
        factor: 2.0,
        max_delay: std::time::Duration::from_secs(2),
        ..RetryPolicy::default()
    };
    Arc::new(Outbox::new(
        OutboxConfig {
            retry,
            ..OutboxConfig::default()
        },
        Arc::clone(store) as Arc<dyn OutboxStore>,
    ))
}

fn engine_over(
    outbox: &Arc<Outbox>,
    probe: &Arc<NetworkProbe>,
    upstream: &Arc<SimUpstream>,
    rng: &mut Rng,
) -> AsyncSyncEngine {
    let config = SyncEngineConfig {
        worker_count: 1 + usize::try_from(rng.below(3)).unwrap_or(0),
        batch_limit: 1 + usize::try_from(rng.below(5)).unwrap_or(0),
        ..SyncEngineConfig::default()
    };
    AsyncSyncEngine::new(
        config,
        Arc::clone(outbox),
        Arc::clone(probe),
        Arc::clone(upstream) as Arc<dyn AsyncSyncTransport>,
    )
}

#[expect(clippy::too_many_lines, reason = "one scenario, in the order it runs")]
async fn world(seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let clock = TokioClock::starting_at(1_000_000);
    let store = Arc::new(MemoryOutboxStore::new());
    let online = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let probe_online = Arc::clone(&online);
    let probe = Arc::new(NetworkProbe::new(
        NetworkProbeConfig {
            cache_ttl: std::time::Duration::from_millis(200),
            offline_recheck: std::time::Duration::from_millis(300),
            ..NetworkProbeConfig::default()
        },
        move || probe_online.load(std::sync::atomic::Ordering::SeqCst),
    ));
    let log = Arc::new(Mutex::new(Seen::default()));
    let upstream = Arc::new(SimUpstream {
        rng: Mutex::new(Rng::new(seed ^ 0xA5A5)),
        seen: Arc::clone(&log),
    });

    // The first process: enqueues while its engine sends.
    let outbox = outbox_over(&store);
    let engine = engine_over(&outbox, &probe, &upstream, &mut rng);
    engine
        .start_with_clock(clock)
        .await
        .map_err(|e| e.to_string())?;
    let queue = AsyncOutbox::with_clock(Arc::clone(&outbox), clock);
    let mut ids = Vec::new();
    let mut last_create: Option<String> = None;
    for n in 0..N_OPS {
        tokio::time::sleep(Duration::from_millis(rng.below(80))).await;
        match rng.below(10) {
            0 => online.store(false, std::sync::atomic::Ordering::SeqCst),
            1 => online.store(true, std::sync::atomic::Ordering::SeqCst),
            2 => engine.sync_now(),
            _ => {}
        }
        let key = match rng.below(4) {
            0 => None,
            k => Some(format!("k{k}")),
        };
        let mut op = Operation {
            ordering_key: key,
            ..Operation::new("sim", "/sim", format!("{n}"))
        };
        match (rng.below(5), &last_create) {
            (0, _) => op = Operation::new("note.create", "/notes", "{}").keeping_answer(),
            // A transfer: both members in one operation, one request.
            (2, _) => {
                op = Operation::group(
                    "transfer",
                    [
                        Operation::new("debit", "/accounts/a", format!("{n}")),
                        Operation::new("credit", "/accounts/b", format!("{n}")),
                    ],
                )
                .map_err(|e| e.to_string())?;
            }
            (1, Some(create)) => {
                let tmp = format!("tmp-{n}");
                op = Operation::new("item.add", format!("/notes/{tmp}/items"), "{}")
                    .needing(sync_outbox::Need::new(create, "/id", &tmp));
            }
            _ => {}
        }
        let is_create = op.kind == "note.create";
        let id = queue.enqueue(op).await.map_err(|e| e.to_string())?;
        if is_create {
            last_create = Some(id.clone());
        }
        ids.push(id);
    }
    // A bounded drain before the crash (a mobile app's background time).
    let within = Duration::from_millis(rng.below(2_000));
    let report = engine.drain(within).await.map_err(|e| e.to_string())?;
    if report.elapsed > within || report.complete != (report.left + report.in_flight == 0) {
        return Err(format!("drain of {within:?} reported {report:?}"));
    }

    // The crash: cancel what is in flight at a random deadline.
    engine
        .stop_with_timeout(Duration::from_millis(rng.below(300)))
        .await
        .map_err(|e| e.to_string())?;
    drop(engine);
    drop(queue);
    drop(outbox);

    // The restarted process: new indexes over the same store; the network
    // comes back for good after a while.
    let outbox = outbox_over(&store);
    let engine = engine_over(&outbox, &probe, &upstream, &mut rng);
    engine
        .start_with_clock(clock)
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::sleep(Duration::from_millis(rng.below(1_000))).await;
    online.store(true, std::sync::atomic::Ordering::SeqCst);
    // The app waits for each operation's end, as a UI would for one item.
    let queue = AsyncOutbox::with_clock(Arc::clone(&outbox), clock);
    let mut discarded = HashSet::new();
    for id in &ids {
        if discarded.contains(id) {
            continue;
        }
        match tokio::time::timeout(Duration::from_secs(2_000), queue.wait(id)).await {
            Ok(Ok(Completion::Done(op))) => {
                if op.kind == "note.create"
                    && op.answer != Some(format!(r#"{{"id":"{}"}}"#, real_id(id)))
                {
                    return Err(format!("{id} done without its answer: {op:?}"));
                }
            }
            Ok(Ok(Completion::Failed(op))) => {
                // A note that will never be created: the app gives up on
                // it, and its unsent items fail.
                if op.kind == "note.create" {
                    outbox.discard(id).map_err(|e| e.to_string())?;
                    discarded.insert(id.clone());
                }
            }
            Ok(Ok(Completion::Gone)) => return Err(format!("lost {id}")),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err(format!("{id} not ended after 2,000 s of virtual time")),
        }
    }
    engine.stop().await.map_err(|e| e.to_string())?;

    let log = log.lock().unwrap_or_else(PoisonError::into_inner);
    if !log.overlaps.is_empty() {
        return Err(format!("on the wire twice at once: {:?}", log.overlaps));
    }
    if !log.unfilled.is_empty() {
        return Err(format!(
            "items sent without the real id: {:?}",
            log.unfilled
        ));
    }
    let stored: HashMap<String, Operation> = store
        .load_all()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|op| (op.id.clone(), op))
        .collect();
    if stored.len() + discarded.len() != ids.len() {
        return Err(format!(
            "{} stored for {} enqueued",
            stored.len(),
            ids.len()
        ));
    }
    for id in ids.iter().filter(|id| !discarded.contains(*id)) {
        let op = stored.get(id).ok_or_else(|| format!("lost {id}"))?;
        if op.status == OperationStatus::Done && !log.ok.contains(id) {
            return Err(format!("{id} Done without an ok answer"));
        }
        if op.attempt > MAX_ATTEMPTS {
            return Err(format!("{id} attempted {} times", op.attempt));
        }
    }
    let mut per_key: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (key, seq) in &log.first_ok_order {
        if !key.is_empty() {
            per_key.entry(key).or_default().push(*seq);
        }
    }
    for (key, seqs) in per_key {
        if seqs.windows(2).any(|w| w[0] > w[1]) {
            return Err(format!("key {key} answered out of order: {seqs:?}"));
        }
    }
    Ok(())
}

fn run_seed(seed: u64) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(world(seed))
}

#[test]
fn the_async_engine_survives_seeded_worlds() {
    // The upstream's deliberate panics would flood the output.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        if !info.to_string().contains("upstream bug") {
            eprintln!("{info}");
        }
    }));
    let seeds: Vec<u64> = if let Ok(seed) = std::env::var("SYNC_ASYNC_SIM_SEED") {
        vec![seed.parse().unwrap_or(0)]
    } else {
        let n = std::env::var("SYNC_ASYNC_SIM_SEEDS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(200);
        (0..n).collect()
    };
    let failures: Vec<String> = seeds
        .iter()
        .filter_map(|&seed| {
            run_seed(seed)
                .err()
                .map(|e| format!("seed {seed}: {e} (replay: SYNC_ASYNC_SIM_SEED={seed})"))
        })
        .collect();
    std::panic::set_hook(default_hook);
    assert!(failures.is_empty(), "{failures:#?}");
}
