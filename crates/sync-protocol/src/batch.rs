//! The batch wire format (`docs/PROTOCOL.md`, "Batches") as data: what a
//! batch request carries and what a server answers. Shared by the HTTP
//! transport, which sends it, and `sync-server`, which serves it; no I/O.

use serde::{Deserialize, Serialize};

/// What a batch element is made from: the four things a client's operation
/// puts on the wire. `sync_outbox::Operation` implements it; a client in
/// another crate implements it for its own type.
///
/// # Examples
///
/// ```
/// use sync_protocol::{BatchOperation, WireOperation};
///
/// struct Edit { id: String, body: String }
///
/// impl WireOperation for Edit {
///     fn idempotency_key(&self) -> &str { &self.id }
///     fn kind(&self) -> &str { "note.edit" }
///     fn target(&self) -> &str { "/notes/1" }
///     fn payload(&self) -> &str { &self.body }
/// }
///
/// let element = BatchOperation::new(&Edit { id: "op_1".into(), body: "{}".into() }, "PUT");
/// assert_eq!((element.idempotency_key.as_str(), element.method.as_str()), ("op_1", "PUT"));
/// ```
pub trait WireOperation {
    /// The key the server applies it once under.
    fn idempotency_key(&self) -> &str;
    /// What it does (`"note.create"`).
    fn kind(&self) -> &str;
    /// The path a single request for it goes to.
    fn target(&self) -> &str;
    /// The body a single request for it carries.
    fn payload(&self) -> &str;
    /// The W3C `traceparent` it was enqueued in, sent with it. Default:
    /// none.
    fn traceparent(&self) -> Option<&str> {
        None
    }
}

/// The body of a batch request: `{"operations": [...]}`.
///
/// # Examples
///
/// ```
/// use sync_protocol::{BatchOperation, BatchRequest};
///
/// let element = BatchOperation {
///     idempotency_key: "op_1".into(),
///     kind: "note.create".into(),
///     method: "POST".into(),
///     target: "/notes".into(),
///     payload: r#"{"text":"hi"}"#.into(),
///     traceparent: None,
/// };
/// let request = BatchRequest { operations: vec![element] };
/// let json = serde_json::to_string(&request)?;
/// assert_eq!(
///     json,
///     r#"{"operations":[{"idempotency_key":"op_1","kind":"note.create","method":"POST","target":"/notes","payload":"{\"text\":\"hi\"}"}]}"#
/// );
/// # Ok::<_, serde_json::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRequest {
    /// One element per operation, in the order the client claimed them.
    pub operations: Vec<BatchOperation>,
}

/// One operation in a [`BatchRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchOperation {
    /// The key the server applies it once under, exactly as the
    /// `Idempotency-Key` header of a single request: the operation's id, or
    /// `"{id}.{n}"` after its `n`th correction.
    pub idempotency_key: String,
    /// The operation's kind.
    pub kind: String,
    /// The method a single request for it would use (from the config).
    pub method: String,
    /// The path a single request for it would go to.
    pub target: String,
    /// The body a single request would carry, as a string: exactly the
    /// operation's payload, whatever its content type.
    pub payload: String,
    /// The `traceparent` header a single request would carry (W3C Trace
    /// Context): the trace the operation was enqueued in. Absent when
    /// none; a server sets it as the element request's header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// The body of a batch response: `{"results": [...]}`, one element per
/// operation the server got to, matched by `idempotency_key`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResponse {
    /// The results, in any order.
    pub results: Vec<BatchResult>,
}

/// The result of one operation in a [`BatchResponse`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResult {
    /// Which operation this is the result of.
    pub idempotency_key: String,
    /// The HTTP status a single request would have got; mapped with
    /// [`map_status`](crate::map_status), so 2xx is done, 429 retried, 503
    /// unavailable, 422 permanent, ...
    pub status: u16,
    /// A `Retry-After` value for this operation (delay-seconds or an HTTP
    /// date), if the server has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<String>,
    /// The body a single request would have got, if the server says. The
    /// HTTP transport keeps it in the operation's error only for a permanent
    /// failure, and only when asked to (`failure_body_limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The `sync-version` a single request's answer would have carried
    /// ([`SYNC_VERSION`](crate::SYNC_VERSION)): where the operation's
    /// changes are in the server's change feed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_version: Option<i64>,
}

impl BatchOperation {
    /// The element for `op`, sent with `method`: its idempotency key, kind,
    /// target and payload.
    #[must_use]
    pub fn new(op: &impl WireOperation, method: &str) -> Self {
        Self {
            idempotency_key: op.idempotency_key().to_owned(),
            kind: op.kind().to_owned(),
            method: method.to_owned(),
            target: op.target().to_owned(),
            payload: op.payload().to_owned(),
            traceparent: op.traceparent().map(str::to_owned),
        }
    }
}
