//! [`WalInspector`]: a read-only view of a log directory for tools (dump,
//! verify, stats) that must never change what they look at.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::config::WalConfig;
use crate::error::{Corruption, WalError};
use crate::file::{LOCK_FILE, io_error};
use crate::reader::{LogReader, WalIter};
use crate::record::{RecordType, WalRecord};
use crate::recovery::{SealedSegment, TempSegments, list_segments, scan_segment};
use crate::segment::SegmentReader;

/// How often, in bytes read, [`WalInspector::verify`] reports progress.
const PROGRESS_EVERY_BYTES: u64 = 1 << 20;

/// One segment file of a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The file.
    pub path: PathBuf,
    /// LSN of its first record.
    pub first_lsn: u64,
    /// Its length in bytes when the inspector was opened.
    pub len: u64,
}

/// How the newest segment ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogTail {
    /// The last frame is whole and valid.
    Clean,
    /// The segment ends in the remains of an interrupted write (no valid
    /// frame follows the bad bytes). [`Wal::open`](crate::Wal::open) would
    /// cut them off; nothing acknowledged under `SyncPolicy::Always` is there.
    Torn {
        /// The newest segment.
        segment: PathBuf,
        /// Where the bad bytes start.
        offset: u64,
        /// How many bytes would be cut.
        len: u64,
    },
    /// A bad frame with valid frames after it: damage, not a crash.
    /// [`Wal::open`](crate::Wal::open) refuses the directory.
    Corrupt {
        /// The newest segment.
        segment: PathBuf,
        /// Where the bad frame starts.
        offset: u64,
        /// What is wrong with it.
        reason: Corruption,
    },
}

impl LogTail {
    fn error(&self) -> Option<WalError> {
        match self {
            Self::Corrupt {
                segment,
                offset,
                reason,
            } => Some(WalError::Corrupt {
                segment: segment.clone(),
                offset: *offset,
                reason: *reason,
            }),
            Self::Clean | Self::Torn { .. } => None,
        }
    }
}

/// What [`WalInspector::verify`] read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segment files checked.
    pub segments: usize,
    /// Valid records read.
    pub records: u64,
    /// Bytes in all segments, including any torn tail.
    pub bytes: u64,
    /// LSN of the oldest record kept.
    pub first_lsn: u64,
    /// LSN the next append would get.
    pub next_lsn: u64,
    /// Records per kind, ordered by kind code.
    pub records_by_kind: Vec<(RecordType, u64)>,
    /// How the newest segment ends (never [`LogTail::Corrupt`]: that is an error).
    pub tail: LogTail,
}

/// A read-only view of a log directory: lists its segments, reads its
/// records and checks every frame, without creating, cutting or deleting
/// anything (a torn tail is reported, not repaired).
///
/// While it lives it holds a *shared* lock on the directory's `LOCK` file, so
/// it cannot be opened while a [`Wal`](crate::Wal) has the directory, and a
/// `Wal` cannot open it meanwhile: what it reads does not change under it.
/// A directory without a `LOCK` file has never been opened by a `Wal`, and
/// is read without a lock.
///
/// # Examples
///
/// ```
/// use sync_wal::{LogTail, RecordType, Wal, WalConfig, WalInspector, WalRecord};
///
/// let dir = tempfile::tempdir()?;
/// {
///     let wal = Wal::open(WalConfig::new(dir.path()))?;
///     wal.append(&WalRecord { id: "op_1".into(), kind: RecordType::PutOperation, ts_ms: 1, payload: vec![] })?;
/// }
/// let inspector = WalInspector::open(dir.path())?;
/// let report = inspector.verify(|_done, _total| {})?;
/// assert_eq!((report.records, report.next_lsn), (1, 1));
/// assert_eq!(report.tail, LogTail::Clean);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct WalInspector {
    dir: PathBuf,
    segments: Vec<SegmentInfo>,
    next_lsn: u64,
    tail: LogTail,
    max_record_bytes: u32,
    /// Held, never read: the shared lock lives as long as this file.
    _lock: Option<File>,
}

