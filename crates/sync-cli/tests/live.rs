//! `synctl` beside a running application, with real processes: a child
//! process is the application, enqueueing, claiming and completing
//! operations `op-000000`, `op-000001`, ... one after another as fast as its
//! store allows (the WAL store compacting every 64 records into small
//! segments); meanwhile the parent runs the read-only commands again and
//! again, then SIGKILLs the child and reads once more.
//!
//! Every read must be a consistent state of the queue: exactly the
//! operations `op-0..=op-k`, all `Done` but perhaps the last, with `k` never
//! going back between reads; the read commands never fail while the child
//! writes, and a command that changes the queue is refused while it runs.
//! Stores: WAL, JSON file and SQLite.

#![expect(clippy::print_stdout, reason = "a harness-less test reports on stdout")]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sync_outbox::{Operation, Outbox, OutboxConfig, OutboxStore};
use sync_store_file::{
    JsonOutboxStore, JsonOutboxStoreConfig, WalOutboxStore, WalOutboxStoreConfig,
};
use sync_store_sqlite::{SqliteOutboxStore, SqliteOutboxStoreConfig};
use sync_wal::SyncPolicy;

type Error = Box<dyn std::error::Error>;

/// Reads made while the application writes, per store.
const READS_WHILE_WRITING: usize = 12;

fn main() -> Result<(), Error> {
    if let Ok(kind) = std::env::var("SYNCTL_LIVE_WRITER") {
        let path = std::env::var("SYNCTL_LIVE_PATH")?;
        return writer(&kind, Path::new(&path));
    }
    for kind in ["wal", "json", "sqlite"] {
        let dir = tempfile::tempdir()?;
        let path = match kind {
            "wal" => dir.path().join("outbox"),
            "json" => dir.path().join("outbox.json"),
            _ => dir.path().join("app.db"),
        };
        let report = check(kind, &path).map_err(|e| format!("store {kind}: {e}"))?;
        println!("live {kind}: {report}");
    }
    println!("live: 3 passed, 0 failed");
    Ok(())
}

