//! A device of a chaos run: the library as an app uses it, recording what
//! it was told and what it saw for the checker.
//!
//! Its data is a table `entities (scope, id, value)` in the app's SQLite
//! database. On the SQLite store ([`StoreKind::Sqlite`]) the outbox lives
//! in the same database: an edit writes the row and enqueues its operation
//! in one transaction, and pulled pages go into the table in the page's
//! transaction (`SqliteDownload`). On the WAL store ([`StoreKind::Wal`])
//! the outbox is a `WalOutboxStore` beside the database: an edit writes the
//! operation durably first, then the row, both with the outbox held (so a
//! pull cannot land between them), and pulled pages go in through
//! `AppDownload` with the cursor in a `FileDownloadState`. Either way the
//! engine pushes through a transport that fails over between the run's
//! servers, on a clock that may be skewed by minutes.
//!
//! The history file gets a line before each edit (`try {op}`: the edit may
//! or may not be acknowledged, if the device dies now), after it is
//! acknowledged (`ack {op}`), and for each pulled change (`pulled
//! {scope}`), one `write` per line so a killed device loses none.

use std::collections::{BTreeMap, HashSet};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sync_engine::{
    Clock, DownloadConfig, Downloader, NetworkProbe, NetworkProbeConfig, PullResult, PullTransport,
    SendResult, SyncEngine, SyncEngineConfig, SyncTransport, SystemClock, Wakeup,
};
use sync_outbox::download::{AppDownload, ApplyChanges, Change, DownloadTarget};
use sync_outbox::{Operation, Outbox, OutboxConfig, OutboxStore, RetryPolicy, SendOutcome};
use sync_protocol::PullRequest;
use sync_store_file::{FileDownloadState, WalOutboxStore, WalOutboxStoreConfig};
use sync_store_sqlite::{
    ApplySqliteChanges, SqliteDownload, SqliteOutboxStore, SqliteOutboxStoreConfig,
    SqliteStoreError,
};
use sync_transport_http::{HttpMethod, HttpTransport, HttpTransportConfig};

use crate::history::EntityKey;
use crate::server::SCOPES_HEADER;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Which store a device keeps its outbox in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// `SqliteOutboxStore`, in the app's own database.
    Sqlite,
    /// `WalOutboxStore`, beside the app's database.
    Wal,
}

/// What a device is.
#[derive(Clone, Debug)]
pub struct DeviceConfig {
    /// Its name in the history.
    pub name: String,
    /// Its SQLite database (its data; the outbox too on [`StoreKind::Sqlite`]).
    /// The WAL store and the download state go beside it.
    pub db: PathBuf,
    /// The outbox's store.
    pub store: StoreKind,
    /// The servers' base URLs, the first tried first.
    pub servers: Vec<String>,
    /// The scopes it edits and pulls.
    pub scopes: Vec<String>,
    /// Entities per scope it edits (`{scope}.e{k}`).
    pub entities: usize,
    /// The history file it appends to.
    pub history: PathBuf,
    /// How far its wall clock is off, in milliseconds (may be negative).
    pub skew_ms: i64,
}

enum Local {
    Sqlite(Arc<SqliteOutboxStore>),
    Wal {
        store: Arc<WalOutboxStore>,
        data: Arc<Mutex<rusqlite::Connection>>,
    },
}

/// A running device.
pub struct Device {
    config: DeviceConfig,
    local: Local,
    outbox: Arc<Outbox>,
    engine: SyncEngine,
    downloader: Arc<Downloader>,
    target: Arc<dyn DownloadTarget>,
    history: Arc<History>,
    clock: SkewedClock,
    /// This life's prefix of operation ids, and the next number: the
    /// device names each operation before enqueuing it, so its `try` line
    /// names it too.
    life: String,
    next_op: u64,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

/// The system clock, off by a fixed amount: a device whose clock is wrong.
#[derive(Clone, Copy, Debug)]
struct SkewedClock {
    skew_ms: i64,
}

impl Clock for SkewedClock {
    fn now_ms(&self) -> i64 {
        SystemClock.now_ms().saturating_add(self.skew_ms)
    }

