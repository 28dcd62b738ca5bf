//! The download half: [`PullTransport`] (and `AsyncPullTransport`), what a
//! pull came to ([`PullResult`]), and [`Downloader`], which follows the
//! server's change feed into a [`DownloadTarget`] and tells waiters when an
//! operation's effect is visible in downloaded data
//! ([`Downloader::wait_reflected`]).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sync_outbox::download::{Committed, DownloadState, DownloadTarget};
use sync_outbox::{Operation, OperationStatus, Outbox, RetryPolicy};
use sync_protocol::{PullRequest, PullResponse};

use crate::clock::Wakeup;
use crate::error::{EngineError, SyncStep};

/// What one pull came to.
#[derive(Clone, Debug, PartialEq)]
pub enum PullResult {
    /// A page of changes.
    Page(PullResponse),
    /// The server cannot continue the cursor (`410`, or a cursor it does
    /// not recognize): start again from a snapshot.
    Restart {
        /// Why, as the server said.
        reason: String,
    },
    /// The server answered with a failure (a `5xx`, a `429`, a `403`, a body
    /// that is not a page): tried again after a backoff.
    Failed {
        /// A short description (never a body or a credential).
        error: String,
        /// The server's hint of how long to wait (ms).
        retry_after_ms: Option<i64>,
    },
    /// No answer: the server or the network was unreachable.
    Unanswered {
        /// A short description.
        error: String,
    },
}

/// How the device asks the server for the next page of its change feed
/// (`docs/PROTOCOL.md`, "Pulling changes"). `sync-transport-http`'s
/// `HttpTransport` implements it; a test implements it in memory.
///
/// # Examples
///
/// ```
/// use sync_engine::{PullResult, PullTransport};
/// use sync_protocol::PullRequest;
///
/// struct Offline;
/// impl PullTransport for Offline {
///     fn pull(&self, _request: &PullRequest) -> PullResult {
///         PullResult::Unanswered { error: "network offline".into() }
///     }
/// }
/// assert!(matches!(Offline.pull(&PullRequest::default()), PullResult::Unanswered { .. }));
/// ```
pub trait PullTransport: Send + Sync {
    /// One pull request: the page after `request.cursor`.
    fn pull(&self, request: &PullRequest) -> PullResult;
}

/// The async [`PullTransport`] (feature `tokio`): `AsyncHttpTransport`
/// implements it.
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
#[async_trait::async_trait]
pub trait AsyncPullTransport: Send + Sync {
    /// One pull request: the page after `request.cursor`.
    async fn pull(&self, request: &PullRequest) -> PullResult;
}

/// Settings of the download half.
#[derive(Clone, Debug, PartialEq)]
pub struct DownloadConfig {
    /// Most changes asked for per pull. Default 500
    /// (`sync_protocol::DEFAULT_PULL_LIMIT`).
    pub page_limit: u32,
    /// A running engine pulls at least this often, besides after its queue
    /// drains, on `sync_now` and when the network comes back. Default 30 s;
    /// `Duration::ZERO`: only on those events.
    pub interval: Duration,
    /// The backoff after a failed pull (its `max_attempts` is not used: a
    /// download never gives up). Default: 1 s doubling to 5 minutes.
    pub retry: RetryPolicy,
    /// Most pages one run applies before it yields (the rest follow at
    /// once). Default 100.
    pub max_pages_per_run: usize,
}

impl Default for DownloadConfig {
    fn default() -> Self {
        Self {
            page_limit: sync_protocol::DEFAULT_PULL_LIMIT,
            interval: Duration::from_secs(30),
            retry: RetryPolicy {
                base_delay: Duration::from_secs(1),
                max_delay: Duration::from_secs(300),
                ..RetryPolicy::default()
            },
            max_pages_per_run: 100,
        }
    }
}

/// What one run of pulls did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PullReport {
    /// Pages applied.
    pub pages: usize,
    /// Changes applied (released ones included).
    pub applied: usize,
    /// Of those, changes that had been held.
    pub released: usize,
    /// Changes held after the run.
    pub held: usize,
    /// Cursors the server refused, each followed by a new snapshot (a new
    /// device's first snapshot is not one).
    pub restarts: usize,
    /// The `covers_below` reached.
    pub covers_below: i64,
    /// Whether the run reached the end of the feed (`more: false`).
    pub caught_up: bool,
}

impl PullReport {
    fn add(&mut self, committed: &Committed) {
        self.pages += 1;
        self.applied += committed.applied;
        self.released += committed.released;
        self.held = committed.held;
        self.covers_below = committed.covers_below;
    }
}

