//! [`FileStoreError`], the one error type of this crate.

use std::io;
use std::path::PathBuf;

use sync_outbox::OutboxError;

/// Everything that can go wrong in a file store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileStoreError {
    /// An I/O call failed.
    #[error("{op} {}", .path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error from the operating system.
        #[source]
        source: io::Error,
    },
    /// A JSON store file does not parse, has an unknown version, or breaks an
    /// invariant. The file is left untouched and the store refuses to open.
    #[error("corrupt store file {} at line {line}, column {column}: {reason}", .path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem (0 if it concerns the whole file).
        line: usize,
        /// 1-based column of the problem (0 if it concerns the whole file).
        column: usize,
        /// What is wrong.
        reason: String,
    },
    /// A WAL store snapshot fails its checks. The file is left untouched.
    #[error("corrupt snapshot {} at offset {offset}: {reason}", .path.display())]
    CorruptSnapshot {
        /// The snapshot file.
        path: PathBuf,
        /// Byte offset of the problem.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A WAL record holds no valid operation, or the log does not continue
    /// the snapshot.
    #[error("corrupt wal store record in {} at lsn {lsn}: {reason}", .dir.display())]
    CorruptRecord {
        /// The WAL directory.
        dir: PathBuf,
        /// The record's log sequence number.
        lsn: u64,
        /// What is wrong.
        reason: String,
    },
    /// Another handle holds the store's lock: one `Outbox` (one process)
    /// at a time may change a store. `synctl`'s reading commands work
    /// beside it; to change it, close it in the holder first.
    #[error("store {} is in use by {holder}: close it there first (reading it with `synctl outbox list` works beside it)", .path.display())]
    Locked {
        /// The store file or directory.
        path: PathBuf,
        /// Who holds it (`pid 4242 (notes-app)`), or `another process`.
        holder: String,
    },
    /// An operation cannot be stored as given (an empty id, which no store
    /// file may hold). Nothing was written.
    #[error("cannot store operation: {reason}")]
    InvalidOperation {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The write-ahead log failed.
    #[error("wal store log failed")]
    Wal(#[from] sync_wal::WalError),
    /// Encrypted content cannot be read: no key, a key the ring does not
    /// hold, bytes that do not authenticate (a wrong key, or bytes changed,
    /// moved or swapped), plain content where sealed is expected, or a
    /// malformed envelope. `path` is the store file, the snapshot or the
    /// log segment; `offset` the byte in it. Nothing is changed, and no
    /// store is opened over it.
    #[error("cannot read {} at offset {offset}: {problem}", .path.display())]
    Encryption {
        /// The file.
        path: PathBuf,
        /// Byte offset of the problem in the file.
        offset: u64,
        /// What is wrong.
        problem: EncryptionProblem,
    },
    /// The operating system gave no random bytes (for a key or a nonce).
    /// Nothing was written.
    #[error("no random bytes from the operating system: {reason}")]
    Random {
        /// The error from the random source.
        reason: String,
    },
}

/// Why encrypted content cannot be read ([`FileStoreError::Encryption`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncryptionProblem {
    /// It is sealed, and the store was opened without `Encryption`.
    #[error("it is encrypted, and the store was opened without keys (`with_encryption`)")]
    NoKeys,
    /// It is sealed with a key id the key ring does not hold.
    #[error("it is sealed with key id {key_id}, which the key ring does not hold")]
    UnknownKey {
        /// The id stored with it.
        key_id: u32,
    },
    /// It does not authenticate under the ring's key with its id.
    #[error(
        "it does not authenticate under key id {key_id}: the wrong key under that id, or bytes changed, moved or swapped"
    )]
    NotAuthentic {
        /// The id stored with it.
        key_id: u32,
    },
    /// It is plain, and the store's `Encryption` does not accept plain
    /// content.
    #[error(
        "it is not encrypted, and the store's encryption refuses plain content (`Encryption::accept_plaintext` reads a store written before encryption was turned on)"
    )]
    Unencrypted,
    /// The envelope is malformed: too short, an unknown version or role.
    #[error("{0}")]
    Malformed(String),
}

impl From<FileStoreError> for OutboxError {
    fn from(error: FileStoreError) -> Self {
        OutboxError::store(error)
    }
}

pub(crate) fn io_error(
    op: &'static str,
    path: impl Into<PathBuf>,
    source: io::Error,
) -> FileStoreError {
    FileStoreError::Io {
        op,
        path: path.into(),
        source,
    }
}

/// A `serde_json` error as an error reason that never carries the data it
/// read: serde shows the offending value (``invalid type: integer `4111` ``,
/// `invalid type: string "..."`, ``unknown variant `...` ``), which may be
/// part of a payload. The value is dropped; its kind, the expected type and
/// schema field names are kept.
pub(crate) fn json_reason(error: &serde_json::Error) -> String {
    let message = error.to_string();
    if error.classify() != serde_json::error::Category::Data {
        // Syntax and end-of-file messages name what was expected, not what
        // was found.
        return message;
    }
    let expected = message
        .find(", expected")
        .and_then(|at| message.get(at..))
        .unwrap_or_default();
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let kind = rest.split([' ', ',']).next().unwrap_or("value");
            return format!("{prefix}{kind} (value not shown){expected}");
        }
    }
    if message.starts_with("unknown variant") {
        return format!("unknown variant (value not shown){expected}");
    }
    // Field names come from the schema; lengths are counts.
    if ["missing field", "duplicate field", "invalid length"]
        .iter()
        .any(|p| message.starts_with(p))
    {
        return message;
    }
    let at = message
        .rfind(" at line ")
        .and_then(|i| message.get(i..))
        .unwrap_or_default();
    format!("invalid data (not shown){at}")
}
