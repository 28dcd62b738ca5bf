//! [`WalInspector`]: a read-only view of a log directory for tools (dump,
//! verify, stats) that must never change what they look at.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::WalConfig;
use crate::error::{Corruption, WalError};
use crate::file::{LOCK_FILE, io_error};
use crate::lock::LockedFile;
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
    /// A writer held the log: the report covers the complete records at the
    /// moment of opening (see [`WalInspector::is_live`]).
    pub live: bool,
}

/// A read-only view of a log directory: lists its segments, reads its
/// records and checks every frame, without creating, cutting or deleting
/// anything (a torn tail is reported, not repaired).
///
/// With no writer, it holds a *shared* lock on the directory's `LOCK` file
/// while it lives, so a [`Wal`](crate::Wal) cannot open the directory
/// meanwhile, and judges the tail as `Wal::open` would (clean, torn or
/// corrupt). A directory without a `LOCK` file has never been opened by a
/// `Wal`, and is read without a lock.
///
/// While a `Wal` holds the directory (an application is running), it opens
/// a **live view** instead ([`is_live`](Self::is_live)), taking no lock and
/// never blocking the writer: every segment is opened at once and read
/// through that handle, so a compaction that removes one meanwhile changes
/// nothing for the view, and the view ends after the last complete frame of
/// the newest segment at that moment. What it shows is the log as it was
/// then: complete records only, none appended later.
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
    /// The segments to read, pinned open in a live view.
    sealed: Vec<SealedSegment>,
    /// A writer held the log at open (see [`WalInspector::is_live`]).
    live: bool,
    /// Held, never read: the shared lock lives as long as this file.
    _lock: Option<LockedFile>,
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
    /// - [`WalError::BadMagic`], [`WalError::UnsupportedVersion`] or
    ///   [`WalError::Corrupt`] for a bad header of the newest segment.
    /// - [`WalError::Io`], also if the directory does not exist.
    pub fn open_with(config: &WalConfig) -> Result<Self, WalError> {
        let dir = config.dir.clone();
        match lock_shared(&dir) {
            Ok(lock) => Self::open_quiet(config, lock),
            Err(WalError::Locked { .. }) => Self::open_live(config),
            Err(e) => Err(e),
        }
    }

    /// The log as it is, with no writer: the tail is judged as `Wal::open`
    /// would judge it.
    fn open_quiet(config: &WalConfig, lock: Option<LockedFile>) -> Result<Self, WalError> {
        let dir = config.dir.clone();
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
            sealed,
            segments,
            next_lsn,
            tail,
            max_record_bytes: config.max_record_bytes,
            live: false,
            _lock: lock,
        })
    }

    /// The log while a writer holds it: every segment is opened now and
    /// read through that handle (a compaction that removes one later does
    /// not take it from this view), and the view ends after the last
    /// complete frame of the newest segment; what follows may be a write in
    /// progress, so it is never reported as damage. Nothing is locked, so
    /// the writer is never blocked.
    fn open_live(config: &WalConfig) -> Result<Self, WalError> {
        let dir = config.dir.clone();
        let mut attempts = 0;
        let sealed = loop {
            match pin_segments(&dir) {
                Ok(sealed) => break sealed,
                // A compaction removed a segment between the listing and its
                // opening: list again (the next listing no longer has it).
                Err(e) if is_not_found(&e) && attempts < LIVE_LIST_ATTEMPTS => attempts += 1,
                Err(e) => return Err(e),
            }
        };
        let mut segments = Vec::with_capacity(sealed.len());
        for segment in &sealed {
            let len = match &segment.pinned {
                Some(file) => file.metadata().map(|m| m.len()),
                None => std::fs::metadata(&segment.path).map(|m| m.len()),
            }
            .map_err(|e| io_error("stat segment", &segment.path, e))?;
            segments.push(SegmentInfo {
                path: segment.path.clone(),
                first_lsn: segment.first_lsn,
                len,
            });
        }
        let next_lsn = match sealed.last() {
            None => 0,
            Some(newest) => {
                let mut reader = newest.reader(config.max_record_bytes)?;
                let mut record = WalRecord::default();
                let mut n_frames = 0;
                // Up to the first frame that is not whole yet (or zeros).
                while let Ok(Some(_)) = reader.next_into(&mut record) {
                    n_frames += 1;
                }
                newest.first_lsn + n_frames
            }
        };
        Ok(Self {
            dir,
            sealed,
            segments,
            next_lsn,
            tail: LogTail::Clean,
            max_record_bytes: config.max_record_bytes,
            live: true,
            _lock: None,
        })
    }

    /// Whether a writer held the log when this view was opened: then the view
    /// is the log as it was at that moment, up to its last complete record,
    /// and [`tail`](Self::tail) is `Clean` whatever follows (a write in
    /// progress cannot be told from a torn one). Open it again with the
    /// writer stopped for a verdict on the tail.
    #[must_use]
    pub fn is_live(&self) -> bool {
        self.live
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
            let mut reader = self.sealed.get(index).map_or_else(
                || SegmentReader::open(&segment.path, segment.first_lsn, self.max_record_bytes),
                |sealed| sealed.reader(self.max_record_bytes),
            )?;
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
            live: self.live,
        })
    }

    fn reader(&self, from: u64) -> LogReader {
        LogReader::new(
            self.sealed.clone(),
            from,
            self.next_lsn,
            self.max_record_bytes,
        )
        .with_trailing_error(self.tail.error())
    }
}

/// How often a live view lists the segments again when compaction removes
/// one between the listing and its opening.
const LIVE_LIST_ATTEMPTS: u32 = 16;

/// Lists the segments of `dir` and opens each.
fn pin_segments(dir: &Path) -> Result<Vec<SealedSegment>, WalError> {
    let mut sealed = list_segments(dir, TempSegments::Keep)?;
    for segment in &mut sealed {
        let file =
            File::open(&segment.path).map_err(|e| io_error("open segment", &segment.path, e))?;
        segment.pinned = Some(Arc::new(file));
    }
    Ok(sealed)
}

fn is_not_found(error: &WalError) -> bool {
    matches!(error, WalError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

/// Takes a shared lock on `dir`'s lock file if there is one, without
/// creating it.
fn lock_shared(dir: &Path) -> Result<Option<LockedFile>, WalError> {
    LockedFile::shared(&dir.join(LOCK_FILE)).map_err(|e| crate::wal::locked_dir(e, dir))
}