/// Where an operation's effect is, for [`Downloader::wait_reflected`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reflection {
    /// The server has it, the device has pulled past it, and no pulled
    /// change of its entity is still held: downloaded data shows the
    /// server's version of it (or it changed nothing the feed carries).
    /// A later unreflected edit of the same entity keeps it `Pending`: the
    /// device shows that edit, not the server's version.
    Visible,
    /// It is a dead letter: it will not be reflected until it is retried or
    /// corrected.
    Failed {
        /// Its `last_error`.
        error: String,
    },
    /// No such operation (discarded, or purged).
    Unknown,
    /// Not yet when the wait ended.
    Pending,
}

/// Wakes waiters on reflections (and the download loop) when the download
/// state or the outbox changes.
#[derive(Debug, Default)]
pub(crate) struct Reflections {
    pub(crate) wakeup: Arc<Wakeup>,
    #[cfg(feature = "tokio")]
    pub(crate) watch: Mutex<Option<tokio::sync::watch::Sender<u64>>>,
}

impl Reflections {
    pub(crate) fn notify(&self) {
        self.wakeup.notify();
        #[cfg(feature = "tokio")]
        if let Some(watch) = &*self.watch.lock().unwrap_or_else(PoisonError::into_inner) {
            watch.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.watch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(|| tokio::sync::watch::channel(0).0)
            .subscribe()
    }
}

/// Follows the server's change feed into a [`DownloadTarget`]: pulls page
/// after page until caught up, each applied and stored as the target
/// promises (with the SQLite store, the page, the app's rows and the cursor
/// in one transaction), holding the changes of entities that have local
/// operations the server has not reflected yet
/// (`sync_outbox::download`'s rule). A [`SyncEngine`](crate::SyncEngine) or
/// `AsyncSyncEngine` given one pulls as well as pushes; it can also be
/// driven by hand ([`pull`](Self::pull), [`release`](Self::release)).
///
/// A page that does not follow (versions out of order, a cursor gone
/// backwards, a malformed answer) is refused whole: a typed error, the
/// cursor unchanged, nothing applied. A cursor the server refuses starts a
/// snapshot on its own.
///
/// # Examples
///
/// ```
/// use std::collections::HashSet;
/// use std::sync::Arc;
/// use sync_engine::{DownloadConfig, Downloader, PullResult, PullTransport};
/// use sync_outbox::download::{AppDownload, ApplyChanges, MemoryDownloadState};
/// use sync_outbox::{MemoryOutboxStore, Outbox, OutboxConfig};
/// use sync_protocol::{Change, PullRequest, PullResponse};
///
/// struct OnePage;
/// impl PullTransport for OnePage {
///     fn pull(&self, _request: &PullRequest) -> PullResult {
///         PullResult::Page(PullResponse { changes: Vec::new(), cursor: "c1".into(), more: false,
///                                         covers_below: 1, snapshot: true })
///     }
/// }
/// #[derive(Default)]
/// struct Nothing;
/// type Error = Box<dyn std::error::Error + Send + Sync>;
/// impl ApplyChanges for Nothing {
///     fn upsert(&mut self, _: &Change, _: &serde_json::Value) -> Result<(), Error> { Ok(()) }
///     fn delete(&mut self, _: &Change) -> Result<(), Error> { Ok(()) }
///     fn reset(&mut self, _: &HashSet<String>) -> Result<(), Error> { Ok(()) }
///     fn forget(&mut self, _: &str) -> Result<(), Error> { Ok(()) }
/// }
///
/// let outbox = Arc::new(Outbox::new(OutboxConfig::default(), Arc::new(MemoryOutboxStore::new())));
/// let target = Arc::new(AppDownload::new(outbox.clone(), Nothing, Arc::new(MemoryDownloadState::default())));
/// let downloader = Downloader::new(DownloadConfig::default(), outbox, Arc::new(OnePage), target);
/// let report = downloader.pull()?;
/// assert!(report.caught_up && report.restarts == 0);
/// # Ok::<_, sync_engine::EngineError>(())
/// ```
pub struct Downloader {
    config: DownloadConfig,
    outbox: Arc<Outbox>,
    transport: Arc<dyn PullTransport>,
    target: Arc<dyn DownloadTarget>,
    reflections: Arc<Reflections>,
    /// One run at a time.
    running: Mutex<()>,
}

impl std::fmt::Debug for Downloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Downloader")
            .field("config", &self.config)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Downloader {
    /// Follows `transport`'s feed into `target`; `outbox` is the device's
    /// outbox (the rule reads its operations, and a waiter is woken when
    /// one changes).
    pub fn new(
        config: DownloadConfig,
        outbox: Arc<Outbox>,
        transport: Arc<dyn PullTransport>,
        target: Arc<dyn DownloadTarget>,
    ) -> Self {
        let reflections = Arc::new(Reflections::default());
        let on_change = Arc::clone(&reflections);
        outbox.on_change(move || on_change.notify());
        Self {
            config,
            outbox,
            transport,
            target,
            reflections,
            running: Mutex::new(()),
        }
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &DownloadConfig {
        &self.config
    }

    /// The target pages go to.
    #[must_use]
    pub fn target(&self) -> &Arc<dyn DownloadTarget> {
        &self.target
    }

    pub(crate) fn reflections(&self) -> &Arc<Reflections> {
        &self.reflections
    }

    /// Pulls until caught up (or `max_pages_per_run` pages): each page
    /// applied and stored before the next is asked for; released held
    /// changes go with it. Blocks on the network and the store.
    ///
    /// # Errors
    ///
    /// [`EngineError::Pull`] when a pull fails or gets no answer (pages
    /// applied before it stay applied); [`EngineError::OutboxStep`] with
    /// [`SyncStep::ApplyPage`] for a page refused
    /// ([`OutboxError::BadPage`](sync_outbox::OutboxError::BadPage): nothing
    /// of it applied, the cursor unchanged) or an app or store failure.
    pub fn pull(&self) -> Result<PullReport, EngineError> {
        let _one = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let mut run = Run::default();
        while run.report.pages < self.config.max_pages_per_run.max(1) {
            let state = self
                .target
                .state()
                .map_err(|e| step(SyncStep::ReadDownloadState, e))?;
            let request = PullRequest {
                cursor: state.cursor,
                limit: Some(self.config.page_limit),
                scopes: Vec::new(),
            };
            let result = self.transport.pull(&request);
            if run.handle(result, &*self.target, &self.reflections)? {
                break;
            }
        }
        Ok(run.report)
    }

    /// Applies the held changes whose operations are reflected now (after a
    /// push, a discard). The engine calls it when the outbox changes.
    ///
    /// # Errors
    ///
    /// [`EngineError::OutboxStep`] with [`SyncStep::ReleaseHeld`].
    pub fn release(&self) -> Result<Committed, EngineError> {
        let _one = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let committed = self
            .target
            .release()
            .map_err(|e| step(SyncStep::ReleaseHeld, e))?;
        if committed.applied > 0 {
            self.reflections.notify();
        }
        Ok(committed)
    }

    /// Where operation `id`'s effect is now: visible in downloaded data, a
    /// dead letter, unknown, or not yet.
    ///
    /// # Errors
    ///
    /// [`EngineError::OutboxStep`] if the outbox or the download state
    /// cannot be read.
    pub fn reflection(&self, id: &str) -> Result<Reflection, EngineError> {
        let op = self
            .outbox
            .store()
            .get(id)
            .map_err(|e| step(SyncStep::ReadDownloadState, e))?;
        let state = self
            .target
            .state()
            .map_err(|e| step(SyncStep::ReadDownloadState, e))?;
        Ok(reflection_of(op.as_ref(), &state))
    }

    /// Blocks until operation `id`'s effect is visible in downloaded data
    /// ("saved, and you now see the server's version"), it fails, it is
    /// discarded, or `timeout` passes; returns which. Wakes on every change
    /// of the outbox and every page applied, without polling. Someone must
    /// be pulling meanwhile (a running engine, or [`pull`](Self::pull) on
    /// another thread).
    ///
    /// # Errors
    ///
    /// As [`reflection`](Self::reflection).
    pub fn wait_reflected(&self, id: &str, timeout: Duration) -> Result<Reflection, EngineError> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.reflections.wakeup.generation();
            let now = self.reflection(id)?;
            let left = deadline.saturating_duration_since(Instant::now());
            if now != Reflection::Pending || left.is_zero() {
                return Ok(now);
            }
            self.reflections.wakeup.wait(seen, Some(left));
        }
    }
}

