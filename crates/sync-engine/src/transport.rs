//! [`SyncTransport`], the trait an application implements to reach its
//! server, [`SendResult`], what one send came to, and [`ResultSink`], where
//! a transport reports each result as it arrives.

use sync_outbox::{Delivery, Operation, SendOutcome};

/// What one send came to.
///
/// Four kinds, each with its constructor:
///
/// | what happened | constructor | the operation |
/// | --- | --- | --- |
/// | the server accepted it | [`ok`](Self::ok) | `Done` |
/// | the server answered "not now" (429, 409, 500) | [`retryable`](Self::retryable), [`retry_after`](Self::retry_after) | retried after a backoff; the attempt counts |
/// | the server refused it for good (400, 422) | [`permanent`](Self::permanent) | `Failed`, a dead letter |
/// | no answer: the server or the network was unreachable | [`not_sent`](Self::not_sent) (the request never left), [`no_answer`](Self::no_answer) (it may have) | retried; the attempt does **not** count, and the engine pauses sending as offline until a send gets through |
///
/// Report an outage as one of the last two, not as `retryable`: an outage
/// must not use up an operation's attempts.
///
/// # Examples
///
/// ```
/// use sync_engine::SendResult;
///
/// assert!(SendResult::ok().ok);
/// let busy = SendResult::retryable("HTTP 429");
/// assert!(!busy.ok && busy.retryable);
/// let bad = SendResult::permanent("bad request");
/// assert!(!bad.ok && !bad.retryable);
/// assert_eq!(SendResult::retry_after(30_000, "429").retry_after_ms, Some(30_000));
/// let refused = SendResult::not_sent("connection refused");
/// assert!(refused.retryable && refused.is_unanswered());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendResult {
    /// The server accepted the operation.
    pub ok: bool,
    /// On failure: whether trying again later may succeed (timeouts, 503),
    /// rather than never (400, invalid payload).
    pub retryable: bool,
    /// On failure: a short description, stored as the operation's
    /// `last_error`. Never put payloads or credentials here.
    pub error: String,
    /// On failure: the server's hint of how long to wait (ms), used when it is
    /// longer than the backoff.
    pub retry_after_ms: Option<i64>,
    /// On failure: `Some` when no answer came at all (the server or the
    /// network was unreachable), saying whether the request may have
    /// reached the server. `None` for an answer.
    pub unanswered: Option<Delivery>,
    /// On success: the version the server's answer named for the
    /// operation's changes in its change feed (the `sync-version` header),
    /// kept as the operation's `server_version`.
    pub server_version: Option<i64>,
    /// On success: the body of the server's answer, kept by an operation
    /// that [keeps its answer](sync_outbox::Operation::keep_answer) (the
    /// real id a later operation [needs](sync_outbox::Need)). A transport
    /// sets it for such operations only.
    pub answer: Option<String>,
}

impl SendResult {
    /// Accepted by the server.
    #[must_use]
    pub fn ok() -> Self {
        Self {
            ok: true,
            ..Self::default()
        }
    }

    /// Accepted by the server, whose answer named `version` as where the
    /// operation's changes are in its change feed (`sync-version`).
    ///
    /// # Examples
    ///
    /// ```
    /// use sync_engine::SendResult;
    /// use sync_outbox::SendOutcome;
    ///
    /// assert_eq!(SendResult::ok_at(42).outcome(), SendOutcome::AcknowledgedAt { version: 42 });
    /// ```
    #[must_use]
    pub fn ok_at(version: i64) -> Self {
        Self {
            server_version: Some(version),
            ..Self::ok()
        }
    }

    /// This success, with the body of the server's answer (see
    /// [`answer`](Self::answer)).
    ///
    /// # Examples
    ///
    /// ```
    /// use sync_engine::SendResult;
    /// use sync_outbox::SendOutcome;
    ///
    /// let created = SendResult::ok().with_answer(r#"{"id":"n42"}"#);
    /// assert_eq!(
    ///     created.outcome(),
    ///     SendOutcome::AcknowledgedWith { version: None, answer: r#"{"id":"n42"}"# }
    /// );
    /// ```
    #[must_use]
    pub fn with_answer(mut self, answer: impl Into<String>) -> Self {
        self.answer = Some(answer.into());
        self
    }

    /// The server answered with a temporary failure: try again after the
    /// backoff. The attempt counts.
    pub fn retryable(error: impl Into<String>) -> Self {
        Self {
            ok: false,
            retryable: true,
            error: error.into(),
            ..Self::default()
        }
    }

