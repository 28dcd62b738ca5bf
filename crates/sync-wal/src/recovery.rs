//! Opening a log directory: [`RecoveryMode`], the segment listing, and the scan
//! of the newest segment that cuts away a torn tail.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::WalConfig;
use crate::error::WalError;
use crate::file::{io_error, is_temp_segment_name, parse_segment_name};
use crate::format::{SEGMENT_HEADER_LEN, decode_frame};
use crate::record::WalRecord;
use crate::segment::{Allocation, SegmentReader, SegmentWriter, check_header};
use crate::storage::Storage;
use crate::sync_policy::SyncPolicy;

/// What [`Wal::open`](crate::Wal::open) does when the newest segment ends in a
/// bad frame.
///
/// # Examples
///
/// ```
/// use sync_wal::{RecoveryMode, WalConfig};
///
/// let mut config = WalConfig::new("/tmp/some-log");
/// assert_eq!(config.recovery, RecoveryMode::TolerateTornTail);
/// config.recovery = RecoveryMode::Strict;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecoveryMode {
    /// A partial or CRC-failing frame at the end of the newest segment, with
    /// no valid frame anywhere after it, is what a crash mid-write leaves: it is
    /// cut off (and the cut synced) so appends continue after the last good
    /// record. Damage anywhere else is [`WalError::Corrupt`].
    #[default]
    TolerateTornTail,
    /// Any bad frame, even a torn tail, is [`WalError::Corrupt`] and the
    /// directory is left untouched.
    Strict,
}

/// A segment that is no longer appended to.
#[derive(Clone, Debug)]
pub(crate) struct SealedSegment {
    pub(crate) first_lsn: u64,
    pub(crate) path: PathBuf,
    /// The file, kept open by a live view so that a compaction of the
    /// writer removing it does not pull it from under the reader.
    pub(crate) pinned: Option<Arc<File>>,
}

impl SealedSegment {
    /// Opens a reader of this segment: its pinned file, or its path.
    pub(crate) fn reader(&self, max_record_bytes: u32) -> Result<SegmentReader, WalError> {
        match &self.pinned {
            Some(file) => SegmentReader::open_file(
                Arc::clone(file),
                &self.path,
                self.first_lsn,
                max_record_bytes,
            ),
            None => SegmentReader::open(&self.path, self.first_lsn, max_record_bytes),
        }
    }
}

/// The state of a directory after recovery.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// Older segments, oldest first.
    pub(crate) sealed: Vec<SealedSegment>,
    /// The newest segment, ready for appends.
    pub(crate) active: SegmentWriter,
}

/// Lists, checks and repairs the segments in `config.dir` (see
/// `docs/FORMAT.md`, "Recovery on open"). The caller holds the lock.
pub(crate) fn recover(config: &WalConfig, storage: &dyn Storage) -> Result<Recovered, WalError> {
    let dir = config.dir.as_path();
    let allocation = allocation(config, storage);
    let mut segments = list_segments(dir, TempSegments::Remove(storage))?;
    let Some(newest) = segments.pop() else {
        return Ok(Recovered {
            sealed: Vec::new(),
            active: SegmentWriter::create(storage, dir, 0, allocation)?,
        });
    };
    for segment in &segments {
        let mut header = Vec::with_capacity(SEGMENT_HEADER_LEN);
        File::open(&segment.path)
            .and_then(|f| f.take(SEGMENT_HEADER_LEN as u64).read_to_end(&mut header))
            .map_err(|e| io_error("read segment header", &segment.path, e))?;
        check_header(&segment.path, segment.first_lsn, &header)?;
    }
    let (len, n_frames) = scan_newest(&newest, config, storage)?;
    let active = SegmentWriter::open(
        storage,
        newest.path,
        newest.first_lsn,
        len,
        n_frames,
        allocation,
    )?;
    Ok(Recovered {
        sealed: segments,
        active,
    })
}

