//! [`AsyncSyncEngine`]: the engine's senders as tokio tasks, over the same
//! [`WorkerCore`] passes as the threaded [`SyncEngine`](crate::SyncEngine).

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use futures_util::FutureExt;
use sync_outbox::{Operation, Outbox};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::async_outbox::run_blocking;
use crate::async_transport::AsyncSyncTransport;
use crate::clock::{Clock, TokioClock};
use crate::download::{AsyncDownloader, PullSchedule, Reflection, Triggers};
use crate::drain::DrainReport;
use crate::engine::SyncEngineConfig;
use crate::error::{EngineError, LastError, SyncStep};
use crate::observer::SyncObserver;
use crate::probe::NetworkProbe;
use crate::schedule::{ERROR_BACKOFF_MS, next_wake_at};
use crate::transport::ResultSink;
use crate::worker::WorkerStats;
use crate::worker_core::{Batch, SendEnd, WorkerCore, step_error};

/// The [`SyncEngine`](crate::SyncEngine) for tokio applications: the same
/// rules, from the same core, with its senders as tasks on the current
/// runtime and an [`AsyncSyncTransport`]. Feature `tokio`.
///
/// - **Same rules.** Each sender claims a batch (held until every result
///   is recorded), hands it to `send_batch`, and records each result; it
///   probes before sending, drains on reconnect, keeps per-key order, tells
///   the observer, and wakes on every claimable outbox change, on reconnect,
///   on [`wake`](Self::wake) and [`sync_now`](Self::sync_now).
/// - **Never blocks the runtime.** Every store call (claim, record,
///   recovery, the look for the next due time) and the probe's check run on
///   tokio's blocking pool (`spawn_blocking`); only the transport's future
///   runs on the runtime's workers.
/// - **The runtime's clock.** Sleeps are tokio sleeps, and the default
///   clock is a [`TokioClock`], so tests run with paused time.
/// - **A panicking send future** is caught in place: each operation of its
///   batch is recorded as a retryable failure, as with the threaded engine.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use sync_engine::{AsyncOutbox, AsyncSyncEngine, AsyncSyncTransport, NetworkProbe, NetworkProbeConfig, SendResult, SyncEngineConfig, async_trait};
/// use sync_outbox::{MemoryOutboxStore, Operation, OperationStatus, Outbox, OutboxConfig, OutboxStore};
///
/// struct Upstream;
/// #[async_trait]
/// impl AsyncSyncTransport for Upstream {
///     async fn send(&self, _op: &Operation) -> SendResult {
///         SendResult::ok()
///     }
/// }
///
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async {
/// let store = Arc::new(MemoryOutboxStore::new());
/// let outbox = Arc::new(Outbox::new(OutboxConfig::default(), store.clone()));
/// let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
/// let engine = AsyncSyncEngine::new(SyncEngineConfig::default(), outbox.clone(), probe, Arc::new(Upstream));
/// engine.start().await?;
/// let id = AsyncOutbox::new(outbox).enqueue(Operation::new("note.create", "/notes", "{}")).await?;
/// while store.get(&id)?.map(|op| op.status) != Some(OperationStatus::Done) {
///     tokio::task::yield_now().await;
/// }
/// engine.stop().await?;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[must_use = "an engine sends nothing until it is started (`start().await`, or build it with `AsyncSyncEngine::started`)"]
pub struct AsyncSyncEngine {
    config: SyncEngineConfig,
    cores: Vec<Arc<WorkerCore>>,
    outbox: Arc<Outbox>,
    probe: Arc<NetworkProbe>,
    transport: Arc<dyn AsyncSyncTransport>,
    /// The wake-up generation: every sender wakes when it moves.
    wake: Arc<watch::Sender<u64>>,
    stopping: Arc<AtomicBool>,
    /// The running senders, and the clock they were started on. Never held
    /// across an await.
    running: Mutex<Option<Running>>,
    /// Ids of `Running` slots, so a `start` knows its slot is still its own.
    next_start: std::sync::atomic::AtomicU64,
    /// Blocking-pool calls of the senders still running.
    hops: Arc<Hops>,
    last_error: Arc<LastError>,
    observer: OnceLock<Arc<dyn SyncObserver>>,
    download: OnceLock<Arc<AsyncDownloader>>,
    triggers: Arc<Triggers>,
}

struct Running {
    id: u64,
    tasks: Vec<JoinHandle<()>>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for AsyncSyncEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncSyncEngine")
            .field("config", &self.config)
            .field("running", &self.running())
            .finish_non_exhaustive()
    }
}

