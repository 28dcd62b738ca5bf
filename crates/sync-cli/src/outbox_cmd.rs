//! `synctl outbox ...`: reads a store read-only (list, show, stats), or opens
//! it with its exclusive lock to change it (retry, discard, purge-done).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use sync_outbox::{
    MemoryOutboxStore, Operation, OperationStatus, Outbox, OutboxConfig, OutboxStore,
};
use sync_store_file::{
    Encryption, EncryptionKey, JsonOutboxStore, JsonOutboxStoreConfig, SEALED_FILE_MAGIC,
    WalOutboxStore, WalOutboxStoreConfig,
};
use sync_store_sqlite::{SqliteOutboxStore, SqliteOutboxStoreConfig};

use crate::cli::{OutboxCommand, StatusArg, StoreArg};
use crate::output::{Failure, Table, preview};
use crate::units::{format_duration_ms, format_time_ms, now_ms};

pub(crate) fn run(command: OutboxCommand, out: &mut dyn Write) -> Result<(), Failure> {
    match command {
        OutboxCommand::List {
            store,
            status,
            limit,
            json,
        } => list(&store, status.map(status_of), limit, json, out),
        OutboxCommand::Show { store, id, json } => show(&store, &id, json, out),
        OutboxCommand::Stats { store, json } => stats(&store, json, out),
        OutboxCommand::Retry {
            store,
            id,
            all: _,
            kind,
        } => {
            let outbox = open_writable(&store)?;
            let ids = match id {
                Some(id) => vec![id],
                // --all, or --kind: every failed one (of that kind).
                None => outbox
                    .list(Some(OperationStatus::Failed), usize::MAX)?
                    .into_iter()
                    .filter(|op| kind.as_ref().is_none_or(|k| op.kind == *k))
                    .map(|op| op.id)
                    .collect(),
            };
            let now = now_ms();
            for id in &ids {
                outbox.retry_failed(id, now)?;
                writeln!(out, "{id}: failed -> pending, due now, attempts reset")?;
            }
            if ids.len() != 1 {
                writeln!(out, "retried {} failed operations", ids.len())?;
            }
            Ok(())
        }
        OutboxCommand::Discard { store, id } => {
            let outbox = open_writable(&store)?;
            let status = outbox
                .store()
                .get(&id)?
                .map(|op| op.status)
                .ok_or_else(|| unknown(&id))?;
            outbox.discard(&id)?;
            writeln!(out, "{id}: discarded (was {})", status_name(status))?;
            Ok(())
        }
        OutboxCommand::PurgeDone { store, older_than } => {
            let outbox = open_writable(&store)?;
            let removed = outbox.purge_done(now_ms().saturating_sub(older_than.ms))?;
            writeln!(
                out,
                "removed {removed} done operations older than {older_than}"
            )?;
            Ok(())
        }
    }
}

/// Reads the store at `path` without changing it: a directory is a WAL
/// store, a file that starts like an SQLite database an SQLite store,
/// anything else a JSON store file.
fn open_read_only(store: &StoreArg) -> Result<MemoryOutboxStore, Failure> {
    let path = store.path.as_path();
    check_exists(path)?;
    if let Some(encryption) = file_store_key(store)? {
        return Ok(if path.is_dir() {
            WalOutboxStore::load_read_only_with_encryption(path, &encryption)?
        } else {
            JsonOutboxStore::load_read_only_with_encryption(path, &encryption)?
        });
    }
    #[cfg(feature = "sqlcipher")]
    if let Some(key) = key_of(store)? {
        return Ok(SqliteOutboxStore::load_read_only_with_key(path, &key)?);
    }
    #[cfg(not(feature = "sqlcipher"))]
    open_keyed(store)?;
    Ok(if path.is_dir() {
        WalOutboxStore::load_read_only(path)?
    } else if is_sqlite(path) {
        SqliteOutboxStore::load_read_only(path)?
    } else {
        JsonOutboxStore::load_read_only(path).map_err(|e| maybe_encrypted(path, e.into()))?
    })
}

/// A file that is neither an SQLite database nor JSON may be an SQLite
/// store encrypted with SQLCipher: say so beside the JSON error.
fn maybe_encrypted(path: &Path, failure: Failure) -> Failure {
    let looks_like_json = std::fs::read(path).is_ok_and(|bytes| {
        bytes
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_none_or(|b| *b == b'{')
    });
    match failure {
        Failure::Corrupt(message) if !looks_like_json => Failure::Corrupt(format!(
            "{message}; it is not an SQLite database and does not start like JSON: if it is an \
             SQLite store encrypted with SQLCipher, give its key with --key-file (synctl built \
             with feature `sqlcipher`)"
        )),
        other => other,
    }
}

/// Whether the file starts with SQLite's header.
pub(crate) fn is_sqlite(path: &Path) -> bool {
    let mut header = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut header))
        .is_ok_and(|()| &header == b"SQLite format 3\0")
}

