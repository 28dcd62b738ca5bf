//! [`MetricsObserver`] (feature `metrics`): what the engine does, as numbers
//! an operator can graph, through the [`metrics`] facade.
//!
//! Why `metrics` and not OpenTelemetry's SDK: it is a facade, like `log`:
//! the library records, the app picks the exporter (Prometheus,
//! OpenTelemetry through `metrics-exporter-opentelemetry`, statsd, ...), and
//! with no recorder installed every call is a no-op (an atomic load). The
//! names follow OpenTelemetry's messaging conventions where one fits (an
//! operation is a message the device sends; a pulled change is one it
//! consumes); the rest are `sync.*`. `docs/metrics.md` lists them all.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use metrics::{counter, gauge, histogram};
use sync_outbox::{Operation, OperationStatus, Outbox};

use crate::download::PullReport;
use crate::error::EngineError;
use crate::observer::{BatchReport, SyncObserver};
use crate::transport::SendResult;

/// Records the engine's metrics through the [`metrics`] facade:
///
/// | name | kind | labels | what |
/// | --- | --- | --- | --- |
/// | `messaging.client.sent.messages` | counter | `outcome`: `done`, `retry`, `unanswered`, `failed` | send results recorded |
/// | `messaging.client.operation.duration` | histogram (s) | `messaging.operation.name`: `send` | one batch's send, claim to last result |
/// | `sync.client.batch.size` | histogram | | operations per batch |
/// | `sync.client.send.attempts` | histogram | | an operation's attempts when its result was recorded |
/// | `sync.outbox.operations` | gauge | `state`: `pending`, `in_flight`, `failed`, `done` | queue depth by state, after each batch and pull |
/// | `sync.outbox.oldest_pending.age` | gauge (s) | | age of the oldest pending operation (0: none) |
/// | `messaging.client.consumed.messages` | counter | `messaging.operation.name`: `pull` | pulled changes applied |
/// | `sync.client.pulls` | counter | `outcome`: `ok`, `error` | runs of pulls |
/// | `sync.download.held` | gauge | | pulled changes held behind the device's own edits |
/// | `sync.download.lag` | gauge (s) | | time since a pull last reached the end of the feed, at the last pull |
///
/// Why `metrics`: it is a facade, like `log`: the library records, the app
/// picks the exporter (Prometheus, OpenTelemetry, statsd, ...). The names
/// follow OpenTelemetry's messaging conventions where one fits. Install it with `set_observer` on a [`SyncWorker`](crate::SyncWorker),
/// [`SyncEngine`](crate::SyncEngine) or `AsyncSyncEngine`; the app installs
/// a recorder (for example `metrics-exporter-prometheus`). Without a
/// recorder it costs nothing measurable (`cargo bench -p sync-benches
/// --bench engine -- metrics`).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use sync_engine::{MetricsObserver, NetworkProbe, NetworkProbeConfig, SendResult, SyncTransport, SyncWorker, SyncWorkerConfig};
/// use sync_outbox::{MemoryOutboxStore, Operation, Outbox, OutboxConfig};
///
/// struct Ok;
/// impl SyncTransport for Ok {
///     fn send(&self, _op: &Operation) -> SendResult { SendResult::ok() }
/// }
/// let outbox = Arc::new(Outbox::new(OutboxConfig::default(), Arc::new(MemoryOutboxStore::new())));
/// let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
/// let worker = SyncWorker::new(SyncWorkerConfig::default(), outbox.clone(), probe, Arc::new(Ok));
/// assert!(worker.set_observer(Arc::new(MetricsObserver::new(outbox))));
/// ```
#[derive(Debug)]
pub struct MetricsObserver {
    outbox: Arc<Outbox>,
    /// When a pull last reached the end of the feed.
    caught_up_at: Mutex<Option<Instant>>,
}

impl MetricsObserver {
    /// Records for the engine of `outbox` (read for the queue's gauges).
    #[must_use]
    pub fn new(outbox: Arc<Outbox>) -> Self {
        describe();
        Self {
            outbox,
            caught_up_at: Mutex::new(None),
        }
    }

