//! Guards the batch wire format: the exact JSON a server in another
//! language reads and writes, and that any request or response survives a
//! round trip.

use proptest::prelude::*;
use sync_protocol::{BatchOperation, BatchRequest, BatchResponse, BatchResult};

#[test]
fn request_json_is_the_documented_shape() -> Result<(), serde_json::Error> {
    let request = BatchRequest {
        operations: vec![BatchOperation {
            idempotency_key: "op_1.1".into(),
            kind: "note.create".into(),
            method: "POST".into(),
            target: "/notes".into(),
            payload: r#"{"text":"hi"}"#.into(),
            traceparent: None,
        }],
    };
    assert_eq!(
        serde_json::to_string(&request)?,
        r#"{"operations":[{"idempotency_key":"op_1.1","kind":"note.create","method":"POST","target":"/notes","payload":"{\"text\":\"hi\"}"}]}"#
    );
    Ok(())
}

#[test]
fn response_optional_fields_are_left_out_and_may_be_absent() -> Result<(), serde_json::Error> {
    let bare = BatchResult {
        idempotency_key: "a".into(),
        status: 201,
        retry_after: None,
        body: None,
        sync_version: None,
    };
    assert_eq!(
        serde_json::to_string(&bare)?,
        r#"{"idempotency_key":"a","status":201}"#
    );
    let read: BatchResponse = serde_json::from_str(
        r#"{"results":[{"idempotency_key":"a","status":503,"retry_after":"30","body":"busy"}]}"#,
    )?;
    assert_eq!(read.results[0].retry_after.as_deref(), Some("30"));
    assert_eq!(read.results[0].body.as_deref(), Some("busy"));
    Ok(())
}

fn element() -> impl Strategy<Value = BatchOperation> {
    (
        ".{0,20}",
        ".{0,10}",
        "[A-Z]{1,7}",
        ".{0,20}",
        ".{0,40}",
        proptest::option::of("[0-9a-f-]{55}"),
    )
        .prop_map(
            |(idempotency_key, kind, method, target, payload, traceparent)| BatchOperation {
                idempotency_key,
                kind,
                method,
                target,
                payload,
                traceparent,
            },
        )
}

fn result() -> impl Strategy<Value = BatchResult> {
    (
        ".{0,20}",
        any::<u16>(),
        proptest::option::of(".{0,10}"),
        proptest::option::of(".{0,30}"),
    )
        .prop_map(|(idempotency_key, status, retry_after, body)| BatchResult {
            idempotency_key,
            status,
            retry_after,
            body,
            sync_version: (status == 201).then_some(i64::from(status) * 7),
        })
}

proptest! {
    #[test]
    fn requests_round_trip(operations in proptest::collection::vec(element(), 0..8)) {
        let request = BatchRequest { operations };
        let json = serde_json::to_vec(&request).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back: BatchRequest = serde_json::from_slice(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, request);
    }

    #[test]
    fn responses_round_trip(results in proptest::collection::vec(result(), 0..8)) {
        let response = BatchResponse { results };
        let json = serde_json::to_vec(&response).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back: BatchResponse = serde_json::from_slice(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, response);
    }
}
