//! The batch wire format (`docs/HTTP-BATCH.md`): the JSON a batch request
//! carries, the JSON a server answers with, and how an answer becomes one
//! [`SendResult`] per operation. No I/O.

use std::collections::HashMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sync_engine::SendResult;
use sync_outbox::Operation;

use crate::config::HttpTransportConfig;
use crate::status::{map_status, with_failure_body};

/// The body of a batch request: `{"operations": [...]}`.
///
/// # Examples
///
/// ```
/// use sync_transport_http::{BatchRequest, HttpTransportConfig};
/// use sync_outbox::Operation;
///
/// let mut op = Operation::new("note.create", "/notes", r#"{"text":"hi"}"#);
/// op.id = "op_1".into();
/// let request = BatchRequest::new(&[op], &HttpTransportConfig::default());
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
    /// The operation's id: the key the server applies it once under, exactly
    /// as the `Idempotency-Key` header of a single request.
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
    /// [`map_status`], so 2xx is done, 503 retryable, 422 permanent, ...
    pub status: u16,
    /// A `Retry-After` value for this operation (delay-seconds or an HTTP
    /// date), if the server has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<String>,
    /// The body a single request would have got, if the server says. Kept
    /// in the operation's error only for a permanent failure and only with
    /// [`HttpTransportConfig::failure_body_limit`] set (see
    /// [`with_failure_body`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl BatchRequest {
    /// The request for `ops`, with each operation's method from `config`.
    #[must_use]
    pub fn new(ops: &[Operation], config: &HttpTransportConfig) -> Self {
        Self {
            operations: ops
                .iter()
                .map(|op| BatchOperation {
                    idempotency_key: op.idempotency_key().to_owned(),
                    kind: op.kind.clone(),
                    method: config.method_for(&op.kind).as_str().to_owned(),
                    target: op.target.clone(),
                    payload: op.payload.clone(),
                })
                .collect(),
        }
    }
}

/// One result per operation of `ops`, in order, from a batch answer: the
/// whole request's `status`, its `Retry-After`, and its `body`.
///
/// - A 2xx whose body is a [`BatchResponse`]: each operation gets its
///   element's status through [`map_status`]; an operation with no element
///   is retryable (the server did not get to it). Elements for keys not in
///   the batch are ignored; of two for one key, the first counts.
/// - A 2xx whose body is not a `BatchResponse`: every operation is
///   retryable (the answer cannot be trusted to say which were applied).
/// - Any other status: every operation gets that status through
///   [`map_status`], as if each had been sent alone and answered so, except
///   that a permanent one other than 401/403 (a 404, 413 or 400 of the batch
///   endpoint) is made retryable: it says nothing about any one operation,
///   so it must not dead-letter the batch.
///
/// Error strings contain nothing from the body, except an element's `body`
/// for a permanent failure when [`HttpTransportConfig::failure_body_limit`]
/// asks for it.
///
/// # Examples
///
/// ```
/// use std::time::SystemTime;
/// use sync_transport_http::{HttpTransportConfig, map_batch_response};
/// use sync_outbox::Operation;
///
/// let ops: Vec<Operation> = ["a", "b", "c"].iter().map(|id| {
///     let mut op = Operation::new("k", "/t", "{}");
///     op.id = (*id).into();
///     op
/// }).collect();
/// let body = br#"{"results":[{"idempotency_key":"b","status":422},{"idempotency_key":"a","status":201}]}"#;
/// let results = map_batch_response(&ops, 200, None, body, SystemTime::now(), &HttpTransportConfig::default());
/// assert!(results[0].ok);
/// assert!(!results[1].ok && !results[1].retryable);
/// assert!(!results[2].ok && results[2].retryable, "no result: not applied, try again");
/// ```
#[must_use]
pub fn map_batch_response(
    ops: &[Operation],
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
    now: SystemTime,
    config: &HttpTransportConfig,
) -> Vec<SendResult> {
    if !(200..300).contains(&status) {
        let mut result = map_status(status, retry_after, now, config);
        if !result.retryable && !matches!(status, 401 | 403) {
            // A 404, 413 or 400 of the batch endpoint says nothing about any
            // one operation: never dead-letter a whole batch for it.
            result.retryable = true;
            result.error = format!("batch refused: {}", result.error);
        }
        return vec![result; ops.len()];
    }
    let Ok(response) = serde_json::from_slice::<BatchResponse>(body) else {
        let error = format!("HTTP {status} with a body that is not a batch response");
        return vec![SendResult::retryable(error); ops.len()];
    };
    let mut by_key: HashMap<&str, &BatchResult> = HashMap::new();
    for result in &response.results {
        by_key
            .entry(result.idempotency_key.as_str())
            .or_insert(result);
    }
    ops.iter()
        .map(|op| match by_key.get(op.idempotency_key()) {
            Some(result) => with_failure_body(
                map_status(result.status, result.retry_after.as_deref(), now, config),
                result.body.as_deref().unwrap_or_default().as_bytes(),
                config,
            ),
            None => SendResult::retryable("the batch response has no result for this operation"),
        })
        .collect()
}
