//! [`SyncEngine`]: `worker_count` background senders that sleep until there
//! is something to do, instead of polling.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use sync_outbox::Outbox;

use crate::clock::{Clock, Wakeup};
use crate::download::{Downloader, PullSchedule, Reflection, Triggers};
use crate::drain::DrainReport;
use crate::error::{EngineError, LastError, SyncStep};
use crate::observer::SyncObserver;
use crate::probe::NetworkProbe;
use crate::schedule::{ERROR_BACKOFF_MS, next_wake_at};
use crate::transport::SyncTransport;
use crate::worker::{SyncWorker, SyncWorkerConfig, WorkerStats};
use crate::worker_core::step_error;

/// Settings of a [`SyncEngine`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncEngineConfig {
    /// Senders running concurrently (threads under [`SyncEngine::start`]).
    /// Default 1.
    pub worker_count: usize,
    /// Most operations each sender claims per pass. Default 10.
    pub batch_limit: usize,
    /// While detached claims are in flight (`Claim::detach`, made by code
    /// outside the engine; no live sender holds them), a sleeping sender
    /// looks again at least this often, besides at their own expiry, so
    /// they are put back once the outbox's `inflight_timeout` has passed.
    /// The engine's own claims are held and never need it. Default 10 s.
    pub detached_claim_recheck: Duration,
    /// The old name of
    /// [`detached_claim_recheck`](Self::detached_claim_recheck), in ms; the
    /// engine uses the shorter of the two. Default 10,000.
    #[deprecated(
        since = "0.1.0",
        note = "use `detached_claim_recheck: Duration` (it is not a timeout; `OutboxConfig::inflight_timeout` is)"
    )]
    pub inflight_timeout_ms: i64,
}

impl SyncEngineConfig {
    /// How often a sleeping sender looks at detached claims: the shorter of
    /// the setting and its deprecated old name, at least 1 ms.
    pub(crate) fn recheck_ms(&self) -> i64 {
        #[expect(deprecated, reason = "the old name is honoured for one release")]
        let old = self.inflight_timeout_ms;
        crate::probe::millis(self.detached_claim_recheck)
            .min(old)
            .max(1)
    }
}

impl Default for SyncEngineConfig {
    #[expect(deprecated, reason = "the old name keeps its default for one release")]
    fn default() -> Self {
        Self {
            worker_count: 1,
            batch_limit: 10,
            detached_claim_recheck: Duration::from_secs(10),
            inflight_timeout_ms: 10_000,
        }
    }
}

/// Runs [`SyncWorker`]s: one deterministic pass with [`tick`](Self::tick), or
/// in the background with [`start`](Self::start).
///
/// In the background each sender sleeps until the earliest of: the next
/// operation's `next_retry_at_ms`, the probe's next check while offline, the
/// expiry of a claim no sender holds; and wakes at once on every outbox change
/// that can make work claimable (`Outbox::on_claimable`: an enqueue,
/// `retry_failed`, a discard or completion that unblocks a key, orphaned
/// claims, ...), when the probe flips online, when another sender finished a
/// batch, on [`wake`](Self::wake), [`sync_now`](Self::sync_now) and
/// [`stop`](Self::stop). An idle engine uses no CPU.
///
/// # Claims
///
/// Each pass claims a batch with `Outbox::claim` and holds it until every
/// result is recorded: however long the batch takes to send, no other sender
/// can take its operations, so no operation is sent twice at once and
/// per-key order holds. A hung send is bounded by the transport's own
/// timeout, not by the outbox's `inflight_timeout_ms`. Operations left
/// `InFlight` by a crashed process are sent again as soon as the engine
/// starts (the store's exclusive lock proves their sender gone).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use sync::prelude::*;
///
/// struct AlwaysOk;
/// impl SyncTransport for AlwaysOk {
///     fn send(&self, _op: &Operation) -> SendResult {
///         SendResult::ok()
///     }
/// }
///
/// let store = Arc::new(MemoryOutboxStore::new());
/// let outbox = Arc::new(Outbox::new(OutboxConfig::default(), store.clone()));
/// let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
/// let engine = SyncEngine::new(SyncEngineConfig { worker_count: 2, ..SyncEngineConfig::default() },
///                              outbox.clone(), probe, Arc::new(AlwaysOk));
/// engine.start(SystemClock)?;
/// let id = outbox.enqueue(Operation::new("message.send", "/api/messages", "{}"), SystemClock.now_ms())?;
/// while store.get(&id)?.map(|op| op.status) != Some(OperationStatus::Done) {
///     std::thread::yield_now();
/// }
/// engine.stop()?;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[must_use = "an engine sends nothing until it is started (`start`, or build it with `SyncEngine::started`)"]
pub struct SyncEngine {
    config: SyncEngineConfig,
    workers: Vec<Arc<SyncWorker>>,
    outbox: Arc<Outbox>,
    probe: Arc<NetworkProbe>,
    wakeup: Arc<Wakeup>,
    stopping: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    last_error: Arc<LastError>,
    observer: std::sync::OnceLock<Arc<dyn SyncObserver>>,
    download: std::sync::OnceLock<Arc<Downloader>>,
    triggers: Arc<Triggers>,
}

