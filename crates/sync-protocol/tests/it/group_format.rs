//! Guards the group format: any request and response survives its JSON,
//! member payloads of any text (quotes, backslashes, control characters,
//! JSON of their own) come back byte for byte, and a body that is not a
//! group is an error, never a group with members made up.

use proptest::prelude::*;
use sync_protocol::{GroupOperation, GroupRequest, GroupResponse};

fn member() -> impl Strategy<Value = GroupOperation> {
    (".{0,12}", "/.{0,16}", ".{0,40}")
        .prop_map(|(kind, target, payload)| GroupOperation::new(kind, target, payload))
}

proptest! {
    #[test]
    fn requests_round_trip(operations in proptest::collection::vec(member(), 1..6)) {
        let request = GroupRequest { operations };
        let json = serde_json::to_string(&request).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back: GroupRequest = serde_json::from_str(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, request);
    }

    #[test]
    fn responses_round_trip(values in proptest::collection::vec(any::<Option<i64>>(), 0..6)) {
        let response = GroupResponse {
            results: values.into_iter().map(|v| serde_json::json!(v)).collect(),
        };
        let json = serde_json::to_string(&response).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back: GroupResponse = serde_json::from_str(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, response);
    }

    #[test]
    fn arbitrary_text_is_never_a_group(text in ".{0,60}") {
        if let Ok(group) = serde_json::from_str::<GroupRequest>(&text) {
            // Only text that really is a group's JSON parses as one.
            let again = serde_json::to_value(&group).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let original: serde_json::Value = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(again, original);
        }
    }
}

#[test]
fn a_member_without_a_target_is_not_a_group() {
    let missing = r#"{"operations":[{"kind":"k","payload":"{}"}]}"#;
    assert!(serde_json::from_str::<GroupRequest>(missing).is_err());
    assert!(serde_json::from_str::<GroupRequest>(r#"{"ops":[]}"#).is_err());
}