    fn sleep_until(&self, wakeup: &Arc<Wakeup>, seen: u64, deadline_ms: Option<i64>) {
        let timeout = deadline_ms.map(|deadline| {
            Duration::from_millis(
                u64::try_from(deadline.saturating_sub(self.now_ms())).unwrap_or(0),
            )
        });
        wakeup.wait(seen, timeout);
    }
}

/// The history file, one line per event.
struct History {
    file: Mutex<std::fs::File>,
    device: String,
}

impl History {
    fn line(&self, line: &str) -> std::io::Result<()> {
        // One `write` per line: `writeln!` would write the pieces apart,
        // and devices appending to one file would interleave them.
        let text = format!("{} {line}\n", self.device);
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.write_all(text.as_bytes())
    }
}

/// Tries its servers in turn: one that gives no answer hands over to the
/// next, for sends and pulls alike.
struct Failover {
    transports: Vec<HttpTransport>,
    current: AtomicUsize,
}

impl Failover {
    fn pick(&self) -> (usize, &HttpTransport) {
        let i = self.current.load(Ordering::Relaxed) % self.transports.len().max(1);
        (i, &self.transports[i])
    }

    fn fail_over(&self, from: usize) {
        let next = (from + 1) % self.transports.len().max(1);
        let _ = self
            .current
            .compare_exchange(from, next, Ordering::Relaxed, Ordering::Relaxed);
    }
}

impl SyncTransport for Failover {
    fn send(&self, op: &Operation) -> SendResult {
        let (i, transport) = self.pick();
        let result = transport.send(op);
        // No answer, or a server that cannot serve (a 5xx: its database
        // may be cut off): try the other one next time.
        let unwell = matches!(
            result.outcome(),
            SendOutcome::Unanswered { .. }
                | SendOutcome::Failed {
                    retryable: true,
                    ..
                }
        );
        if unwell {
            self.fail_over(i);
        }
        result
    }
}

impl PullTransport for Failover {
    fn pull(&self, request: &PullRequest) -> PullResult {
        let (i, transport) = self.pick();
        let result = transport.pull(request);
        if matches!(
            result,
            PullResult::Unanswered { .. } | PullResult::Failed { .. }
        ) {
            self.fail_over(i);
        }
        result
    }
}

const UPSERT: &str = "INSERT INTO entities (scope, id, value) VALUES (?1, ?2, ?3) \
     ON CONFLICT (scope, id) DO UPDATE SET value = excluded.value";

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS entities (scope TEXT NOT NULL, \
     id TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (scope, id))";

/// The app's writes of pulled changes, on either store: the same rows.
struct Entities {
    history: Arc<History>,
}

impl Entities {
    fn upsert(
        &self,
        db: &rusqlite::Connection,
        change: &Change,
        state: &serde_json::Value,
    ) -> rusqlite::Result<()> {
        let _ = self.history.line(&format!("pulled {}", change.scope));
        db.prepare_cached(UPSERT)?
            .execute((&change.scope, &change.id, state["value"].as_str()))
            .map(drop)
    }

    fn delete(&self, db: &rusqlite::Connection, change: &Change) -> rusqlite::Result<()> {
        let _ = self.history.line(&format!("pulled {}", change.scope));
        db.execute(
            "DELETE FROM entities WHERE scope = ?1 AND id = ?2",
            (&change.scope, &change.id),
        )
        .map(drop)
    }

    fn reset(db: &rusqlite::Connection, keep: &HashSet<String>) -> rusqlite::Result<()> {
        let ids: Vec<(String, String)> = db
            .prepare("SELECT scope, id FROM entities")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (scope, id) in ids {
            if !keep.contains(&format!("entity/{id}")) {
                db.execute(
                    "DELETE FROM entities WHERE scope = ?1 AND id = ?2",
                    (&scope, &id),
                )?;
            }
        }
        Ok(())
    }