    /// Queue depth by state and the oldest pending operation's age. One
    /// `stats` read of the store (cheap on this workspace's stores); a
    /// store error leaves the gauges as they were.
    fn queue_gauges(&self) {
        let Ok(stats) = self.outbox.stats() else {
            return;
        };
        for (state, n) in [
            ("pending", stats.pending),
            ("in_flight", stats.in_flight),
            ("failed", stats.failed),
            ("done", stats.done),
        ] {
            #[expect(clippy::cast_precision_loss, reason = "a gauge")]
            gauge!("sync.outbox.operations", "state" => state).set(n as f64);
        }
        let age_ms = stats
            .oldest_pending_created_at_ms
            .map_or(0, |created| now_ms().saturating_sub(created).max(0));
        #[expect(clippy::cast_precision_loss, reason = "a gauge")]
        gauge!("sync.outbox.oldest_pending.age").set(age_ms as f64 / 1_000.0);
    }

    fn lag(&self, caught_up: bool) {
        let mut at = self
            .caught_up_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if caught_up {
            *at = Some(Instant::now());
        }
        let lag = at.map_or(0.0, |at| at.elapsed().as_secs_f64());
        gauge!("sync.download.lag").set(lag);
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Units and help texts, for exporters that show them.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "messaging.client.sent.messages",
        Unit::Count,
        "Send results recorded, by outcome"
    );
    describe_histogram!(
        "messaging.client.operation.duration",
        Unit::Seconds,
        "One batch's send, from the claim to its last result"
    );
    describe_histogram!(
        "sync.client.batch.size",
        Unit::Count,
        "Operations per batch sent"
    );
    describe_histogram!(
        "sync.client.send.attempts",
        Unit::Count,
        "An operation's attempts when its result was recorded"
    );
    describe_gauge!(
        "sync.outbox.operations",
        Unit::Count,
        "Operations in the queue, by state"
    );
    describe_gauge!(
        "sync.outbox.oldest_pending.age",
        Unit::Seconds,
        "Age of the oldest pending operation"
    );
    describe_counter!(
        "messaging.client.consumed.messages",
        Unit::Count,
        "Pulled changes applied"
    );
    describe_counter!(
        "sync.client.pulls",
        Unit::Count,
        "Runs of pulls, by outcome"
    );
    describe_gauge!(
        "sync.download.held",
        Unit::Count,
        "Pulled changes held behind the device's own unreflected edits"
    );
    describe_gauge!(
        "sync.download.lag",
        Unit::Seconds,
        "Time since a pull last reached the end of the feed"
    );
}

impl SyncObserver for MetricsObserver {
    fn on_result(&self, op: &Operation, result: &SendResult, status: OperationStatus) {
        let outcome = match status {
            OperationStatus::Done => "done",
            OperationStatus::Failed => "failed",
            _ if result.is_unanswered() => "unanswered",
            _ => "retry",
        };
        counter!("messaging.client.sent.messages", "outcome" => outcome).increment(1);
        histogram!("sync.client.send.attempts").record(f64::from(op.attempt));
    }

    fn on_batch(&self, report: &BatchReport) {
        histogram!("messaging.client.operation.duration", "messaging.operation.name" => "send")
            .record(report.elapsed.as_secs_f64());
        #[expect(clippy::cast_precision_loss, reason = "a histogram")]
        histogram!("sync.client.batch.size").record(report.operations as f64);
        self.queue_gauges();
    }

    fn on_pull(&self, report: &PullReport) {
        counter!("sync.client.pulls", "outcome" => "ok").increment(1);
        counter!("messaging.client.consumed.messages", "messaging.operation.name" => "pull")
            .increment(u64::try_from(report.applied).unwrap_or(u64::MAX));
        #[expect(clippy::cast_precision_loss, reason = "a gauge")]
        gauge!("sync.download.held").set(report.held as f64);
        self.lag(report.caught_up);
        self.queue_gauges();
    }

    fn on_pull_error(&self, _error: &EngineError) {
        counter!("sync.client.pulls", "outcome" => "error").increment(1);
        self.lag(false);
    }
}