/// Where `op`'s effect is in `state`. Reflected is not yet visible while
/// a pulled change of its entity is still held: the data shows the device's
/// own edit until that change is released (at the next outbox change or
/// page; later unreflected operations of the same key keep it held).
pub(crate) fn reflection_of(op: Option<&Operation>, state: &DownloadState) -> Reflection {
    match op {
        None => Reflection::Unknown,
        Some(op) => match op.status {
            OperationStatus::Failed => Reflection::Failed {
                error: op.last_error.clone(),
            },
            OperationStatus::Done
                if !sync_outbox::download::is_unreflected(op, state.covers_below)
                    && !state
                        .held
                        .iter()
                        .any(|h| op.ordering_key.as_deref() == Some(h.ordering_key.as_str())) =>
            {
                Reflection::Visible
            }
            _ => Reflection::Pending,
        },
    }
}

/// One run's progress, shared by the blocking and the async loop.
#[derive(Debug, Default)]
pub(crate) struct Run {
    pub(crate) report: PullReport,
}

impl Run {
    /// Handles one pull's result (blocking on the target); `true` when the
    /// run is over (caught up).
    pub(crate) fn handle(
        &mut self,
        result: PullResult,
        target: &dyn DownloadTarget,
        reflections: &Reflections,
    ) -> Result<bool, EngineError> {
        match result {
            PullResult::Page(page) => {
                let committed = target
                    .commit_page(&page)
                    .map_err(|e| step(SyncStep::ApplyPage, e))?;
                self.report.add(&committed);
                reflections.notify();
                if page.more {
                    Ok(false)
                } else {
                    self.report.caught_up = true;
                    Ok(true)
                }
            }
            PullResult::Restart { reason } => {
                // A third refusal in one run: the server refuses even fresh
                // starts. (The second may be honest: compaction passing a
                // snapshot between two of its pages.)
                if self.report.restarts >= 2 {
                    return Err(EngineError::Pull {
                        error: format!("the server refused a new snapshot too: {reason}"),
                        retry_after_ms: None,
                        answered: true,
                    });
                }
                self.report.restarts += 1;
                target
                    .restart()
                    .map_err(|e| step(SyncStep::RestartDownload, e))?;
                Ok(false)
            }
            PullResult::Failed {
                error,
                retry_after_ms,
            } => Err(EngineError::Pull {
                error,
                retry_after_ms,
                answered: true,
            }),
            PullResult::Unanswered { error } => Err(EngineError::Pull {
                error,
                retry_after_ms: None,
                answered: false,
            }),
        }
    }
}

