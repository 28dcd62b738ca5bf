//! [`WalError`], the one error type of this crate, and [`Corruption`], what is
//! wrong with bytes read from disk.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the log.
///
/// Variants that concern a file name it, and those that concern bytes in it
/// give the byte offset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// An I/O call failed.
    #[error("{op} {}", .path.display())]
    Io {
        /// What was being done (`"open"`, `"write"`, `"sync"`, ...).
        op: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The error from the operating system.
        #[source]
        source: io::Error,
    },
    /// Bytes in a segment are not what the format allows.
    #[error("corrupt segment {} at offset {offset}: {reason}", .segment.display())]
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset in the segment where the bad data starts.
        offset: u64,
        /// What is wrong.
        reason: Corruption,
    },
    /// A file in the log directory has a segment's name but not its magic bytes.
    #[error("{} is not a wal segment (bad magic)", .path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
    },
    /// A segment was written by a format version this crate does not read.
    #[error("{} has unsupported format version {version}", .path.display())]
    UnsupportedVersion {
        /// The segment file.
        path: PathBuf,
        /// The version found in its header.
        version: u32,
    },
    /// A record is larger than the configured `max_record_bytes`.
    #[error("record body of {len} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge {
        /// The body length the record would have.
        len: u64,
        /// The configured limit.
        max: u64,
    },
    /// Another handle, in this process or another, holds the lock (of a
    /// log directory, or of any [`LockedFile`](crate::LockedFile)).
    #[error("{} is in use by {holder}: one handle at a time may open it", .path.display())]
    Locked {
        /// What is locked: the log directory, or the lock file.
        path: PathBuf,
        /// Who holds it, as it wrote itself into the lock file (`pid 4242
        /// (notes-app)`), or `another process`.
        holder: String,
    },
    /// The configuration cannot work.
    #[error("invalid wal config: {reason}")]
    InvalidConfig {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An earlier write or sync failed; the log refuses writes until reopened,
    /// because the page cache may have dropped data that a retried fsync would
    /// then report as durable.
    #[error("wal poisoned by an earlier write or sync failure")]
    Poisoned,
}

/// What is wrong with bytes read from a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    /// The file is shorter than a segment header.
    #[error("segment header is truncated")]
    TruncatedHeader,
    /// The segment header's CRC does not match its bytes.
    #[error("segment header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    HeaderChecksumMismatch {
        /// The CRC in the file.
        stored: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
    /// The segment's header says a different first LSN than its file name.
    #[error("segment header says first lsn {in_header}, file name says {in_name}")]
    NameMismatch {
        /// The LSN in the header.
        in_header: u64,
        /// The LSN in the file name.
        in_name: u64,
    },
    /// Consecutive segments do not continue each other's LSNs.
    #[error("lsn gap: expected a segment starting at {expected}, found {found}")]
    LsnGap {
        /// The LSN after the previous segment's last record.
        expected: u64,
        /// The first LSN of the segment found.
        found: u64,
    },
    /// The data ends inside a frame.
    #[error("frame truncated ({available} bytes available)")]
    TruncatedFrame {
        /// How many bytes were left from the frame's start.
        available: u64,
    },
    /// A frame's length field is below the minimum body or above the limit.
    #[error("frame length {len} out of range (max {max})")]
    LengthOutOfRange {
        /// The length read.
        len: u32,
        /// The configured `max_record_bytes`.
        max: u32,
    },
    /// A zero frame header, which ends the frames of a version 2 segment,
    /// with a valid frame somewhere after it: a hole in the log.
    #[error("zeroed frame header with frames after it")]
    ZeroedFrameHeader,
    /// A frame's CRC does not match its bytes.
    #[error("frame checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    ChecksumMismatch {
        /// The CRC in the file.
        stored: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
    /// A frame's kind code names no [`RecordType`](crate::RecordType).
    #[error("unknown record kind {0}")]
    UnknownKind(u16),
    /// A frame's id length runs past its body, or its id is not UTF-8.
    #[error("record id is out of bounds or not utf-8")]
    BadId,
}
