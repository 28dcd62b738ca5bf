//! Why a server refused an operation: the opt-in, size-bounded capture of a
//! permanent failure's body into its error, on both transports and in batch
//! mode; off by default, and never for retryable failures.

use sync_engine::{AsyncSyncTransport, SyncTransport};
use sync_transport_http::{
    AsyncHttpTransport, BatchResponse, BatchResult, HttpTransport, HttpTransportConfig,
};

use crate::{Reply, TestResult, TestServer, op};

/// A 422 with a JSON reason, a 503 with a page of HTML, and a 400 whose body
/// is longer than any limit used here and spans lines.
fn refusing_server() -> Result<TestServer, Box<dyn std::error::Error + Send + Sync>> {
    TestServer::start(|_, seen| match seen.url.as_str() {
        "/notes" => Reply::Status(422, Vec::new(), r#"{"error":"title_required"}"#.into()),
        "/busy" => Reply::Status(503, Vec::new(), "<html>maintenance</html>".into()),
        _ => Reply::Status(
            400,
            Vec::new(),
            format!("line one\nline two {}", "x".repeat(500)),
        ),
    })
}

fn config(base_url: &str, failure_body_limit: usize) -> HttpTransportConfig {
    HttpTransportConfig {
        base_url: base_url.to_owned(),
        failure_body_limit,
        ..HttpTransportConfig::default()
    }
}

#[test]
fn bodies_stay_out_of_errors_by_default() -> TestResult {
    let server = refusing_server()?;
    let transport = HttpTransport::new(config(&server.base_url, 0))?;
    let refused = transport.send(&op("a", "note.create", "/notes", "{}"));
    assert_eq!(refused.error, "HTTP 422 Unprocessable Entity");
    Ok(())
}

#[test]
fn a_permanent_failure_keeps_its_body_up_to_the_limit_on_one_line() -> TestResult {
    let server = refusing_server()?;
    let transport = HttpTransport::new(config(&server.base_url, 64))?;
    let refused = transport.send(&op("a", "note.create", "/notes", "{}"));
    assert!(!refused.retryable);
    assert_eq!(
        refused.error,
        r#"HTTP 422 Unprocessable Entity: {"error":"title_required"}"#
    );
    let long = transport.send(&op("b", "note.create", "/other", "{}"));
    assert_eq!(
        long.error,
        format!(
            "HTTP 400 Bad Request: line one line two {}...",
            "x".repeat(64 - 18)
        )
    );
    let busy = transport.send(&op("c", "note.create", "/busy", "{}"));
    assert!(busy.retryable);
    assert_eq!(
        busy.error, "HTTP 503 Service Unavailable",
        "retryable: no body"
    );
    Ok(())
}

#[test]
fn the_async_transport_captures_the_same_way() -> TestResult {
    let server = refusing_server()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (off, on) = runtime.block_on(async {
        let note = op("a", "note.create", "/notes", "{}");
        let off = AsyncHttpTransport::new(config(&server.base_url, 0))?
            .send(&note)
            .await;
        let on = AsyncHttpTransport::new(config(&server.base_url, 8))?
            .send(&note)
            .await;
        Ok::<_, sync_transport_http::HttpTransportError>((off, on))
    })?;
    assert_eq!(off.error, "HTTP 422 Unprocessable Entity");
    assert_eq!(on.error, r#"HTTP 422 Unprocessable Entity: {"error"..."#);
    Ok(())
}

#[test]
fn a_batch_element_s_body_is_captured_for_its_permanent_failure_only() -> TestResult {
    let server = TestServer::start(|_, _| {
        let element = |key: &str, status, body: &str| BatchResult {
            idempotency_key: key.into(),
            status,
            retry_after: None,
            body: Some(body.into()),
            sync_version: None,
        };
        let results = vec![
            element("a", 422, r#"{"error":"title_required"}"#),
            element("b", 503, "busy"),
            element("c", 201, r#"{"id":7}"#),
        ];
        let body = serde_json::to_string(&BatchResponse { results }).unwrap_or_default();
        Reply::Status(200, Vec::new(), body)
    })?;
    let ops = [
        op("a", "note.create", "/notes", "{}"),
        op("b", "note.create", "/notes", "{}"),
        op("c", "note.create", "/notes", "{}"),
    ];
    for (limit, expected) in [
        (0, "HTTP 422 Unprocessable Entity"),
        (
            100,
            r#"HTTP 422 Unprocessable Entity: {"error":"title_required"}"#,
        ),
    ] {
        let transport = HttpTransport::new(HttpTransportConfig {
            batch_target: Some("/batch".into()),
            ..config(&server.base_url, limit)
        })?;
        let results = transport.send_batch(&ops);
        assert_eq!(results[0].error, expected);
        assert_eq!(results[1].error, "HTTP 503 Service Unavailable");
        assert!(results[2].ok && results[2].error.is_empty());
    }
    Ok(())
}