/// Opens the store at `path` for changes, holding its exclusive lock.
fn open_writable(arg: &StoreArg) -> Result<Outbox, Failure> {
    let path = arg.path.as_path();
    check_exists(path)?;
    let store: Arc<dyn OutboxStore> = if let Some(encryption) = file_store_key(arg)? {
        if path.is_dir() {
            Arc::new(WalOutboxStore::open(
                WalOutboxStoreConfig::new(path).with_encryption(encryption),
            )?)
        } else {
            Arc::new(JsonOutboxStore::open(
                JsonOutboxStoreConfig::new(path).with_encryption(encryption),
            )?)
        }
    } else if let Some(keyed) = open_keyed(arg)? {
        Arc::new(keyed)
    } else if path.is_dir() {
        Arc::new(WalOutboxStore::open(WalOutboxStoreConfig::new(path))?)
    } else if is_sqlite(path) {
        Arc::new(SqliteOutboxStore::open(SqliteOutboxStoreConfig::new(path))?)
    } else {
        Arc::new(
            JsonOutboxStore::open(JsonOutboxStoreConfig::new(path.to_path_buf()))
                .map_err(|e| maybe_encrypted(path, e.into()))?,
        )
    };
    let config = OutboxConfig {
        owner: "synctl".into(),
        ..OutboxConfig::default()
    };
    Ok(Outbox::new(config, store))
}

/// With `--key-file`: the encrypted SQLite store, opened with its key.
#[cfg(feature = "sqlcipher")]
fn open_keyed(arg: &StoreArg) -> Result<Option<SqliteOutboxStore>, Failure> {
    let Some(key) = key_of(arg)? else {
        return Ok(None);
    };
    let config = SqliteOutboxStoreConfig::new(&arg.path).with_key(key);
    Ok(Some(SqliteOutboxStore::open(config)?))
}

/// Without feature `sqlcipher`, a key for anything but a WAL or JSON store
/// is refused: it can only be meant for an SQLite store.
#[cfg(not(feature = "sqlcipher"))]
fn open_keyed(arg: &StoreArg) -> Result<Option<SqliteOutboxStore>, Failure> {
    match arg.key_file {
        Some(_) => Err(Failure::Failed(format!(
            "{} is not an encrypted WAL or JSON store; an SQLite store encrypted with SQLCipher needs synctl built with feature `sqlcipher`",
            arg.path.display()
        ))),
        None => Ok(None),
    }
}

/// The key in `--key-file`: 64 hex digits are a raw key, anything else a
/// passphrase (one trailing newline ignored).
#[cfg(feature = "sqlcipher")]
fn key_of(store: &StoreArg) -> Result<Option<sync_store_sqlite::DatabaseKey>, Failure> {
    let Some(text) = key_text(store)? else {
        return Ok(None);
    };
    Ok(Some(match raw_key(&text) {
        Some(bytes) => sync_store_sqlite::DatabaseKey::raw(bytes),
        None => sync_store_sqlite::DatabaseKey::passphrase(text),
    }))
}

/// With `--key-file`, for a WAL store directory or an encrypted JSON store
/// file: the key as the store's `Encryption`, under `--key-id`. `None`
/// for anything else (an SQLite database is opened with SQLCipher).
fn file_store_key(store: &StoreArg) -> Result<Option<Encryption>, Failure> {
    let path = store.path.as_path();
    let sealed_json = || {
        let mut magic = [0u8; 8];
        std::fs::File::open(path)
            .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut magic))
            .is_ok_and(|()| magic == SEALED_FILE_MAGIC)
    };
    if !path.is_dir() && !sealed_json() {
        return Ok(None);
    }
    let Some(text) = key_text(store)? else {
        return Ok(None);
    };
    let bytes = raw_key(&text).ok_or_else(|| {
        Failure::Failed(
            "the key of an encrypted WAL or JSON store is 64 hex digits (a raw 256-bit key)".into(),
        )
    })?;
    Ok(Some(Encryption::new(EncryptionKey::new(
        store.key_id,
        bytes,
    ))))
}

/// The text of `--key-file`, one trailing newline dropped.
fn key_text(store: &StoreArg) -> Result<Option<String>, Failure> {
    let Some(file) = &store.key_file else {
        return Ok(None);
    };
    let mut text = std::fs::read_to_string(file).map_err(|e| {
        Failure::Failed(format!("cannot read the key file {}: {e}", file.display()))
    })?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(Some(text))
}

/// 64 hex digits as a raw key.
fn raw_key(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let hex = |i: usize| {
        text.get(i..i + 2)
            .filter(|pair| pair.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|pair| u8::from_str_radix(pair, 16).ok())
    };
    let bytes: Option<Vec<u8>> = (0..32).map(|i| hex(i * 2)).collect();
    bytes.and_then(|b| <[u8; 32]>::try_from(b).ok())
}

fn check_exists(path: &Path) -> Result<(), Failure> {
    let is_store = if path.is_dir() {
        path.join("log").is_dir()
    } else {
        path.is_file()
    };
    if is_store {
        Ok(())
    } else {
        Err(Failure::Failed(format!(
            "no outbox store at {}: expected a JSON store file, an SQLite database or a WAL store directory (with log/)",
            path.display()
        )))
    }
}

fn unknown(id: &str) -> Failure {
    Failure::Failed(format!("no operation with id {id:?}"))
}

