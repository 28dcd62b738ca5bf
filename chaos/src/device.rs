//! A device of a chaos run: the library as an app uses it, recording what
//! it was told and what it saw for the checker.
//!
//! Its data is a table `entities (scope, id, value)` in the app's SQLite
//! database, beside the outbox (`SqliteOutboxStore`): an edit writes the
//! row and enqueues its operation in one transaction; the engine pushes
//! them through a transport that fails over between the run's servers, and
//! pulls the feed of its scopes into the same table (`SqliteDownload`).
//! Each acknowledged enqueue and each pulled change's scope is appended to
//! the history file (one `write` per line, so a killed device loses none).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sync_engine::{
    Clock as _, DownloadConfig, Downloader, NetworkProbe, NetworkProbeConfig, PullResult,
    PullTransport, Reflection, SendResult, SyncEngine, SyncEngineConfig, SyncTransport,
    SystemClock,
};
use sync_outbox::download::Change;
use sync_outbox::{Operation, Outbox, OutboxConfig, RetryPolicy};
use sync_protocol::PullRequest;
use sync_store_sqlite::{
    ApplySqliteChanges, SqliteDownload, SqliteOutboxStore, SqliteOutboxStoreConfig,
    SqliteStoreError,
};
use sync_transport_http::{HttpMethod, HttpTransport, HttpTransportConfig};

use crate::history::EntityKey;
use crate::server::SCOPES_HEADER;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// What a device is.
#[derive(Clone, Debug)]
pub struct DeviceConfig {
    /// Its name in the history.
    pub name: String,
    /// Its SQLite database (outbox and data).
    pub db: PathBuf,
    /// The servers' base URLs, the first tried first.
    pub servers: Vec<String>,
    /// The scopes it edits and pulls.
    pub scopes: Vec<String>,
    /// Entities per scope it edits (`{scope}.e{k}`).
    pub entities: usize,
    /// The history file it appends to.
    pub history: PathBuf,
}

/// A running device.
pub struct Device {
    config: DeviceConfig,
    store: Arc<SqliteOutboxStore>,
    outbox: Arc<Outbox>,
    engine: SyncEngine,
    downloader: Arc<Downloader>,
    history: Arc<History>,
    edits: Vec<String>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("name", &self.config.name)
            .finish_non_exhaustive()
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
        if result.is_unanswered() {
            self.fail_over(i);
        }
        result
    }
}

impl PullTransport for Failover {
    fn pull(&self, request: &PullRequest) -> PullResult {
        let (i, transport) = self.pick();
        let result = transport.pull(request);
        if matches!(result, PullResult::Unanswered { .. }) {
            self.fail_over(i);
        }
        result
    }
}

/// Pulled changes into the `entities` table, each scope noted in the
/// history.
struct Entities {
    history: Arc<History>,
}

const UPSERT: &str = "INSERT INTO entities (scope, id, value) VALUES (?1, ?2, ?3) \
     ON CONFLICT (scope, id) DO UPDATE SET value = excluded.value";

impl ApplySqliteChanges for Entities {
    fn upsert(
        &mut self,
        db: &rusqlite::Connection,
        change: &Change,
        state: &serde_json::Value,
    ) -> rusqlite::Result<()> {
        let _ = self.history.line(&format!("pulled {}", change.scope));
        db.prepare_cached(UPSERT)?
            .execute((&change.scope, &change.id, state["value"].as_str()))
            .map(drop)
    }

    fn delete(&mut self, db: &rusqlite::Connection, change: &Change) -> rusqlite::Result<()> {
        let _ = self.history.line(&format!("pulled {}", change.scope));
        db.execute(
            "DELETE FROM entities WHERE scope = ?1 AND id = ?2",
            (&change.scope, &change.id),
        )
        .map(drop)
    }

    fn reset(
        &mut self,
        db: &rusqlite::Connection,
        keep: &std::collections::HashSet<String>,
    ) -> rusqlite::Result<()> {
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

    fn forget(&mut self, db: &rusqlite::Connection, key: &str) -> rusqlite::Result<()> {
        let id = key.strip_prefix("entity/").unwrap_or(key);
        db.execute("DELETE FROM entities WHERE id = ?1", [id])
            .map(drop)
    }
}

impl Device {
    /// Opens the device's database and starts its engine, pushing and
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
        let store = Arc::new(SqliteOutboxStore::open(SqliteOutboxStoreConfig::new(
            &config.db,
        ))?);
        let retry = RetryPolicy {
            max_attempts: 1_000,
            max_delay: Duration::from_secs(2),
            ..RetryPolicy::default()
        };
        let outbox = Arc::new(Outbox::new(
            OutboxConfig {
                owner: config.name.clone(),
                retry,
                ..OutboxConfig::default()
            },
            store.clone(),
        ));
        outbox.recover(SystemClock.now_ms())?;
        store.with_transaction(&outbox, |tx| {
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS entities (scope TEXT NOT NULL, id TEXT NOT NULL, \
                 value TEXT NOT NULL, PRIMARY KEY (scope, id))",
            )
            .map_err(SqliteStoreError::from)
        })?;
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
        let target = Arc::new(SqliteDownload::new(
            store.clone(),
            outbox.clone(),
            Entities {
                history: Arc::clone(&history),
            },
        ));
        let download = DownloadConfig {
            interval: Duration::from_millis(200),
            ..DownloadConfig::default()
        };
        let downloader = Arc::new(Downloader::new(download, outbox.clone(), transport, target));
        engine.set_download(Arc::clone(&downloader));
        engine.start(SystemClock)?;
        Ok(Self {
            config,
            store,
            outbox,
            engine,
            downloader,
            history,
            edits: Vec::new(),
        })
    }

    /// Edits entity `k` of `scope` to `value`: the row and its operation in
    /// one transaction; on `Ok` the history says it was acknowledged.
    ///
    /// # Errors
    ///
    /// The store's (nothing is acknowledged then).
    pub fn edit(&mut self, scope: &str, k: usize, value: &str) -> Result<String, Error> {
        let id = format!("{scope}.e{}", k % self.config.entities.max(1));
        let op = Operation {
            ordering_key: Some(format!("entity/{id}")),
            ..Operation::new(
                "entity.put",
                format!("/entities/{scope}/{id}"),
                serde_json::json!({ "value": value }).to_string(),
            )
        };
        let (scope, value) = (scope.to_owned(), value.to_owned());
        let op_id = self.store.with_transaction(&self.outbox, |tx| {
            tx.execute(UPSERT, (&scope, &id, &value))?;
            tx.enqueue_now(op)
        })?;
        self.history.line(&format!("ack {op_id}"))?;
        self.edits.push(op_id.clone());
        Ok(op_id)
    }

    /// Waits until every edit is on the server and its result is visible
    /// in downloaded data, then pulls to the end of the feed (to catch up
    /// with the other devices).
    ///
    /// # Errors
    ///
    /// An edit not reflected within `within`; the engine's errors.
    pub fn settle(&self, within: Duration) -> Result<(), Error> {
        for id in &self.edits {
            match self.engine.wait_reflected(id, within)? {
                Reflection::Visible => {}
                other => return Err(format!("{id} is {other:?} after {within:?}").into()),
            }
        }
        self.downloader.pull()?;
        Ok(())
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