impl AsyncSyncEngine {
    /// An engine of `config.worker_count` senders over one outbox, probe and
    /// transport. Registers wake-ups on the outbox (`on_claimable`) and the
    /// probe (`on_reconnect`). Spawns nothing until [`start`](Self::start).
    pub fn new(
        config: SyncEngineConfig,
        outbox: Arc<Outbox>,
        probe: Arc<NetworkProbe>,
        transport: Arc<dyn AsyncSyncTransport>,
    ) -> Self {
        let drain_requested = Arc::new(AtomicBool::new(false));
        let cores = (0..config.worker_count.max(1))
            .map(|_| {
                Arc::new(WorkerCore::new(
                    config.batch_limit,
                    Arc::clone(&outbox),
                    Arc::clone(&probe),
                    Arc::clone(&drain_requested),
                ))
            })
            .collect();
        let wake = Arc::new(watch::Sender::new(0u64));
        let on_claimable = Arc::clone(&wake);
        outbox.on_claimable(move || bump(&on_claimable));
        let on_reconnect = Arc::clone(&wake);
        probe.on_reconnect(move || bump(&on_reconnect));
        Self {
            config,
            cores,
            outbox,
            probe,
            transport,
            wake,
            stopping: Arc::new(AtomicBool::new(false)),
            running: Mutex::new(None),
            next_start: std::sync::atomic::AtomicU64::new(0),
            hops: Arc::new(Hops::default()),
            last_error: Arc::new(LastError::default()),
            observer: OnceLock::new(),
            download: OnceLock::new(),
            triggers: Arc::new(Triggers::default()),
        }
    }

    /// Gives the engine its download half, once, before
    /// [`start`](Self::start); returns `false` (and changes nothing) if it
    /// has one already or is started: the pull task starts with the
    /// engine. A started engine then also pulls the server's change feed, as one more
    /// task, when [`SyncEngine::set_download`](crate::SyncEngine::set_download)
    /// says, with every store call on the blocking pool.
    pub fn set_download(&self, downloader: Arc<AsyncDownloader>) -> bool {
        let started = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        if started || self.download.get().is_some() {
            return false;
        }
        // The flag, then the wake-up: the downloader's own listener may run
        // first and wake the puller before the flag is set, which would
        // then sleep through this change (and miss a drained queue).
        let changed = Arc::clone(&self.triggers);
        let reflections = Arc::clone(downloader.reflections());
        self.outbox.on_change(move || {
            changed.changed.store(true, Ordering::SeqCst);
            reflections.notify();
        });
        let reconnect = Arc::clone(&self.triggers);
        let wake = Arc::clone(&self.wake);
        self.probe.on_reconnect(move || {
            reconnect.pull.store(true, Ordering::SeqCst);
            bump(&wake);
        });
        self.download.set(downloader).is_ok()
    }

    /// The download half, if [`set_download`](Self::set_download) gave one.
    #[must_use]
    pub fn download(&self) -> Option<&Arc<AsyncDownloader>> {
        self.download.get()
    }

    /// Waits until operation `id`'s effect is visible in downloaded data, it
    /// fails, or it is discarded (see [`AsyncDownloader::wait_reflected`]);
    /// bound it with `tokio::time::timeout`.
    ///
    /// # Errors
    ///
    /// [`EngineError::NoDownload`] without a download half; as
    /// [`AsyncDownloader::wait_reflected`].
    pub async fn wait_reflected(&self, id: &str) -> Result<Reflection, EngineError> {
        let downloader = Arc::clone(self.download.get().ok_or(EngineError::NoDownload)?);
        downloader.wait_reflected(id).await
    }

