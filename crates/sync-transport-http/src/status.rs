//! How an HTTP response becomes a [`SendResult`]: [`map_status`] and
//! [`parse_retry_after`]. Pure functions, apart from the transport.

use std::time::{Duration, SystemTime};

use sync_engine::SendResult;
use sync_protocol::StatusClass;

use crate::config::HttpTransportConfig;

/// Maps a response's status code (and its `Retry-After` header, if any) to a
/// [`SendResult`].
///
/// The table is `sync_protocol::map_status`, shared with `sync-server`:
///
/// | status | result |
/// | --- | --- |
/// | 2xx | ok |
/// | 408, 425, 429, 500 | retryable, honouring `Retry-After`; the attempt counts |
/// | 409 (the same `Idempotency-Key` is still being processed) | retryable, honouring `Retry-After` |
/// | other 5xx, except 501 to 505 | retryable, honouring `Retry-After` |
/// | 502, 503, 504 (the server or its gateway unavailable) | [`SendResult::no_answer`], honouring `Retry-After`: no attempt used, the engine pauses sending as offline |
/// | 401, 403 | permanent; retryable if [`HttpTransportConfig::retry_auth_failures`] |
/// | 422 and every other 4xx | permanent |
/// | 501, 505 | permanent (the server will never support this request) |
/// | 1xx, 3xx | permanent (redirects are not followed: a `POST` must not silently become a `GET`) |
/// | no response: connection refused, DNS | [`SendResult::not_sent`] (see `HttpTransport`) |
/// | no response: reset, timeout, TLS | [`SendResult::no_answer`] |
///
/// A `Retry-After` is clamped to [`HttpTransportConfig::max_retry_after`]
/// and is ignored on responses that are not retryable. The error string is
/// the status and its reason phrase (`"HTTP 503 Service Unavailable"`),
/// never the body, which may echo the payload.
///
/// # Examples
///
/// ```
/// use std::time::SystemTime;
/// use sync_transport_http::{HttpTransportConfig, map_status};
///
/// let config = HttpTransportConfig::default();
/// let now = SystemTime::now();
/// assert!(map_status(201, None, now, &config).ok);
/// let busy = map_status(429, Some("30"), now, &config);
/// assert!(busy.retryable && !busy.is_unanswered());
/// assert_eq!(busy.retry_after_ms, Some(30_000));
/// assert_eq!(busy.error, "HTTP 429 Too Many Requests");
/// assert!(map_status(503, None, now, &config).is_unanswered(), "an outage, not an answer");
/// assert!(!map_status(422, None, now, &config).retryable);
/// ```
#[must_use]
pub fn map_status(
    status: u16,
    retry_after: Option<&str>,
    now: SystemTime,
    config: &HttpTransportConfig,
) -> SendResult {
    let error = describe(status);
    let class = sync_protocol::map_status(status);
    let retryable = match class {
        StatusClass::Done => return SendResult::ok(),
        StatusClass::Retry | StatusClass::Unavailable => true,
        _ if matches!(status, 401 | 403) => config.retry_auth_failures,
        _ => false,
    };
    if !retryable {
        return SendResult::permanent(error);
    }
    let mut result = if class == StatusClass::Unavailable {
        SendResult::no_answer(error)
    } else {
        SendResult::retryable(error)
    };
    result.retry_after_ms = retry_after
        .and_then(|value| parse_retry_after(value, now))
        .map(|wait| {
            let wait = wait.min(config.max_retry_after);
            i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)
        });
    result
}

/// Parses a `Retry-After` value: delay-seconds (`"120"`) or an HTTP-date
/// (`"Wed, 21 Oct 2026 07:28:00 GMT"`), which is taken relative to `now` (a
/// date in the past means no wait). `None` if it is neither.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use sync_transport_http::parse_retry_after;
///
/// let now = UNIX_EPOCH + Duration::from_secs(1_445_412_470); // 07:27:50 GMT
/// assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
/// assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now), Some(Duration::from_secs(10)));
/// assert_eq!(parse_retry_after("soon", now), None);
/// ```
#[must_use]
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // A number too large for u64 is still "a very long time".
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `result` with up to [`HttpTransportConfig::failure_body_limit`] bytes of
/// `body` after its error, if it is a permanent failure and the limit is
/// not 0; otherwise `result` unchanged. The excerpt is one line: control
/// characters become spaces, invalid UTF-8 becomes U+FFFD, and a cut body
/// ends with `...`.
///
/// # Examples
///
/// ```
/// use std::time::SystemTime;
/// use sync_transport_http::{HttpTransportConfig, map_status, with_failure_body};
///
/// let config = HttpTransportConfig { failure_body_limit: 25, ..HttpTransportConfig::default() };
/// let refused = map_status(422, None, SystemTime::now(), &config);
/// let body = br#"{"error":"title_required","field":"title"}"#;
/// assert_eq!(
///     with_failure_body(refused, body, &config).error,
///     r#"HTTP 422 Unprocessable Entity: {"error":"title_required"..."#
/// );
/// let busy = map_status(503, None, SystemTime::now(), &config);
/// assert_eq!(with_failure_body(busy, body, &config).error, "HTTP 503 Service Unavailable");
/// ```
#[must_use]
pub fn with_failure_body(
    mut result: SendResult,
    body: &[u8],
    config: &HttpTransportConfig,
) -> SendResult {
    let limit = config.failure_body_limit;
    if limit == 0 || result.ok || result.retryable {
        return result;
    }
    let cut = body.len() > limit;
    let mut excerpt: String = String::from_utf8_lossy(body.get(..limit).unwrap_or(body))
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if cut {
        // A multi-byte character cut at the limit is a U+FFFD: drop it.
        if excerpt.ends_with(char::REPLACEMENT_CHARACTER) {
            excerpt.pop();
        }
        excerpt.push_str("...");
    }
    let excerpt = excerpt.trim();
    if !excerpt.is_empty() {
        result.error = format!("{}: {excerpt}", result.error);
    }
    result
}

/// `"HTTP 503 Service Unavailable"`.
fn describe(status: u16) -> String {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown Status");
    format!("HTTP {status} {reason}")
}