fn step(step: SyncStep, source: sync_outbox::OutboxError) -> EngineError {
    EngineError::OutboxStep {
        step,
        id: None,
        source,
    }
}

/// What asks a running engine's download loop to act: set by listeners
/// (the outbox changed, the network came back) and by `sync_now`, taken by
/// the loop.
#[derive(Debug, Default)]
pub(crate) struct Triggers {
    /// Pull now (`sync_now`, a reconnect, a drained queue).
    pub(crate) pull: std::sync::atomic::AtomicBool,
    /// The outbox changed: release held changes, and see whether the queue
    /// drained.
    pub(crate) changed: std::sync::atomic::AtomicBool,
}

/// When a running engine pulls: the same rules for the threaded and the
/// async loop. Times in the engine clock's ms.
#[derive(Debug)]
pub(crate) struct PullSchedule {
    interval_ms: i64,
    retry: RetryPolicy,
    /// The next pull by the interval; `None`: only on events.
    next_at: Option<i64>,
    /// After a failure, no pull before this.
    backoff_until: i64,
    failures: u32,
    /// A pull is wanted as soon as allowed.
    due: bool,
    /// Operations not yet sent when last looked: the queue drained when it
    /// falls to 0.
    last_unsent: usize,
}

impl PullSchedule {
    /// A schedule that pulls at once (a started engine catches up first).
    pub(crate) fn new(config: &DownloadConfig) -> Self {
        Self {
            interval_ms: crate::probe::millis(config.interval),
            retry: config.retry.clone(),
            next_at: None,
            backoff_until: i64::MIN,
            failures: 0,
            due: true,
            last_unsent: 0,
        }
    }