    /// An engine already sending on the current runtime: [`new`](Self::new)
    /// and [`start`](Self::start) in one call, so it cannot be forgotten.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub async fn started(
        config: SyncEngineConfig,
        outbox: Arc<Outbox>,
        probe: Arc<NetworkProbe>,
        transport: Arc<dyn AsyncSyncTransport>,
    ) -> Result<Self, EngineError> {
        let engine = Self::new(config, outbox, probe, transport);
        engine.start().await?;
        Ok(engine)
    }

    /// Installs `observer` on every sender, once; returns `false` if one was
    /// installed already.
    pub fn set_observer(&self, observer: Arc<dyn SyncObserver>) -> bool {
        if self.observer.get().is_some() {
            return false;
        }
        for core in &self.cores {
            let _ = core.observer.set(Arc::clone(&observer));
        }
        self.observer.set(observer).is_ok()
    }

    /// Starts the senders on the current runtime with a [`TokioClock`] (the
    /// wall clock, moving with tokio's time). First runs
    /// [`Outbox::recover`] on the blocking pool: operations a crashed process
    /// left `InFlight` are due at once.
    ///
    /// # Errors
    ///
    /// [`EngineError::NoRuntime`] outside a tokio runtime;
    /// [`EngineError::AlreadyRunning`]; [`EngineError::OutboxStep`] if
    /// recovery fails (nothing is started then).
    pub async fn start(&self) -> Result<(), EngineError> {
        self.start_with_clock(TokioClock::new()).await
    }

    /// [`start`](Self::start) with `clock` for the times persisted in the
    /// outbox. Sleeps are always on tokio's timer, for the time `clock` says
    /// is left, so a [`TokioClock`] keeps paused-time tests exact.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub async fn start_with_clock(&self, clock: impl Clock) -> Result<(), EngineError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| EngineError::NoRuntime)?;
        let clock: Arc<dyn Clock> = Arc::new(clock);
        let id = self.next_start.fetch_add(1, Ordering::SeqCst);
        {
            let mut running = self.lock_running();
            if running.is_some() {
                return Err(EngineError::AlreadyRunning);
            }
            // Claimed before the await, so a concurrent start sees it.
            *running = Some(Running {
                id,
                tasks: Vec::new(),
                clock: Arc::clone(&clock),
            });
        }
        // Frees the slot if this future is dropped before the senders start.
        let slot = StartSlot { engine: self, id };
        let outbox = Arc::clone(&self.outbox);
        let now = clock.now_ms();
        let recovered = self.hops.run(move || outbox.recover(now)).await;
        let report = recovered.map_err(|e| step_error(SyncStep::Recover, None, e))?;
        if let Some(observer) = self.observer.get() {
            observer.on_recovered(&report);
        }
        let mut running = self.lock_running();
        if running.as_ref().is_none_or(|r| r.id != id) {
            // A stop came during recovery: it wins, nothing is started.
            return Ok(());
        }
        self.stopping.store(false, Ordering::SeqCst);
        let tasks = self
            .cores
            .iter()
            .map(|core| {
                let sender = AsyncSender {
                    core: Arc::clone(core),
                    transport: Arc::clone(&self.transport),
                    clock: Arc::clone(&clock),
                    wake: Arc::clone(&self.wake),
                    stopping: Arc::clone(&self.stopping),
                    last_error: Arc::clone(&self.last_error),
                    hops: Arc::clone(&self.hops),
                    inflight_recheck_ms: self.config.recheck_ms(),
                };
                handle.spawn(sender.run())
            })
            .collect::<Vec<_>>();
        let mut tasks = tasks;
        if let Some(downloader) = self.download.get() {
            // Count the queue before the first pull: a queue that drains
            // later asks for a pull, and one that drained already is covered
            // by the pull at start. (Counted from 0, a queue sent before the
            // puller first looked would never be seen draining.)
            self.triggers
                .changed
                .store(true, std::sync::atomic::Ordering::SeqCst);
            let puller = AsyncPuller {
                schedule: PullSchedule::new(downloader.config()),
                downloader: Arc::clone(downloader),
                outbox: Arc::clone(&self.outbox),
                probe: Arc::clone(&self.probe),
                clock: Arc::clone(&clock),
                wake: Arc::clone(&self.wake),
                triggers: Arc::clone(&self.triggers),
                stopping: Arc::clone(&self.stopping),
                last_error: Arc::clone(&self.last_error),
                observer: self.observer.get().cloned(),
                hops: Arc::clone(&self.hops),
            };
            tasks.push(handle.spawn(puller.run()));
        }
        if let Some(running) = running.as_mut() {
            running.tasks = tasks;
        }
        drop(running);
        std::mem::forget(slot);
        Ok(())
    }

    /// Whether the senders are running (from `start` until a `stop`
    /// returns).
    #[must_use]
    pub fn running(&self) -> bool {
        self.lock_running().is_some()
    }

    /// Wakes every sleeping sender to look for work now.
    pub fn wake(&self) {
        bump(&self.wake);
    }

    /// The pull-to-refresh button: makes every operation waiting in backoff
    /// due now (attempts unchanged), asks the probe to check again, wakes
    /// the senders, and (with a download half) pulls now.
    pub fn sync_now(&self) {
        if let Some(core) = self.cores.first() {
            core.sync_now();
        }
        if self.download.get().is_some() {
            self.triggers.pull.store(true, Ordering::SeqCst);
        }
        self.wake();
    }

    /// [`SyncEngine::drain`](crate::SyncEngine::drain) for tokio: sends what it can within `within`
    /// (on tokio's clock, so paused-time tests are exact), awaiting the
    /// outbox's counts between looks, never blocking a runtime thread (the
    /// counts are read on the blocking pool). Sends in flight at the
    /// deadline finish the request they are in; they are reported as
    /// `in_flight`. Dropping the future ends the drain, not the sends.
    ///
    /// # Errors
    ///
    /// [`EngineError::NotRunning`] if the engine is not started;
    /// [`EngineError::Outbox`] if the counts cannot be read.
    pub async fn drain(&self, within: Duration) -> Result<DrainReport, EngineError> {
        let started = tokio::time::Instant::now();
        let deadline = started + within;
        if self.lock_running().is_none() {
            return Err(EngineError::NotRunning);
        }
        let outbox = Arc::clone(&self.outbox);
        let mut watch = run_blocking(move || outbox.watch_stats()).await?;
        let before = watch.current();
        self.sync_now();
        // The signed-in account's: another account's queue waits for it.
        let unsent = || {
            let outbox = Arc::clone(&self.outbox);
            run_blocking(move || outbox.unsent_of_account())
        };
        while unsent().await? > 0 {
            match tokio::time::timeout_at(deadline, watch.changed()).await {
                Ok(Some(_)) => {}
                // The deadline, or the outbox is gone.
                Err(_) | Ok(None) => break,
            }
        }
        let outbox = Arc::clone(&self.outbox);
        let after = run_blocking(move || outbox.stats()).await?;
        let mut report = DrainReport::between(&before, &after, started.elapsed());
        report.complete = unsent().await? == 0;
        Ok(report)
    }

    /// Stops gracefully: each sender finishes the batch it is sending,
    /// records it and exits; returns when all have. A hung send is bounded
    /// only by the transport's own timeout; see
    /// [`stop_with_timeout`](Self::stop_with_timeout).
    ///
    /// # Errors
    ///
    /// [`EngineError::SenderPanicked`] if a sender died of a panic outside
    /// the transport.
    pub async fn stop(&self) -> Result<(), EngineError> {
        self.stop_inner(None).await
    }

    /// Stops like [`stop`](Self::stop), but at `timeout` cancels what is
    /// still running: a cancelled send's operations are back to `Pending`,
    /// due at once (their attempt counted), before this returns.
    ///
    /// # Errors
    ///
    /// [`EngineError::SenderPanicked`]; [`EngineError::OutboxStep`] if the
    /// cancelled operations cannot be put back (they are then orphans,
    /// requeued by the next start).
    pub async fn stop_with_timeout(&self, timeout: Duration) -> Result<(), EngineError> {
        self.stop_inner(Some(timeout)).await
    }

    async fn stop_inner(&self, timeout: Option<Duration>) -> Result<(), EngineError> {
        self.stopping.store(true, Ordering::SeqCst);
        self.wake();
        let Some(Running {
            mut tasks, clock, ..
        }) = self.lock_running().take()
        else {
            return Ok(());
        };
        let mut panicked = false;
        // A task leaves `tasks` only once its join has completed, so after a
        // timeout `tasks` holds exactly the senders still running.
        let join_all = async {
            while let Some(task) = tasks.last_mut() {
                panicked |= task.await.is_err_and(|e| e.is_panic());
                tasks.pop();
            }
        };
        let finished = match timeout {
            None => {
                join_all.await;
                true
            }
            Some(timeout) => tokio::time::timeout(timeout, join_all).await.is_ok(),
        };
        if !finished {
            for task in &tasks {
                task.abort();
            }
            for task in tasks {
                panicked |= task.await.is_err_and(|e| e.is_panic());
            }
            // The aborted senders dropped their claims: orphans. Their
            // blocking-pool calls run on: wait for those (a claim among them
            // would land after a recovery), then put the orphans back to
            // Pending now, not at the next start.
            self.hops.wait_idle().await;
            let outbox = Arc::clone(&self.outbox);
            let now = clock.now_ms();
            self.hops
                .run(move || outbox.recover(now))
                .await
                .map_err(|e| step_error(SyncStep::Recover, None, e))?;
        }
        if panicked {
            Err(EngineError::SenderPanicked)
        } else {
            Ok(())
        }
    }

    /// The last error a sender met (it keeps running), with its whole cause
    /// chain on one line ([`EngineError::report`]).
    #[must_use]
    pub fn last_error(&self) -> Option<String> {
        self.last_engine_error().map(|e| e.report())
    }

    /// The last error a sender met, as the error itself.
    #[must_use]
    pub fn last_engine_error(&self) -> Option<Arc<EngineError>> {
        self.last_error.get()
    }

    /// The sum of all senders' counts.
    #[must_use]
    pub fn stats(&self) -> WorkerStats {
        self.cores.iter().map(|core| core.stats()).sum()
    }

    /// The network probe.
    #[must_use]
    pub fn probe(&self) -> &Arc<NetworkProbe> {
        &self.probe
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for AsyncSyncEngine {
    /// Tells the senders to stop and returns at once: each finishes its
    /// current batch in the background. `stop().await` waits for them.
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        bump(&self.wake);
    }
}

