//! The batch wire format (`docs/PROTOCOL.md`, "Batches") on the client's side: the
//! request for a claimed batch, and how an answer becomes one [`SendResult`]
//! per operation. The wire types themselves are `sync_protocol`'s, shared with
//! `sync-server`. No I/O.

use std::collections::HashMap;
use std::time::SystemTime;

use sync_engine::SendResult;
use sync_outbox::Operation;
use sync_protocol::{BatchOperation, BatchRequest, BatchResponse, BatchResult};

use crate::config::HttpTransportConfig;
use crate::status::{map_status, with_failure_body};

/// The request for `ops`, with each operation's method from `config`.
///
/// # Examples
///
/// ```
/// use sync_transport_http::{HttpTransportConfig, batch_request};
/// use sync_outbox::Operation;
///
/// let mut op = Operation::new("note.create", "/notes", r#"{"text":"hi"}"#);
/// op.id = "op_1".into();
/// let request = batch_request(&[op], &HttpTransportConfig::default());
/// assert_eq!(request.operations[0].idempotency_key, "op_1");
/// assert_eq!(request.operations[0].method, "POST");
/// ```
#[must_use]
pub fn batch_request(ops: &[Operation], config: &HttpTransportConfig) -> BatchRequest {
    BatchRequest {
        operations: ops
            .iter()
            .map(|op| BatchOperation::new(op, config.method_for(&op.kind).as_str()))
            .collect(),
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
            Some(result) => {
                let mut mapped = with_failure_body(
                    map_status(result.status, result.retry_after.as_deref(), now, config),
                    result.body.as_deref().unwrap_or_default().as_bytes(),
                    config,
                );
                if mapped.ok {
                    mapped.server_version = result.sync_version;
                    if op.keep_answer {
                        mapped.answer.clone_from(&result.body);
                    }
                }
                mapped
            }
            None => SendResult::retryable("the batch response has no result for this operation"),
        })
        .collect()
}
