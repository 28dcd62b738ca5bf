//! The command line, as clap derive types: every command and its help.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::units::Age;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  corruption found (a bad frame, snapshot or store file)
  2  usage error
  3  the command could not run (a change to a store an application holds, not found, I/O error, unknown id)

Reading commands (wal dump/verify/stats, outbox list/show/stats, download show) work while an application has the
store open: they read a consistent view of its complete records and never block or change it.
Commands that change the queue (retry, discard, purge-done) need the application to have closed it.";

/// Inspect and repair the write-ahead logs and outbox stores of `sync`.
#[derive(Debug, Parser)]
#[command(name = "synctl", version, after_help = EXIT_CODES)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Read a write-ahead log directory (read-only: nothing is repaired).
    #[command(subcommand)]
    Wal(WalCommand),
    /// Read or repair an outbox store: a WAL store directory, an SQLite database or a JSON store file.
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// Read the download state: the pull cursor and the pulled changes held
    /// back for the device's own edits.
    #[command(subcommand)]
    Download(DownloadCommand),
}

/// `PATH` is the app's SQLite database (where `SqliteDownload` keeps the
/// state) or the JSON file of a `FileDownloadState`.
#[derive(Debug, Subcommand)]
pub(crate) enum DownloadCommand {
    /// The cursor, how far the pulled data reaches, and every held change
    /// with the ordering key it waits for (read-only, beside a running app).
    #[command(after_help = EXIT_CODES)]
    Show {
        /// An SQLite database (`app.db`) or a download state file
        /// (`download.json`).
        #[arg(value_name = "PATH")]
        path: PathBuf,
        /// The state as a JSON object, held changes included (stable for scripts).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum WalCommand {
    /// Print every record, oldest first.
    #[command(after_help = EXIT_CODES)]
    Dump {
        /// The log directory (for a WAL store: its `log` subdirectory).
        dir: PathBuf,
        /// Start at this log sequence number.
        #[arg(long, value_name = "LSN", default_value_t = 0)]
        from: u64,
        /// One JSON object per line instead of a table (stable for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Check every frame of every segment; print where the first problem is.
    #[command(after_help = EXIT_CODES)]
    Verify {
        /// The log directory.
        dir: PathBuf,
    },
    /// Segments, sizes, record counts per kind, and how the log ends.
    #[command(after_help = EXIT_CODES)]
    Stats {
        /// The log directory.
        dir: PathBuf,
        /// A JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `PATH` is a WAL store directory, an SQLite database (told apart by its
/// header) or a JSON store file.
#[derive(Debug, Subcommand)]
pub(crate) enum OutboxCommand {
    /// List operations in enqueue order (read-only).
    #[command(after_help = EXIT_CODES)]
    List {
        #[command(flatten)]
        store: StoreArg,
        /// Only operations with this status.
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
        /// At most this many operations.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// A JSON array of operations, every field included (stable for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Every field of one operation, payload included (read-only).
    #[command(after_help = EXIT_CODES)]
    Show {
        #[command(flatten)]
        store: StoreArg,
        /// The operation's id.
        id: String,
        /// The operation as a JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Counts per status and the age of the oldest pending operation (read-only).
    #[command(after_help = EXIT_CODES)]
    Stats {
        #[command(flatten)]
        store: StoreArg,
        /// A JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Put failed operations back to pending, due now, with their attempts
    /// reset: one by id, every failed one (--all), or every failed one of a
    /// kind (--kind). They keep their key: one that failed past its resend
    /// window fails again (correct or discard it in the app).
    #[command(after_help = EXIT_CODES)]
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "all", "kind"])))]
    Retry {
        #[command(flatten)]
        store: StoreArg,
        /// The operation's id.
        id: Option<String>,
        /// Every failed operation.
        #[arg(long)]
        all: bool,
        /// Every failed operation of this kind (`note.create`).
        #[arg(long, value_name = "KIND")]
        kind: Option<String>,
    },
    /// Remove an operation whatever its status (it will never be sent).
    #[command(after_help = EXIT_CODES)]
    Discard {
        #[command(flatten)]
        store: StoreArg,
        /// The operation's id.
        id: String,
    },
    /// Remove done operations last updated longer ago than an age.
    #[command(name = "purge-done", after_help = EXIT_CODES)]
    PurgeDone {
        #[command(flatten)]
        store: StoreArg,
        /// An age: a number and a unit, s, m, h, d or w (`90m`, `7d`).
        #[arg(long, value_name = "AGE")]
        older_than: Age,
    },
}

#[derive(Debug, Args)]
pub(crate) struct StoreArg {
    /// A WAL store directory, an SQLite database (`app.db`) or a JSON store
    /// file (`outbox.json`).
    #[arg(value_name = "PATH")]
    pub(crate) path: PathBuf,
    /// The key of an encrypted store: a file holding 64 hex digits (a raw
    /// 256-bit key). For an SQLite store encrypted with SQLCipher (synctl
    /// built with feature `sqlcipher`) it may hold a passphrase instead.
    #[arg(long, value_name = "FILE")]
    pub(crate) key_file: Option<PathBuf>,
    /// The id the app gives the key of an encrypted WAL or JSON store
    /// (`EncryptionKey::new(id, ..)`).
    #[arg(long, value_name = "ID", default_value_t = 1)]
    pub(crate) key_id: u32,
}

/// An operation status on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum StatusArg {
    Pending,
    InFlight,
    Done,
    Failed,
}