fn bump(wake: &watch::Sender<u64>) {
    wake.send_modify(|generation| *generation = generation.wrapping_add(1));
}

/// One sender's loop, as a task.
struct AsyncSender {
    core: Arc<WorkerCore>,
    transport: Arc<dyn AsyncSyncTransport>,
    clock: Arc<dyn Clock>,
    wake: Arc<watch::Sender<u64>>,
    stopping: Arc<AtomicBool>,
    last_error: Arc<LastError>,
    hops: Arc<Hops>,
    inflight_recheck_ms: i64,
}

impl AsyncSender {
    async fn run(self) {
        let mut woken = self.wake.subscribe();
        // A batch claimed in the same blocking-pool hop that recorded the
        // previous one: one hop per batch under load instead of two.
        let mut ready: Option<Batch> = None;
        while !self.stopping.load(Ordering::SeqCst) {
            // Mark the generation seen before looking for work: a wake-up
            // after this point makes `changed` below return at once.
            woken.borrow_and_update();
            let now = self.clock.now_ms();
            let claimed = if let Some(claim) = ready.take() {
                Ok(Some(claim))
            } else {
                let core = Arc::clone(&self.core);
                let stopping = Arc::clone(&self.stopping);
                self.hops
                    .run(move || {
                        if stopping.load(Ordering::SeqCst) {
                            return Ok(None);
                        }
                        core.prepare(now)
                    })
                    .await
            };
            let deadline = match claimed {
                Ok(Some(claim)) => match self.send_and_record(claim).await {
                    Ok(next) => {
                        ready = next;
                        // Keys this batch finished may unblock siblings' work.
                        bump(&self.wake);
                        continue;
                    }
                    Err(e) => Some(self.failed(e, now)),
                },
                Ok(None) => {
                    let core = Arc::clone(&self.core);
                    let recheck = self.inflight_recheck_ms;
                    self.hops
                        .run(move || next_wake_at(&core.outbox, &core.probe, now, recheck))
                        .await
                }
                Err(e) => Some(self.failed(e, now)),
            };
            if self.stopping.load(Ordering::SeqCst) {
                break;
            }
            let sleep = deadline.map(|at| {
                let left = at.saturating_sub(self.clock.now_ms());
                Duration::from_millis(u64::try_from(left).unwrap_or(0))
            });
            tokio::select! {
                changed = woken.changed() => {
                    if changed.is_err() {
                        break; // the engine is gone
                    }
                }
                () = sleep_for(sleep) => {}
            }
        }
        if let Some(claim) = ready {
            // Claimed just as the stop came: put it back now, not at the
            // next start (its attempt stays counted, as after a crash).
            drop(claim);
            let outbox = Arc::clone(&self.core.outbox);
            let now = self.clock.now_ms();
            if let Err(e) = self.hops.run(move || outbox.recover(now)).await {
                let _ = self.failed(step_error(SyncStep::Recover, None, e), now);
            }
        }
    }

