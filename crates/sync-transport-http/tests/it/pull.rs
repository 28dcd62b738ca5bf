//! Guards the download half's wire on a real server: a pull is a `GET` of
//! `pull_target` with the cursor and limit, the configured headers and the
//! provider's credentials; every answer maps as `docs/PROTOCOL.md` says (a
//! page, `410` and `400 bad_cursor` start again, `502`-`504` and no
//! connection are no answer, anything else, a malformed body included, is a
//! failure with its `Retry-After`); and an operation's answer carries its
//! `sync-version`, single or in a batch, into `SendResult::server_version`.

use sync_engine::{PullResult, PullTransport, SyncTransport};
use sync_protocol::PullRequest;
use sync_transport_http::{
    BatchResponse, BatchResult, HttpTransport, HttpTransportConfig, HttpTransportError,
};

use crate::{Reply, TestResult, TestServer, op};

fn transport(base_url: &str) -> Result<HttpTransport, HttpTransportError> {
    HttpTransport::new(HttpTransportConfig {
        base_url: base_url.to_owned(),
        headers: vec![("Authorization".into(), "Bearer t0k3n".into())],
        ..HttpTransportConfig::default()
    })
}

const PAGE: &str = r#"{"changes":[{"scope":"u","entity":"note","id":"n1","version":4,"op":"upsert",
    "state":{"text":"hi"}}],"cursor":"c2","more":true,"covers_below":4,"snapshot":false}"#;

#[test]
fn a_pull_is_a_get_with_the_cursor_and_its_page_comes_back() -> TestResult {
    let server = TestServer::start(|_, _| {
        Reply::Status(
            200,
            vec![("Content-Type", "application/json".into())],
            PAGE.into(),
        )
    })?;
    let request = PullRequest {
        cursor: Some("c1".into()),
        limit: Some(50),
        scopes: Vec::new(),
    };
    match transport(&server.base_url)?.pull(&request) {
        PullResult::Page(page) => {
            assert_eq!(
                (page.cursor.as_str(), page.more, page.changes.len()),
                ("c2", true, 1)
            );
        }
        other => return Err(format!("expected a page, got {other:?}").into()),
    }
    let seen = server.seen();
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].url, "/sync/pull?cursor=c1&limit=50");
    assert_eq!(seen[0].header("Authorization"), Some("Bearer t0k3n"));
    Ok(())
}

/// A reply's extra headers.
type Headers = Vec<(&'static str, String)>;

#[test]
fn every_answer_maps_as_the_protocol_says() -> TestResult {
    let cases: Vec<(u16, Headers, &str, &str)> = vec![
        (
            410,
            vec![],
            r#"{"error":"restart","reason":"cursor_compacted"}"#,
            "restart",
        ),
        (400, vec![], r#"{"error":"bad_cursor"}"#, "restart"),
        (400, vec![], r#"{"error":"bad_limit"}"#, "failed"),
        (403, vec![], r#"{"error":"scope_forbidden"}"#, "failed"),
        (429, vec![("Retry-After", "7".into())], "", "failed 7000"),
        (500, vec![], "", "failed"),
        (503, vec![], "", "unanswered"),
        (200, vec![], "<html>not a page</html>", "failed"),
    ];
    for (status, headers, body, expected) in cases {
        let body = body.to_owned();
        let server =
            TestServer::start(move |_, _| Reply::Status(status, headers.clone(), body.clone()))?;
        let got = match transport(&server.base_url)?.pull(&PullRequest::default()) {
            PullResult::Restart { .. } => "restart".to_owned(),
            PullResult::Failed {
                retry_after_ms: Some(ms),
                ..
            } => format!("failed {ms}"),
            PullResult::Failed { .. } => "failed".to_owned(),
            PullResult::Unanswered { .. } => "unanswered".to_owned(),
            PullResult::Page(_) => "page".to_owned(),
        };
        assert_eq!(got, expected, "HTTP {status}");
    }
    // Nobody listening: no answer.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}", closed.local_addr()?);
    drop(closed);
    assert!(matches!(
        transport(&url)?.pull(&PullRequest::default()),
        PullResult::Unanswered { .. }
    ));
    Ok(())
}

#[test]
fn an_answer_carries_its_sync_version_single_and_in_a_batch() -> TestResult {
    let server = TestServer::start(|_, seen| {
        if seen.url == "/sync/batch" {
            let results = vec![
                BatchResult {
                    idempotency_key: "a".into(),
                    status: 201,
                    retry_after: None,
                    body: None,
                    sync_version: Some(41),
                },
                BatchResult {
                    idempotency_key: "b".into(),
                    status: 201,
                    retry_after: None,
                    body: None,
                    sync_version: None,
                },
            ];
            let body = serde_json::to_string(&BatchResponse { results }).unwrap_or_default();
            Reply::Status(200, Vec::new(), body)
        } else {
            Reply::Status(201, vec![("sync-version", "17".into())], String::new())
        }
    })?;
    let single = transport(&server.base_url)?.send(&op("s", "note.create", "/notes", "{}"));
    assert!(single.ok);
    assert_eq!(single.server_version, Some(17));
    let batch = HttpTransport::new(HttpTransportConfig {
        base_url: server.base_url.clone(),
        batch_target: Some("/sync/batch".into()),
        ..HttpTransportConfig::default()
    })?
    .send_batch(&[
        op("a", "note.create", "/notes", "{}"),
        op("b", "note.create", "/notes", "{}"),
    ]);
    let versions: Vec<Option<i64>> = batch.iter().map(|r| r.server_version).collect();
    assert_eq!(versions, [Some(41), None]);
    Ok(())
}
