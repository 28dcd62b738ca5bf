//! A bounded drain on both engines: a queue that fits in the time drains
//! and says so; one that does not stops at the deadline with what went,
//! what is left and what is still in flight counted; an engine not started
//! is refused. The async one runs on tokio's paused clock, so its deadline
//! is exact.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sync_engine::{
    AsyncSyncEngine, Clock, EngineError, SendResult, SyncEngine, SyncEngineConfig, SyncTransport,
    SystemClock,
};
use sync_outbox::{Operation, Outbox};

use crate::{memory_outbox as outbox, online_probe as probe};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn one_at_a_time() -> SyncEngineConfig {
    SyncEngineConfig {
        batch_limit: 1,
        ..SyncEngineConfig::default()
    }
}

fn enqueue(outbox: &Outbox, n: usize, now: i64) -> Result<(), sync_outbox::OutboxError> {
    for i in 0..n {
        outbox.enqueue(
            Operation::new("note.save", format!("/notes/{i}"), "{}"),
            now,
        )?;
    }
    Ok(())
}

/// Answers the first two sends, then holds the third until the test lets
/// it go (a request still on the wire at the deadline).
struct Gate {
    sent: Mutex<usize>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl SyncTransport for Gate {
    fn send(&self, _op: &Operation) -> SendResult {
        let n = {
            let mut sent = self.sent.lock().unwrap_or_else(PoisonError::into_inner);
            *sent += 1;
            *sent
        };
        if n == 3 {
            let _ = self
                .release
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .recv_timeout(Duration::from_secs(30));
        }
        SendResult::ok()
    }
}

#[test]
fn the_threaded_engine_drains_or_stops_at_the_deadline() -> TestResult {
    let outbox = outbox();
    let (release, gate) = mpsc::channel();
    let engine = SyncEngine::new(
        one_at_a_time(),
        outbox.clone(),
        probe(),
        Arc::new(Gate {
            sent: Mutex::new(0),
            release: Mutex::new(gate),
        }),
    );
    match engine.drain(Duration::from_secs(1)) {
        Err(EngineError::NotRunning) => {}
        other => return Err(format!("expected NotRunning, got {other:?}").into()),
    }
    engine.start(SystemClock)?;
    enqueue(&outbox, 5, SystemClock.now_ms())?;
    // Generous: the two quick sends must land before it even on a loaded
    // machine; the third is held until released.
    let report = engine.drain(Duration::from_secs(2))?;
    assert!(!report.complete, "{report:?}");
    // The engine may have sent the first before the drain began: `sent`
    // counts from the drain's start; the rest is where the queue stands.
    assert!(report.sent <= 2 && report.failed == 0, "{report:?}");
    assert_eq!((report.in_flight, report.left), (1, 2), "{report:?}");
    assert_eq!(outbox.stats()?.done, 2);
    assert!(report.elapsed >= Duration::from_secs(2), "{report:?}");
    // Let the held request finish: a second drain ends with nothing left.
    release.send(())?;
    let report = engine.drain(Duration::from_secs(10))?;
    assert!(report.complete, "{report:?}");
    assert_eq!((report.left, report.in_flight), (0, 0));
    assert_eq!(outbox.stats()?.done, 5);
    engine.stop()?;
    Ok(())
}

/// Each send takes 10 s of tokio time.
struct Slow;

#[async_trait::async_trait]
impl sync_engine::AsyncSyncTransport for Slow {
    async fn send(&self, _op: &Operation) -> SendResult {
        tokio::time::sleep(Duration::from_secs(10)).await;
        SendResult::ok()
    }
}

#[tokio::test(start_paused = true)]
async fn the_async_engine_stops_at_the_deadline_on_tokios_clock() -> TestResult {
    let outbox = outbox();
    let engine = AsyncSyncEngine::new(one_at_a_time(), outbox.clone(), probe(), Arc::new(Slow));
    match engine.drain(Duration::from_secs(25)).await {
        Err(EngineError::NotRunning) => {}
        other => return Err(format!("expected NotRunning, got {other:?}").into()),
    }
    engine.start().await?;
    let now = sync_engine::TokioClock::new().now_ms();
    enqueue(&outbox, 5, now)?;
    // 25 s at 10 s a send, one at a time: two done, the third on the wire.
    let report = engine.drain(Duration::from_secs(25)).await?;
    assert_eq!(report.elapsed, Duration::from_secs(25), "{report:?}");
    assert!(!report.complete);
    assert_eq!(
        (report.sent, report.in_flight, report.left),
        (2, 1, 2),
        "{report:?}"
    );
    let report = engine.drain(Duration::from_secs(60)).await?;
    assert!(report.complete, "{report:?}");
    assert_eq!((report.sent, report.left), (3, 0));
    engine.stop().await?;
    Ok(())
}
