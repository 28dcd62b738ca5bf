//! `ServerError`, the one error type of the crate.

/// What can go wrong in `sync-server`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// An SQLite call failed.
    #[cfg(feature = "sqlite")]
    #[error("sqlite: {op} on {}", .path.display())]
    Sqlite {
        /// What was being done.
        op: &'static str,
        /// The database file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// A PostgreSQL call failed.
    #[cfg(feature = "postgres")]
    #[error("postgres: {op}")]
    Postgres {
        /// What was being done.
        op: &'static str,
        /// The cause.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A store's settings cannot be used.
    #[error("bad store settings: {0}")]
    BadConfig(String),
    /// No PostgreSQL connection could be had from the pool.
    #[cfg(feature = "postgres")]
    #[error("postgres: no connection from the pool")]
    Pool(#[source] deadpool_postgres::PoolError),
    /// A stored key record cannot be read back (a foreign or damaged row).
    /// Nothing is written over it.
    #[error("key record {scope:?}/{key:?} in {table} is unreadable: {problem}")]
    CorruptRecord {
        /// The table.
        table: &'static str,
        /// The key's scope.
        scope: String,
        /// The key.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The database holds the key table in a version this crate does not
    /// know; it is not written to.
    #[error("{table} has schema version {found}, this build knows {expected}")]
    UnknownSchema {
        /// The table.
        table: &'static str,
        /// The version found.
        found: String,
        /// The version this build writes.
        expected: u32,
    },
    /// The claim's lease ran out and another request took the key over;
    /// this request's result was not stored (and, in a transaction, its
    /// effect was rolled back).
    #[error("idempotency key {key:?} was taken over by another request")]
    KeyLost {
        /// The key.
        key: String,
    },
    /// A blocking store call panicked or was cancelled.
    #[error("a blocking store call did not finish")]
    Blocking(#[source] tokio::task::JoinError),
    /// The request has no idempotency claim: the handler runs without the
    /// layer, or for a request without a key.
    #[error("the request holds no idempotency key (is the handler behind IdempotencyLayer?)")]
    NoClaim,
}

impl axum::response::IntoResponse for ServerError {
    /// What a handler answers when its transaction fails: `409` with
    /// `Retry-After: 1` if the key was taken over (the client's retry gets
    /// the other request's response), `503` with `Retry-After: 1` if no
    /// database connection could be had, `500` otherwise. None of these is
    /// stored, so the retry runs again. The body names no detail.
    fn into_response(self) -> axum::response::Response {
        let (status, code) = match self {
            Self::KeyLost { .. } => (http::StatusCode::CONFLICT, "request_in_progress"),
            #[cfg(feature = "postgres")]
            Self::Pool(_) => (http::StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            _ => (http::StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        };
        let mut response =
            crate::StoredResponse::json(status, &serde_json::json!({ "error": code }))
                .into_response();
        if status != http::StatusCode::INTERNAL_SERVER_ERROR {
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}
