//! Every on-disk name of a log directory, and the small file-system helpers
//! that must behave the same everywhere (modes, error wrapping).

use std::fs::OpenOptions;
use std::io;
use std::path::PathBuf;

use crate::error::WalError;

/// The lock file's name.
pub(crate) const LOCK_FILE: &str = "LOCK";
/// The suffix of a segment file.
const SEGMENT_SUFFIX: &str = ".wal";
/// The suffix of a segment being created.
const TEMP_SUFFIX: &str = ".wal.tmp";
/// Digits in a segment name: enough for any `u64`, so names sort as numbers.
const NAME_DIGITS: usize = 20;

/// The file name of the segment whose first LSN is `first_lsn`.
pub(crate) fn segment_name(first_lsn: u64) -> String {
    format!("{first_lsn:0NAME_DIGITS$}{SEGMENT_SUFFIX}")
}

/// The temporary name a segment is created under before it is renamed.
pub(crate) fn temp_segment_name(first_lsn: u64) -> String {
    format!("{first_lsn:0NAME_DIGITS$}{TEMP_SUFFIX}")
}

/// The first LSN of a segment file, or `None` if `name` is not a segment's name.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Whether `name` is a segment left half-created by a crash.
pub(crate) fn is_temp_segment_name(name: &str) -> bool {
    name.strip_suffix(TEMP_SUFFIX).is_some_and(|digits| {
        digits.len() == NAME_DIGITS && digits.bytes().all(|b| b.is_ascii_digit())
    })
}

/// Options that create files readable by the owner only (0600 on unix),
/// because a log holds users' data.
pub(crate) fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

/// Wraps an I/O error with what was being done and to which path.
pub(crate) fn io_error(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> WalError {
    WalError::Io {
        op,
        path: path.into(),
        source,
    }
}
