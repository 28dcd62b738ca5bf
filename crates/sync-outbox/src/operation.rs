//! [`Operation`], the unit the outbox persists and sends, and its
//! [`OperationStatus`].

use serde::{Deserialize, Serialize};

/// A JSON error about `op`'s payload, without serde's message: that can
/// quote the payload (`invalid type: string "4242..."`).
fn payload_error(op: &Operation, error: &serde_json::Error) -> crate::OutboxError {
    use serde_json::error::Category;
    crate::OutboxError::Payload {
        id: op.id.clone(),
        kind: op.kind.clone(),
        problem: match error.classify() {
            Category::Io => "could not be written",
            Category::Syntax => "not valid JSON",
            Category::Data => "not the expected type",
            Category::Eof => "ends too early",
        },
        line: error.line(),
        column: error.column(),
    }
}

/// Why `value` could not become a payload: serde's serializer reports no
/// position, and its category ("syntax" for a map key that is not a string)
/// would mislead, so the problem is said as it is.
fn serialize_error(op: &Operation) -> crate::OutboxError {
    crate::OutboxError::Payload {
        id: op.id.clone(),
        kind: op.kind.clone(),
        problem: "the value cannot be written as JSON (a map whose keys are not strings, or a \
                  Serialize impl that failed)",
        line: 0,
        column: 0,
    }
}

/// What a `Failed` operation does to the later operations of its
/// `ordering_key`.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use sync_outbox::{MemoryOutboxStore, Operation, OrderingMode, Outbox, OutboxConfig, SendOutcome};
///
/// let config = OutboxConfig { ordering: OrderingMode::StopOnFailure, ..OutboxConfig::default() };
/// let outbox = Outbox::new(config, Arc::new(MemoryOutboxStore::new()));
/// let keyed = || Operation { ordering_key: Some("note-1".into()), ..Operation::new("note.update", "/notes/1", "{}") };
/// let create = outbox.enqueue(keyed(), 0)?;
/// let edit = outbox.enqueue(keyed(), 0)?;
/// let claim = outbox.claim(1, 10)?;
/// outbox.record(&create, SendOutcome::refused("HTTP 422"), 2)?;
/// drop(claim);
/// assert!(outbox.claim(3, 10)?.is_empty(), "the edit waits behind its failed create");
/// outbox.retry_failed(&create, 4)?;
/// assert_eq!(outbox.claim(5, 10)?.ops()[0].id, create, "then goes in its original order");
/// # let _ = edit;
/// # Ok::<_, sync_outbox::OutboxError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderingMode {
    /// A `Failed` operation no longer holds its key: later operations go
    /// on without it (the default).
    #[default]
    SkipFailed,
    /// "Stop the line": a `Failed` operation keeps blocking later
    /// operations of its key until it is retried
    /// ([`Outbox::retry_failed`](crate::Outbox::retry_failed),
    /// [`Outbox::correct`](crate::Outbox::correct)) or discarded. For
    /// operations that depend on each other, like a note's create and its
    /// edits.
    StopOnFailure,
}

/// Where an operation is in its life.
///
/// ```text
/// Pending -> InFlight -> Done
///               | (retryable failure, no answer, or recovery after a crash)
///               v
///            Pending again
///               | (permanent failure, attempts used up, or past the
///               v  resend window)
///            Failed -> (retry_failed, correct) -> Pending
/// ```
///
/// # Examples
///
/// ```
/// use sync_outbox::OperationStatus;
///
/// assert_eq!(OperationStatus::default(), OperationStatus::Pending);
/// assert!(OperationStatus::Done.is_terminal());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationStatus {
    /// Waiting to be sent, at or after `next_retry_at_ms`.
    #[default]
    Pending,
    /// Claimed by a worker; a send has started.
    InFlight,
    /// Acknowledged by the server. Terminal.
    Done,
    /// Failed permanently or out of attempts. Terminal, except for
    /// [`Outbox::retry_failed`](crate::Outbox::retry_failed).
    Failed,
}

impl OperationStatus {
    /// Whether the operation is finished (`Done` or `Failed`).
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Done | Self::Failed)
    }
}