    /// Keeps `error` as the last one; returns when to try again.
    fn failed(&self, error: EngineError, now: i64) -> i64 {
        self.last_error.set(error);
        now + ERROR_BACKOFF_MS
    }

    /// Sends `batch` (here, on the runtime) while recording each result
    /// the transport reports on the blocking pool as it arrives; then
    /// finishes the batch (what is missing, one sync) and, unless stopping,
    /// claims the next, in one blocking-pool hop.
    async fn send_and_record(&self, batch: Batch) -> Result<Option<Batch>, EngineError> {
        let Batch { claim, progress } = batch;
        let ops: Arc<[Operation]> = claim.ops().into();
        let (reports_tx, mut reports) = tokio::sync::mpsc::unbounded_channel();
        let sending = {
            let ops = Arc::clone(&ops);
            async move {
                let mut forward = move |batch: Vec<_>| {
                    let _ = reports_tx.send(batch);
                };
                let mut sink = ResultSink::new(&mut forward);
                let sent = AssertUnwindSafe(self.transport.send_each(&ops, &mut sink))
                    .catch_unwind()
                    .await;
                sent.map(|()| sink.miscounted)
                // `forward` drops here, closing the channel: the recorder
                // below ends once it has recorded every report.
            }
        };
        let record = async {
            let mut progress = progress;
            while let Some(batch) = reports.recv().await {
                let core = Arc::clone(&self.core);
                let ops = Arc::clone(&ops);
                let now = self.clock.now_ms();
                progress = self
                    .hops
                    .run(move || {
                        core.record(&ops, &mut progress, batch, now);
                        progress
                    })
                    .await;
            }
            progress
        };
        let (sent, mut progress) = tokio::join!(sending, record);
        let end = match sent {
            Ok(miscounted) => {
                progress.miscounted = miscounted;
                SendEnd::Returned
            }
            Err(_) => SendEnd::Panicked,
        };
        let core = Arc::clone(&self.core);
        let stopping = Arc::clone(&self.stopping);
        let now = self.clock.now_ms();
        self.hops
            .run(move || {
                core.finish(Batch { claim, progress }, end, now)?;
                if stopping.load(Ordering::SeqCst) {
                    return Ok(None);
                }
                core.prepare(now)
            })
            .await
    }
}

