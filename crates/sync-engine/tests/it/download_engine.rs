//! Both engines pull as well as push: an edit sent by a started engine is
//! reflected without anyone calling `pull` (the drained queue asks for a
//! pull), `sync_now` pulls a colleague's change, observers see each pull;
//! and the downloader's bad answers: a page that does not follow or a
//! failure mid-run is a typed error, applies nothing of the bad page, and
//! leaves the stored cursor where the last good page put it.

use std::collections::BTreeMap;
use std::collections::HashSet;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sync_engine::{
    DownloadConfig, Downloader, EngineError, PullReport, PullResult, PullTransport, Reflection,
    SendResult, SyncEngine, SyncEngineConfig, SyncObserver, SyncTransport, SystemClock,
};
use sync_outbox::download::{
    AppDownload, ApplyChanges, Change, DownloadTarget, MemoryDownloadState, PullResponse,
};
use sync_outbox::{MemoryOutboxStore, Operation, Outbox, OutboxConfig, OutboxError};
use sync_protocol::PullRequest;

use crate::online_probe as probe;

type TestResult = Result<(), Box<dyn std::error::Error>>;
type AppError = Box<dyn std::error::Error + Send + Sync>;

/// A server in memory: every send is a change of note `target`'s last
/// segment, answered with its version; pulls page through the changes.
#[derive(Default)]
struct Server {
    changes: Mutex<Vec<Change>>,
    /// Pull answers to give before the real ones (bad ones, for the tests).
    scripted: Mutex<Vec<PullResult>>,
}

impl Server {
    fn write(&self, id: &str, text: &str) -> i64 {
        let mut changes = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        let version = i64::try_from(changes.len()).unwrap_or(i64::MAX) + 1;
        let change = serde_json::json!({"scope": "u", "entity": "note", "id": id,
            "version": version, "op": "upsert", "state": {"text": text}});
        if let Ok(change) = serde_json::from_value(change) {
            changes.push(change);
        }
        version
    }

    fn page(&self, request: &PullRequest) -> PullResponse {
        let changes = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        let after: i64 = request
            .cursor
            .as_deref()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let limit = usize::try_from(request.limit.unwrap_or(500)).unwrap_or(500);
        let page: Vec<Change> = changes
            .iter()
            .filter(|c| c.version > after)
            .take(limit)
            .cloned()
            .collect();
        let last = page.last().map_or(after, |c| c.version);
        let head = i64::try_from(changes.len()).unwrap_or(i64::MAX);
        PullResponse {
            cursor: last.to_string(),
            more: last < head,
            covers_below: last + 1,
            snapshot: request.cursor.is_none(),
            changes: page,
        }
    }
}

impl SyncTransport for Server {
    fn send(&self, op: &Operation) -> SendResult {
        let id = op.target.rsplit('/').next().unwrap_or_default();
        SendResult::ok_at(self.write(id, &op.payload))
    }
}

impl PullTransport for Server {
    fn pull(&self, request: &PullRequest) -> PullResult {
        let scripted = self
            .scripted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        scripted.unwrap_or_else(|| PullResult::Page(self.page(request)))
    }
}

#[async_trait::async_trait]
impl sync_engine::AsyncSyncTransport for Server {
    async fn send(&self, op: &Operation) -> SendResult {
        SyncTransport::send(self, op)
    }
}

#[async_trait::async_trait]
impl sync_engine::AsyncPullTransport for Server {
    async fn pull(&self, request: &PullRequest) -> PullResult {
        PullTransport::pull(self, request)
    }
}

/// The app's notes: id to text.
#[derive(Clone, Default)]
struct Notes(Arc<Mutex<BTreeMap<String, String>>>);

impl Notes {
    fn get(&self, id: &str) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl ApplyChanges for Notes {
    fn upsert(&mut self, c: &Change, state: &serde_json::Value) -> Result<(), AppError> {
        let text = state["text"].as_str().unwrap_or_default().to_owned();
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(c.id.clone(), text);
        Ok(())
    }
    fn delete(&mut self, c: &Change) -> Result<(), AppError> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&c.id);
        Ok(())
    }
    fn reset(&mut self, keep: &HashSet<String>) -> Result<(), AppError> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|id, _| keep.contains(&format!("note/{id}")));
        Ok(())
    }
    fn forget(&mut self, key: &str) -> Result<(), AppError> {
        let id = key.strip_prefix("note/").unwrap_or(key);
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        Ok(())
    }
}

struct Device {
    outbox: Arc<Outbox>,
    notes: Notes,
    target: Arc<AppDownload<Notes>>,
}

fn device() -> Device {
    let outbox = Arc::new(Outbox::new(
        OutboxConfig::default(),
        Arc::new(MemoryOutboxStore::new()),
    ));
    let notes = Notes::default();
    let target = Arc::new(AppDownload::new(
        outbox.clone(),
        notes.clone(),
        Arc::new(MemoryDownloadState::default()),
    ));
    Device {
        outbox,
        notes,
        target,
    }
}

fn edit(outbox: &Outbox, id: &str, text: &str) -> Result<String, OutboxError> {
    outbox.enqueue(
        Operation {
            ordering_key: Some(format!("note/{id}")),
            ..Operation::new("note.save", format!("/notes/{id}"), text)
        },
        0,
    )
}

