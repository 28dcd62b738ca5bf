//! Guards kept answers on a real server: an operation that keeps its answer
//! gets the body of its success answer in `SendResult::answer` (single,
//! async single, and in a batch from its element's `body`); one that does
//! not keeps nothing, and a failure's body is never an answer.

use sync_engine::{AsyncSyncTransport, SyncTransport};
use sync_transport_http::{
    AsyncHttpTransport, BatchResponse, BatchResult, HttpTransport, HttpTransportConfig,
};

use crate::{Reply, TestResult, TestServer, op};

const CREATED: &str = r#"{"id":"n42"}"#;

fn server() -> Result<TestServer, Box<dyn std::error::Error + Send + Sync>> {
    TestServer::start(|_, seen| {
        if seen.url == "/sync/batch" {
            let result = |key: &str, status: u16, body: &str| BatchResult {
                idempotency_key: key.into(),
                status,
                retry_after: None,
                body: Some(body.into()),
                sync_version: None,
            };
            let results = vec![
                result("keeps", 201, CREATED),
                result("plain", 201, CREATED),
                result("refused", 422, r#"{"error":"title"}"#),
            ];
            let body = serde_json::to_string(&BatchResponse { results }).unwrap_or_default();
            Reply::Status(200, Vec::new(), body)
        } else if seen.url == "/refuse" {
            Reply::Status(422, Vec::new(), r#"{"error":"title"}"#.into())
        } else {
            Reply::Status(201, Vec::new(), CREATED.into())
        }
    })
}

fn config(base_url: &str) -> HttpTransportConfig {
    HttpTransportConfig {
        base_url: base_url.to_owned(),
        ..HttpTransportConfig::default()
    }
}

#[test]
fn a_success_body_is_kept_only_for_an_operation_that_keeps_its_answer() -> TestResult {
    let server = server()?;
    let transport = HttpTransport::new(config(&server.base_url))?;
    let keeps = op("k", "note.create", "/notes", "{}").keeping_answer();
    assert_eq!(transport.send(&keeps).answer.as_deref(), Some(CREATED));
    assert_eq!(
        transport
            .send(&op("p", "note.create", "/notes", "{}"))
            .answer,
        None
    );
    let refused = transport.send(&op("r", "note.create", "/refuse", "{}").keeping_answer());
    assert!(!refused.ok && refused.answer.is_none());

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let async_transport = AsyncHttpTransport::new(config(&server.base_url))?;
    let answer = runtime.block_on(async_transport.send(&keeps)).answer;
    assert_eq!(answer.as_deref(), Some(CREATED));
    Ok(())
}

#[test]
fn a_batch_element_body_is_the_answer_of_an_operation_that_keeps_it() -> TestResult {
    let server = server()?;
    let transport = HttpTransport::new(HttpTransportConfig {
        batch_target: Some("/sync/batch".into()),
        ..config(&server.base_url)
    })?;
    let results = transport.send_batch(&[
        op("keeps", "note.create", "/notes", "{}").keeping_answer(),
        op("plain", "note.create", "/notes", "{}"),
        op("refused", "note.create", "/notes", "{}").keeping_answer(),
    ]);
    let answers: Vec<Option<&str>> = results.iter().map(|r| r.answer.as_deref()).collect();
    assert_eq!(answers, [Some(CREATED), None, None]);
    Ok(())
}
