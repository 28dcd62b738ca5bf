//! Guards the pull wire: the exact JSON of a page and of each error answer,
//! that any request survives its query string and any page its JSON, and
//! that a bad limit or a repeated parameter is a typed error, never a
//! silent default.

use proptest::prelude::*;
use sync_protocol::{
    Change, ChangeOp, MAX_PULL_LIMIT, PullError, PullErrorCode, PullRequest, PullResponse,
    RestartReason,
};

#[test]
fn a_page_is_the_documented_json() -> Result<(), serde_json::Error> {
    let page = PullResponse {
        changes: vec![
            Change {
                scope: "u1".into(),
                entity: "note".into(),
                id: "n1".into(),
                version: 7,
                op: ChangeOp::Upsert {
                    state: serde_json::json!({"text": "hi"}),
                },
            },
            Change {
                scope: "u1".into(),
                entity: "note".into(),
                id: "n2".into(),
                version: 8,
                op: ChangeOp::Delete,
            },
        ],
        cursor: "c".into(),
        more: true,
        covers_below: 8,
        snapshot: false,
    };
    assert_eq!(
        serde_json::to_string(&page)?,
        r#"{"changes":[{"scope":"u1","entity":"note","id":"n1","version":7,"op":"upsert","state":{"text":"hi"}},{"scope":"u1","entity":"note","id":"n2","version":8,"op":"delete"}],"cursor":"c","more":true,"covers_below":8,"snapshot":false}"#
    );
    Ok(())
}

#[test]
fn each_error_code_has_its_status_and_json() -> Result<(), serde_json::Error> {
    for (code, status, json) in [
        (PullErrorCode::BadCursor, 400, "bad_cursor"),
        (PullErrorCode::BadLimit, 400, "bad_limit"),
        (PullErrorCode::BadQuery, 400, "bad_query"),
        (PullErrorCode::ScopeForbidden, 403, "scope_forbidden"),
        (PullErrorCode::NoScopes, 403, "no_scopes"),
        (PullErrorCode::Restart, 410, "restart"),
    ] {
        assert_eq!(code.status(), status);
        assert_eq!(code.to_string(), json);
        let answer = PullError {
            error: code,
            reason: None,
        };
        assert_eq!(
            serde_json::to_string(&answer)?,
            format!(r#"{{"error":"{json}"}}"#)
        );
    }
    let restart = PullError {
        error: PullErrorCode::Restart,
        reason: Some(RestartReason::ScopesChanged),
    };
    assert_eq!(
        serde_json::to_string(&restart)?,
        r#"{"error":"restart","reason":"scopes_changed"}"#
    );
    Ok(())
}

#[test]
fn bad_limits_and_repeated_parameters_are_typed_errors() {
    for query in [
        "limit=0",
        "limit=1000000000",
        "limit=-1",
        "limit=ten",
        "limit=",
    ] {
        assert_eq!(
            PullRequest::from_query(query),
            Err(PullErrorCode::BadLimit),
            "{query}"
        );
    }
    assert_eq!(
        PullRequest::from_query(&format!("limit={MAX_PULL_LIMIT}")).map(|r| r.limit),
        Ok(Some(MAX_PULL_LIMIT))
    );
    assert_eq!(
        PullRequest::from_query("cursor=a&cursor=b"),
        Err(PullErrorCode::BadQuery)
    );
    assert_eq!(
        PullRequest::from_query("limit=1&limit=2"),
        Err(PullErrorCode::BadQuery)
    );
    assert_eq!(
        PullRequest::from_query("other=1&scope=a%26b&scope=%E2%9C%93"),
        Ok(PullRequest {
            cursor: None,
            limit: None,
            scopes: vec!["a&b".into(), "\u{2713}".into()],
        })
    );
}

fn change() -> impl Strategy<Value = Change> {
    (
        ".{0,8}",
        "[a-z]{1,5}",
        ".{0,8}",
        any::<i64>(),
        prop::option::of(".{0,12}"),
    )
        .prop_map(|(scope, entity, id, version, text)| Change {
            scope,
            entity,
            id,
            version,
            op: match text {
                Some(text) => ChangeOp::Upsert {
                    state: serde_json::json!({ "text": text }),
                },
                None => ChangeOp::Delete,
            },
        })
}

proptest! {
    #[test]
    fn any_request_survives_its_query_string(
        cursor in prop::option::of(".{0,40}"),
        limit in prop::option::of(1..=MAX_PULL_LIMIT),
        scopes in prop::collection::vec(".{0,10}", 0..4),
    ) {
        let request = PullRequest { cursor, limit, scopes };
        prop_assert_eq!(PullRequest::from_query(&request.to_query()), Ok(request));
    }

    #[test]
    fn any_page_survives_its_json(
        changes in prop::collection::vec(change(), 0..6),
        cursor in ".{0,20}",
        more: bool,
        covers_below: i64,
        snapshot: bool,
    ) {
        let page = PullResponse { changes, cursor, more, covers_below, snapshot };
        let json = serde_json::to_string(&page).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back: PullResponse = serde_json::from_str(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, page);
    }
}