/// Sends each pull's report down a channel.
struct Pulls(Mutex<mpsc::Sender<PullReport>>);

impl SyncObserver for Pulls {
    fn on_pull(&self, report: &PullReport) {
        let _ = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(*report);
    }
}

#[test]
fn a_started_engine_reflects_each_edit_and_sync_now_pulls_a_colleagues_change() -> TestResult {
    // Many short lives: a missed wake-up shows as a 5 s wait that fails.
    for round in 0..20 {
        let server = Arc::new(Server::default());
        let d = device();
        let id = edit(&d.outbox, "a", &format!("mine {round}"))?;
        let engine = SyncEngine::new(
            SyncEngineConfig::default(),
            d.outbox.clone(),
            probe(),
            server.clone(),
        );
        let (tx, pulls) = mpsc::channel();
        engine.set_observer(Arc::new(Pulls(Mutex::new(tx))));
        let downloader = Downloader::new(
            DownloadConfig::default(),
            d.outbox.clone(),
            server.clone(),
            d.target.clone(),
        );
        assert!(engine.set_download(Arc::new(downloader)));
        engine.start(SystemClock)?;
        assert_eq!(
            engine.wait_reflected(&id, Duration::from_secs(5))?,
            Reflection::Visible,
            "round {round}"
        );
        assert_eq!(
            d.notes.get("a").as_deref(),
            Some(format!("mine {round}").as_str())
        );
        // A colleague's change, then sync_now: pulled without waiting for
        // the 30 s interval.
        while pulls.try_recv().is_ok() {}
        server.write("b", "theirs");
        engine.sync_now();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while d.notes.get("b").is_none() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            pulls.recv_timeout(left)?;
        }
        assert_eq!(d.notes.len(), 2);
        // Set after start: refused, it would never run.
        let late = Downloader::new(
            DownloadConfig::default(),
            d.outbox.clone(),
            server.clone(),
            d.target.clone(),
        );
        assert!(!engine.set_download(Arc::new(late)));
        engine.stop()?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_async_engine_reflects_each_edit() -> TestResult {
    for round in 0..20 {
        let server = Arc::new(Server::default());
        let d = device();
        let id = edit(&d.outbox, "a", &format!("mine {round}"))?;
        let engine = sync_engine::AsyncSyncEngine::new(
            SyncEngineConfig::default(),
            d.outbox.clone(),
            probe(),
            server.clone(),
        );
        let downloader = sync_engine::AsyncDownloader::new(
            DownloadConfig::default(),
            d.outbox.clone(),
            server.clone(),
            d.target.clone(),
        );
        assert!(engine.set_download(Arc::new(downloader)));
        engine.start().await?;
        let reflected =
            tokio::time::timeout(Duration::from_secs(5), engine.wait_reflected(&id)).await??;
        assert_eq!(reflected, Reflection::Visible, "round {round}");
        assert_eq!(
            d.notes.get("a").as_deref(),
            Some(format!("mine {round}").as_str())
        );
        let state = engine.download().ok_or("no download half")?.state().await?;
        assert_eq!(state.covers_below, 2);
        engine.stop().await?;
    }
    Ok(())
}

#[test]
fn bad_answers_are_typed_errors_that_apply_nothing_and_keep_the_cursor() -> TestResult {
    let server = Arc::new(Server::default());
    for n in 1..=3 {
        server.write(&format!("n{n}"), "v1");
    }
    let d = device();
    let downloader = Downloader::new(
        DownloadConfig {
            page_limit: 2,
            ..DownloadConfig::default()
        },
        d.outbox.clone(),
        server.clone(),
        d.target.clone(),
    );
    // A 500 after the first page: the first page stays, the error is typed.
    *server
        .scripted
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = vec![
        PullResult::Failed {
            error: "HTTP 500".into(),
            retry_after_ms: Some(2_000),
        },
        PullResult::Page(server.page(&PullRequest {
            cursor: None,
            limit: Some(2),
            scopes: Vec::new(),
        })),
    ];
    match downloader.pull() {
        Err(EngineError::Pull {
            retry_after_ms: Some(2_000),
            ..
        }) => {}
        other => return Err(format!("expected a pull error, got {other:?}").into()),
    }
    assert_eq!(d.notes.len(), 2);
    let after_first = d.target.state()?;
    assert_eq!(after_first.cursor.as_deref(), Some("2"));

    // A page whose versions go back below what was pulled: refused whole.
    let mut backwards = server.page(&PullRequest {
        cursor: Some("2".into()),
        limit: Some(2),
        scopes: Vec::new(),
    });
    backwards.changes[0].version = 1;
    *server
        .scripted
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = vec![PullResult::Page(backwards)];
    match downloader.pull() {
        Err(EngineError::OutboxStep {
            source: OutboxError::BadPage { .. },
            ..
        }) => {}
        other => return Err(format!("expected a refused page, got {other:?}").into()),
    }
    assert_eq!(d.notes.get("n3"), None, "nothing of the bad page applied");
    assert_eq!(d.target.state()?, after_first, "the cursor did not move");

    // The server behaves again: the next pull goes on from the cursor.
    let report = downloader.pull()?;
    assert!(report.caught_up);
    assert_eq!(report.applied, 1);
    assert_eq!(d.notes.get("n3").as_deref(), Some("v1"));
    Ok(())
}
