//! `wait` ends with each way an operation can end, wakes on the change that
//! ends it (from another thread, without polling), and gives up at its
//! timeout while the operation is still on its way.

use std::sync::Arc;
use std::time::Duration;

use super::Completion;
use crate::memory_store::MemoryOutboxStore;
use crate::{Operation, Outbox, OutboxConfig, OutboxError, RetryPolicy, SendOutcome};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn outbox() -> Arc<Outbox> {
    let config = OutboxConfig {
        retry: RetryPolicy {
            max_attempts: 2,
            ..RetryPolicy::default()
        },
        ..OutboxConfig::default()
    };
    Arc::new(Outbox::new(config, Arc::new(MemoryOutboxStore::new())))
}

/// Claims everything due at `now` on another thread and ends each with
/// `outcome`.
fn send_later(
    outbox: &Arc<Outbox>,
    outcome: fn() -> SendOutcome<'static>,
) -> std::thread::JoinHandle<Result<(), OutboxError>> {
    let outbox = Arc::clone(outbox);
    std::thread::spawn(move || {
        for claimed in outbox.claim(0, 10)?.detach() {
            outbox.record(&claimed.id, outcome(), 1)?;
        }
        Ok(())
    })
}

#[test]
fn a_wait_ends_done_failed_or_gone() -> TestResult {
    let outbox = outbox();
    let id = outbox.enqueue(Operation::new("note.save", "/notes/1", "{}"), 0)?;
    let sender = send_later(&outbox, || SendOutcome::AcknowledgedAt { version: 7 });
    match outbox.wait(&id, Duration::from_secs(10))? {
        Some(Completion::Done(op)) => assert_eq!(op.server_version, Some(7)),
        other => return Err(format!("expected done, got {other:?}").into()),
    }
    sender.join().map_err(|_| "sender panicked")??;

    let refused = outbox.enqueue(Operation::new("note.save", "/notes/2", "{}"), 0)?;
    let sender = send_later(&outbox, || SendOutcome::refused("HTTP 422: title missing"));
    match outbox.wait(&refused, Duration::from_secs(10))? {
        Some(Completion::Failed(op)) => assert!(op.last_error.contains("title missing")),
        other => return Err(format!("expected failed, got {other:?}").into()),
    }
    sender.join().map_err(|_| "sender panicked")??;

    outbox.discard(&refused)?;
    assert_eq!(
        outbox.wait(&refused, Duration::ZERO)?,
        Some(Completion::Gone)
    );
    Ok(())
}

#[test]
fn a_retry_is_not_an_end_and_the_timeout_is_kept() -> TestResult {
    let outbox = outbox();
    let id = outbox.enqueue(Operation::new("note.save", "/notes/1", "{}"), 0)?;
    // A retryable failure puts it back to pending: still on its way.
    send_later(&outbox, || SendOutcome::retry_later("HTTP 503", None))
        .join()
        .map_err(|_| "sender panicked")??;
    assert_eq!(outbox.completion(&id)?, None);
    assert_eq!(outbox.wait(&id, Duration::from_millis(50))?, None);
    Ok(())
}

#[test]
fn changed_since_resolves_on_the_next_status_change() -> TestResult {
    let outbox = outbox();
    let seen = outbox.change_count();
    let id = outbox.enqueue(Operation::new("note.save", "/notes/1", "{}"), 0)?;
    assert!(outbox.change_count() != seen, "an enqueue is a change");
    let seen = outbox.change_count();
    let waiter = {
        let changed = outbox.changed_since(seen);
        std::thread::spawn(move || block_on(changed))
    };
    outbox.discard(&id)?;
    waiter.join().map_err(|_| "waiter panicked")?;
    Ok(())
}

/// A minimal executor: parks the thread until the future's waker fires.
fn block_on(future: impl Future<Output = ()>) {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    while future.as_mut().poll(&mut cx).is_pending() {
        std::thread::park();
    }
}
