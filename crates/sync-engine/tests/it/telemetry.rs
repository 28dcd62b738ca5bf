//! `MetricsObserver` against a recorder that keeps what it is given (and
//! the trace context an async enqueue keeps): a
//! worker sends four operations, one fails once and is retried; the
//! counters, histograms and gauges say exactly that.

use std::sync::Arc;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::{CompositeKey, MetricKind};
use sync_engine::{
    MetricsObserver, NetworkProbe, NetworkProbeConfig, SendResult, SyncTransport, SyncWorker,
    SyncWorkerConfig,
};
use sync_outbox::{MemoryOutboxStore, Operation, Outbox, OutboxConfig};

use crate::TestResult;

/// Fails each "flaky" operation's first attempt (retryable), sends the
/// rest.
struct FlakyOnce;

impl SyncTransport for FlakyOnce {
    fn send(&self, op: &Operation) -> SendResult {
        if op.kind == "flaky" && op.attempt == 1 {
            SendResult::retryable("503")
        } else {
            SendResult::ok()
        }
    }
}

/// What the recorder holds: each metric's key and value.
fn taken(snapshotter: &metrics_util::debugging::Snapshotter) -> Vec<(CompositeKey, DebugValue)> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| (key, value))
        .collect()
}

/// Every value recorded under `name` with the given labels, by kind.
fn values<'a>(
    snapshot: &'a [(CompositeKey, DebugValue)],
    kind: MetricKind,
    name: &str,
    labels: &[(&str, &str)],
) -> Vec<&'a DebugValue> {
    snapshot
        .iter()
        .filter(|(key, _)| {
            key.kind() == kind
                && key.key().name() == name
                && labels.iter().all(|(k, v)| {
                    key.key()
                        .labels()
                        .any(|label| label.key() == *k && label.value() == *v)
                })
        })
        .map(|(_, value)| value)
        .collect()
}

fn counter(snapshot: &[(CompositeKey, DebugValue)], name: &str, labels: &[(&str, &str)]) -> u64 {
    values(snapshot, MetricKind::Counter, name, labels)
        .into_iter()
        .map(|v| match v {
            DebugValue::Counter(n) => *n,
            _ => 0,
        })
        .sum()
}

fn gauge(snapshot: &[(CompositeKey, DebugValue)], name: &str, labels: &[(&str, &str)]) -> f64 {
    match values(snapshot, MetricKind::Gauge, name, labels).first() {
        Some(DebugValue::Gauge(v)) => v.into_inner(),
        _ => f64::NAN,
    }
}

