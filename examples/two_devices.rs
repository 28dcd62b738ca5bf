//! Two devices of one notes app, syncing both ways through the server of
//! `examples/server.rs` (started here, in-process). Each keeps its notes and
//! its queue in its own SQLite database (`./build/two-devices/`), pushes its
//! edits and pulls everyone's changes.
//!
//! Both edit the same note offline. Whoever reaches the server last wins
//! (the server keeps the last write); until the server has a device's edit,
//! that device keeps showing its own text, even when the other's arrives
//! first: the pulled change is held, not applied over the edit. In the end
//! both show the server's state.
//!
//! ```text
//! cargo run --example two_devices
//! ```

#![expect(
    clippy::print_stdout,
    reason = "an example prints for the person running it"
)]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use sync::engine::{EngineError, Reflection};
use sync::http::HttpMethod;
use sync::outbox::download::Change;
use sync::prelude::*;
use sync::sqlite::SqliteStoreError;
use sync::sqlite::rusqlite::{Connection, Result as SqlResult};

#[expect(dead_code, reason = "this example runs the server's app, not its main")]
#[path = "server.rs"]
mod server;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// How pulled changes land in the notes table.
struct Notes;

impl ApplySqliteChanges for Notes {
    fn upsert(&mut self, db: &Connection, c: &Change, state: &serde_json::Value) -> SqlResult<()> {
        let text = state["text"].as_str().unwrap_or_default();
        db.execute(
            "INSERT INTO notes (id, text) VALUES (?1, ?2)
             ON CONFLICT (id) DO UPDATE SET text = excluded.text",
            (&c.id, text),
        )
        .map(drop)
    }
    fn delete(&mut self, db: &Connection, c: &Change) -> SqlResult<()> {
        db.execute("DELETE FROM notes WHERE id = ?1", [&c.id])
            .map(drop)
    }
    fn reset(&mut self, db: &Connection, keep: &HashSet<String>) -> SqlResult<()> {
        // A snapshot starts: keep only the notes with edits not yet on the server.
        let ids: Vec<String> = db
            .prepare("SELECT id FROM notes")?
            .query_map([], |r| r.get(0))?
            .collect::<SqlResult<_>>()?;
        for id in ids
            .iter()
            .filter(|id| !keep.contains(&format!("note/{id}")))
        {
            db.execute("DELETE FROM notes WHERE id = ?1", [id])?;
        }
        Ok(())
    }
    fn forget(&mut self, db: &Connection, key: &str) -> SqlResult<()> {
        let id = key.strip_prefix("note/").unwrap_or(key);
        db.execute("DELETE FROM notes WHERE id = ?1", [id])
            .map(drop)
    }
}

/// One device: its database, its queue, and, while online, an engine.
struct Device {
    name: &'static str,
    store: Arc<SqliteOutboxStore>,
    outbox: Arc<Outbox>,
    http: Arc<HttpTransport>,
    downloader: Arc<Downloader>,
    engine: Option<SyncEngine>,
}

impl Device {
    fn open(name: &'static str, dir: &std::path::Path, url: &str) -> Result<Self, Error> {
        let store = Arc::new(SqliteOutboxStore::open(SqliteOutboxStoreConfig::new(
            dir.join(format!("{name}.db")),
        ))?);
        let outbox = Arc::new(Outbox::new(OutboxConfig::default(), store.clone()));
        store.with_transaction(&outbox, |tx| {
            tx.execute_batch("CREATE TABLE IF NOT EXISTS notes (id TEXT PRIMARY KEY, text TEXT)")
                .map_err(SqliteStoreError::from)
        })?;
        let http = Arc::new(HttpTransport::new(
            HttpTransportConfig {
                base_url: url.into(),
                // One team: both devices share the scope the server keys by.
                headers: vec![("authorization".into(), "team".into())],
                ..HttpTransportConfig::default()
            }
            .with_method("note.save", HttpMethod::Put),
        )?);
        let target = Arc::new(SqliteDownload::new(store.clone(), outbox.clone(), Notes));
        let downloader = Arc::new(Downloader::new(
            DownloadConfig::default(),
            outbox.clone(),
            http.clone(),
            target,
        ));
        Ok(Self {
            name,
            store,
            outbox,
            http,
            downloader,
            engine: None,
        })
    }

    /// Saves a note: the row and its operation in one transaction. Returns
    /// the operation's id.
    fn edit(&self, id: &str, text: &str) -> Result<String, Error> {
        let op_id = self.store.with_transaction(&self.outbox, |tx| {
            tx.execute(
                "INSERT INTO notes (id, text) VALUES (?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET text = excluded.text",
                [id, text],
            )?;
            tx.enqueue_now(Operation {
                // The key pulled changes of this note are held under.
                ordering_key: Some(format!("note/{id}")),
                ..Operation::new(
                    "note.save",
                    format!("/notes/{id}"),
                    serde_json::json!({ "text": text }).to_string(),
                )
            })
        })?;
        println!("  {}: saves {id} = {text:?} (queued)", self.name);
        Ok(op_id)
    }