    /// A permanent failure: the operation becomes `Failed` at once.
    pub fn permanent(error: impl Into<String>) -> Self {
        Self {
            ok: false,
            retryable: false,
            error: error.into(),
            ..Self::default()
        }
    }

    /// A temporary failure with the server's hint to wait `ms` (a 429 with
    /// `Retry-After`).
    pub fn retry_after(ms: i64, error: impl Into<String>) -> Self {
        Self {
            retry_after_ms: Some(ms),
            ..Self::retryable(error)
        }
    }

    /// No answer, and the request never left: no connection (refused, no
    /// route), the name lookup failed, TLS could not be set up. Retried; the
    /// attempt does not count, the resend window does not start
    /// ([`Delivery::NotSent`]), and the engine pauses sending as offline.
    pub fn not_sent(error: impl Into<String>) -> Self {
        Self {
            unanswered: Some(Delivery::NotSent),
            ..Self::retryable(error)
        }
    }

    /// No answer, though the request may have reached the server: the
    /// connection was reset, the time ran out, or a gateway said the server
    /// did not answer (502, 503, 504). Retried; the attempt does not count,
    /// the resend window starts ([`Delivery::Unknown`]), and the engine
    /// pauses sending as offline.
    pub fn no_answer(error: impl Into<String>) -> Self {
        Self {
            unanswered: Some(Delivery::Unknown),
            ..Self::retryable(error)
        }
    }

    /// What this result means for the operation, as the outbox records it:
    /// one of [`SendOutcome`]'s cases, where no impossible state (an `ok`
    /// that is also a failure) can be said. The engine reads every result
    /// through this.
    ///
    /// # Examples
    ///
    /// ```
    /// use sync_engine::SendResult;
    /// use sync_outbox::{Delivery, SendOutcome};
    ///
    /// assert_eq!(SendResult::ok().outcome(), SendOutcome::Acknowledged);
    /// assert!(matches!(
    ///     SendResult::not_sent("refused").outcome(),
    ///     SendOutcome::Unanswered { delivery: Delivery::NotSent, .. }
    /// ));
    /// ```
    #[must_use]
    pub fn outcome(&self) -> SendOutcome<'_> {
        match (self.ok, self.unanswered) {
            (true, _) => match (&self.answer, self.server_version) {
                (Some(answer), version) => SendOutcome::AcknowledgedWith { version, answer },
                (None, Some(version)) => SendOutcome::AcknowledgedAt { version },
                (None, None) => SendOutcome::Acknowledged,
            },
            (false, Some(delivery)) => SendOutcome::Unanswered {
                error: &self.error,
                delivery,
                retry_after_ms: self.retry_after_ms,
            },
            (false, None) => SendOutcome::Failed {
                error: &self.error,
                retryable: self.retryable,
                retry_after_ms: self.retry_after_ms,
            },
        }
    }

    /// Whether no answer came ([`not_sent`](Self::not_sent),
    /// [`no_answer`](Self::no_answer)).
    #[must_use]
    pub fn is_unanswered(&self) -> bool {
        !self.ok && self.unanswered.is_some()
    }
}

/// Where a transport reports each operation's result as soon as it has it,
/// from [`SyncTransport::send_each`] and `AsyncSyncTransport::send_each`
/// (feature `tokio`).
///
/// The engine records what is reported at once (without waiting for a
/// sync; one sync covers the whole batch at its end), so a process killed
/// in the middle of a batch sends again only what had no result yet: the
/// requests that were on the wire, not the whole batch. Results are
/// identified by their operation's index in the batch; an index out of
/// range, or reported twice, is ignored (and reported as
/// [`EngineError::BatchResultCount`](crate::EngineError::BatchResultCount)).
/// An operation without a result is a retryable failure.
///
/// # Examples
///
/// ```
/// use sync_engine::{ResultSink, SendResult};
///
/// let mut got = Vec::new();
/// let mut record = |batch: Vec<(usize, SendResult)>| got.extend(batch);
/// let mut sink = ResultSink::new(&mut record);
/// sink.report(1, SendResult::ok());
/// sink.report_all(vec![SendResult::ok(), SendResult::permanent("HTTP 422")]);
/// drop(sink);
/// assert_eq!(got.len(), 3);
/// assert_eq!(got[2], (1, SendResult::permanent("HTTP 422")));
/// ```
pub struct ResultSink<'a> {
    record: &'a mut (dyn FnMut(Vec<(usize, SendResult)>) + Send + 'a),
    /// How many results a `send_batch` returned when that was the wrong
    /// number (so none was reported), for the engine's error.
    pub(crate) miscounted: Option<usize>,
}

