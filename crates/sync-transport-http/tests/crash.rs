//! Crash test with real processes: how many operations a client killed in
//! the middle of a batch sends twice. The parent runs an HTTP server that
//! counts deliveries per `Idempotency-Key` (each request takes about a
//! millisecond). A child runs the client as an app would: a WAL store
//! (`SyncPolicy::Always`), the background `SyncEngine` with 2 senders and
//! batches of 10, and `HttpTransport` sending one request per operation.
//! The parent SIGKILLs the child after a random number of deliveries,
//! restarts it, and lets it drain. Every operation must arrive, and the
//! operations delivered twice are bounded by the requests that can be on
//! the wire at the kill: one per sender. Results are recorded as they
//! arrive (in the page cache, which a process crash keeps), so a kill
//! resends only those.
//!
//! `SYNC_CRASH_ROUNDS` (default 3) and `SYNC_CRASH_SEED` tune a run; `cargo
//! xtask crash` runs 1,000 rounds. `SYNC_CRASH_RECORD=batch` makes the child
//! record a batch's results only when the whole batch has returned (the
//! behaviour before results were recorded as they arrive), to measure what
//! that cost; the bound is then not checked.

#![expect(clippy::print_stdout, reason = "a harness-less test reports on stdout")]

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sync_engine::{
    NetworkProbe, NetworkProbeConfig, SendResult, SyncEngine, SyncEngineConfig, SyncTransport,
    SystemClock,
};
use sync_outbox::{Operation, Outbox, OutboxConfig};
use sync_store_file::{WalOutboxStore, WalOutboxStoreConfig};
use sync_transport_http::{HttpTransport, HttpTransportConfig};

type Error = Box<dyn std::error::Error + Send + Sync>;

const OPS: usize = 300;
const SENDERS: usize = 2;

fn main() -> Result<(), Error> {
    if let Ok(dir) = std::env::var("SYNC_CRASH_CHILD_HTTP") {
        return child(Path::new(&dir));
    }
    let rounds: u32 = env_or("SYNC_CRASH_ROUNDS", 3);
    let seed: u64 = std::env::var("SYNC_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs())
        });
    let whole_batch = std::env::var("SYNC_CRASH_RECORD").is_ok_and(|v| v == "batch");
    println!("crash: seed {seed} (replay with SYNC_CRASH_SEED={seed}), {rounds} rounds");
    let server = CountingServer::start()?;
    let mut rng = seed | 1;
    let mut duplicates = Vec::new();
    for round in 0..rounds {
        let found = check_round(&server, &mut rng, whole_batch)
            .map_err(|e| format!("round {round}, seed {seed}: {e}"))?;
        duplicates.push(found);
    }
    let most = duplicates.iter().max().copied().unwrap_or(0);
    let total: usize = duplicates.iter().sum();
    println!(
        "crash: http client killed mid-batch: {rounds} kills of {OPS} operations, \
         {SENDERS} senders, batches of 10, results recorded {}: {total} duplicate deliveries \
         in all, at most {most} per kill (bound {SENDERS})",
        if whole_batch {
            "per whole batch"
        } else {
            "as they arrive"
        }
    );
    println!("crash: {rounds} passed, 0 failed");
    Ok(())
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn next(rng: &mut u64) -> u64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    *rng
}

/// One round: a fresh store of `OPS` operations, one kill after a random
/// number of deliveries, a restart that drains. Returns the duplicates.
fn check_round(server: &CountingServer, rng: &mut u64, whole_batch: bool) -> Result<usize, Error> {
    let dir = tempfile::tempdir()?;
    server.reset();
    let kill_after = 20 + usize::try_from(next(rng) % (OPS as u64 - 60))?;
    let mut first = spawn(dir.path(), &server.base_url, true, whole_batch)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.deliveries() < kill_after {
        if Instant::now() > deadline {
            let _ = first.kill();
            return Err("the child delivered too little in 60 s".into());
        }
        if let Some(status) = first.try_wait()? {
            return Err(format!("the child ended before the kill: {status}").into());
        }
        std::thread::yield_now();
    }
    first.kill()?; // SIGKILL
    first.wait()?;
    let at_kill = server.deliveries();
    let mut second = spawn(dir.path(), &server.base_url, false, whole_batch)?;
    let status = second.wait()?;
    if !status.success() {
        return Err(format!("the restarted child failed: {status}").into());
    }
    let per_key = server.per_key();
    if per_key.len() != OPS {
        return Err(format!("{} of {OPS} operations arrived", per_key.len()).into());
    }
    let duplicates: usize = per_key.values().map(|n| n - 1).sum();
    if !whole_batch && duplicates > SENDERS {
        return Err(format!(
            "{duplicates} operations delivered twice after one kill at {at_kill} deliveries: \
             more than the {SENDERS} requests the senders can have on the wire"
        )
        .into());
    }
    Ok(duplicates)
}

