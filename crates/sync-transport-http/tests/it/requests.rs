//! Guards what goes on the wire: method per kind, URL, body, content type,
//! a stable Idempotency-Key, configured headers; and what happens with no
//! answer (timeout, refused connection) or a configuration that cannot work.

use std::time::{Duration, Instant};

use sync_engine::SyncTransport;
use sync_transport_http::{HttpMethod, HttpTransport, HttpTransportConfig, HttpTransportError};

use crate::{Reply, TestResult, TestServer, op, transport};

#[test]
fn a_request_carries_method_url_body_and_headers() -> TestResult {
    let server = TestServer::start(|_, _| Reply::status(201))?;
    let config = HttpTransportConfig {
        base_url: format!("{}/v1/", server.base_url),
        headers: vec![
            ("Authorization".into(), "Bearer abc".into()),
            ("X-Client".into(), "tests".into()),
        ],
        ..HttpTransportConfig::default()
    }
    .with_method("message.edit", HttpMethod::Patch)
    .with_method("message.delete", HttpMethod::Delete);
    let transport = HttpTransport::new(config)?;
    assert!(
        transport
            .send(&op("op_a", "message.send", "/messages", r#"{"t":1}"#))
            .ok
    );
    assert!(
        transport
            .send(&op("op_b", "message.edit", "messages/7", r#"{"t":2}"#))
            .ok
    );
    assert!(
        transport
            .send(&op("op_c", "message.delete", "/messages/7", "{}"))
            .ok
    );

    let seen = server.seen();
    let summary: Vec<(&str, &str, &str)> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.url.as_str(), s.body.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("POST", "/v1/messages", r#"{"t":1}"#),
            ("PATCH", "/v1/messages/7", r#"{"t":2}"#),
            ("DELETE", "/v1/messages/7", "{}"),
        ]
    );
    for (s, id) in seen.iter().zip(["op_a", "op_b", "op_c"]) {
        assert_eq!(s.header("Idempotency-Key"), Some(id));
        assert_eq!(s.header("Content-Type"), Some("application/json"));
        assert_eq!(s.header("Authorization"), Some("Bearer abc"));
        assert_eq!(s.header("X-Client"), Some("tests"));
    }
    Ok(())
}

#[test]
fn the_idempotency_key_is_the_same_on_every_retry() -> TestResult {
    let server = TestServer::start(|n, _| Reply::status(if n < 3 { 503 } else { 200 }))?;
    let transport = transport(&server.base_url)?;
    let op = op("op_stable", "k", "/x", "{}");
    let results: Vec<bool> = (0..4).map(|_| transport.send(&op).ok).collect();
    assert_eq!(results, [false, false, false, true]);
    let keys: Vec<Option<String>> = server
        .seen()
        .iter()
        .map(|s| s.header("Idempotency-Key").map(str::to_owned))
        .collect();
    assert_eq!(keys, vec![Some("op_stable".to_owned()); 4]);
    Ok(())
}

#[test]
fn a_server_that_never_answers_is_a_retryable_timeout() -> TestResult {
    let server = TestServer::start(|_, _| Reply::Hang)?;
    let transport = HttpTransport::new(HttpTransportConfig {
        base_url: server.base_url.clone(),
        timeout: Duration::from_millis(300),
        ..HttpTransportConfig::default()
    })?;
    let started = Instant::now();
    let result = transport.send(&op("a", "k", "/x", "{}"));
    assert!(!result.ok && result.retryable, "{result:?}");
    assert!(result.error.contains("timeout"), "{}", result.error);
    // Not a timing assertion on speed: the send must not wait for ever.
    assert!(started.elapsed() < Duration::from_secs(30));
    Ok(())
}

#[test]
fn a_refused_connection_is_retryable() -> TestResult {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?.port()
    }; // closed again: nothing listens there now
    let transport = transport(&format!("http://127.0.0.1:{port}"))?;
    let result = transport.send(&op("a", "k", "/x", "{}"));
    assert!(!result.ok && result.retryable, "{result:?}");
    Ok(())
}

#[test]
fn an_operation_that_makes_no_valid_request_is_permanent() -> TestResult {
    let server = TestServer::start(|_, _| Reply::status(200))?;
    let transport = transport(&server.base_url)?;
    let bad_target = transport.send(&op("a", "k", "/with space", "{}"));
    assert!(
        !bad_target.retryable && bad_target.error.contains("URL"),
        "{bad_target:?}"
    );
    let bad_id = transport.send(&op("bad\nid", "k", "/x", "{}"));
    assert!(
        !bad_id.retryable && bad_id.error.contains("Idempotency-Key"),
        "{bad_id:?}"
    );
    assert!(server.seen().is_empty(), "nothing reached the server");
    Ok(())
}

#[test]
fn a_configuration_that_cannot_work_is_refused_without_showing_values() {
    let with = |base_url: &str, headers: Vec<(String, String)>| {
        HttpTransport::new(HttpTransportConfig {
            base_url: base_url.to_owned(),
            headers,
            ..HttpTransportConfig::default()
        })
    };
    for url in [
        "ftp://host",
        "/relative",
        "http://",
        "http://h/?q=1",
        "no url",
    ] {
        assert!(
            matches!(
                with(url, vec![]),
                Err(HttpTransportError::InvalidBaseUrl { .. })
            ),
            "{url}"
        );
    }
    for name in ["Idempotency-Key", "content-length", "Host", "bad name"] {
        assert!(
            matches!(
                with("http://h", vec![(name.into(), "v".into())]),
                Err(HttpTransportError::InvalidHeader { .. })
            ),
            "{name}"
        );
    }
    let error = with(
        "http://h",
        vec![("Authorization".into(), "secret\nvalue".into())],
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        error.contains("Authorization") && !error.contains("secret"),
        "{error}"
    );
}

/// The trace an operation was enqueued in goes with it: a valid
/// `traceparent` as the header, an invalid one not at all, none without.
#[test]
fn an_operations_traceparent_is_sent_with_it() -> TestResult {
    let server = TestServer::start(|_, _| Reply::status(200))?;
    let transport = transport(&server.base_url)?;
    let traced = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut with = op("op_t", "k", "/x", "{}");
    with.traceparent = Some(traced.into());
    let mut broken = op("op_b", "k", "/x", "{}");
    broken.traceparent = Some("00-not-a-trace-01".into());
    let without = op("op_n", "k", "/x", "{}");
    for op in [&with, &broken, &without] {
        assert!(transport.send(op).ok);
    }
    let sent: Vec<Option<String>> = server
        .seen()
        .iter()
        .map(|s| s.header("traceparent").map(str::to_owned))
        .collect();
    assert_eq!(sent, [Some(traced.to_owned()), None, None]);
    // An app cannot set one for every request: it is each operation's.
    let config = HttpTransportConfig {
        base_url: server.base_url.clone(),
        headers: vec![("traceparent".into(), traced.into())],
        ..HttpTransportConfig::default()
    };
    assert!(HttpTransport::new(config).is_err());
    Ok(())
}