/// The application: one operation after another, until killed (or, if the
/// parent died, after a minute).
fn writer(kind: &str, path: &Path) -> Result<(), Error> {
    let store: Arc<dyn OutboxStore> = match kind {
        "wal" => Arc::new(WalOutboxStore::open(WalOutboxStoreConfig {
            sync: SyncPolicy::Never,
            segment_bytes: 4096,
            compact_min_records: 64,
            compact_ratio: 0.0,
            ..WalOutboxStoreConfig::new(path)
        })?),
        "json" => Arc::new(JsonOutboxStore::open(JsonOutboxStoreConfig {
            pretty_json: false,
            ..JsonOutboxStoreConfig::new(path.to_path_buf())
        })?),
        _ => Arc::new(SqliteOutboxStore::open(SqliteOutboxStoreConfig {
            sync: SyncPolicy::Never,
            ..SqliteOutboxStoreConfig::new(path)
        })?),
    };
    let outbox = Outbox::new(OutboxConfig::default(), store);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut now = 1_000_i64;
    for n in 0u64.. {
        let mut op = Operation::new("note.edit", "/notes/1", format!(r#"{{"n":{n}}}"#));
        op.id = format!("op-{n:06}");
        outbox.enqueue(op, now)?;
        let claim = outbox.claim(now + 1, 1)?;
        outbox.mark_done(&format!("op-{n:06}"), now + 2)?;
        drop(claim);
        now += 3;
        if n == 0 {
            println!("ready");
        }
        if Instant::now() > deadline {
            break;
        }
    }
    Ok(())
}

/// What a run of `synctl` printed.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn synctl(args: &[&str]) -> Result<Run, Error> {
    let output = Command::new(env!("CARGO_BIN_EXE_synctl"))
        .args(args)
        .output()?;
    Ok(Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Kills the application when the check ends, however it ends.
struct Application(Child);

impl Drop for Application {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn check(kind: &str, path: &Path) -> Result<String, Error> {
    let mut child = Command::new(std::env::current_exe()?)
        .env("SYNCTL_LIVE_WRITER", kind)
        .env("SYNCTL_LIVE_PATH", path)
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let holder = format!("is in use by pid {} (", child.id());
    let mut app = Application(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    if line.trim() != "ready" {
        return Err(format!("the application did not start: {line:?}").into());
    }
    let path_arg = path.to_str().ok_or("path")?;
    let log = path.join("log");
    let mut k = 0;
    let mut first_k = None;
    // At least READS_WHILE_WRITING reads, and on until the application
    // wrote something meanwhile (a slow store on a loaded machine may not
    // in twelve); a bound keeps an application that is blocked a failure.
    let mut reads = 0;
    while reads < READS_WHILE_WRITING * 40 {
        if reads >= READS_WHILE_WRITING && first_k.is_some_and(|first| k > first) {
            break;
        }
        reads += 1;
        k = read_consistent(path_arg, k)?;
        first_k.get_or_insert(k);
        let stats = synctl(&["outbox", "stats", "--json", path_arg])?;
        if stats.code != Some(0) {
            return Err(format!("stats failed: {}", stats.stderr).into());
        }
        let stats: serde_json::Value = serde_json::from_str(&stats.stdout)?;
        let total = stats["total"].as_u64().ok_or("no total")?;
        let unsent =
            stats["pending"].as_u64().unwrap_or(99) + stats["in_flight"].as_u64().unwrap_or(99);
        if total < k + 1 || unsent > 1 {
            return Err(format!("stats after a list of op-0..=op-{k}: {stats}").into());
        }
        if kind == "wal" {
            let verify = synctl(&["wal", "verify", log.to_str().ok_or("path")?])?;
            if verify.code != Some(0) || !verify.stderr.contains("live view") {
                return Err(format!("wal verify: {} {}", verify.stdout, verify.stderr).into());
            }
        }
    }
    let refused = synctl(&["outbox", "retry", path_arg, "op-000000"])?;
    // Refused, naming the application's process.
    if refused.code != Some(3) || !refused.stderr.contains(&holder) {
        return Err(format!(
            "a change was not refused: {:?} {}",
            refused.code, refused.stderr
        )
        .into());
    }
    let written_while_reading = k - first_k.unwrap_or(0);
    if written_while_reading == 0 {
        return Err("the application wrote nothing while the reads ran".into());
    }
    let compacted = kind != "wal" || path.join("snapshot").exists();
    if !compacted {
        return Err("no compaction ran while reading".into());
    }
    // Killed mid-write: the files are left as a crash leaves them.
    app.0.kill()?;
    app.0.wait()?;
    let after_kill = read_consistent(path_arg, k)?;
    Ok(format!(
        "{reads} reads while writing (op-{:06}..op-{k:06} written meanwhile), \
         read op-0..=op-{after_kill:06} after the kill",
        first_k.unwrap_or(0)
    ))
}

/// Lists the queue and checks it is a state the application passed through:
/// `op-0..=op-k`, in order, all done but perhaps the last, with `k` at least
/// `at_least`. Returns `k`.
fn read_consistent(path: &str, at_least: u64) -> Result<u64, Error> {
    let list = synctl(&["outbox", "list", "--json", "--limit", "100000000", path])?;
    if list.code != Some(0) {
        return Err(format!("list failed ({:?}): {}", list.code, list.stderr).into());
    }
    let ops: Vec<serde_json::Value> = serde_json::from_str(&list.stdout)?;
    let k = u64::try_from(ops.len())
        .map_err(|_| "too many")?
        .checked_sub(1)
        .ok_or("an empty queue")?;
    for (n, op) in ops.iter().enumerate() {
        let id = format!("op-{n:06}");
        let status = op["status"].as_str().unwrap_or_default();
        let is_newest = n + 1 == ops.len();
        if op["id"] != id.as_str() || !(status == "done" || is_newest) {
            return Err(format!("not a state the application was in: #{n} is {op}").into());
        }
    }
    if k < at_least {
        return Err(format!("the queue went back from op-{at_least} to op-{k}").into());
    }
    Ok(k)
}