/// The blocking-pool calls of an engine's senders that have not returned. An
/// aborted sender's call runs on to its end, so a stop with a deadline waits
/// here before it recovers.
#[derive(Debug, Default)]
struct Hops {
    running: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

impl Hops {
    /// Runs `work` on the blocking pool, counted until it returns.
    async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        self.running.fetch_add(1, Ordering::SeqCst);
        let done = HopDone(Arc::clone(self));
        run_blocking(move || {
            let _done = done;
            work()
        })
        .await
    }

    /// Returns once no counted call is running.
    async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.running.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Uncounts a call when it ends, however it ends.
struct HopDone(Arc<Hops>);

impl Drop for HopDone {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The `Running` slot a `start` claimed: freed if the start future is
/// dropped (or fails) before its senders run.
struct StartSlot<'a> {
    engine: &'a AsyncSyncEngine,
    id: u64,
}

impl Drop for StartSlot<'_> {
    fn drop(&mut self) {
        let mut running = self.engine.lock_running();
        if running
            .as_ref()
            .is_some_and(|r| r.id == self.id && r.tasks.is_empty())
        {
            *running = None;
        }
    }
}

/// Sleeps for `duration` on tokio's timer; forever for `None`.
async fn sleep_for(duration: Option<Duration>) {
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}

