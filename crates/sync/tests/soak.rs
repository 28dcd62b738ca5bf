//! Soak test with real processes: a child runs the whole stack (a WAL store,
//! the background `SyncEngine` with a flaky transport, four enqueuing
//! threads, periodic purging of done operations) and the parent SIGKILLs it
//! at random moments, restarting it each time, until the target number of
//! operations has been acknowledged; a last child then runs until every
//! operation is settled.
//!
//! It checks that every acknowledged operation was delivered or parked as
//! failed, that nothing is left pending or in flight, and that memory
//! (peak RSS per run) and disk (the store's bytes after compaction) stay
//! flat. It reports ops/s, restarts, peak RSS and file sizes.
//!
//! `cargo test -p sync --test soak` runs the short version; `cargo xtask
//! soak --ops N --seconds S` a long one. Environment: `SYNC_SOAK_OPS`
//! (default 3,000), `SYNC_SOAK_SECONDS` of kills (default 5),
//! `SYNC_SOAK_SEED`, `SYNC_SOAK_SYNC` (`always`, default, or `never`).

#![expect(clippy::print_stdout, reason = "a harness-less test reports on stdout")]

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sync::prelude::*;

type Error = Box<dyn std::error::Error>;

/// How often the child purges done operations and looks whether it is done.
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(100);
/// Segment size of the child's store: small, so compaction frees segments.
const SEGMENT_BYTES: u64 = 256 << 10;
/// Upper bound of the store's bytes on disk whatever the number of operations:
/// done operations are purged and the log compacted, so it must not grow.
const MAX_STORE_BYTES: u64 = 8 << 20;