impl WalInspector {
    /// Opens the log in `dir` read-only with the default record limit.
    ///
    /// # Errors
    ///
    /// As [`WalInspector::open_with`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, WalError> {
        Self::open_with(&WalConfig::new(dir.as_ref()))
    }

    /// Opens the log in `config.dir` read-only; of the config only `dir` and
    /// `max_record_bytes` matter. Reads the whole newest segment to find its
    /// end.
    ///
    /// # Errors
    ///
    /// - [`WalError::Locked`] if a [`Wal`](crate::Wal) holds the directory.
    /// - [`WalError::BadMagic`], [`WalError::UnsupportedVersion`] or
    ///   [`WalError::Corrupt`] for a bad header of the newest segment.
    /// - [`WalError::Io`], also if the directory does not exist.
    pub fn open_with(config: &WalConfig) -> Result<Self, WalError> {
        let dir = config.dir.clone();
        let lock = lock_shared(&dir)?;
        let sealed = list_segments(&dir, TempSegments::Keep)?;
        let mut segments = Vec::with_capacity(sealed.len());
        for segment in &sealed {
            let len = std::fs::metadata(&segment.path)
                .map_err(|e| io_error("stat segment", &segment.path, e))?
                .len();
            segments.push(SegmentInfo {
                path: segment.path.clone(),
                first_lsn: segment.first_lsn,
                len,
            });
        }
        let (next_lsn, tail) = match sealed.last() {
            None => (0, LogTail::Clean),
            Some(newest) => {
                let scan = scan_segment(newest, config.max_record_bytes)?;
                let tail = match scan.damage {
                    None => LogTail::Clean,
                    Some(damage) => match damage.error {
                        WalError::Corrupt {
                            segment,
                            offset,
                            reason,
                        } if !damage.torn => LogTail::Corrupt {
                            segment,
                            offset,
                            reason,
                        },
                        _ => LogTail::Torn {
                            segment: newest.path.clone(),
                            offset: scan.good_len,
                            len: segments
                                .last()
                                .map_or(0, |s| s.len.saturating_sub(scan.good_len)),
                        },
                    },
                };
                (newest.first_lsn + scan.n_frames, tail)
            }
        };
        Ok(Self {
            dir,
            segments,
            next_lsn,
            tail,
            max_record_bytes: config.max_record_bytes,
            _lock: lock,
        })
    }

    /// The log directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The segment files, oldest first.
    #[must_use]
    pub fn segments(&self) -> &[SegmentInfo] {
        &self.segments
    }

    /// LSN of the oldest record kept (the next LSN if the log is empty).
    #[must_use]
    pub fn first_lsn(&self) -> u64 {
        self.segments.first().map_or(self.next_lsn, |s| s.first_lsn)
    }

    /// LSN after the last valid record of the newest segment.
    #[must_use]
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// How the newest segment ends.
    #[must_use]
    pub fn tail(&self) -> &LogTail {
        &self.tail
    }

    /// Reads `(lsn, record)` pairs from `from` (or the oldest record kept, if
    /// later) to the last valid record, checking every frame. A torn tail
    /// ends the iteration quietly; a [`LogTail::Corrupt`] tail is yielded as
    /// its [`WalError::Corrupt`] after the last good record.
    #[must_use]
    pub fn iter_from(&self, from: u64) -> WalIter {
        WalIter::new(self.reader(from))
    }

    /// Reads every frame of every segment in order, checking headers, CRCs
    /// and LSN continuity. `progress(bytes_done, bytes_total)` is called about
    /// every MiB and once at the end.
    ///
    /// # Errors
    ///
    /// The first problem in log order: [`WalError::Corrupt`] (segment and
    /// offset), [`WalError::BadMagic`], [`WalError::UnsupportedVersion`], or
    /// [`WalError::Io`].
    pub fn verify(&self, mut progress: impl FnMut(u64, u64)) -> Result<VerifyReport, WalError> {
        let total: u64 = self.segments.iter().map(|s| s.len).sum();
        let mut done = 0u64;
        let mut reported = 0u64;
        let mut by_kind: Vec<(RecordType, u64)> = Vec::new();
        let mut records = 0u64;
        let mut expected_lsn = self.first_lsn();
        let mut record = WalRecord::default();
        let newest = self.segments.len().saturating_sub(1);
        for (index, segment) in self.segments.iter().enumerate() {
            if segment.first_lsn != expected_lsn {
                return Err(WalError::Corrupt {
                    segment: segment.path.clone(),
                    offset: 0,
                    reason: Corruption::LsnGap {
                        expected: expected_lsn,
                        found: segment.first_lsn,
                    },
                });
            }
            let mut reader =
                SegmentReader::open(&segment.path, segment.first_lsn, self.max_record_bytes)?;
            loop {
                if index == newest && expected_lsn == self.next_lsn {
                    // The rest of the newest segment is the tail, judged on open.
                    break;
                }
                if reader.next_into(&mut record)?.is_none() {
                    break;
                }
                expected_lsn += 1;
                records += 1;
                match by_kind.iter_mut().find(|(kind, _)| *kind == record.kind) {
                    Some((_, n)) => *n += 1,
                    None => by_kind.push((record.kind, 1)),
                }
                if done + reader.offset() >= reported + PROGRESS_EVERY_BYTES {
                    reported = done + reader.offset();
                    progress(reported, total);
                }
            }
            done += segment.len;
        }
        if let Some(error) = self.tail.error() {
            return Err(error);
        }
        progress(total, total);
        by_kind.sort_by_key(|(kind, _)| kind.code());
        Ok(VerifyReport {
            segments: self.segments.len(),
            records,
            bytes: total,
            first_lsn: self.first_lsn(),
            next_lsn: self.next_lsn,
            records_by_kind: by_kind,
            tail: self.tail.clone(),
        })
    }

    fn reader(&self, from: u64) -> LogReader {
        let segments = self
            .segments
            .iter()
            .map(|s| SealedSegment {
                first_lsn: s.first_lsn,
                path: s.path.clone(),
            })
            .collect();
        LogReader::new(segments, from, self.next_lsn, self.max_record_bytes)
            .with_trailing_error(self.tail.error())
    }
}

/// Takes a shared lock on `dir`'s lock file if there is one, without
/// creating it.
fn lock_shared(dir: &Path) -> Result<Option<File>, WalError> {
    let path = dir.join(LOCK_FILE);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // No lock file: either no Wal ever opened this directory, or it
            // does not exist at all, which listing it will report.
            return Ok(None);
        }
        Err(e) => return Err(io_error("open lock file", &path, e)),
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(WalError::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(io_error("lock", &path, e)),
    }
}