    fn forget(db: &rusqlite::Connection, key: &str) -> rusqlite::Result<()> {
        let id = key.strip_prefix("entity/").unwrap_or(key);
        db.execute("DELETE FROM entities WHERE id = ?1", [id])
            .map(drop)
    }
}

/// On the SQLite store: in the page's transaction.
struct SqliteEntities(Entities);

impl ApplySqliteChanges for SqliteEntities {
    fn upsert(
        &mut self,
        db: &rusqlite::Connection,
        change: &Change,
        state: &serde_json::Value,
    ) -> rusqlite::Result<()> {
        self.0.upsert(db, change, state)
    }

    fn delete(&mut self, db: &rusqlite::Connection, change: &Change) -> rusqlite::Result<()> {
        self.0.delete(db, change)
    }

    fn reset(&mut self, db: &rusqlite::Connection, keep: &HashSet<String>) -> rusqlite::Result<()> {
        Entities::reset(db, keep)
    }

    fn forget(&mut self, db: &rusqlite::Connection, key: &str) -> rusqlite::Result<()> {
        Entities::forget(db, key)
    }
}

/// On the WAL store: the app's own database, one transaction per page
/// (begun at its first change, committed in `finish_page`), so the cursor
/// is stored only after the page's rows are durable.
struct WalEntities {
    entities: Entities,
    data: Arc<Mutex<rusqlite::Connection>>,
}

type AppResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

impl WalEntities {
    fn with(&self, work: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<()>) -> AppResult {
        let db = self.data.lock().unwrap_or_else(PoisonError::into_inner);
        if db.is_autocommit() {
            db.execute_batch("BEGIN IMMEDIATE")?;
        }
        if let Err(e) = work(&db) {
            // The page is pulled again: leave no half page open for the
            // next edit's row to land in.
            let _ = db.execute_batch("ROLLBACK");
            return Err(e.into());
        }
        Ok(())
    }
}

impl ApplyChanges for WalEntities {
    fn upsert(&mut self, change: &Change, state: &serde_json::Value) -> AppResult {
        self.with(|db| self.entities.upsert(db, change, state))
    }

    fn delete(&mut self, change: &Change) -> AppResult {
        self.with(|db| self.entities.delete(db, change))
    }

    fn reset(&mut self, keep: &HashSet<String>) -> AppResult {
        self.with(|db| Entities::reset(db, keep))
    }

    fn forget(&mut self, key: &str) -> AppResult {
        self.with(|db| Entities::forget(db, key))
    }

    fn finish_page(&mut self) -> AppResult {
        let db = self.data.lock().unwrap_or_else(PoisonError::into_inner);
        if !db.is_autocommit()
            && let Err(e) = db.execute_batch("COMMIT")
        {
            let _ = db.execute_batch("ROLLBACK");
            return Err(e.into());
        }
        Ok(())
    }
}

type Opened = (Local, Arc<Outbox>, Arc<dyn DownloadTarget>);

/// The device's store, its outbox (recovered) and where pulled pages go.
fn open_local(
    config: &DeviceConfig,
    clock: SkewedClock,
    outbox_config: OutboxConfig,
    entities: Entities,
) -> Result<Opened, Error> {
    Ok(match config.store {
        StoreKind::Sqlite => {
            let store = Arc::new(SqliteOutboxStore::open(SqliteOutboxStoreConfig::new(
                &config.db,
            ))?);
            let outbox = Arc::new(Outbox::new(outbox_config, store.clone()));
            outbox.recover(clock.now_ms())?;
            store.with_transaction(&outbox, |tx| {
                tx.execute_batch(SCHEMA).map_err(SqliteStoreError::from)
            })?;
            let target = Arc::new(SqliteDownload::new(
                store.clone(),
                outbox.clone(),
                SqliteEntities(entities),
            ));
            (Local::Sqlite(store), outbox, target)
        }
        StoreKind::Wal => {
            let store = Arc::new(WalOutboxStore::open(WalOutboxStoreConfig::new(
                config.db.with_extension("outbox"),
            ))?);
            let outbox = Arc::new(Outbox::new(outbox_config, store.clone()));
            outbox.recover(clock.now_ms())?;
            let db = rusqlite::Connection::open(&config.db)?;
            db.execute_batch(SCHEMA)?;
            let data = Arc::new(Mutex::new(db));
            let state = Arc::new(FileDownloadState::open(
                config.db.with_extension("download.json"),
            )?);
            let target = Arc::new(AppDownload::new(
                outbox.clone(),
                WalEntities {
                    entities,
                    data: Arc::clone(&data),
                },
                state,
            ));
            (Local::Wal { store, data }, outbox, target)
        }
    })
}

/// A number for this life of the process: the time and the pid, so two
/// lives (a restart) never name operations alike.
fn life_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the low bits are the ones that differ"
    )]
    let nanos = nanos as u64;
    nanos ^ (u64::from(std::process::id()) << 40)
}

