//! Guards how both HTTP transports tell an outage from an answer: a refused
//! connection is `not_sent` (the request never left), a gateway's 503 and a
//! connection closed before the answer are `no_answer` (it may have reached
//! the server), none of them counts as an answer; and in one-request-per-
//! operation mode, the rest of a batch is not tried once a request got no
//! answer, each result reported as it arrives.

use std::net::TcpListener;

use sync_engine::{Delivery, ResultSink, SendResult, SyncTransport};

use crate::{Reply, TestResult, TestServer, op, transport};

/// A base URL nothing listens on: a port taken and given back.
fn refused_url() -> Result<String, std::io::Error> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}", listener.local_addr()?);
    drop(listener);
    Ok(url)
}

fn each(transport: &dyn SyncTransport, n: usize) -> Vec<(usize, SendResult)> {
    let ops: Vec<_> = (0..n)
        .map(|i| op(&format!("op_{i}"), "note.create", "/notes", "{}"))
        .collect();
    let mut got = Vec::new();
    let mut record = |batch: Vec<(usize, SendResult)>| got.push(batch);
    transport.send_each(&ops, &mut ResultSink::new(&mut record));
    got.into_iter().flatten().collect()
}

#[test]
fn a_refused_connection_is_not_sent_and_the_rest_of_the_batch_is_not_tried() -> TestResult {
    let transport = transport(&refused_url()?)?;
    let got = each(&transport, 3);
    assert_eq!(
        got.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        [0, 1, 2],
        "each reported, in order"
    );
    for (_, result) in &got {
        assert!(!result.ok && result.retryable, "{result:?}");
        assert_eq!(
            result.unanswered,
            Some(Delivery::NotSent),
            "{}",
            result.error
        );
    }
    assert!(
        got[1].1.error.starts_with("not tried"),
        "{}",
        got[1].1.error
    );
    Ok(())
}

#[test]
fn a_gateway_503_is_an_outage_that_keeps_its_retry_after() -> TestResult {
    let server = TestServer::start(|n, _| {
        if n == 0 {
            Reply::Status(503, vec![("Retry-After", "7".into())], String::new())
        } else {
            Reply::status(201)
        }
    })?;
    let transport = transport(&server.base_url)?;
    let got = each(&transport, 2);
    assert_eq!(got[0].1.unanswered, Some(Delivery::Unknown));
    assert_eq!(got[0].1.retry_after_ms, Some(7_000));
    assert_eq!(got[1].1.unanswered, Some(Delivery::NotSent), "not tried");
    assert_eq!(server.seen().len(), 1, "the second was never sent");
    // A 500 is an answer about the operation: it counts.
    let answered = sync_transport_http::map_status(
        500,
        None,
        std::time::SystemTime::now(),
        &sync_transport_http::HttpTransportConfig::default(),
    );
    assert!(answered.retryable && !answered.is_unanswered());
    Ok(())
}

#[test]
fn answers_are_reported_one_by_one_as_they_arrive() -> TestResult {
    let server = TestServer::start(|n, _| Reply::status(if n == 1 { 422 } else { 201 }))?;
    let transport = transport(&server.base_url)?;
    let ops: Vec<_> = (0..3)
        .map(|i| op(&format!("op_{i}"), "note.create", "/notes", "{}"))
        .collect();
    let mut reports: Vec<Vec<(usize, SendResult)>> = Vec::new();
    let mut record = |batch: Vec<(usize, SendResult)>| reports.push(batch);
    transport.send_each(&ops, &mut ResultSink::new(&mut record));
    // Three reports of one result each, not one report at the end.
    assert_eq!(reports.len(), 3);
    assert!(reports[0][0].1.ok && !reports[1][0].1.retryable && reports[2][0].1.ok);
    Ok(())
}

#[tokio::test]
async fn the_async_transport_tells_the_same_outages_apart() -> TestResult {
    use sync_engine::AsyncSyncTransport;
    let refused =
        sync_transport_http::AsyncHttpTransport::new(sync_transport_http::HttpTransportConfig {
            base_url: refused_url()?,
            ..sync_transport_http::HttpTransportConfig::default()
        })?;
    let result = refused
        .send(&op("op_1", "note.create", "/notes", "{}"))
        .await;
    assert_eq!(
        result.unanswered,
        Some(Delivery::NotSent),
        "{}",
        result.error
    );
    let server = TestServer::start(|_, _| Reply::status(504))?;
    let gateway =
        sync_transport_http::AsyncHttpTransport::new(sync_transport_http::HttpTransportConfig {
            base_url: server.base_url.clone(),
            ..sync_transport_http::HttpTransportConfig::default()
        })?;
    let ops: Vec<_> = (0..2)
        .map(|i| op(&format!("op_{i}"), "note.create", "/notes", "{}"))
        .collect();
    let mut got = Vec::new();
    let mut record = |batch: Vec<(usize, SendResult)>| got.extend(batch);
    gateway
        .send_each(&ops, &mut ResultSink::new(&mut record))
        .await;
    assert_eq!(got[0].1.unanswered, Some(Delivery::Unknown));
    assert_eq!(got[1].1.unanswered, Some(Delivery::NotSent));
    assert_eq!(server.seen().len(), 1);
    Ok(())
}

#[test]
fn an_unanswered_send_names_the_server_and_nothing_secret() -> TestResult {
    let url = refused_url()?;
    let server = url.trim_start_matches("http://").to_owned();
    let with_secret = url.replace("http://", "http://alice:s3cret@") + "/api/v1";
    let got = each(&transport(&with_secret)?, 1);
    let error = &got[0].1.error;
    assert!(error.contains(&server), "names {server}: {error}");
    assert!(
        !error.contains("s3cret") && !error.contains("alice"),
        "{error}"
    );
    assert!(!error.contains("/api"), "no path: {error}");
    Ok(())
}