    /// Starts an engine: it pushes the queue and pulls the feed.
    fn go_online(&mut self) -> Result<(), Error> {
        let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
        let engine = SyncEngine::new(
            SyncEngineConfig::default(),
            self.outbox.clone(),
            probe,
            self.http.clone(),
        );
        engine.set_download(self.downloader.clone());
        engine.start(SystemClock)?;
        self.engine = Some(engine);
        Ok(())
    }

    fn go_offline(&mut self) -> Result<(), EngineError> {
        match self.engine.take() {
            Some(engine) => engine.stop(),
            None => Ok(()),
        }
    }

    /// Waits until the server has operation `id` and this device shows the
    /// server's version of it.
    fn wait_saved(&self, id: &str) -> Result<(), Error> {
        match self
            .downloader
            .wait_reflected(id, Duration::from_secs(10))?
        {
            Reflection::Visible => Ok(()),
            other => Err(format!("{}: operation {id} is {other:?}", self.name).into()),
        }
    }

    fn notes(&self) -> Result<BTreeMap<String, String>, Error> {
        let db = Connection::open(self.store.path())?;
        let notes = db
            .prepare("SELECT id, text FROM notes ORDER BY id")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<SqlResult<_>>()?;
        Ok(notes)
    }

    /// Fails the example when the device does not show `text` for `id`.
    fn expect(&self, id: &str, text: &str) -> Result<(), Error> {
        match self.notes()?.get(id) {
            Some(shown) if shown == text => Ok(()),
            shown => Err(format!("{} shows {id} = {shown:?}, expected {text:?}", self.name).into()),
        }
    }

    fn show(&self) -> Result<(), Error> {
        let held = self.downloader.target().state()?.held.len();
        println!(
            "  {} shows {:?}{}",
            self.name,
            self.notes()?,
            if held > 0 {
                format!(" ({held} pulled change held for its own edit)")
            } else {
                String::new()
            }
        );
        Ok(())
    }
}

/// Runs `examples/server.rs`'s app on a port of its own, on a thread.
fn start_server(dir: &std::path::Path) -> Result<String, Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let app = runtime.block_on(server::app(&dir.join("server.db")))?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let url = format!("http://{}", listener.local_addr()?);
    std::thread::spawn(move || runtime.block_on(async { axum::serve(listener, app).await }));
    Ok(url)
}

fn main() -> Result<(), Error> {
    let dir = std::path::Path::new("build").join("two-devices");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    run(&dir)
}

/// The whole story, with the server's and the devices' databases in `dir`.
/// (`tests/two_devices.rs` runs it too.)
pub(crate) fn run(dir: &std::path::Path) -> Result<(), Error> {
    let url = start_server(dir)?;
    println!("server at {url}");
    let mut ann = Device::open("ann", dir, &url)?;
    let mut ben = Device::open("ben", dir, &url)?;

    println!("1. Ann writes two notes and syncs; Ben's new device downloads them");
    let first = [
        ann.edit("groceries", "milk")?,
        ann.edit("todo", "call the plumber")?,
    ];
    ann.go_online()?;
    for id in &first {
        ann.wait_saved(id)?;
    }
    ben.go_online()?;
    ben.downloader.pull()?;
    ann.show()?;
    ben.show()?;
    ben.expect("groceries", "milk")?;

    println!("2. Both go offline and edit the same note");
    ann.go_offline()?;
    ben.go_offline()?;
    let ann_edit = ann.edit("groceries", "milk, eggs")?;
    let ben_edits = [
        ben.edit("groceries", "milk, bread")?,
        ben.edit("todo", "call the plumber at 5")?,
    ];
    ann.show()?;
    ben.show()?;

    println!("3. Ben comes back first: the server takes his edits");
    ben.go_online()?;
    for id in &ben_edits {
        ben.wait_saved(id)?;
    }
    ben.show()?;
    ben.expect("groceries", "milk, bread")?;

    println!("4. Ann comes back; a pull lands before her edit is sent:");
    println!("   Ben's todo applies, Ben's groceries waits behind her own edit");
    ann.downloader.pull()?;
    ann.show()?;
    ann.expect("groceries", "milk, eggs")?;
    ann.expect("todo", "call the plumber at 5")?;
    if ann.downloader.target().state()?.held.len() != 1 {
        return Err("Ben's groceries should be held behind Ann's edit".into());
    }
    println!("5. Ann's engine sends her edit: the server's last write, and hers");
    ann.go_online()?;
    ann.wait_saved(&ann_edit)?;
    ann.show()?;
    ann.expect("groceries", "milk, eggs")?;

    println!("6. Ben pulls: both show the server's state");
    if let Some(engine) = &ben.engine {
        engine.sync_now();
    }
    ben.downloader.pull()?;
    ann.show()?;
    ben.show()?;
    ben.expect("groceries", "milk, eggs")?;
    ann.go_offline()?;
    ben.go_offline()?;
    if ann.notes()? != ben.notes()? {
        return Err("the two devices did not converge".into());
    }
    println!("converged");
    Ok(())
}
