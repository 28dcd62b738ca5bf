//! Guards the status table: every listed status maps as documented when it
//! comes from a real server, Retry-After in both forms is honoured and
//! clamped, and no error string carries the payload or a header value.

use std::time::{Duration, SystemTime};

use sync_engine::SyncTransport;
use sync_transport_http::{HttpTransport, HttpTransportConfig, map_status, parse_retry_after};

use crate::{Reply, TestResult, TestServer, op, transport};

/// (status, ok, retryable) as the table in `map_status`'s docs says.
const TABLE: [(u16, bool, bool); 21] = [
    (200, true, false),
    (201, true, false),
    (204, true, false),
    (408, false, true),
    (409, false, true),
    (425, false, true),
    (429, false, true),
    (500, false, true),
    (502, false, true),
    (503, false, true),
    (504, false, true),
    (507, false, true),
    (401, false, false),
    (403, false, false),
    (400, false, false),
    (404, false, false),
    (422, false, false),
    (501, false, false),
    (505, false, false),
    (301, false, false),
    (304, false, false),
];

#[test]
fn every_status_from_a_real_server_maps_as_the_table_says() -> TestResult {
    let server = TestServer::start(|_, seen| {
        let code = seen
            .url
            .trim_start_matches("/status/")
            .parse()
            .unwrap_or(599);
        Reply::status(code)
    })?;
    let transport = transport(&server.base_url)?;
    for (status, ok, retryable) in TABLE {
        let result = transport.send(&op("op_1", "k", &format!("/status/{status}"), "{}"));
        assert_eq!(
            (result.ok, result.retryable),
            (ok, retryable),
            "status {status}: {result:?}"
        );
        if !ok {
            assert!(
                result.error.starts_with(&format!("HTTP {status} ")),
                "{status}: {}",
                result.error
            );
        }
    }
    Ok(())
}

#[test]
fn auth_failures_are_permanent_unless_configured_retryable() -> TestResult {
    let server = TestServer::start(|_, _| Reply::status(401))?;
    let strict = transport(&server.base_url)?;
    assert!(!strict.send(&op("a", "k", "/x", "{}")).retryable);
    let lenient = HttpTransport::new(HttpTransportConfig {
        base_url: server.base_url.clone(),
        retry_auth_failures: true,
        ..HttpTransportConfig::default()
    })?;
    assert!(lenient.send(&op("a", "k", "/x", "{}")).retryable);
    Ok(())
}

#[test]
fn retry_after_seconds_and_dates_are_honoured_and_clamped() -> TestResult {
    let in_90s = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(90));
    let server = TestServer::start(move |n, _| match n {
        0 => Reply::Status(429, vec![("Retry-After", "7".into())], String::new()),
        1 => Reply::Status(503, vec![("Retry-After", in_90s.clone())], String::new()),
        2 => Reply::Status(503, vec![("Retry-After", "86400".into())], String::new()),
        3 => Reply::Status(503, vec![("Retry-After", "whenever".into())], String::new()),
        _ => Reply::Status(422, vec![("Retry-After", "7".into())], String::new()),
    })?;
    let transport = HttpTransport::new(HttpTransportConfig {
        base_url: server.base_url.clone(),
        max_retry_after: Duration::from_secs(3600),
        ..HttpTransportConfig::default()
    })?;
    let send = || transport.send(&op("a", "k", "/x", "{}"));
    assert_eq!(send().retry_after_ms, Some(7_000));
    let date = send().retry_after_ms.ok_or("date ignored")?;
    // The date has a one-second resolution and the send takes a moment.
    assert!((88_000..=90_000).contains(&date), "{date}");
    assert_eq!(send().retry_after_ms, Some(3_600_000), "clamped");
    let unparsable = send();
    assert!(unparsable.retryable && unparsable.retry_after_ms.is_none());
    let permanent = send();
    assert!(!permanent.retryable && permanent.retry_after_ms.is_none());
    Ok(())
}

#[test]
fn error_strings_never_carry_the_payload_or_header_values() -> TestResult {
    // The server echoes everything it got, as some do in error bodies.
    let server = TestServer::start(|n, seen| {
        let echo = format!("{} {:?}", seen.body, seen.headers);
        Reply::Status(if n % 2 == 0 { 422 } else { 503 }, Vec::new(), echo)
    })?;
    let transport = HttpTransport::new(HttpTransportConfig {
        base_url: server.base_url.clone(),
        headers: vec![("Authorization".into(), "Bearer hunter2-token".into())],
        ..HttpTransportConfig::default()
    })?;
    for _ in 0..2 {
        let result = transport.send(&op("a", "k", "/x", r#"{"card":"4111-1111"}"#));
        assert!(!result.error.contains("4111"), "{}", result.error);
        assert!(!result.error.contains("hunter2"), "{}", result.error);
    }
    assert!(!format!("{transport:?}").contains("hunter2"));
    Ok(())
}

#[test]
fn parse_retry_after_reads_both_forms_and_rejects_the_rest() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
    assert_eq!(
        parse_retry_after("99999999999999999999999", now),
        Some(Duration::from_secs(u64::MAX))
    );
    let past = httpdate::fmt_http_date(now - Duration::from_secs(5));
    assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
    for bad in ["", "-5", "1.5", "tomorrow", "Wed, 99 Foo 2015"] {
        assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
    }
    let config = HttpTransportConfig::default();
    let huge = map_status(503, Some("99999999999999999999999"), now, &config);
    assert_eq!(
        huge.retry_after_ms,
        Some(300_000),
        "clamped to the 5 min default"
    );
}