fn main() -> Result<(), Error> {
    if let Ok(dir) = std::env::var("SYNC_SOAK_CHILD") {
        let generation: u64 = std::env::var("SYNC_SOAK_GENERATION")?.parse()?;
        return child(Path::new(&dir), generation);
    }
    parent()
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn target_ops() -> usize {
    env_or("SYNC_SOAK_OPS", 3_000)
}

// ---------------------------------------------------------------- the child

/// Delivers about 83% of sends, answers 15% with a retryable 503 and fails
/// 2% of first attempts for good; records each delivery's label.
struct FlakyTransport {
    delivered: Mutex<File>,
}

impl SyncTransport for FlakyTransport {
    fn send(&self, op: &Operation) -> SendResult {
        let mut hasher = DefaultHasher::new();
        (&op.id, op.attempt).hash(&mut hasher);
        match hasher.finish() % 100 {
            0..15 => SendResult::retryable("503 service unavailable"),
            15..17 if op.attempt == 1 => SendResult::permanent("422 unprocessable"),
            _ => {
                let mut file = self
                    .delivered
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                // One `write` per line: a kill never leaves half a line.
                match file.write_all(format!("{}\n", op.payload).as_bytes()) {
                    Ok(()) => SendResult::ok(),
                    Err(e) => SendResult::retryable(format!("recording failed: {e}")),
                }
            }
        }
    }
}

fn append_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn line_count(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
}

fn child(dir: &Path, generation: u64) -> Result<(), Error> {
    let mut config = WalOutboxStoreConfig::new(dir.join("store"));
    config.segment_bytes = SEGMENT_BYTES;
    config.compact_min_records = 2_000;
    if std::env::var("SYNC_SOAK_SYNC").as_deref() == Ok("never") {
        config.sync = SyncPolicy::Never;
    }
    let store = Arc::new(WalOutboxStore::open(config)?);
    let retry = RetryPolicy {
        max_attempts: 8,
        base_delay: std::time::Duration::from_millis(5),
        factor: 2.0,
        max_delay: std::time::Duration::from_millis(200),
        ..RetryPolicy::default()
    };
    let outbox = Arc::new(Outbox::new(
        OutboxConfig {
            owner: "soak".into(),
            retry,
            inflight_timeout: std::time::Duration::from_millis(300),
            ..OutboxConfig::default()
        },
        store,
    ));
    let transport = Arc::new(FlakyTransport {
        delivered: Mutex::new(append_file(&dir.join("delivered"))?),
    });
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    let engine = SyncEngine::new(
        SyncEngineConfig {
            worker_count: 2,
            batch_limit: 16,
            detached_claim_recheck: std::time::Duration::from_millis(300),
            ..SyncEngineConfig::default()
        },
        Arc::clone(&outbox),
        probe,
        transport,
    );
    engine.start(SystemClock)?;

    let target = target_ops();
    let acked_path = dir.join("acked");
    let acked_count = Arc::new(AtomicUsize::new(line_count(&acked_path)));
    let acked_file = Arc::new(Mutex::new(append_file(&acked_path)?));
    let enqueuers: Vec<_> = (0..4)
        .map(|thread| {
            let (outbox, acked_count, acked_file) = (
                Arc::clone(&outbox),
                Arc::clone(&acked_count),
                Arc::clone(&acked_file),
            );
            std::thread::spawn(move || -> Result<(), String> {
                for k in 0.. {
                    if acked_count.load(SeqCst) >= target {
                        break;
                    }
                    let label = format!("{generation}-{thread}-{k}");
                    let op = Operation::new("soak.op", "/soak", label.clone());
                    outbox
                        .enqueue(op, SystemClock.now_ms())
                        .map_err(|e| e.to_string())?;
                    // Acknowledged: recorded only after enqueue returned Ok.
                    let mut file = acked_file.lock().unwrap_or_else(PoisonError::into_inner);
                    // One `write` per line: a kill never leaves half a line.
                    file.write_all(format!("{label}\n").as_bytes())
                        .map_err(|e| e.to_string())?;
                    acked_count.fetch_add(1, SeqCst);
                }
                Ok(())
            })
        })
        .collect();

    // Housekeeping on a timer: purge what is done, stop once all is settled.
    let timer = (Mutex::new(()), Condvar::new());
    loop {
        let guard = timer.0.lock().unwrap_or_else(PoisonError::into_inner);
        drop(timer.1.wait_timeout(guard, HOUSEKEEPING_EVERY));
        outbox.purge_done(SystemClock.now_ms() - 50)?;
        let stats = outbox.stats()?;
        if acked_count.load(SeqCst) >= target && stats.pending == 0 && stats.in_flight == 0 {
            break;
        }
    }
    for enqueuer in enqueuers {
        enqueuer.join().map_err(|_| "an enqueuer panicked")??;
    }
    engine.stop()?;
    println!("peak_rss_kb {}", peak_rss_kb("self").unwrap_or(0));
    println!("settled");
    Ok(())
}

// --------------------------------------------------------------- the parent

/// `VmHWM` (peak resident set) of a process, in KiB.
fn peak_rss_kb(pid: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// One child run as the parent saw it.
#[derive(Debug)]
struct RunReport {
    peak_rss_kb: u64,
    killed: bool,
}

/// Starts a child and returns it with a channel of its stdout lines (closed
/// when it exits).
fn spawn(dir: &Path, generation: u64) -> Result<(Child, mpsc::Receiver<String>), Error> {
    let mut child = Command::new(std::env::current_exe()?)
        .env("SYNC_SOAK_CHILD", dir)
        .env("SYNC_SOAK_GENERATION", generation.to_string())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok((child, rx))
}

/// Runs one child until it exits, or until `kill_at`, when it is killed.
fn run_child(dir: &Path, generation: u64, kill_at: Option<Instant>) -> Result<RunReport, Error> {
    let (mut child, lines) = spawn(dir, generation)?;
    let mut peak = 0;
    let mut settled = false;
    loop {
        let wait = kill_at.map_or(Duration::from_secs(600), |at| {
            at.saturating_duration_since(Instant::now())
        });
        match lines.recv_timeout(wait) {
            Ok(line) => {
                if let Some(kb) = line.strip_prefix("peak_rss_kb ") {
                    peak = kb.parse().unwrap_or(0);
                }
                settled |= line == "settled";
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = child.wait()?;
                if !status.success() || !settled {
                    return Err(format!("child {generation} exited with {status}").into());
                }
                return Ok(RunReport {
                    peak_rss_kb: peak,
                    killed: false,
                });
            }
            Err(RecvTimeoutError::Timeout) => {
                let peak = peak_rss_kb(&child.id().to_string()).unwrap_or(0);
                child.kill()?;
                child.wait()?;
                if kill_at.is_none() {
                    return Err(format!("child {generation} did not settle in 10 minutes").into());
                }
                return Ok(RunReport {
                    peak_rss_kb: peak,
                    killed: true,
                });
            }
        }
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path: PathBuf = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                total += entry.metadata().map_or(0, |m| m.len());
            }
        }
    }
    total
}

