//! [`SqliteStoreError`], the one error type of this crate.

use std::path::PathBuf;

use sync_outbox::OutboxError;

/// Everything that can go wrong in the SQLite store. Each variant names the
/// database file; none shows a payload.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteStoreError {
    /// The file exists but is not an SQLite database. Nothing was written.
    #[error("{} is not an SQLite database (or it is encrypted, and no key was given)", .path.display())]
    NotADatabase {
        /// The file.
        path: PathBuf,
    },
    /// The database's encryption and the key given do not match (feature
    /// `sqlcipher`): the key does not open it (a wrong key, or a file that
    /// is not an SQLCipher database), or a key was given for a database
    /// that is not encrypted. Nothing was written.
    #[error("{}: {reason}", .path.display())]
    KeyMismatch {
        /// The file.
        path: PathBuf,
        /// Which of the two.
        reason: &'static str,
    },
    /// The database has this crate's tables in a schema version it does not
    /// know (a newer release wrote it). Nothing was written.
    #[error("{} has outbox schema version {found}; this release reads version {expected}", .path.display())]
    ForeignSchema {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: String,
        /// The version this release reads and writes.
        expected: u32,
    },
    /// A row of the outbox table cannot be read as an operation (a status
    /// that is not one, a negative attempt). Nothing was written.
    #[error("{}: outbox row {id:?}: invalid {column}", .path.display())]
    InvalidRow {
        /// The file.
        path: PathBuf,
        /// The row's id.
        id: String,
        /// The column that is wrong.
        column: &'static str,
    },
    /// Another handle holds the store's lock (`<file>.sync-lock`): one
    /// store object (one process) at a time may change it.
    #[error("store {} is in use by {holder}: close it there first (reading it with `synctl outbox list` works beside it)", .path.display())]
    Locked {
        /// The database file.
        path: PathBuf,
        /// Who holds it (`pid 4242 (notes-app)`), or `another process`.
        holder: String,
    },
    /// An operation cannot be stored as given (an empty id). Nothing was
    /// written.
    #[error("cannot store operation: {reason}")]
    InvalidOperation {
        /// What is wrong.
        reason: &'static str,
    },
    /// `transaction` was given an `Outbox` over another store.
    #[error("the outbox does not use this store")]
    WrongOutbox,
    /// The tokio runtime shut down before an async transaction's result came
    /// back (`with_transaction_async`); the transaction ran to its end,
    /// committed or not.
    #[error("the runtime shut down before the transaction's result came back")]
    RuntimeGone,
    /// A statement failed; `op` says which step.
    #[error("{op} {}", .path.display())]
    Sql {
        /// The step (`"open"`, `"insert operation"`, ...).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The lock file could not be opened or locked.
    #[error("{op} {}", .path.display())]
    Io {
        /// The step.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A statement of the app's own, run in a transaction, failed (`?` on
    /// a `rusqlite::Error` inside `with_transaction` gives this).
    #[error("an SQL statement of the app failed")]
    App(#[from] rusqlite::Error),
    /// The outbox refused the enqueue (a duplicate id, say).
    #[error("outbox refused the operation")]
    Outbox(#[from] OutboxError),
}

impl From<SqliteStoreError> for OutboxError {
    fn from(error: SqliteStoreError) -> Self {
        match error {
            SqliteStoreError::Outbox(inner) => inner,
            other => OutboxError::store(other),
        }
    }
}

/// Wraps an SQLite error with its step and file, recognising a file that is
/// not a database.
pub(crate) fn sql(
    op: &'static str,
    path: &std::path::Path,
    source: rusqlite::Error,
) -> SqliteStoreError {
    if source.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) {
        return SqliteStoreError::NotADatabase {
            path: path.to_path_buf(),
        };
    }
    SqliteStoreError::Sql {
        op,
        path: path.to_path_buf(),
        source,
    }
}