impl Device {
    /// Opens the device's store and data and starts its engine, pushing and
    /// pulling.
    ///
    /// # Errors
    ///
    /// The store's, the transports', the engine's.
    pub fn open(config: DeviceConfig) -> Result<Self, Error> {
        let history = Arc::new(History {
            file: Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&config.history)?,
            ),
            device: config.name.clone(),
        });
        let clock = SkewedClock {
            skew_ms: config.skew_ms,
        };
        let retry = RetryPolicy {
            max_attempts: 1_000,
            max_delay: Duration::from_secs(2),
            ..RetryPolicy::default()
        };
        let outbox_config = OutboxConfig {
            owner: config.name.clone(),
            retry,
            ..OutboxConfig::default()
        };
        let entities = Entities {
            history: Arc::clone(&history),
        };
        let (local, outbox, target) = open_local(&config, clock, outbox_config, entities)?;
        let transports = config
            .servers
            .iter()
            .map(|url| {
                HttpTransport::new(
                    HttpTransportConfig {
                        base_url: url.clone(),
                        timeout: Duration::from_secs(3),
                        headers: vec![(SCOPES_HEADER.into(), config.scopes.join(","))],
                        ..HttpTransportConfig::default()
                    }
                    .with_method("entity.put", HttpMethod::Put),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let transport = Arc::new(Failover {
            transports,
            current: AtomicUsize::new(0),
        });
        let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
        let engine = SyncEngine::new(
            SyncEngineConfig::default(),
            outbox.clone(),
            probe,
            transport.clone(),
        );
        let download = DownloadConfig {
            interval: Duration::from_millis(500),
            ..DownloadConfig::default()
        };
        let downloader = Arc::new(Downloader::new(
            download,
            outbox.clone(),
            transport,
            Arc::clone(&target),
        ));
        engine.set_download(Arc::clone(&downloader));
        engine.start(clock)?;
        Ok(Self {
            local,
            outbox,
            engine,
            downloader,
            target,
            history,
            clock,
            life: format!("{}-{:x}", config.name, life_id()),
            next_op: 0,
            config,
        })
    }

    /// Edits entity `k` of `scope` to `value`: the row and its operation
    /// together (see the module's docs); the history says `try` before and
    /// `ack` once it is acknowledged. Returns the operation's id.
    ///
    /// # Errors
    ///
    /// The store's (nothing is acknowledged then).
    pub fn edit(&mut self, scope: &str, k: usize, value: &str) -> Result<String, Error> {
        let id = format!("{scope}.e{}", k % self.config.entities.max(1));
        let op = Operation {
            id: format!("{}-{}", self.life, self.next_op),
            ordering_key: Some(format!("entity/{id}")),
            ..Operation::new(
                "entity.put",
                format!("/entities/{scope}/{id}"),
                serde_json::json!({ "value": value }).to_string(),
            )
        };
        self.next_op += 1;
        self.history.line(&format!("try {}", op.id))?;
        let now = self.clock.now_ms();
        let (scope, value) = (scope.to_owned(), value.to_owned());
        let op_id = match &self.local {
            Local::Sqlite(store) => store.with_transaction(&self.outbox, |tx| {
                tx.execute(UPSERT, (&scope, &id, &value))?;
                tx.enqueue(op, now)
            })?,
            Local::Wal { store, data } => {
                // The operation is durable before the row is written, and
                // both happen with the outbox held: a pull (which holds it
                // too) cannot release a change of this entity in between.
                let mut held = self.outbox.lock_for_transaction()?;
                let prepared = held.prepare_enqueue(op, now)?;
                if let Err(e) = store.put(prepared.operation()) {
                    held.rollback(vec![prepared]);
                    return Err(e.into());
                }
                let row = data
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .execute(UPSERT, (&scope, &id, &value));
                // Stored durably: the outbox must know it whatever became
                // of the row (a pull brings the row back); returning first
                // would drop `prepared` while `held` holds the outbox.
                let id = held.commit(vec![prepared]).remove(0);
                row?;
                id
            }
        };
        self.history.line(&format!("ack {op_id}"))?;
        Ok(op_id)
    }

    /// Sends everything queued, old lives' operations included: returns
    /// once nothing is pending or in flight.
    ///
    /// # Errors
    ///
    /// Something still queued after `within`; a dead letter (an operation
    /// the device gave up on: with this retry policy that is a bug); the
    /// engine's errors.
    pub fn drain(&self, within: Duration) -> Result<(), Error> {
        let started = Instant::now();
        loop {
            let left = within.saturating_sub(started.elapsed());
            let report = self.engine.drain(left.min(Duration::from_secs(10)))?;
            let stats = self.outbox.stats()?;
            if stats.failed > 0 {
                return Err(format!("{}: {} dead letters", self.config.name, stats.failed).into());
            }
            if report.left == 0 && report.in_flight == 0 && stats.pending == 0 {
                return Ok(());
            }
            if left.is_zero() {
                return Err(format!(
                    "{}: not drained after {within:?}: {stats:?}",
                    self.config.name
                )
                .into());
            }
        }
    }

    /// Pulls until the feed is at its end and no change is held.
    ///
    /// # Errors
    ///
    /// Not caught up after `within`.
    pub fn catch_up(&self, within: Duration) -> Result<(), Error> {
        let started = Instant::now();
        loop {
            let outcome = self.downloader.pull();
            if let Ok(report) = &outcome
                && report.caught_up
                && report.held == 0
            {
                return Ok(());
            }
            if started.elapsed() > within {
                return Err(format!(
                    "{}: not caught up after {within:?}: {outcome:?}",
                    self.config.name
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// [`drain`](Self::drain), then [`catch_up`](Self::catch_up).
    ///
    /// # Errors
    ///
    /// As those.
    pub fn settle(&self, within: Duration) -> Result<(), Error> {
        self.drain(within)?;
        self.catch_up(within)
    }

    /// Operations pending or in flight now.
    ///
    /// # Errors
    ///
    /// The store's.
    pub fn unsent(&self) -> Result<usize, Error> {
        let stats = self.outbox.stats()?;
        Ok(stats.pending + stats.in_flight)
    }

    /// Held changes of the download state now.
    ///
    /// # Errors
    ///
    /// The store's.
    pub fn held(&self) -> Result<usize, Error> {
        Ok(self.target.state()?.held.len())
    }

    /// The device's data now.
    ///
    /// # Errors
    ///
    /// SQLite's.
    pub fn data(&self) -> Result<BTreeMap<EntityKey, String>, Error> {
        let conn = rusqlite::Connection::open(&self.config.db)?;
        let mut statement = conn.prepare("SELECT scope, id, value FROM entities")?;
        let rows = statement.query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))?;
        let mut data = BTreeMap::new();
        for row in rows {
            let (key, value): (EntityKey, String) = row?;
            data.insert(key, value);
        }
        Ok(data)
    }

    /// Stops the engine.
    ///
    /// # Errors
    ///
    /// The engine's.
    pub fn stop(self) -> Result<(), Error> {
        self.engine.stop()?;
        Ok(())
    }
}