fn read_lines(path: &Path) -> HashSet<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn parent() -> Result<(), Error> {
    let ops = target_ops();
    let kill_for = Duration::from_secs(env_or("SYNC_SOAK_SECONDS", 5));
    let seed: u64 = env_or(
        "SYNC_SOAK_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs()),
    );
    println!("soak: {ops} operations, kills for {kill_for:?}, seed {seed} (SYNC_SOAK_SEED)");
    let dir = tempfile::tempdir()?;
    let mut rng = seed | 1;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let started = Instant::now();
    let mut runs = Vec::new();
    let mut generation = 0;
    while started.elapsed() < kill_for && line_count(&dir.path().join("acked")) < ops {
        let kill_at = Instant::now() + Duration::from_millis(100 + next() % 500);
        runs.push(run_child(dir.path(), generation, Some(kill_at))?);
        generation += 1;
    }
    let kills = runs.iter().filter(|r| r.killed).count();
    runs.push(run_child(dir.path(), generation, None)?);
    let elapsed = started.elapsed();

    // Every acknowledged operation was delivered or parked as failed.
    let acked = read_lines(&dir.path().join("acked"));
    let delivered = read_lines(&dir.path().join("delivered"));
    let deliveries = line_count(&dir.path().join("delivered"));
    let store_dir = dir.path().join("store");
    let remaining = WalOutboxStore::load_read_only(&store_dir)?.load_all()?;
    let failed: HashSet<&str> = remaining
        .iter()
        .filter(|op| op.status == OperationStatus::Failed)
        .map(|op| op.payload.as_str())
        .collect();
    let unsettled = remaining
        .iter()
        .filter(|op| {
            matches!(
                op.status,
                OperationStatus::Pending | OperationStatus::InFlight
            )
        })
        .count();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|label| !delivered.contains(*label) && !failed.contains(label.as_str()))
        .collect();
    if acked.len() < ops {
        return Err(format!("only {} of {ops} operations were acknowledged", acked.len()).into());
    }
    if !lost.is_empty() {
        return Err(format!(
            "{} acknowledged operations lost, e.g. {:?}",
            lost.len(),
            lost.first()
        )
        .into());
    }
    if unsettled > 0 {
        return Err(format!("{unsettled} operations left unsettled").into());
    }

    let (store_bytes, snapshot_bytes, first_peak, max_peak) = check_flat(&runs, &store_dir)?;
    #[expect(clippy::cast_precision_loss, reason = "a rate for people")]
    let rate = acked.len() as f64 / elapsed.as_secs_f64();
    println!(
        "soak: {} acknowledged in {elapsed:.1?} ({rate:.0} ops/s with restarts), {} runs ({kills} killed), \
         {deliveries} deliveries ({} duplicates), {} failed for good",
        acked.len(),
        runs.len(),
        deliveries - delivered.len(),
        failed.len()
    );
    println!(
        "soak: peak RSS {first_peak} KiB in the first run, {max_peak} KiB at most; store \
         {store_bytes} bytes on disk (snapshot {snapshot_bytes}), {} operations left \
         (failed, or done too recently to purge)",
        remaining.len()
    );
    println!("soak: passed");
    Ok(())
}

/// Checks that disk and memory stayed flat; returns the store's bytes, the
/// snapshot's bytes, and the first and largest peak RSS (KiB).
fn check_flat(runs: &[RunReport], store_dir: &Path) -> Result<(u64, u64, u64, u64), Error> {
    let store_bytes = dir_bytes(store_dir);
    let snapshot_bytes = std::fs::metadata(store_dir.join("snapshot")).map_or(0, |m| m.len());
    let peaks: Vec<u64> = runs
        .iter()
        .map(|r| r.peak_rss_kb)
        .filter(|&kb| kb > 0)
        .collect();
    let first_peak = peaks.first().copied().unwrap_or(0);
    let max_peak = peaks.iter().copied().max().unwrap_or(0);
    if store_bytes > MAX_STORE_BYTES {
        return Err(format!("the store grew to {store_bytes} bytes").into());
    }
    if max_peak > 2 * first_peak + 16 * 1024 {
        return Err(format!(
            "memory grew: peak RSS {first_peak} KiB at first, {max_peak} KiB at most"
        )
        .into());
    }
    Ok((store_bytes, snapshot_bytes, first_peak, max_peak))
}