    /// Takes the triggers' requests.
    pub(crate) fn take(&mut self, triggers: &Triggers) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        self.due |= triggers.pull.swap(false, SeqCst);
        triggers.changed.swap(false, SeqCst)
    }

    /// The outbox changed and now has `unsent` operations not yet sent: a
    /// queue that drained asks for a pull (the server has every edit now).
    pub(crate) fn outbox_changed(&mut self, unsent: usize) {
        if unsent == 0 && self.last_unsent > 0 {
            self.due = true;
        }
        self.last_unsent = unsent;
    }

    /// Whether to pull at `now`.
    pub(crate) fn should_pull(&self, now: i64) -> bool {
        now >= self.backoff_until && (self.due || self.next_at.is_some_and(|at| now >= at))
    }

    /// Notes a pull's outcome at `now`.
    pub(crate) fn pulled(&mut self, now: i64, outcome: Result<&PullReport, &EngineError>) {
        match outcome {
            Ok(report) => {
                self.failures = 0;
                self.backoff_until = i64::MIN;
                // Not caught up (the run's page bound): go on at once.
                self.due = !report.caught_up;
            }
            Err(error) => {
                self.failures = self.failures.saturating_add(1);
                let hint = match error {
                    EngineError::Pull {
                        retry_after_ms: Some(ms),
                        ..
                    } => *ms,
                    _ => 0,
                };
                let delay = self
                    .retry
                    .delay_ms("pull", self.failures)
                    .max(hint.clamp(0, self.retry.max_delay_in_ms()));
                self.backoff_until = now.saturating_add(delay);
                // Still wanted: after the backoff.
                self.due = true;
            }
        }
        self.next_at = (self.interval_ms > 0).then(|| now.saturating_add(self.interval_ms));
    }

    /// When to look again at the latest, if nothing wakes the loop sooner.
    pub(crate) fn next_wake(&self) -> Option<i64> {
        let retry = self.due.then_some(self.backoff_until);
        match (retry, self.next_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// [`Downloader`] for tokio apps (feature `tokio`): the same rule and
/// target, pulls through an [`AsyncPullTransport`], and every store call
/// (the target's state, applying a page, releasing) on the blocking pool,
/// never on a runtime worker. An `AsyncSyncEngine` given one
/// (`AsyncSyncEngine::set_download`) pulls as well as pushes.
///
/// # Examples
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
/// use std::collections::HashSet;
/// use std::sync::Arc;
/// use sync_engine::{AsyncDownloader, AsyncPullTransport, DownloadConfig, PullResult, Reflection};
/// use sync_outbox::download::{AppDownload, ApplyChanges, MemoryDownloadState};
/// use sync_outbox::{MemoryOutboxStore, Outbox, OutboxConfig};
/// use sync_protocol::{Change, PullRequest, PullResponse};
///
/// struct OnePage;
/// #[sync_engine::async_trait]
/// impl AsyncPullTransport for OnePage {
///     async fn pull(&self, _request: &PullRequest) -> PullResult {
///         PullResult::Page(PullResponse { changes: Vec::new(), cursor: "c1".into(), more: false,
///                                         covers_below: 1, snapshot: true })
///     }
/// }
/// struct Nothing;
/// type Error = Box<dyn std::error::Error + Send + Sync>;
/// impl ApplyChanges for Nothing {
///     fn upsert(&mut self, _: &Change, _: &serde_json::Value) -> Result<(), Error> { Ok(()) }
///     fn delete(&mut self, _: &Change) -> Result<(), Error> { Ok(()) }
///     fn reset(&mut self, _: &HashSet<String>) -> Result<(), Error> { Ok(()) }
///     fn forget(&mut self, _: &str) -> Result<(), Error> { Ok(()) }
/// }
///
/// let outbox = Arc::new(Outbox::new(OutboxConfig::default(), Arc::new(MemoryOutboxStore::new())));
/// let target = Arc::new(AppDownload::new(outbox.clone(), Nothing, Arc::new(MemoryDownloadState::default())));
/// let downloader = AsyncDownloader::new(DownloadConfig::default(), outbox, Arc::new(OnePage), target);
/// assert!(downloader.pull().await?.caught_up);
/// assert_eq!(downloader.reflection("no-such-op").await?, Reflection::Unknown);
/// # Ok::<_, sync_engine::EngineError>(())
/// # })?;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub struct AsyncDownloader {
    config: DownloadConfig,
    outbox: Arc<Outbox>,
    transport: Arc<dyn AsyncPullTransport>,
    target: Arc<dyn DownloadTarget>,
    reflections: Arc<Reflections>,
    running: tokio::sync::Mutex<()>,
}

#[cfg(feature = "tokio")]
impl std::fmt::Debug for AsyncDownloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncDownloader")
            .field("config", &self.config)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "tokio")]