fn spawn(dir: &Path, base_url: &str, enqueue: bool, whole_batch: bool) -> Result<Child, Error> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .env("SYNC_CRASH_CHILD_HTTP", dir)
        .env("SYNC_CRASH_BASE_URL", base_url)
        .env("SYNC_CRASH_ENQUEUE", if enqueue { "yes" } else { "no" });
    if whole_batch {
        command.env("SYNC_CRASH_RECORD", "batch");
    }
    Ok(command.spawn()?)
}

// ---------------------------------------------------------------- the child

/// The HTTP transport with the engine's default `send_each`: results are
/// reported when the whole batch has returned (the old behaviour).
struct WholeBatch(HttpTransport);

impl SyncTransport for WholeBatch {
    fn send(&self, op: &Operation) -> SendResult {
        self.0.send(op)
    }
}

fn child(dir: &Path) -> Result<(), Error> {
    let store = Arc::new(WalOutboxStore::open(WalOutboxStoreConfig::new(
        dir.join("outbox"),
    ))?);
    let outbox = Arc::new(Outbox::new(OutboxConfig::default(), store));
    if std::env::var("SYNC_CRASH_ENQUEUE").is_ok_and(|v| v == "yes") {
        let now = sync_engine::Clock::now_ms(&SystemClock);
        for i in 0..OPS {
            outbox.enqueue(Operation::new("note.create", "/notes", format!("{i}")), now)?;
        }
    }
    let http = HttpTransport::new(HttpTransportConfig {
        base_url: std::env::var("SYNC_CRASH_BASE_URL")?,
        ..HttpTransportConfig::default()
    })?;
    let transport: Arc<dyn SyncTransport> =
        if std::env::var("SYNC_CRASH_RECORD").is_ok_and(|v| v == "batch") {
            Arc::new(WholeBatch(http))
        } else {
            Arc::new(http)
        };
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    let engine = SyncEngine::new(
        SyncEngineConfig {
            worker_count: SENDERS,
            ..SyncEngineConfig::default()
        },
        Arc::clone(&outbox),
        probe,
        transport,
    );
    let mut watch = outbox.watch_stats()?;
    engine.start(SystemClock)?;
    // Until everything is delivered (or the parent kills us).
    let mut stats = watch.current();
    while stats.unsent() > 0 {
        stats = watch.wait_changed().ok_or("the outbox closed")?;
    }
    engine.stop()?;
    Ok(())
}

// --------------------------------------------------------------- the server

/// Counts requests per `Idempotency-Key`; each takes about a millisecond,
/// so a kill lands while requests are on the wire.
struct CountingServer {
    base_url: String,
    counts: Arc<Mutex<HashMap<String, usize>>>,
    deliveries: Arc<AtomicUsize>,
}

impl CountingServer {
    fn start() -> Result<Self, Error> {
        let server = tiny_http::Server::http("127.0.0.1:0")?;
        let port = server
            .server_addr()
            .to_ip()
            .ok_or("not an ip listener")?
            .port();
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let deliveries = Arc::new(AtomicUsize::new(0));
        let server = Arc::new(server);
        for _ in 0..SENDERS {
            let (server, counts, deliveries) = (
                Arc::clone(&server),
                Arc::clone(&counts),
                Arc::clone(&deliveries),
            );
            std::thread::spawn(move || {
                while let Ok(request) = server.recv() {
                    let key = request
                        .headers()
                        .iter()
                        .find(|h| h.field.equiv("Idempotency-Key"))
                        .map(|h| h.value.to_string())
                        .unwrap_or_default();
                    std::thread::sleep(Duration::from_millis(1));
                    *counts
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .entry(key)
                        .or_insert(0) += 1;
                    deliveries.fetch_add(1, SeqCst);
                    let _ = request.respond(tiny_http::Response::empty(201));
                }
            });
        }
        Ok(Self {
            base_url: format!("http://127.0.0.1:{port}"),
            counts,
            deliveries,
        })
    }

    fn reset(&self) {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.deliveries.store(0, SeqCst);
    }

    fn deliveries(&self) -> usize {
        self.deliveries.load(SeqCst)
    }

    fn per_key(&self) -> HashMap<String, usize> {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
