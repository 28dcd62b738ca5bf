//! Completion per operation through both engines: a UI waits for one item
//! ("saved to the server" or "refused, and why") without polling the queue.

use std::sync::Arc;
use std::time::Duration;

use sync_engine::{
    AsyncOutbox, AsyncSyncEngine, SendResult, SyncEngine, SyncEngineConfig, SyncTransport,
    SystemClock,
};
use sync_outbox::{Completion, Operation};

use crate::{memory_outbox as outbox, online_probe as probe};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Accepts every operation but those whose payload is `bad`.
struct Picky;

impl SyncTransport for Picky {
    fn send(&self, op: &Operation) -> SendResult {
        if op.payload == "bad" {
            SendResult::permanent("HTTP 422: bad note")
        } else {
            SendResult::ok_at(41)
        }
    }
}

#[async_trait::async_trait]
impl sync_engine::AsyncSyncTransport for Picky {
    async fn send(&self, op: &Operation) -> SendResult {
        SyncTransport::send(self, op)
    }
}

#[test]
fn the_threaded_engine_ends_each_wait() -> TestResult {
    let outbox = outbox();
    let engine = SyncEngine::started(
        SyncEngineConfig::default(),
        outbox.clone(),
        probe(),
        Arc::new(Picky),
        SystemClock,
    )?;
    let now = sync_engine::Clock::now_ms(&SystemClock);
    let good = outbox.enqueue(Operation::new("note.save", "/notes/1", "good"), now)?;
    let bad = outbox.enqueue(Operation::new("note.save", "/notes/2", "bad"), now)?;
    match outbox.wait(&good, Duration::from_secs(10))? {
        Some(Completion::Done(op)) => assert_eq!(op.server_version, Some(41)),
        other => return Err(format!("expected done, got {other:?}").into()),
    }
    match outbox.wait(&bad, Duration::from_secs(10))? {
        Some(Completion::Failed(op)) => assert!(op.last_error.contains("bad note")),
        other => return Err(format!("expected failed, got {other:?}").into()),
    }
    engine.stop()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_async_engine_ends_each_wait() -> TestResult {
    let outbox = outbox();
    let engine = AsyncSyncEngine::new(
        SyncEngineConfig::default(),
        outbox.clone(),
        probe(),
        Arc::new(Picky),
    );
    engine.start().await?;
    let queue = AsyncOutbox::new(outbox);
    let good = queue
        .enqueue(Operation::new("note.save", "/notes/1", "good"))
        .await?;
    let bad = queue
        .enqueue(Operation::new("note.save", "/notes/2", "bad"))
        .await?;
    let limit = Duration::from_secs(10);
    match tokio::time::timeout(limit, queue.wait(&good)).await?? {
        Completion::Done(op) => assert_eq!(op.server_version, Some(41)),
        other => return Err(format!("expected done, got {other:?}").into()),
    }
    match tokio::time::timeout(limit, queue.wait(&bad)).await?? {
        Completion::Failed(op) => assert!(op.last_error.contains("bad note")),
        other => return Err(format!("expected failed, got {other:?}").into()),
    }
    queue.discard(&bad).await?;
    assert_eq!(queue.wait(&bad).await?, Completion::Gone);
    engine.stop().await?;
    Ok(())
}