/// How segments of this log are written: preallocated when configured, the
/// log syncs, and the storage can write at offsets. Under `Never` nothing
/// syncs, so zeros ahead would only double the bytes written.
pub(crate) fn allocation(config: &WalConfig, storage: &dyn Storage) -> Allocation {
    if config.preallocate_bytes > 0
        && config.sync != SyncPolicy::Never
        && storage.supports_write_at()
    {
        Allocation::Preallocate {
            chunk: config.preallocate_bytes,
            limit: config.segment_bytes,
        }
    } else {
        Allocation::Append
    }
}

/// What [`list_segments`] does with a segment left half-created by a crash.
#[derive(Clone, Copy, Debug)]
pub(crate) enum TempSegments<'a> {
    /// Delete it through this storage (the lock holder's recovery).
    Remove(&'a dyn Storage),
    /// Leave it (a read-only view).
    Keep,
}

/// The segments in `dir`, sorted by first LSN. Ignores every file that is not
/// ours, and removes or keeps half-created segments as `temp` says.
pub(crate) fn list_segments(
    dir: &Path,
    temp: TempSegments<'_>,
) -> Result<Vec<SealedSegment>, WalError> {
    let mut segments = Vec::new();
    let mut removed_temp: Option<&dyn Storage> = None;
    for entry in fs::read_dir(dir).map_err(|e| io_error("list directory", dir, e))? {
        let entry = entry.map_err(|e| io_error("list directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(first_lsn) = parse_segment_name(name) {
            segments.push(SealedSegment {
                first_lsn,
                path: entry.path(),
                pinned: None,
            });
        } else if let TempSegments::Remove(storage) = temp
            && is_temp_segment_name(name)
        {
            // Never renamed into place, so it holds no acknowledged record.
            storage
                .remove_file(&entry.path())
                .map_err(|e| io_error("remove temp segment", entry.path(), e))?;
            removed_temp = Some(storage);
        }
    }
    if let Some(storage) = removed_temp {
        storage
            .sync_dir(dir)
            .map_err(|e| io_error("fsync directory", dir, e))?;
    }
    segments.sort_by_key(|s| s.first_lsn);
    Ok(segments)
}

/// Reads every frame of the newest segment. Returns the length of its valid
/// prefix and the number of frames in it, after cutting a torn tail if the
/// recovery mode allows.
fn scan_newest(
    segment: &SealedSegment,
    config: &WalConfig,
    storage: &dyn Storage,
) -> Result<(u64, u64), WalError> {
    let scan = scan_segment(segment, config.max_record_bytes)?;
    match scan.damage {
        // A clean end of file: nothing to cut.
        None if !scan.preallocated_end => return Ok((scan.good_len, scan.n_frames)),
        Some(damage) if config.recovery == RecoveryMode::Strict || !damage.torn => {
            return Err(damage.error);
        }
        // Preallocated zeros after the frames (not damage, under either
        // mode), or a torn tail this mode may cut.
        None | Some(_) => {}
    }
    let file = storage
        .open_append(&segment.path)
        .map_err(|e| io_error("open segment", &segment.path, e))?;
    // Cut preallocated zeros too: appends extend the file again as needed,
    // and a file that ends with its last frame is the simplest state to
    // reason about after a crash.
    file.set_len(scan.good_len)
        .map_err(|e| io_error("truncate torn tail", &segment.path, e))?;
    // Made durable now, before any append can follow it: a later recovery must
    // never find this garbage in the middle of the log.
    file.sync_all()
        .map_err(|e| io_error("sync truncated segment", &segment.path, e))?;
    Ok((scan.good_len, scan.n_frames))
}

/// What reading one segment to its end found; changes nothing on disk.
#[derive(Debug)]
pub(crate) struct SegmentScan {
    /// Length of the valid prefix (header and whole, valid frames).
    pub(crate) good_len: u64,
    /// Frames in the valid prefix.
    pub(crate) n_frames: u64,
    /// The first bad frame, if any.
    pub(crate) damage: Option<Damage>,
    /// The frames ended at a zero frame header (format version 2), and
    /// only zeros follow: bytes after `good_len` that are not damage.
    pub(crate) preallocated_end: bool,
}

/// A bad frame found by [`scan_segment`].
#[derive(Debug)]
pub(crate) struct Damage {
    /// The [`WalError::Corrupt`] naming the segment and offset.
    pub(crate) error: WalError,
    /// No valid frame starts anywhere after it: the remains of an interrupted
    /// write, which recovery may cut if this is the newest segment.
    pub(crate) torn: bool,
}

/// Reads every frame of `segment`, stopping at the first bad one.
///
/// # Errors
///
/// A bad header ([`WalError::BadMagic`], ...) or an I/O failure; bad frames
/// are reported in [`SegmentScan::damage`] instead.
pub(crate) fn scan_segment(
    segment: &SealedSegment,
    max_record_bytes: u32,
) -> Result<SegmentScan, WalError> {
    let mut reader = segment.reader(max_record_bytes)?;
    let mut record = WalRecord::default();
    let mut n_frames = 0u64;
    let error = loop {
        match reader.next_into(&mut record) {
            Ok(Some(_)) => n_frames += 1,
            Ok(None) if reader.is_preallocated_end() => {
                let good_len = reader.offset();
                // Zeros must follow to the end: a frame after them means the
                // zeros are a hole in the log, not its end.
                if is_torn_tail(reader.path(), good_len, max_record_bytes)? {
                    return Ok(SegmentScan {
                        good_len,
                        n_frames,
                        damage: None,
                        preallocated_end: true,
                    });
                }
                let error = WalError::Corrupt {
                    segment: reader.path().to_path_buf(),
                    offset: good_len,
                    reason: crate::error::Corruption::ZeroedFrameHeader,
                };
                return Ok(SegmentScan {
                    good_len,
                    n_frames,
                    damage: Some(Damage { error, torn: false }),
                    preallocated_end: false,
                });
            }
            Ok(None) => {
                return Ok(SegmentScan {
                    good_len: reader.offset(),
                    n_frames,
                    damage: None,
                    preallocated_end: false,
                });
            }
            Err(e @ WalError::Corrupt { .. }) => break e,
            Err(e) => return Err(e),
        }
    };
    let good_len = reader.offset();
    let torn = is_torn_tail(reader.path(), good_len, max_record_bytes)?;
    Ok(SegmentScan {
        good_len,
        n_frames,
        damage: Some(Damage { error, torn }),
        preallocated_end: false,
    })
}

/// Whether the bytes from `bad_at` to the end of the file hold no valid frame
/// starting at any byte after `bad_at`: then they are the remains of an
/// interrupted write, not damage in the middle of the log.
fn is_torn_tail(path: &Path, bad_at: u64, max_record_bytes: u32) -> Result<bool, WalError> {
    let mut tail = Vec::new();
    File::open(path)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(bad_at))?;
            f.read_to_end(&mut tail)
        })
        .map_err(|e| io_error("read segment tail", path, e))?;
    // Preallocated zeros, the common case on open, hold no frame.
    let first_byte_zero = tail.first().is_none_or(|&b| b == 0);
    if first_byte_zero && tail.iter().all(|&b| b == 0) {
        return Ok(true);
    }
    Ok(!contains_frame_after_start(&tail, max_record_bytes))
}

/// Whether a valid frame starts at any offset `1..` of `bytes`.
pub(crate) fn contains_frame_after_start(bytes: &[u8], max_record_bytes: u32) -> bool {
    let mut scratch = WalRecord::default();
    // Most offsets fail on the length check before any CRC is computed.
    (1..bytes.len()).any(|start| {
        bytes
            .get(start..)
            .is_some_and(|rest| decode_frame(rest, max_record_bytes, &mut scratch).is_ok())
    })
}