impl AsyncDownloader {
    /// Follows `transport`'s feed into `target`; `outbox` is the device's
    /// outbox.
    pub fn new(
        config: DownloadConfig,
        outbox: Arc<Outbox>,
        transport: Arc<dyn AsyncPullTransport>,
        target: Arc<dyn DownloadTarget>,
    ) -> Self {
        let reflections = Arc::new(Reflections::default());
        let on_change = Arc::clone(&reflections);
        outbox.on_change(move || on_change.notify());
        Self {
            config,
            outbox,
            transport,
            target,
            reflections,
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &DownloadConfig {
        &self.config
    }

    /// The target pages go to. Its calls block (they read and write the
    /// store): from async code, use [`state`](Self::state).
    #[must_use]
    pub fn target(&self) -> &Arc<dyn DownloadTarget> {
        &self.target
    }

    /// The stored download state (cursor, `covers_below`, held changes,
    /// whether a snapshot is under way), read on the blocking pool.
    ///
    /// # Errors
    ///
    /// [`EngineError::OutboxStep`] at [`SyncStep::ReadDownloadState`].
    pub async fn state(&self) -> Result<DownloadState, EngineError> {
        let target = Arc::clone(&self.target);
        crate::async_outbox::run_blocking(move || target.state())
            .await
            .map_err(|e| step(SyncStep::ReadDownloadState, e))
    }

    pub(crate) fn reflections(&self) -> &Arc<Reflections> {
        &self.reflections
    }

    /// [`Downloader::pull`], with the store calls on the blocking pool.
    ///
    /// # Errors
    ///
    /// As [`Downloader::pull`].
    pub async fn pull(&self) -> Result<PullReport, EngineError> {
        let _one = self.running.lock().await;
        let mut run = Run::default();
        while run.report.pages < self.config.max_pages_per_run.max(1) {
            let target = Arc::clone(&self.target);
            let state = crate::async_outbox::run_blocking(move || target.state())
                .await
                .map_err(|e| step(SyncStep::ReadDownloadState, e))?;
            let request = PullRequest {
                cursor: state.cursor,
                limit: Some(self.config.page_limit),
                scopes: Vec::new(),
            };
            let result = self.transport.pull(&request).await;
            let (target, reflections) = (Arc::clone(&self.target), Arc::clone(&self.reflections));
            let (back, done) = crate::async_outbox::run_blocking(move || {
                let done = run.handle(result, &*target, &reflections);
                (run, done)
            })
            .await;
            run = back;
            if done? {
                break;
            }
        }
        Ok(run.report)
    }

    /// [`Downloader::release`], on the blocking pool.
    ///
    /// # Errors
    ///
    /// As [`Downloader::release`].
    pub async fn release(&self) -> Result<Committed, EngineError> {
        let _one = self.running.lock().await;
        let (target, reflections) = (Arc::clone(&self.target), Arc::clone(&self.reflections));
        crate::async_outbox::run_blocking(move || {
            let committed = target
                .release()
                .map_err(|e| step(SyncStep::ReleaseHeld, e))?;
            if committed.applied > 0 {
                reflections.notify();
            }
            Ok(committed)
        })
        .await
    }

    /// [`Downloader::reflection`], on the blocking pool.
    ///
    /// # Errors
    ///
    /// As [`Downloader::reflection`].
    pub async fn reflection(&self, id: &str) -> Result<Reflection, EngineError> {
        let (outbox, target, id) = (
            Arc::clone(&self.outbox),
            Arc::clone(&self.target),
            id.to_owned(),
        );
        crate::async_outbox::run_blocking(move || {
            let op = outbox
                .store()
                .get(&id)
                .map_err(|e| step(SyncStep::ReadDownloadState, e))?;
            let state = target
                .state()
                .map_err(|e| step(SyncStep::ReadDownloadState, e))?;
            Ok(reflection_of(op.as_ref(), &state))
        })
        .await
    }

    /// Waits until operation `id`'s effect is visible in downloaded data, it
    /// fails, or it is discarded; returns which (never
    /// [`Reflection::Pending`]). Wakes on every change of the outbox and
    /// every page applied, without polling; bound it with
    /// `tokio::time::timeout`. Someone must be pulling meanwhile.
    ///
    /// # Errors
    ///
    /// As [`Downloader::reflection`].
    pub async fn wait_reflected(&self, id: &str) -> Result<Reflection, EngineError> {
        let mut changes = self.reflections.subscribe();
        loop {
            changes.borrow_and_update();
            let now = self.reflection(id).await?;
            if now != Reflection::Pending {
                return Ok(now);
            }
            if changes.changed().await.is_err() {
                return Ok(Reflection::Pending);
            }
        }
    }
}