fn list(
    path: &StoreArg,
    status: Option<OperationStatus>,
    limit: usize,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let mut ops: Vec<Operation> = open_read_only(path)?
        .load_all()?
        .into_iter()
        .filter(|op| status.is_none_or(|s| op.status == s))
        .collect();
    ops.sort_by(|a, b| (a.seq, &a.id).cmp(&(b.seq, &b.id)));
    ops.truncate(limit);
    if json {
        serde_json::to_writer_pretty(&mut *out, &ops).map_err(std::io::Error::from)?;
        writeln!(out)?;
        return Ok(());
    }
    let now = now_ms();
    let mut table = Table::new(&[
        "ID",
        "STATUS",
        "ATTEMPT",
        "KIND",
        "TARGET",
        "NEXT TRY",
        "LAST ERROR",
    ]);
    for op in &ops {
        table.row(vec![
            op.id.clone(),
            status_name(op.status).into(),
            op.attempt.to_string(),
            op.kind.clone(),
            op.target.clone(),
            next_try(op, now),
            preview(&op.last_error, 40),
        ]);
    }
    table.print(out)?;
    Ok(())
}

fn show(path: &StoreArg, id: &str, json: bool, out: &mut dyn Write) -> Result<(), Failure> {
    let op = open_read_only(path)?.get(id)?.ok_or_else(|| unknown(id))?;
    if json {
        serde_json::to_writer_pretty(&mut *out, &op).map_err(std::io::Error::from)?;
        writeln!(out)?;
        return Ok(());
    }
    let optional = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let fields = [
        ("id", op.id.clone()),
        ("status", status_name(op.status).into()),
        ("kind", op.kind.clone()),
        ("target", op.target.clone()),
        ("attempt", op.attempt.to_string()),
        ("next try", next_try(&op, now_ms())),
        ("last error", op.last_error.clone()),
        ("created", format_time_ms(op.created_at_ms)),
        ("updated", format_time_ms(op.updated_at_ms)),
        ("ordering key", optional(&op.ordering_key)),
        ("coalesce key", optional(&op.coalesce_key)),
        ("owner", op.owner.clone()),
        ("seq", op.seq.to_string()),
        ("payload", op.payload.clone()),
    ];
    for (name, value) in fields {
        writeln!(out, "{:<13} {value}", format!("{name}:"))?;
    }
    Ok(())
}

/// `outbox stats --json`; the field names are a stable interface.
#[derive(Serialize)]
struct StatsJson {
    total: usize,
    pending: usize,
    in_flight: usize,
    done: usize,
    failed: usize,
    oldest_pending_age_ms: Option<i64>,
    next_due_at_ms: Option<i64>,
    /// Payload bytes of the operations not done (what the queue limits count).
    queued_bytes: u64,
}

fn stats(path: &StoreArg, json: bool, out: &mut dyn Write) -> Result<(), Failure> {
    let store = open_read_only(path)?;
    let counts = store.stats()?;
    let (pending, in_flight, done, failed) =
        (counts.pending, counts.in_flight, counts.done, counts.failed);
    let stats = StatsJson {
        total: counts.total(),
        pending,
        in_flight,
        done,
        failed,
        oldest_pending_age_ms: counts.oldest_pending_age_ms(now_ms()),
        next_due_at_ms: store.next_due_ms()?,
        queued_bytes: counts.queued_bytes,
    };
    if json {
        serde_json::to_writer_pretty(&mut *out, &stats).map_err(std::io::Error::from)?;
        writeln!(out)?;
        return Ok(());
    }
    let mut table = Table::new(&["STATUS", "OPERATIONS"]);
    for (name, n) in [
        ("pending", pending),
        ("in_flight", in_flight),
        ("done", done),
        ("failed", failed),
        ("total", stats.total),
    ] {
        table.row(vec![name.into(), n.to_string()]);
    }
    table.print(out)?;
    if let Some(age) = stats.oldest_pending_age_ms {
        writeln!(
            out,
            "\noldest pending operation waits for {}",
            format_duration_ms(age)
        )?;
    }
    Ok(())
}

/// When a pending operation may next be sent, for people.
fn next_try(op: &Operation, now: i64) -> String {
    match op.status {
        OperationStatus::Pending if op.next_retry_at_ms <= now => "due".into(),
        OperationStatus::Pending => {
            format!("in {}", format_duration_ms(op.next_retry_at_ms - now))
        }
        OperationStatus::InFlight | OperationStatus::Done | OperationStatus::Failed => "-".into(),
    }
}

fn status_of(arg: StatusArg) -> OperationStatus {
    match arg {
        StatusArg::Pending => OperationStatus::Pending,
        StatusArg::InFlight => OperationStatus::InFlight,
        StatusArg::Done => OperationStatus::Done,
        StatusArg::Failed => OperationStatus::Failed,
    }
}

/// The name the JSON form uses too.
fn status_name(status: OperationStatus) -> &'static str {
    match status {
        OperationStatus::Pending => "pending",
        OperationStatus::InFlight => "in_flight",
        OperationStatus::Done => "done",
        OperationStatus::Failed => "failed",
    }
}
