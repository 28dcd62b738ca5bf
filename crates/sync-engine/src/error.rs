//! [`EngineError`], the one error type of this crate, and [`SyncStep`], the
//! step of a sync pass an error happened in.

use std::error::Error as _;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use sync_outbox::OutboxError;

/// Everything that can go wrong while syncing.
///
/// `Display` gives this error's own message (the operation and the step);
/// the cause is in [`source`](std::error::Error::source), as std
/// conventions want. [`EngineError::report`] joins the whole chain into one
/// line for a log or a UI. No message contains a payload.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The outbox or its store failed. The engine itself reports
    /// [`EngineError::OutboxStep`], which names the step and the operation;
    /// this variant is what `?` makes of a bare [`OutboxError`].
    #[error("outbox failed")]
    Outbox(#[from] OutboxError),
    /// A step of a sync pass failed in the outbox or its store.
    #[error("{step}{} failed", OperationSuffix(.id.as_deref()))]
    OutboxStep {
        /// What the engine was doing.
        step: SyncStep,
        /// The operation it was doing it for, if one.
        id: Option<String>,
        /// The outbox's error (for a store failure, with its file and offset).
        #[source]
        source: OutboxError,
    },
    /// The transport panicked while sending a batch of one operation. The
    /// operation was recorded as a retryable failure (its attempt counted,
    /// backoff applied), so a transport that always panics ends `Failed`
    /// after the policy's attempts, not in a loop.
    #[error("transport panicked while sending operation {id}")]
    TransportPanicked {
        /// The operation being sent.
        id: String,
    },
    /// The transport panicked in `send_batch` with several operations. Which
    /// were sent is unknown, so each was recorded as a retryable failure
    /// (attempt counted, backoff applied); the server dedupes resends by id.
    #[error(
        "transport panicked while sending a batch of {len} operations starting with {first_id}"
    )]
    BatchPanicked {
        /// The first operation of the batch.
        first_id: String,
        /// How many operations the batch had.
        len: usize,
    },
    /// The transport did not report exactly one result per operation:
    /// `send_batch` returned a different number of results than operations
    /// (then none can be trusted to be an operation's own, and none is
    /// recorded), or `send_each` left some out or reported some twice or out
    /// of range (those are ignored). Each operation without a result was
    /// recorded as a retryable failure, never as `Done`.
    #[error(
        "transport returned {got} results for a batch of {expected} operations starting with {first_id}"
    )]
    BatchResultCount {
        /// The first operation of the batch.
        first_id: String,
        /// Operations in the batch.
        expected: usize,
        /// Results reported, counting any out of range or repeated.
        got: usize,
    },
    /// A pull of the server's change feed failed: the server answered with
    /// a failure or a body that is not a page (`answered`), or did not
    /// answer. Pages applied before it stay applied; the next pull starts
    /// from the last one stored.
    #[error("pulling changes failed: {error}")]
    Pull {
        /// A short description (never a body or a credential).
        error: String,
        /// The server's hint of how long to wait (ms).
        retry_after_ms: Option<i64>,
        /// Whether the server answered (`false`: unreachable).
        answered: bool,
    },
    /// The engine has no download half: give it a `Downloader` first
    /// (`SyncEngine::set_download`).
    #[error("the engine has no downloader")]
    NoDownload,
    /// [`SyncEngine::start`](crate::SyncEngine::start) was called while running.
    #[error("engine already running")]
    AlreadyRunning,
    /// `AsyncSyncEngine::start` was polled outside a tokio runtime.
    #[error("no tokio runtime: start the async engine from inside one")]
    NoRuntime,
    /// A background thread could not be started.
    #[error("cannot spawn an engine thread")]
    Spawn(#[source] std::io::Error),
    /// A background thread died of a panic outside the transport.
    #[error("an engine thread panicked")]
    SenderPanicked,
    /// The call needs a started engine (`drain`: it waits for the engine's
    /// senders).
    #[error("the engine is not started")]
    NotRunning,
}

impl EngineError {
    /// This error and every cause under it, `": "`-separated: what to log or
    /// show when only one line fits (what [`SyncEngine::last_error`] keeps).
    ///
    /// [`SyncEngine::last_error`]: crate::SyncEngine::last_error
    ///
    /// # Examples
    ///
    /// ```
    /// use sync_engine::{EngineError, SyncStep};
    /// use sync_outbox::OutboxError;
    ///
    /// let error = EngineError::OutboxStep {
    ///     step: SyncStep::RecordDone,
    ///     id: Some("op_1".into()),
    ///     source: OutboxError::store(std::io::Error::other("disk full")),
    /// };
    /// assert_eq!(error.to_string(), "recording the acknowledgement of operation op_1 failed");
    /// assert_eq!(
    ///     error.report(),
    ///     "recording the acknowledgement of operation op_1 failed: outbox store failed: disk full"
    /// );
    /// ```
    #[must_use]
    pub fn report(&self) -> String {
        let mut report = self.to_string();
        let mut cause = self.source();
        while let Some(error) = cause {
            report.push_str(": ");
            report.push_str(&error.to_string());
            cause = error.source();
        }
        report
    }
}

/// A step of a sync pass, named by [`EngineError::OutboxStep`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SyncStep {
    /// Start-up recovery of interrupted sends (`Outbox::recover`).
    Recover,
    /// Making operations in backoff due, on reconnect or `sync_now`.
    MakeDue,
    /// Claiming a batch (`Outbox::claim`).
    Claim,
    /// Recording an acknowledgement (`Outbox::mark_done`).
    RecordDone,
    /// Recording a failed send (`Outbox::mark_failed`).
    RecordFailure,
    /// Making a batch's results durable (`Outbox::sync`).
    SyncResults,
    /// Reading where the device is in the server's change feed.
    ReadDownloadState,
    /// Applying a pulled page (and storing the cursor with it).
    ApplyPage,
    /// Applying pulled changes that were held for local operations.
    ReleaseHeld,
    /// Forgetting a cursor the server refused, to start a snapshot.
    RestartDownload,
}

impl fmt::Display for SyncStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Recover => "recovering interrupted sends",
            Self::MakeDue => "making waiting operations due",
            Self::Claim => "claiming a batch",
            Self::RecordDone => "recording the acknowledgement",
            Self::RecordFailure => "recording the failure",
            Self::SyncResults => "syncing the batch's results",
            Self::ReadDownloadState => "reading the download state",
            Self::ApplyPage => "applying a pulled page",
            Self::ReleaseHeld => "applying held changes",
            Self::RestartDownload => "restarting the download",
        })
    }
}

/// ` of operation {id}` when there is one.
struct OperationSuffix<'a>(Option<&'a str>);

impl fmt::Display for OperationSuffix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(id) => write!(f, " of operation {id}"),
            None => Ok(()),
        }
    }
}

/// The last error a background sender met, shared by an engine and its
/// senders (threads or tasks).
#[derive(Debug, Default)]
pub(crate) struct LastError(Mutex<Option<Arc<EngineError>>>);

impl LastError {
    pub(crate) fn set(&self, error: EngineError) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(error));
    }

    pub(crate) fn get(&self) -> Option<Arc<EngineError>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
