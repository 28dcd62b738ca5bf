//! What `synctl` prints: aligned tables for people, and [`Failure`], the
//! error every command returns, with its exit code and message.

use std::fmt::{self, Write as _};
use std::io::{self, Write};

use sync_outbox::OutboxError;
use sync_store_file::{EncryptionProblem, FileStoreError};
use sync_store_sqlite::SqliteStoreError;
use sync_wal::WalError;

/// Why a command stopped.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Bad bytes were found (exit code 1).
    Corrupt(String),
    /// The command could not run (exit code 3).
    Failed(String),
    /// Standard output was closed by its reader.
    BrokenPipe,
}

impl Failure {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::Corrupt(_) => 1,
            Self::Failed(_) => 3,
            Self::BrokenPipe => 0,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Corrupt(message) => write!(f, "corrupt: {message}"),
            Self::Failed(message) => write!(f, "error: {message}"),
            Self::BrokenPipe => f.write_str("broken pipe"),
        }
    }
}

impl From<io::Error> for Failure {
    fn from(error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::BrokenPipe {
            Self::BrokenPipe
        } else {
            Self::Failed(format!("writing output: {error}"))
        }
    }
}

/// The message an application's lock gets, wherever it is found.
fn locked(path: &std::path::Path, holder: &str) -> Failure {
    Failure::Failed(format!(
        "{} is in use by {holder} (is the application running?); \
         commands that change the queue need it to have closed the store \
         (list, show and stats work while it runs). Nothing was changed.",
        path.display()
    ))
}

impl From<WalError> for Failure {
    fn from(error: WalError) -> Self {
        match error {
            WalError::Locked { path, holder } => locked(&path, &holder),
            e @ (WalError::Corrupt { .. }
            | WalError::BadMagic { .. }
            | WalError::UnsupportedVersion { .. }) => Self::Corrupt(e.to_string()),
            other => Self::Failed(chain(&other)),
        }
    }
}

impl From<FileStoreError> for Failure {
    fn from(error: FileStoreError) -> Self {
        match error {
            FileStoreError::Locked { path, holder } => locked(&path, &holder),
            FileStoreError::Wal(wal) => wal.into(),
            e @ (FileStoreError::Corrupt { .. }
            | FileStoreError::CorruptSnapshot { .. }
            | FileStoreError::CorruptRecord { .. }
            | FileStoreError::Encryption {
                problem: EncryptionProblem::Malformed(_),
                ..
            }) => Self::Corrupt(e.to_string()),
            e @ FileStoreError::Encryption {
                problem: EncryptionProblem::NoKeys,
                ..
            } => Self::Failed(format!("{e}: give its key with --key-file")),
            other => Self::Failed(chain(&other)),
        }
    }
}

impl From<SqliteStoreError> for Failure {
    fn from(error: SqliteStoreError) -> Self {
        match error {
            SqliteStoreError::Locked { path, holder } => locked(&path, &holder),
            e @ (SqliteStoreError::NotADatabase { .. }
            | SqliteStoreError::ForeignSchema { .. }
            | SqliteStoreError::InvalidRow { .. }) => Self::Corrupt(e.to_string()),
            other => Self::Failed(chain(&other)),
        }
    }
}

impl From<OutboxError> for Failure {
    fn from(error: OutboxError) -> Self {
        match error {
            OutboxError::Store { source } => match source.downcast::<FileStoreError>() {
                Ok(store) => (*store).into(),
                Err(other) => match other.downcast::<SqliteStoreError>() {
                    Ok(sqlite) => (*sqlite).into(),
                    Err(other) => Self::Failed(chain(other.as_ref())),
                },
            },
            other => Self::Failed(other.to_string()),
        }
    }
}

/// An error and its sources, `a: b: c`.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        message.push_str(": ");
        message.push_str(&e.to_string());
        source = e.source();
    }
    message
}

/// Rows printed with every column padded to its widest cell.
#[derive(Debug)]
pub(crate) struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn print(&self, out: &mut dyn Write) -> io::Result<()> {
        let n_columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..n_columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let width = widths.get(c).copied().unwrap_or(0);
                    let _ = write!(line, "{cell:<width$}  ");
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// `text` cut to `max` characters with control characters escaped, for a
/// table cell.
pub(crate) fn preview(text: &str, max: usize) -> String {
    let mut escaped = String::new();
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    if escaped.chars().count() <= max {
        escaped
    } else {
        let cut: String = escaped.chars().take(max.saturating_sub(3)).collect();
        format!("{cut}...")
    }
}