impl<'a> ResultSink<'a> {
    /// A sink that hands every report to `record`, as `(index, result)`
    /// pairs.
    pub fn new(record: &'a mut (dyn FnMut(Vec<(usize, SendResult)>) + Send + 'a)) -> Self {
        Self {
            record,
            miscounted: None,
        }
    }

    /// Reports the result of operation `index` of the batch.
    pub fn report(&mut self, index: usize, result: SendResult) {
        (self.record)(vec![(index, result)]);
    }

    /// Reports several results, each with its operation's index, in one go
    /// (one store write).
    pub fn report_many(&mut self, results: Vec<(usize, SendResult)>) {
        if !results.is_empty() {
            (self.record)(results);
        }
    }

    /// Reports one result per operation, in batch order, in one go (one
    /// store write): for a batch answered as a whole.
    pub fn report_all(&mut self, results: Vec<SendResult>) {
        if !results.is_empty() {
            (self.record)(results.into_iter().enumerate().collect());
        }
    }
}

impl std::fmt::Debug for ResultSink<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultSink").finish_non_exhaustive()
    }
}

/// Sends operations to the server. Implemented by the application.
///
/// Delivery is at least once: an operation whose send was interrupted (a
/// crash, a timeout without answer) is sent again, so the server should
/// dedupe on the operation's `id`.
///
/// The engine calls [`send_each`](Self::send_each). Its default calls
/// [`send_batch`](Self::send_batch) (whose default calls
/// [`send`](Self::send) for each operation) and reports the results when
/// all are in. A transport that sends one request per operation should
/// implement `send_each` to report each result as it arrives: a process
/// killed mid-batch then resends only the request that was on the wire.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
/// use sync_engine::{SendResult, SyncTransport};
/// use sync_outbox::Operation;
///
/// struct MyTransport {
///     online: AtomicBool,
/// }
///
/// impl SyncTransport for MyTransport {
///     fn send(&self, _op: &Operation) -> SendResult {
///         if !self.online.load(SeqCst) {
///             return SendResult::retryable("network offline");
///         }
///         SendResult::ok()
///     }
/// }
///
/// let transport = MyTransport { online: AtomicBool::new(true) };
/// assert!(transport.send(&Operation::default()).ok);
/// ```
pub trait SyncTransport: Send + Sync {
    /// Sends one operation and says how it went.
    fn send(&self, op: &Operation) -> SendResult;

    /// Sends several operations; returns one result per operation, in order.
    /// The default calls [`send`](Self::send) for each; a transport with a
    /// batch endpoint can do better.
    fn send_batch(&self, ops: &[Operation]) -> Vec<SendResult> {
        ops.iter().map(|op| self.send(op)).collect()
    }

    /// Sends several operations and reports each result to `results` as
    /// soon as it is known. What the engine calls.
    ///
    /// The default calls [`send_batch`](Self::send_batch) and reports its
    /// results together; if it returns a wrong number of them, none can be
    /// trusted to be its operation's own, and none is reported (each
    /// operation is then a retryable failure).
    ///
    /// # Examples
    ///
    /// One request per operation, each result reported as it arrives:
    ///
    /// ```
    /// use sync_engine::{ResultSink, SendResult, SyncTransport};
    /// use sync_outbox::Operation;
    ///
    /// struct PerRequest;
    /// impl SyncTransport for PerRequest {
    ///     fn send(&self, _op: &Operation) -> SendResult {
    ///         SendResult::ok() // one HTTP request, say
    ///     }
    ///     fn send_each(&self, ops: &[Operation], results: &mut ResultSink<'_>) {
    ///         for (index, op) in ops.iter().enumerate() {
    ///             results.report(index, self.send(op));
    ///         }
    ///     }
    /// }
    /// # let mut n = 0;
    /// # let mut record = |batch: Vec<(usize, SendResult)>| n += batch.len();
    /// # PerRequest.send_each(&[Operation::default(), Operation::default()], &mut ResultSink::new(&mut record));
    /// # assert_eq!(n, 2);
    /// ```
    fn send_each(&self, ops: &[Operation], results: &mut ResultSink<'_>) {
        let all = self.send_batch(ops);
        if all.len() == ops.len() {
            results.report_all(all);
        } else {
            results.miscounted = Some(all.len());
        }
    }
}
