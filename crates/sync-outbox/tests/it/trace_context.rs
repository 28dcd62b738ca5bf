//! The `traceparent` an operation is stored with: its own if valid, else
//! the app's current one (`OutboxConfig::trace_context`), nothing when
//! neither; an edit coalesced into a pending operation brings its trace.

use std::sync::{Arc, Mutex, PoisonError};

use sync_outbox::{MemoryOutboxStore, Operation, Outbox, OutboxConfig, OutboxStore, TraceContext};

const A: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const B: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

#[test]
fn an_operation_keeps_its_own_trace_or_gets_the_current_one() -> Result<(), sync_outbox::OutboxError>
{
    let current: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(Some(A.into())));
    let reader = Arc::clone(&current);
    let store = Arc::new(MemoryOutboxStore::new());
    let outbox = Outbox::new(
        OutboxConfig {
            trace_context: Some(TraceContext::new(move || {
                reader
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
            })),
            ..OutboxConfig::default()
        },
        store.clone(),
    );
    let trace_of = |id: &str| -> Result<Option<String>, sync_outbox::OutboxError> {
        Ok(store.get(id)?.and_then(|op| op.traceparent))
    };
    let current_one = outbox.enqueue(Operation::new("k", "/x", "{}"), 1)?;
    let own = outbox.enqueue(
        Operation {
            traceparent: Some(B.into()),
            ..Operation::new("k", "/x", "{}")
        },
        1,
    )?;
    let invalid = outbox.enqueue(
        Operation {
            traceparent: Some("00-garbage-01".into()),
            ..Operation::new("k", "/x", "{}")
        },
        1,
    )?;
    *current.lock().unwrap_or_else(PoisonError::into_inner) = None;
    let none = outbox.enqueue(Operation::new("k", "/x", "{}"), 1)?;
    assert_eq!(trace_of(&current_one)?.as_deref(), Some(A));
    assert_eq!(trace_of(&own)?.as_deref(), Some(B));
    assert_eq!(
        trace_of(&invalid)?.as_deref(),
        Some(A),
        "an invalid trace is replaced by the current one"
    );
    assert_eq!(trace_of(&none)?, None);

    // A draft saved twice: the second edit's trace is the one sent.
    let first = outbox.enqueue(
        Operation {
            coalesce_key: Some("draft".into()),
            traceparent: Some(A.into()),
            ..Operation::new("k", "/x", "{\"v\":1}")
        },
        1,
    )?;
    let second = outbox.enqueue(
        Operation {
            coalesce_key: Some("draft".into()),
            traceparent: Some(B.into()),
            ..Operation::new("k", "/x", "{\"v\":2}")
        },
        2,
    )?;
    assert_eq!(first, second, "coalesced");
    assert_eq!(trace_of(&first)?.as_deref(), Some(B));
    Ok(())
}

#[test]
fn a_later_versions_traceparent_is_bounded() {
    let long = format!(
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-{}",
        "a".repeat(200)
    );
    assert!(!sync_protocol::is_traceparent(&long));
    assert!(sync_protocol::is_traceparent(
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"
    ));
    assert!(!sync_protocol::is_traceparent(
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-new\nline"
    ));
}