/// The download loop of a started engine with a download half, as a task:
/// the rules of the threaded `Puller`, every store call on the blocking
/// pool, sleeps on tokio's timer.
struct AsyncPuller {
    downloader: Arc<AsyncDownloader>,
    outbox: Arc<Outbox>,
    probe: Arc<NetworkProbe>,
    clock: Arc<dyn Clock>,
    wake: Arc<watch::Sender<u64>>,
    triggers: Arc<Triggers>,
    stopping: Arc<AtomicBool>,
    last_error: Arc<LastError>,
    observer: Option<Arc<dyn SyncObserver>>,
    hops: Arc<Hops>,
    schedule: PullSchedule,
}

impl AsyncPuller {
    async fn run(mut self) {
        let mut woken = self.wake.subscribe();
        let mut changes = self.downloader.reflections().subscribe();
        loop {
            // Marked seen before the stop check (see `AsyncSender::run`).
            woken.borrow_and_update();
            changes.borrow_and_update();
            if self.stopping.load(Ordering::SeqCst) {
                break;
            }
            let now = self.clock.now_ms();
            if self.schedule.take(&self.triggers) {
                if let Err(e) = self.downloader.release().await {
                    self.failed(e);
                }
                let outbox = Arc::clone(&self.outbox);
                if let Ok(stats) = self.hops.run(move || outbox.stats()).await {
                    self.schedule.outbox_changed(stats.unsent());
                }
            }
            let mut deadline = self.schedule.next_wake();
            if self.schedule.should_pull(now) {
                let probe = Arc::clone(&self.probe);
                if self.hops.run(move || probe.is_online(now)).await {
                    let outcome = self.downloader.pull().await;
                    self.schedule.pulled(self.clock.now_ms(), outcome.as_ref());
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
                if let Some(at) = self.probe.next_check_at_ms() {
                    deadline = Some(deadline.map_or(at, |d| d.min(at)).max(now + 1));
                }
            }
            let sleep = deadline.map(|at| {
                let left = at.saturating_sub(self.clock.now_ms());
                Duration::from_millis(u64::try_from(left).unwrap_or(0))
            });
            tokio::select! {
                woke = woken.changed() => {
                    if woke.is_err() {
                        break; // the engine is gone
                    }
                }
                _ = changes.changed() => {}
                () = sleep_for(sleep) => {}
            }
        }
    }

    fn failed(&self, error: EngineError) {
        if let Some(observer) = &self.observer {
            observer.on_pull_error(&error);
        }
        self.last_error.set(error);
    }
}
