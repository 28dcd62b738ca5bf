//! [`AuthProvider`]: credentials that are asked for on every request and
//! refreshed when the server says they are no longer good.

use std::error::Error;

/// Supplies the credentials of each request, for both
/// `HttpTransport` and `AsyncHttpTransport`.
///
/// The transport asks [`headers`](Self::headers) for every request (a
/// bearer token the provider caches, say). When a request gets `401`, it
/// calls [`refresh`](Self::refresh) once and sends that request again at
/// once with the new headers; a second `401` is then mapped as usual (retry
/// later with [`retry_auth_failures`](crate::HttpTransportConfig::retry_auth_failures),
/// else permanent). A failing `headers` or `refresh` makes the send
/// retryable.
///
/// Header values are secrets: the transport marks them sensitive, and they
/// never appear in a `Debug` output, an error or a `SendResult`; the
/// provider's own error text is not shown either.
///
/// # Examples
///
/// ```
/// use std::sync::Mutex;
/// use sync_transport_http::AuthProvider;
///
/// /// A bearer token, renewed from a (here, pretend) token endpoint.
/// struct Bearer {
///     token: Mutex<String>,
/// }
///
/// impl AuthProvider for Bearer {
///     fn headers(&self) -> Result<Vec<(String, String)>, Box<dyn std::error::Error + Send + Sync>> {
///         let token = self.token.lock().map_err(|_| "poisoned")?;
///         Ok(vec![("Authorization".into(), format!("Bearer {token}"))])
///     }
///
///     fn refresh(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
///         *self.token.lock().map_err(|_| "poisoned")? = "fresh-token".into();
///         Ok(())
///     }
/// }
///
/// let auth = Bearer { token: Mutex::new("stale-token".into()) };
/// auth.refresh()?;
/// assert_eq!(auth.headers()?[0].1, "Bearer fresh-token");
/// # Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
/// ```
pub trait AuthProvider: Send + Sync {
    /// The headers to add to the next request. Called once per request:
    /// keep it cheap and non-blocking (return a cached value).
    ///
    /// # Errors
    ///
    /// Any error makes the send retryable; its text is not shown.
    fn headers(&self) -> Result<Vec<(String, String)>, Box<dyn Error + Send + Sync>>;

    /// The server refused the current credentials (`401`): get new ones.
    /// Called at most once per request. It may block (a call to a token
    /// endpoint): `AsyncHttpTransport` runs it on tokio's blocking pool.
    ///
    /// # Errors
    ///
    /// Any error makes the send retryable; its text is not shown.
    fn refresh(&self) -> Result<(), Box<dyn Error + Send + Sync>>;
}
