//! The response stored under a key and replayed to its repeats: status, the
//! headers that matter, and the body. Also what a handler hands to a
//! transaction of the transactional form, so the response it returns is
//! exactly the one stored.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, StatusCode};

use sync_protocol::{IDEMPOTENT_REPLAYED, IDEMPOTENT_RESPONSE_EXPIRED};

/// A response as stored under an idempotency key.
///
/// # Examples
///
/// ```
/// use axum::response::IntoResponse;
/// use http::StatusCode;
/// use sync_server::StoredResponse;
///
/// let stored = StoredResponse::json(StatusCode::CREATED, &serde_json::json!({"id": 7}))
///     .with_header("location", "/notes/7");
/// let response = stored.clone().into_response();
/// assert_eq!(response.status(), StatusCode::CREATED);
/// assert_eq!(response.headers()["location"], "/notes/7");
/// assert_eq!(stored.body, br#"{"id":7}"#);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    /// The status code.
    pub status: u16,
    /// The headers kept (names lowercase), in order.
    pub headers: Vec<(String, String)>,
    /// The body, whole.
    pub body: Vec<u8>,
}

impl StoredResponse {
    /// A response with `status`, no headers and no body.
    #[must_use]
    pub fn new(status: StatusCode) -> Self {
        Self {
            status: status.as_u16(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A JSON response: `value` serialized, `content-type: application/json`.
    /// A value that cannot be serialized (a map with non-string keys) gives
    /// an empty body.
    #[must_use]
    pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Self {
        Self::new(status)
            .with_header("content-type", "application/json")
            .with_body(serde_json::to_vec(value).unwrap_or_default())
    }

    /// Adds a header (the name is stored lowercase).
    #[must_use]
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// Sets the body.
    #[must_use]
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Whether this response is kept for replay: not a 5xx, 408, 409, 425
    /// or 429 ([`sync_protocol::is_storable`]). The client retries all of
    /// those but 501 and 505, and storing them would replay "try again"
    /// until the key expired; instead the key is released and a retry runs
    /// again. (501 and 505 are not stored either: a server error is never
    /// remembered.)
    #[must_use]
    pub fn is_storable(&self) -> bool {
        sync_protocol::is_storable(self.status)
    }

    /// The status as a `StatusCode` (500 for a stored value out of range).
    #[must_use]
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The response a repeat gets: this one, marked
    /// `Idempotent-Replayed: true`.
    #[must_use]
    pub fn replay(self) -> Response {
        let mut response = self.into_response();
        response.headers_mut().insert(
            HeaderName::from_static(IDEMPOTENT_REPLAYED),
            HeaderValue::from_static("true"),
        );
        response
    }

    /// The answer to a repeat of a key whose response expired but which is
    /// still remembered: `status`, an empty body, `Idempotent-Replayed:
    /// true` and `Idempotent-Response-Expired: true` (`docs/PROTOCOL.md`).
    /// A client maps the status as usual: a 2xx is done.
    ///
    /// # Examples
    ///
    /// ```
    /// let answer = sync_server::StoredResponse::remembered(201);
    /// assert_eq!(answer.status(), 201);
    /// assert_eq!(answer.headers()["idempotent-response-expired"], "true");
    /// ```
    #[must_use]
    pub fn remembered(status: u16) -> Response {
        let mut response = Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
        .replay();
        response.headers_mut().insert(
            HeaderName::from_static(IDEMPOTENT_RESPONSE_EXPIRED),
            HeaderValue::from_static("true"),
        );
        response
    }

    /// The headers as JSON text, for a store's column.
    pub(crate) fn headers_json(&self) -> String {
        serde_json::to_string(&self.headers).unwrap_or_else(|_| "[]".to_owned())
    }

    /// Rebuilds a stored response from its columns.
    pub(crate) fn from_columns(
        status: i64,
        headers_json: &str,
        body: Vec<u8>,
    ) -> Result<Self, String> {
        let status = u16::try_from(status).map_err(|_| format!("status {status} out of range"))?;
        let headers = serde_json::from_str(headers_json)
            .map_err(|e| format!("headers are not a JSON list of pairs: {e}"))?;
        Ok(Self {
            status,
            headers,
            body,
        })
    }
}

impl IntoResponse for StoredResponse {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() = status;
        for (name, value) in self.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                response.headers_mut().append(name, value);
            }
        }
        response
    }
}