impl std::fmt::Debug for SyncEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncEngine")
            .field("config", &self.config)
            .field("running", &self.running())
            .finish_non_exhaustive()
    }
}

impl SyncEngine {
    /// An engine of `config.worker_count` workers over one outbox, probe and
    /// transport. Registers wake-ups on the outbox (`on_claimable`) and the
    /// probe (`on_reconnect`).
    #[expect(
        clippy::needless_pass_by_value,
        reason = "takes its Arcs like SyncWorker::new; each worker gets a clone"
    )]
    pub fn new(
        config: SyncEngineConfig,
        outbox: Arc<Outbox>,
        probe: Arc<NetworkProbe>,
        transport: Arc<dyn SyncTransport>,
    ) -> Self {
        let worker_config = SyncWorkerConfig {
            batch_limit: config.batch_limit,
        };
        let drain_requested = Arc::new(AtomicBool::new(false));
        let workers = (0..config.worker_count.max(1))
            .map(|_| {
                Arc::new(
                    SyncWorker::new(
                        worker_config.clone(),
                        Arc::clone(&outbox),
                        Arc::clone(&probe),
                        Arc::clone(&transport),
                    )
                    .with_drain_flag(Arc::clone(&drain_requested)),
                )
            })
            .collect();
        let wakeup = Arc::new(Wakeup::default());
        let on_claimable = Arc::clone(&wakeup);
        outbox.on_claimable(move || on_claimable.notify());
        let on_reconnect = Arc::clone(&wakeup);
        probe.on_reconnect(move || on_reconnect.notify());
        Self {
            config,
            workers,
            outbox,
            probe,
            wakeup,
            stopping: Arc::new(AtomicBool::new(false)),
            threads: Mutex::new(Vec::new()),
            last_error: Arc::new(LastError::default()),
            observer: std::sync::OnceLock::new(),
            download: std::sync::OnceLock::new(),
            triggers: Arc::new(Triggers::default()),
        }
    }

    /// Gives the engine its download half, once, before
    /// [`start`](Self::start); returns `false` (and changes nothing) if it
    /// has one already or is started: the pull thread starts with the
    /// engine. A
    /// started engine then also pulls the server's change feed into the
    /// downloader's target, on one more thread: at start, after its queue
    /// drains, on [`sync_now`](Self::sync_now), when the network comes
    /// back, every `DownloadConfig::interval`, and again after a backoff
    /// when a pull fails; held changes are released as soon as the outbox
    /// says their operations are reflected. Observers see both directions
    /// (`SyncObserver::on_pull`).
    pub fn set_download(&self, downloader: Arc<Downloader>) -> bool {
        let started = !self
            .threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty();
        if started || self.download.get().is_some() {
            return false;
        }
        // The flag, then the wake-up: the downloader's own listener may run
        // first and wake the puller before the flag is set, which would
        // then sleep through this change (and miss a drained queue).
        let changed = Arc::clone(&self.triggers);
        let reflections = Arc::clone(downloader.reflections());
        self.outbox.on_change(move || {
            changed
                .changed
                .store(true, std::sync::atomic::Ordering::SeqCst);
            reflections.notify();
        });
        let reconnect = Arc::clone(&self.triggers);
        let wake = Arc::clone(&downloader.reflections().wakeup);
        self.probe.on_reconnect(move || {
            reconnect
                .pull
                .store(true, std::sync::atomic::Ordering::SeqCst);
            wake.notify();
        });
        self.download.set(downloader).is_ok()
    }

    /// The download half, if [`set_download`](Self::set_download) gave one.
    #[must_use]
    pub fn download(&self) -> Option<&Arc<Downloader>> {
        self.download.get()
    }

    /// Blocks until operation `id`'s effect is visible in downloaded data
    /// ("saved, and you now see the server's version"), it fails, it is
    /// discarded, or `timeout` passes (see [`Downloader::wait_reflected`]).
    ///
    /// # Errors
    ///
    /// [`EngineError::NoDownload`] without a download half; as
    /// [`Downloader::wait_reflected`].
    pub fn wait_reflected(&self, id: &str, timeout: Duration) -> Result<Reflection, EngineError> {
        self.download
            .get()
            .ok_or(EngineError::NoDownload)?
            .wait_reflected(id, timeout)
    }

    /// An engine already sending in the background on `clock`:
    /// [`new`](Self::new) and [`start`](Self::start) in one call, so it
    /// cannot be forgotten.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub fn started(
        config: SyncEngineConfig,
        outbox: Arc<Outbox>,
        probe: Arc<NetworkProbe>,
        transport: Arc<dyn SyncTransport>,
        clock: impl Clock,
    ) -> Result<Self, EngineError> {
        let engine = Self::new(config, outbox, probe, transport);
        engine.start(clock)?;
        Ok(engine)
    }

    /// Installs `observer` on the engine and every worker, once; returns
    /// `false` if one was installed already.
    pub fn set_observer(&self, observer: Arc<dyn SyncObserver>) -> bool {
        if self.observer.get().is_some() {
            return false;
        }
        for worker in &self.workers {
            worker.set_observer(Arc::clone(&observer));
        }
        self.observer.set(observer).is_ok()
    }

    /// One deterministic pass: every worker ticks once at `now_ms`, in turn.
    /// Returns how many operations were sent.
    ///
    /// # Errors
    ///
    /// The first worker error (see [`SyncWorker::tick`]); later workers still run.
    pub fn tick(&self, now_ms: i64) -> Result<usize, EngineError> {
        let mut sent = 0;
        let mut first_error = None;
        for worker in &self.workers {
            match worker.tick(now_ms) {
                Ok(n) => sent += n,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(sent), Err)
    }

    /// Starts `worker_count` background threads on `clock`. First runs
    /// [`Outbox::recover`] at the clock's time: operations a crashed process
    /// left `InFlight` are due at once.
    ///
    /// # Errors
    ///
    /// [`EngineError::OutboxStep`] if recovery fails; [`EngineError::AlreadyRunning`]
    /// if started twice; [`EngineError::Spawn`] if a thread cannot start (the
    /// ones started are stopped again).
    pub fn start(&self, clock: impl Clock) -> Result<(), EngineError> {
        let mut threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
        if !threads.is_empty() {
            return Err(EngineError::AlreadyRunning);
        }
        let report = self
            .outbox
            .recover(clock.now_ms())
            .map_err(|e| step_error(SyncStep::Recover, None, e))?;
        if let Some(observer) = self.observer.get() {
            observer.on_recovered(&report);
        }
        self.stopping.store(false, Ordering::SeqCst);
        let clock = Arc::new(clock);
        for (index, worker) in self.workers.iter().enumerate() {
            let sender = Sender {
                worker: Arc::clone(worker),
                outbox: Arc::clone(&self.outbox),
                probe: Arc::clone(&self.probe),
                wakeup: Arc::clone(&self.wakeup),
                stopping: Arc::clone(&self.stopping),
                last_error: Arc::clone(&self.last_error),
                inflight_recheck_ms: self.config.recheck_ms(),
            };
            let clock = Arc::clone(&clock);
            let spawned = std::thread::Builder::new()
                .name(format!("sync-engine-{index}"))
                .spawn(move || sender.run(&*clock));
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    drop(threads);
                    self.stop()?;
                    return Err(EngineError::Spawn(e));
                }
            }
        }
        if let Some(downloader) = self.download.get() {
            // Count the queue before the first pull: a queue that drains
            // later asks for a pull, and one that drained already is covered
            // by the pull at start. (Counted from 0, a queue sent before the
            // puller first looked would never be seen draining.)
            self.triggers
                .changed
                .store(true, std::sync::atomic::Ordering::SeqCst);
            let puller = Puller {
                schedule: PullSchedule::new(downloader.config()),
                downloader: Arc::clone(downloader),
                outbox: Arc::clone(&self.outbox),
                probe: Arc::clone(&self.probe),
                triggers: Arc::clone(&self.triggers),
                stopping: Arc::clone(&self.stopping),
                last_error: Arc::clone(&self.last_error),
                observer: self.observer.get().cloned(),
            };
            let spawned = std::thread::Builder::new()
                .name("sync-engine-pull".to_owned())
                .spawn(move || puller.run(&*clock));
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    drop(threads);
                    self.stop()?;
                    return Err(EngineError::Spawn(e));
                }
            }
        }
        Ok(())
    }

    /// Whether background threads are running.
    #[must_use]
    pub fn running(&self) -> bool {
        !self
            .threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Stops the background threads: each finishes the send it is in, records
    /// it, and exits; returns after all have joined.
    ///
    /// # Errors
    ///
    /// [`EngineError::SenderPanicked`] if a thread died of a panic outside
    /// the transport (which the worker catches).
    pub fn stop(&self) -> Result<(), EngineError> {
        self.stopping.store(true, Ordering::SeqCst);
        self.wakeup.notify();
        if let Some(downloader) = self.download.get() {
            downloader.reflections().wakeup.notify();
        }
        let threads =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        let mut panicked = false;
        for handle in threads {
            panicked |= handle.join().is_err();
        }
        if panicked {
            Err(EngineError::SenderPanicked)
        } else {
            Ok(())
        }
    }

    /// Wakes every sleeping sender to look for work now. The engine wakes
    /// itself on every outbox change it can see; this is for work that
    /// appears some other way (a store changed behind the outbox's back, an
    /// app-level event).
    pub fn wake(&self) {
        self.wakeup.notify();
    }

    /// Sends what it can within `within`, then reports what went and what
    /// is left: for the background time a mobile OS grants (iOS: call it
    /// from a background task with its ~25 s). Asks for a sync now
    /// (operations in backoff become due), then blocks on the outbox's
    /// counts, without polling, until nothing is left to send or `within`
    /// passes. Sends in flight at the deadline are not cut (a blocking
    /// request cannot be): they are reported as `in_flight`, finish if the
    /// process lives on, and are requeued at the next start if it does not.
    /// A retryable failure during the drain waits for its backoff. See
    /// [`DrainReport`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use sync_engine::*;
    /// use sync_outbox::{MemoryOutboxStore, Operation, Outbox, OutboxConfig};
    ///
    /// struct Server;
    /// impl SyncTransport for Server {
    ///     fn send(&self, _op: &Operation) -> SendResult { SendResult::ok() }
    /// }
    /// let outbox = Arc::new(Outbox::new(OutboxConfig::default(), Arc::new(MemoryOutboxStore::new())));
    /// let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    /// let engine = SyncEngine::started(SyncEngineConfig::default(), outbox.clone(), probe,
    ///     Arc::new(Server), SystemClock)?;
    /// outbox.enqueue(Operation::new("note.save", "/notes/1", "{}"), SystemClock.now_ms())?;
    /// let report = engine.drain(Duration::from_secs(25))?;
    /// assert!(report.complete && report.sent == 1 && report.left == 0);
    /// # engine.stop()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`EngineError::NotRunning`] if the engine is not started;
    /// [`EngineError::Outbox`] if the counts cannot be read.
    pub fn drain(&self, within: Duration) -> Result<DrainReport, EngineError> {
        let started = std::time::Instant::now();
        let deadline = started + within;
        if !self.running() {
            return Err(EngineError::NotRunning);
        }
        let mut watch = self.outbox.watch_stats()?;
        let before = watch.current();
        self.sync_now();
        // The signed-in account's: another account's queue waits for it.
        while self.outbox.unsent_of_account()? > 0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || watch.wait_changed_timeout(left).is_none() && watch.is_closed() {
                break;
            }
        }
        let after = self.outbox.stats()?;
        let mut report = DrainReport::between(&before, &after, started.elapsed());
        report.complete = self.outbox.unsent_of_account()? == 0;
        Ok(report)
    }

    /// The pull-to-refresh button: makes every operation waiting in backoff
    /// due now (attempts unchanged), asks the probe to check again, wakes
    /// the senders, and (with a download half) pulls now. Also takes effect on the next [`tick`](Self::tick)
    /// of an engine that is not started.
    pub fn sync_now(&self) {
        if let Some(worker) = self.workers.first() {
            worker.sync_now();
        }
        self.wake();
        if let Some(downloader) = self.download.get() {
            self.triggers.pull.store(true, Ordering::SeqCst);
            downloader.reflections().wakeup.notify();
        }
    }

    /// The last error a background sender met (it keeps running), if any,
    /// with its whole cause chain on one line ([`EngineError::report`]).
    #[must_use]
    pub fn last_error(&self) -> Option<String> {
        self.last_engine_error().map(|e| e.report())
    }

    /// The last error a background sender met, if any, as the error itself:
    /// match on it, or walk its [`source`](std::error::Error::source) chain.
    #[must_use]
    pub fn last_engine_error(&self) -> Option<Arc<EngineError>> {
        self.last_error.get()
    }

    /// The sum of all workers' counts.
    #[must_use]
    pub fn stats(&self) -> WorkerStats {
        self.workers.iter().map(|w| w.stats()).sum()
    }
}

