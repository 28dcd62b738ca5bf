//! [`EngineError`], the one error type of this crate.

use sync_outbox::OutboxError;

/// Everything that can go wrong while syncing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The outbox or its store failed.
    #[error("outbox failed")]
    Outbox(#[from] OutboxError),
    /// The transport panicked while sending this operation. The operation
    /// stays `InFlight` and comes back through recovery after the outbox's
    /// `inflight_timeout_ms`.
    #[error("transport panicked while sending operation {id}")]
    TransportPanicked {
        /// The operation being sent.
        id: String,
    },
    /// [`SyncEngine::start`](crate::SyncEngine::start) was called while running.
    #[error("engine already running")]
    AlreadyRunning,
    /// A background thread could not be started.
    #[error("cannot spawn an engine thread")]
    Spawn(#[source] std::io::Error),
    /// A background thread died of a panic outside the transport.
    #[error("an engine thread panicked")]
    SenderPanicked,
}
