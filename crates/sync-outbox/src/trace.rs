//! [`TraceContext`]: where the outbox reads the W3C `traceparent` in effect
//! when an operation is enqueued.

use std::fmt;
use std::sync::Arc;

/// Gives the W3C `traceparent` of the trace in effect now, on the thread
/// that enqueues: the app's tracing stack knows it, the outbox does not
/// (with OpenTelemetry, the current context's span, formatted by its
/// `TraceContextPropagator`). Set it as
/// [`OutboxConfig::trace_context`](crate::OutboxConfig::trace_context):
/// each operation enqueued without a [`traceparent`](crate::Operation::traceparent)
/// gets the one this returns. Called with the outbox held: keep it quick
/// and do not call the outbox from it.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use sync_outbox::{MemoryOutboxStore, Operation, Outbox, OutboxConfig, OutboxStore, TraceContext};
///
/// // An app would ask its tracer for the current span here.
/// let current = TraceContext::new(|| {
///     Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned())
/// });
/// let store = Arc::new(MemoryOutboxStore::new());
/// let outbox = Outbox::new(OutboxConfig { trace_context: Some(current), ..OutboxConfig::default() }, store.clone());
/// let id = outbox.enqueue(Operation::new("note.create", "/notes", "{}"), 0)?;
/// let stored = store.get(&id)?.expect("stored");
/// assert_eq!(stored.traceparent.as_deref(), Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
/// # Ok::<_, sync_outbox::OutboxError>(())
/// ```
#[derive(Clone)]
pub struct TraceContext(Arc<dyn Fn() -> Option<String> + Send + Sync>);

impl TraceContext {
    /// Reads the current `traceparent` with `current` (`None`: no trace).
    pub fn new(current: impl Fn() -> Option<String> + Send + Sync + 'static) -> Self {
        Self(Arc::new(current))
    }

    /// The current `traceparent`, if there is one and it is valid
    /// ([`sync_protocol::is_traceparent`]).
    #[must_use]
    pub fn current(&self) -> Option<String> {
        (self.0)().filter(|value| sync_protocol::is_traceparent(value))
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TraceContext(..)")
    }
}

/// Two contexts are equal when they are the same function (a clone).
impl PartialEq for TraceContext {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