impl Drop for SyncEngine {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// One background sender's loop.
struct Sender {
    worker: Arc<SyncWorker>,
    outbox: Arc<Outbox>,
    probe: Arc<NetworkProbe>,
    wakeup: Arc<Wakeup>,
    stopping: Arc<AtomicBool>,
    last_error: Arc<LastError>,
    inflight_recheck_ms: i64,
}

impl Sender {
    fn run(&self, clock: &dyn Clock) {
        loop {
            // Read the generation before looking for work *and* before the
            // stop check: a notification after this point (including the
            // one `stop` sends) makes the sleep below return at once. Read
            // after the stop check, a stop landing in between was lost and
            // the sender slept forever on a clock with no deadline.
            let seen = self.wakeup.generation();
            if self.stopping.load(Ordering::SeqCst) {
                break;
            }
            let now = clock.now_ms();
            let deadline = match self.worker.tick(now) {
                Ok(0) => next_wake_at(&self.outbox, &self.probe, now, self.inflight_recheck_ms),
                Ok(_) => {
                    // Keys this batch finished may unblock siblings' work.
                    self.wakeup.notify();
                    continue;
                }
                Err(e) => {
                    self.last_error.set(e);
                    Some(now + ERROR_BACKOFF_MS)
                }
            };
            clock.sleep_until(&self.wakeup, seen, deadline);
        }
    }
}

/// The download loop of a started engine with a download half: pulls when
/// [`PullSchedule`] says, releases held changes when the outbox changes, and
/// sleeps on the downloader's wake-up (every outbox change and page) the
/// rest of the time.
struct Puller {
    downloader: Arc<Downloader>,
    outbox: Arc<Outbox>,
    probe: Arc<NetworkProbe>,
    triggers: Arc<Triggers>,
    stopping: Arc<AtomicBool>,
    last_error: Arc<LastError>,
    observer: Option<Arc<dyn SyncObserver>>,
    schedule: PullSchedule,
}

impl Puller {
    fn run(mut self, clock: &dyn Clock) {
        let wakeup = Arc::clone(&self.downloader.reflections().wakeup);
        loop {
            // The generation before the stop check (see `Sender::run`).
            let seen = wakeup.generation();
            if self.stopping.load(Ordering::SeqCst) {
                break;
            }
            let now = clock.now_ms();
            if self.schedule.take(&self.triggers) {
                if let Err(e) = self.downloader.release() {
                    self.failed(e);
                }
                if let Ok(stats) = self.outbox.stats() {
                    self.schedule.outbox_changed(stats.unsent());
                }
            }
            let mut deadline = self.schedule.next_wake();
            if self.schedule.should_pull(now) {
                if self.probe.is_online(now) {
                    let outcome = self.downloader.pull();
                    self.schedule.pulled(clock.now_ms(), outcome.as_ref());
                    match outcome {
                        Ok(report) => {
                            if let Some(observer) = &self.observer {
                                observer.on_pull(&report);
                            }
                        }
                        Err(e) => self.failed(e),
                    }
                    continue;
                }
                // Offline: look again at the probe's next check (a reconnect
                // wakes us sooner).
                if let Some(at) = self.probe.next_check_at_ms() {
                    deadline = Some(deadline.map_or(at, |d| d.min(at)).max(now + 1));
                }
            }
            clock.sleep_until(&wakeup, seen, deadline);
        }
    }

    fn failed(&self, error: EngineError) {
        if let Some(observer) = &self.observer {
            observer.on_pull_error(&error);
        }
        self.last_error.set(error);
    }
}