/// One local operation waiting to reach the server.
///
/// The application fills `kind`, `target` and `payload` (and optionally `id`,
/// `ordering_key`, `coalesce_key`); [`Outbox::enqueue`](crate::Outbox::enqueue)
/// fills the rest.
///
/// # Examples
///
/// ```
/// use sync_outbox::{Operation, OperationStatus};
///
/// let op = Operation::new("message.send", "/api/messages", r#"{"text":"hello"}"#);
/// assert_eq!(op.status, OperationStatus::Pending);
/// assert_eq!(op.attempt, 0);
/// assert!(op.id.is_empty(), "enqueue assigns an id");
/// ```
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Operation {
    /// Unique id, and the idempotency key the server dedupes on. Empty on
    /// enqueue means "assign one".
    pub id: String,
    /// What the operation does (`"message.send"`).
    pub kind: String,
    /// Where it goes (`"/api/messages"`).
    pub target: String,
    /// The body, usually JSON.
    pub payload: String,
    /// Where the operation is in its life.
    pub status: OperationStatus,
    /// Sends the server answered, plus sends interrupted by a crash:
    /// incremented and persisted before each send, and taken back when the
    /// send got no answer at all ([`SendOutcome::Unanswered`]): an outage
    /// does not use up attempts.
    ///
    /// [`SendOutcome::Unanswered`]: crate::SendOutcome::Unanswered
    pub attempt: u32,
    /// Earliest time (ms) the next send may start.
    pub next_retry_at_ms: i64,
    /// The last failure's message; empty if none.
    pub last_error: String,
    /// When it was enqueued (ms).
    pub created_at_ms: i64,
    /// When it last changed (ms). For an `InFlight` op: when it was claimed.
    pub updated_at_ms: i64,
    /// Operations with the same key are sent one at a time, in enqueue order.
    pub ordering_key: Option<String>,
    /// A pending, never-sent operation with the same key is updated in place
    /// instead of a second one being added ("latest state wins").
    pub coalesce_key: Option<String>,
    /// Which outbox enqueued it (`OutboxConfig::owner`).
    pub owner: String,
    /// Enqueue order, assigned by the outbox; breaks ties between operations
    /// due at the same time.
    pub seq: u64,
    /// What a `Failed` operation does to later ones of its `ordering_key`;
    /// `None`: the outbox's [`OutboxConfig::ordering`](crate::OutboxConfig::ordering).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ordering: Option<OrderingMode>,
    /// The key the next send carries as `Idempotency-Key`; empty means the
    /// id. Set by [`Outbox::correct`](crate::Outbox::correct): a corrected
    /// operation is a new request, which a server that stores responses per
    /// key must not answer with the stored refusal. Read it with
    /// [`Operation::idempotency_key`].
    #[serde(skip_serializing_if = "String::is_empty")]
    pub idempotency_key: String,
    /// The keys earlier versions of this operation were sent under, oldest
    /// first, kept for audit when it is corrected.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replaced_keys: Vec<String>,
    /// When its current key may first have reached a server (ms): the start
    /// of its first send that was answered, got no answer after the request
    /// may have left ([`Delivery::Unknown`]), or was cut off by a crash.
    /// `None` while no send could have reached one. The resend window
    /// ([`OutboxConfig::resend_window`](crate::OutboxConfig::resend_window))
    /// counts from here; [`Outbox::correct`](crate::Outbox::correct), which
    /// gives a new key, clears it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_sent_at_ms: Option<i64>,
    /// Sends in a row that got no answer (the server or the network was
    /// unreachable); they back the operation off like failures but use up
    /// no attempt. Reset by an answer.
    #[serde(skip_serializing_if = "is_zero")]
    pub unanswered_sends: u32,
    /// The version the server's answer named for the operation's changes in
    /// its change feed (`sync-version`), once `Done`: its effect is in
    /// downloaded data once a pull's `covers_below` is above it, and until
    /// then a pulled change to its entity (its `ordering_key`) is held back
    /// rather than written over the local edit. `None`: not acknowledged
    /// yet, or the answer named no version (the operation changed nothing
    /// the feed carries; nothing to wait for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_version: Option<i64>,
    /// The version of the payload's format, set by the app when it
    /// enqueues (0: unversioned, and every operation stored before versions
    /// existed). A release that changes the format upgrades the queued
    /// operations of older versions with
    /// [`Outbox::upgrade_payloads`](crate::Outbox::upgrade_payloads).
    #[serde(skip_serializing_if = "is_zero")]
    pub payload_version: u32,
    /// The account (user) it was made under: the outbox stamps its current
    /// one ([`Outbox::set_account`](crate::Outbox::set_account)) on an
    /// enqueue that gives none, and sends only the current account's
    /// operations. `None`: made without accounts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Whether the body of the server's success answer is kept in
    /// [`answer`](Self::answer) (up to
    /// [`OutboxConfig::max_answer_bytes`](crate::OutboxConfig::max_answer_bytes)),
    /// for [`Completion::Done`](crate::Completion::Done) and for later
    /// operations that [need](Self::needs) it. Set it with
    /// [`keeping_answer`](Self::keeping_answer), or for every operation of a
    /// kind with [`OutboxConfig::keep_answers_of`](crate::OutboxConfig::keep_answers_of).
    #[serde(skip_serializing_if = "is_false")]
    pub keep_answer: bool,
    /// The body of the server's success answer, once `Done`, if
    /// [`keep_answer`](Self::keep_answer) asked for it and it fitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// What it needs from earlier operations' kept answers before it can be
    /// sent (a temporary id to be replaced by the real one): not claimed
    /// until each of them is `Done`, then filled in, durably, and emptied.
    /// See [`Need`](crate::Need) for the rule and what happens when a
    /// dependency becomes a dead letter.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<crate::Need>,
    /// The W3C `traceparent` in effect when it was enqueued (set by the
    /// app, or by [`OutboxConfig::trace_context`](crate::OutboxConfig::trace_context)
    /// at enqueue), sent with every attempt in the `traceparent` header so
    /// the server's trace continues the app's. A value that is not a valid
    /// `traceparent` is dropped at enqueue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// Whether a request that got no answer may have reached the server, in
/// [`SendOutcome::Unanswered`](crate::SendOutcome::Unanswered).
///
/// # Examples
///
/// ```
/// use sync_outbox::Delivery;
///
/// // Connection refused: nothing left the device.
/// let refused = Delivery::NotSent;
/// assert_ne!(refused, Delivery::Unknown);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// The request never left: no connection (refused, no route), the name
    /// lookup failed, or TLS could not be set up. The server cannot have it,
    /// so the send does not start the resend window.
    NotSent,
    /// The request may have reached the server and the answer was lost: the
    /// connection was reset, the time ran out, or a gateway answered that
    /// the server did not (502, 503, 504). The resend window starts.
    Unknown,
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_false(b: &bool) -> bool {
    !*b
}

impl Operation {
    /// A new pending operation with no id yet.
    pub fn new(
        kind: impl Into<String>,
        target: impl Into<String>,
        payload: impl Into<String>,
    ) -> Self {
        Self {
            kind: kind.into(),
            target: target.into(),
            payload: payload.into(),
            ..Self::default()
        }
    }

    /// The key a send carries as `Idempotency-Key`: `idempotency_key`, or
    /// the id when the operation was never corrected.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut op = sync_outbox::Operation::new("note.create", "/notes", "{}");
    /// op.id = "op_1".into();
    /// assert_eq!(op.idempotency_key(), "op_1");
    /// ```
    #[must_use]
    pub fn idempotency_key(&self) -> &str {
        if self.idempotency_key.is_empty() {
            &self.id
        } else {
            &self.idempotency_key
        }
    }

    /// An operation whose payload is `value` as JSON.
    ///
    /// # Errors
    ///
    /// [`OutboxError::Payload`](crate::OutboxError::Payload) if `value` cannot be serialized (a map
    /// with non-string keys, a failing `Serialize` impl); it does not print
    /// the value.
    ///
    /// # Examples
    ///
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    /// struct NewNote { title: String }
    ///
    /// let op = sync_outbox::Operation::json("note.create", "/notes", &NewNote { title: "Groceries".into() })?;
    /// assert_eq!(op.payload, r#"{"title":"Groceries"}"#);
    /// assert_eq!(op.payload_json::<NewNote>()?, NewNote { title: "Groceries".into() });
    /// # Ok::<_, sync_outbox::OutboxError>(())
    /// ```
    pub fn json(
        kind: impl Into<String>,
        target: impl Into<String>,
        value: &impl serde::Serialize,
    ) -> Result<Self, crate::OutboxError> {
        let mut op = Self::new(kind, target, String::new());
        op.payload = serde_json::to_string(value).map_err(|_| serialize_error(&op))?;
        Ok(op)
    }

    /// This operation, with the body of the server's success answer kept
    /// in [`answer`](Self::answer) (see [`keep_answer`](Self::keep_answer)).
    ///
    /// # Examples
    ///
    /// ```
    /// let create = sync_outbox::Operation::new("note.create", "/notes", "{}").keeping_answer();
    /// assert!(create.keep_answer);
    /// ```
    #[must_use]
    pub fn keeping_answer(mut self) -> Self {
        self.keep_answer = true;
        self
    }

    /// This operation, needing `need` from an earlier operation's kept
    /// answer before it is sent (see [`Need`](crate::Need)).
    ///
    /// # Examples
    ///
    /// ```
    /// use sync_outbox::{Need, Operation};
    ///
    /// let item = Operation::new("item.add", "/notes/tmp-1/items", r#"{"text":"milk"}"#)
    ///     .needing(Need::new("op_create", "/id", "tmp-1"));
    /// assert_eq!(item.needs.len(), 1);
    /// ```
    #[must_use]
    pub fn needing(mut self, need: crate::Need) -> Self {
        self.needs.push(need);
        self
    }

    /// The payload read as JSON into `T`.
    ///
    /// # Errors
    ///
    /// [`OutboxError::Payload`](crate::OutboxError::Payload) naming the operation, the problem ("not
    /// valid JSON", "not the expected type", ...) and the line and column,
    /// never the payload's content.
    pub fn payload_json<T: serde::de::DeserializeOwned>(&self) -> Result<T, crate::OutboxError> {
        serde_json::from_str(&self.payload).map_err(|e| payload_error(self, &e))
    }

    /// Why it can never be sent, if so: an empty `kind` or `target`, or a
    /// `target` that is not a path starting with `/`. `enqueue` refuses such
    /// an operation with [`OutboxError::InvalidOperation`](crate::OutboxError::InvalidOperation).
    ///
    /// # Examples
    ///
    /// ```
    /// use sync_outbox::Operation;
    ///
    /// assert_eq!(Operation::new("note.create", "/notes", "{}").unsendable(), None);
    /// assert!(Operation::new("note.create", "notes", "{}").unsendable().is_some());
    /// ```
    #[must_use]
    pub fn unsendable(&self) -> Option<&'static str> {
        if self.kind.is_empty() {
            Some("its kind is empty")
        } else if self.target.is_empty() {
            Some("its target is empty")
        } else if !self.target.starts_with('/') {
            Some("its target does not start with `/` (it is a path on the server)")
        } else {
            None
        }
    }

    /// Whether a worker may claim it at `now_ms` (ignoring per-key order).
    #[must_use]
    pub fn is_due(&self, now_ms: i64) -> bool {
        self.status == OperationStatus::Pending && self.next_retry_at_ms <= now_ms
    }

    /// Whether a send of its current key may have reached a server: it was
    /// answered, cut off, lost without an answer, or is being sent now. An
    /// operation never sent may still be coalesced into and corrected under
    /// its key; one sent may not.
    ///
    /// # Examples
    ///
    /// ```
    /// let op = sync_outbox::Operation::new("note.create", "/notes", "{}");
    /// assert!(!op.was_sent());
    /// ```
    #[must_use]
    pub fn was_sent(&self) -> bool {
        self.attempt > 0 || self.first_sent_at_ms.is_some()
    }
}

/// What a batch element of this operation carries: its current
/// [`idempotency_key`](Operation::idempotency_key), kind, target and payload.
impl sync_protocol::WireOperation for Operation {
    fn idempotency_key(&self) -> &str {
        Operation::idempotency_key(self)
    }

    fn kind(&self) -> &str {
        &self.kind
    }

    fn target(&self) -> &str {
        &self.target
    }

    fn payload(&self) -> &str {
        &self.payload
    }

    fn traceparent(&self) -> Option<&str> {
        self.traceparent.as_deref()
    }
}