/// A gauge that counts things: its value as a whole number (`None`: not
/// recorded, or not whole).
fn count_gauge(
    snapshot: &[(CompositeKey, DebugValue)],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<i64> {
    let value = gauge(snapshot, name, labels);
    #[expect(clippy::cast_possible_truncation, reason = "checked whole first")]
    (value.fract() == 0.0).then_some(value as i64)
}

fn histogram(snapshot: &[(CompositeKey, DebugValue)], name: &str) -> Vec<f64> {
    let mut all: Vec<f64> = values(snapshot, MetricKind::Histogram, name, &[])
        .into_iter()
        .flat_map(|v| match v {
            DebugValue::Histogram(values) => values.iter().map(|f| f.into_inner()).collect(),
            _ => Vec::new(),
        })
        .collect();
    all.sort_by(f64::total_cmp);
    all
}

#[test]
fn sends_batches_attempts_and_queue_depth_are_recorded_as_they_happened() -> TestResult {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let outbox = Arc::new(Outbox::new(
        OutboxConfig::default(),
        Arc::new(MemoryOutboxStore::new()),
    ));
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    let worker = SyncWorker::new(
        SyncWorkerConfig::default(),
        outbox.clone(),
        probe,
        Arc::new(FlakyOnce),
    );
    assert!(worker.set_observer(Arc::new(MetricsObserver::new(outbox.clone()))));
    metrics::with_local_recorder(&recorder, || -> TestResult {
        for kind in ["note", "note", "note", "flaky"] {
            outbox.enqueue(Operation::new(kind, "/notes", "{}"), 1)?;
        }
        // One batch of four: three done, the flaky one retried.
        assert_eq!(worker.tick(1)?, 4);
        // Its backoff over: a batch of one, done.
        assert_eq!(worker.tick(3_600_000)?, 1);
        Ok(())
    })?;
    let snapshot = taken(&snapshotter);
    let sent = "messaging.client.sent.messages";
    assert_eq!(counter(&snapshot, sent, &[("outcome", "done")]), 4);
    assert_eq!(counter(&snapshot, sent, &[("outcome", "retry")]), 1);
    assert_eq!(counter(&snapshot, sent, &[("outcome", "failed")]), 0);
    assert_eq!(histogram(&snapshot, "sync.client.batch.size"), [1.0, 4.0]);
    assert_eq!(
        histogram(&snapshot, "sync.client.send.attempts"),
        [1.0, 1.0, 1.0, 1.0, 2.0]
    );
    let durations = histogram(&snapshot, "messaging.client.operation.duration");
    assert_eq!(durations.len(), 2);
    assert!(
        durations.iter().all(|d| *d >= 0.0 && *d < 60.0),
        "{durations:?}"
    );
    let depth = "sync.outbox.operations";
    assert_eq!(count_gauge(&snapshot, depth, &[("state", "done")]), Some(4));
    assert_eq!(
        count_gauge(&snapshot, depth, &[("state", "pending")]),
        Some(0)
    );
    assert_eq!(
        count_gauge(&snapshot, depth, &[("state", "in_flight")]),
        Some(0)
    );
    assert_eq!(
        count_gauge(&snapshot, "sync.outbox.oldest_pending.age", &[]),
        Some(0)
    );
    Ok(())
}

#[test]
fn pulls_count_changes_held_and_lag() {
    use sync_engine::{EngineError, PullReport, SyncObserver};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let outbox = Arc::new(Outbox::new(
        OutboxConfig::default(),
        Arc::new(MemoryOutboxStore::new()),
    ));
    let observer = MetricsObserver::new(outbox);
    metrics::with_local_recorder(&recorder, || {
        observer.on_pull(&PullReport {
            pages: 2,
            applied: 7,
            held: 3,
            caught_up: true,
            ..PullReport::default()
        });
        observer.on_pull_error(&EngineError::NotRunning);
        observer.on_pull(&PullReport {
            pages: 1,
            applied: 5,
            held: 1,
            caught_up: false,
            ..PullReport::default()
        });
    });
    let snapshot = taken(&snapshotter);
    assert_eq!(
        counter(&snapshot, "sync.client.pulls", &[("outcome", "ok")]),
        2
    );
    assert_eq!(
        counter(&snapshot, "sync.client.pulls", &[("outcome", "error")]),
        1
    );
    assert_eq!(
        counter(&snapshot, "messaging.client.consumed.messages", &[]),
        12
    );
    assert_eq!(count_gauge(&snapshot, "sync.download.held", &[]), Some(1));
    // Not caught up at the last pull: the time since the first one did.
    let lag = gauge(&snapshot, "sync.download.lag", &[]);
    assert!((0.0..60.0).contains(&lag), "{lag}");
}

/// `AsyncOutbox::enqueue` reads the trace in effect on the enqueuing task,
/// not on the blocking thread its store write moves to: a tracer keeps the
/// current span per thread (here, a thread-local set only where the app
/// runs).
#[tokio::test(flavor = "current_thread")]
async fn an_async_enqueue_keeps_the_trace_of_the_enqueuing_task() -> TestResult {
    use std::cell::RefCell;
    thread_local! {
        static CURRENT: RefCell<Option<String>> = const { RefCell::new(None) };
    }
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    CURRENT.with(|current| *current.borrow_mut() = Some(trace.to_owned()));
    let store = Arc::new(MemoryOutboxStore::new());
    let outbox = Arc::new(Outbox::new(
        OutboxConfig {
            trace_context: Some(sync_outbox::TraceContext::new(|| {
                CURRENT.with(|current| current.borrow().clone())
            })),
            ..OutboxConfig::default()
        },
        store.clone(),
    ));
    let queue = sync_engine::AsyncOutbox::new(outbox);
    let id = queue
        .enqueue(Operation::new("note", "/notes", "{}"))
        .await?;
    let stored = sync_outbox::OutboxStore::get(&*store, &id)?.ok_or("not stored")?;
    assert_eq!(stored.traceparent.as_deref(), Some(trace));
    Ok(())
}
