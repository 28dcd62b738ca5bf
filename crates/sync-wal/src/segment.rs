//! One segment file: [`SegmentWriter`] appends frames to the active segment,
//! [`SegmentReader`] reads frames back in order.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Corruption, WalError};
use crate::file::{io_error, segment_name, temp_segment_name};
use crate::format::{
    END_OF_FRAMES, FORMAT_VERSION, FRAME_HEADER_LEN, HeaderError, SEGMENT_HEADER_LEN,
    SegmentHeader, check_body_len, decode_body, decode_frame_header,
};
use crate::record::WalRecord;
use crate::storage::{Storage, StorageFile};

/// Read buffer for sequential scans: large enough that a replay is a few big
/// reads, small enough not to matter in memory.
const READ_BUFFER_BYTES: usize = 256 << 10;

/// Zeros written per call when preallocating.
static ZERO_CHUNK: [u8; 64 << 10] = [0; 64 << 10];

/// How a segment's frames reach its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Allocation {
    /// Every write lands at the end of the file (append mode): each synced
    /// append also commits a change of the file's size.
    Append,
    /// Frames are written at their offset into zeros written ahead of them,
    /// `chunk` bytes at a time, so most syncs commit data only.
    Preallocate {
        /// Bytes of zeros added at a time.
        chunk: u64,
        /// Never preallocate past this length (the segment size), unless a
        /// single write needs it.
        limit: u64,
    },
}

/// The segment being appended to.
#[derive(Debug)]
pub(crate) struct SegmentWriter {
    /// Shared so a group-commit leader can `sync_data` without holding the
    /// writer lock.
    file: Arc<dyn StorageFile>,
    path: PathBuf,
    first_lsn: u64,
    /// Bytes of valid frames, header included: where the next frame goes.
    len: u64,
    n_frames: u64,
    allocation: Allocation,
    /// Length of the file (frames plus the zeros after them) when
    /// preallocating.
    allocated: u64,
}

impl SegmentWriter {
    /// Creates the segment that starts at `first_lsn`: header written to a temp
    /// file, synced, renamed into place, directory fsynced. When this returns,
    /// the empty segment survives power loss.
    pub(crate) fn create(
        storage: &dyn Storage,
        dir: &Path,
        first_lsn: u64,
        allocation: Allocation,
    ) -> Result<Self, WalError> {
        let temp = dir.join(temp_segment_name(first_lsn));
        let path = dir.join(segment_name(first_lsn));
        let header = SegmentHeader {
            version: FORMAT_VERSION,
            first_lsn,
        }
        .encode();
        let file = storage
            .create(&temp)
            .map_err(|e| io_error("create segment", &temp, e))?;
        file.write_all(&header)
            .map_err(|e| io_error("write segment header", &temp, e))?;
        let header_len = SEGMENT_HEADER_LEN as u64;
        if let Allocation::Preallocate { chunk, limit } = allocation {
            let end = header_len
                .saturating_add(first_extension(chunk))
                .min(limit)
                .max(header_len);
            // Preallocation only saves time: on a disk too full for it (or a
            // file size limit), the segment starts without it.
            if write_zeros(file.as_ref(), header_len, end).is_err() {
                file.set_len(header_len)
                    .map_err(|e| io_error("cut preallocation of segment", &temp, e))?;
            }
        }
        file.sync_data()
            .map_err(|e| io_error("sync segment header", &temp, e))?;
        drop(file);
        storage
            .rename(&temp, &path)
            .map_err(|e| io_error("rename segment", &path, e))?;
        storage
            .sync_dir(dir)
            .map_err(|e| io_error("fsync directory", dir, e))?;
        Self::open(storage, path, first_lsn, header_len, 0, allocation)
    }

    /// Opens an existing, recovered segment for appending after its `len`
    /// valid bytes, which hold `n_frames` frames.
    ///
    /// In append mode every write lands at the end, which recovery has
    /// already cut back to the last good frame; when preallocating, writes go
    /// to `len` and the file may hold zeros after it.
    pub(crate) fn open(
        storage: &dyn Storage,
        path: PathBuf,
        first_lsn: u64,
        len: u64,
        n_frames: u64,
        allocation: Allocation,
    ) -> Result<Self, WalError> {
        let file = match allocation {
            Allocation::Append => storage.open_append(&path),
            Allocation::Preallocate { .. } => storage.open_write(&path),
        }
        .map_err(|e| io_error("open segment", &path, e))?;
        let allocated = match allocation {
            Allocation::Append => len,
            Allocation::Preallocate { .. } => std::fs::metadata(&path)
                .map_err(|e| io_error("read size of segment", &path, e))?
                .len()
                .max(len),
        };
        Ok(Self {
            file: Arc::from(file),
            path,
            first_lsn,
            len,
            n_frames,
            allocation,
            allocated,
        })
    }

    /// Writes `bytes`, holding `n_frames` whole frames, in one call.
    ///
    /// On error the file is cut back to its previous length so no partial frame
    /// is left for a later append to follow. If even that fails, the returned
    /// flag is `true` and the caller must stop writing.
    ///
    /// When preallocating, the file is first extended with zeros if `bytes`
    /// do not fit in what was allocated.
    pub(crate) fn write(&mut self, bytes: &[u8], n_frames: u64) -> Result<(), (WalError, bool)> {
        let Allocation::Preallocate { chunk, limit } = self.allocation else {
            return match self.file.write_all(bytes) {
                Ok(()) => {
                    self.len += bytes.len() as u64;
                    self.n_frames += n_frames;
                    Ok(())
                }
                Err(e) => {
                    let undone = self.file.set_len(self.len).is_ok();
                    Err((io_error("write segment", &self.path, e), !undone))
                }
            };
        };
        let end = self.len + bytes.len() as u64;
        if end > self.allocated {
            // Double what the file holds, up to `chunk` at a time: a small
            // log stays small, a busy one extends rarely.
            let step = self
                .allocated
                .saturating_sub(SEGMENT_HEADER_LEN as u64)
                .clamp(first_extension(chunk), chunk.max(1));
            let target = self.allocated.saturating_add(step).min(limit).max(end);
            // Zeros are never a frame, so a partial extension needs no undo;
            // without one (a full disk) the frame still extends the file.
            if write_zeros(self.file.as_ref(), self.allocated, target).is_ok() {
                self.allocated = target;
            }
        }
        match self.file.write_at(bytes, self.len) {
            Ok(()) => {
                self.len = end;
                self.n_frames += n_frames;
                // After a failed extension the frame itself grew the file:
                // zeros may only ever be written after it.
                self.allocated = self.allocated.max(end);
                Ok(())
            }
            Err(e) => {
                // Cut the partial frame off with the zeros after it, as in
                // append mode: the next write extends the file again.
                let undone = self.file.set_len(self.len).is_ok();
                self.allocated = self.len;
                Err((io_error("write segment", &self.path, e), !undone))
            }
        }
    }

    /// Forces the segment's data to disk.
    pub(crate) fn sync(&self) -> Result<(), WalError> {
        self.file
            .sync_data()
            .map_err(|e| io_error("sync segment", &self.path, e))
    }

    pub(crate) fn file(&self) -> &Arc<dyn StorageFile> {
        &self.file
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn first_lsn(&self) -> u64 {
        self.first_lsn
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn n_frames(&self) -> u64 {
        self.n_frames
    }
}

/// The first extension of a segment: small, so a log that holds little
/// costs little.
fn first_extension(chunk: u64) -> u64 {
    chunk.min(ZERO_CHUNK.len() as u64)
}

/// Writes zeros over `from..to` of `file`.
fn write_zeros(file: &dyn StorageFile, from: u64, to: u64) -> io::Result<()> {
    let mut at = from;
    while at < to {
        let n = usize::try_from(to - at)
            .unwrap_or(usize::MAX)
            .min(ZERO_CHUNK.len());
        file.write_at(ZERO_CHUNK.get(..n).unwrap_or_default(), at)?;
        at += n as u64;
    }
    Ok(())
}

/// A file read by position: its own offset, never the file's cursor, so a
/// segment kept open for a live view (see `WalInspector`) can be read again
/// from the start by each of its readers.
#[derive(Debug)]
pub(crate) struct PositionalFile {
    file: Arc<File>,
    at: u64,
}

impl Read for PositionalFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        #[cfg(unix)]
        let n = std::os::unix::fs::FileExt::read_at(&*self.file, buf, self.at)?;
        #[cfg(windows)]
        let n = std::os::windows::fs::FileExt::seek_read(&*self.file, buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// Reads the frames of one segment in order, checking each.
#[derive(Debug)]
pub(crate) struct SegmentReader {
    reader: BufReader<PositionalFile>,
    path: PathBuf,
    /// Offset of the next frame.
    offset: u64,
    max_record_bytes: u32,
    body: Vec<u8>,
    /// A zero frame header ends the frames (format version 2 on).
    zeros_end_frames: bool,
    /// The last `next_into` stopped at a zero frame header.
    at_zeros: bool,
}

impl SegmentReader {
    /// Opens the segment at `path` and checks its header against the LSN its
    /// name gives.
    pub(crate) fn open(
        path: &Path,
        name_lsn: u64,
        max_record_bytes: u32,
    ) -> Result<Self, WalError> {
        let file = File::open(path).map_err(|e| io_error("open segment", path, e))?;
        Self::open_file(Arc::new(file), path, name_lsn, max_record_bytes)
    }

    /// [`Self::open`] on a file already open (a pinned segment of a live
    /// view, which may have been removed from the directory since).
    pub(crate) fn open_file(
        file: Arc<File>,
        path: &Path,
        name_lsn: u64,
        max_record_bytes: u32,
    ) -> Result<Self, WalError> {
        let mut reader =
            BufReader::with_capacity(READ_BUFFER_BYTES, PositionalFile { file, at: 0 });
        let mut header = [0u8; SEGMENT_HEADER_LEN];
        let n = read_full(&mut reader, &mut header)
            .map_err(|e| io_error("read segment header", path, e))?;
        let header = check_header(path, name_lsn, header.get(..n).unwrap_or_default())?;
        Ok(Self {
            reader,
            path: path.to_path_buf(),
            offset: SEGMENT_HEADER_LEN as u64,
            max_record_bytes,
            body: Vec::new(),
            zeros_end_frames: header.zeros_end_frames(),
            at_zeros: false,
        })
    }

    /// Reads the next frame into `out` and returns its offset, or `None` at a
    /// clean end: the end of the file, or (version 2) a zero frame header,
    /// after which the file holds preallocated zeros. Call
    /// [`Self::is_preallocated_end`] to tell them apart.
    ///
    /// # Errors
    ///
    /// [`WalError::Corrupt`] naming this segment and the frame's offset for a
    /// partial or bad frame; [`WalError::Io`] if a read fails.
    pub(crate) fn next_into(&mut self, out: &mut WalRecord) -> Result<Option<u64>, WalError> {
        let at = self.offset;
        let corrupt = |reason| WalError::Corrupt {
            segment: self.path.clone(),
            offset: at,
            reason,
        };
        let mut header = [0u8; FRAME_HEADER_LEN];
        let n = read_full(&mut self.reader, &mut header)
            .map_err(|e| io_error("read segment", &self.path, e))?;
        if n == 0 {
            return Ok(None);
        }
        // Zeros (a whole header, or the rest of a file preallocated to
        // within a header of its end) end a version 2 segment's frames.
        let read = header.get(..n).unwrap_or_default();
        if self.zeros_end_frames && END_OF_FRAMES.starts_with(read) {
            self.at_zeros = true;
            return Ok(None);
        }
        if n < FRAME_HEADER_LEN {
            return Err(corrupt(Corruption::TruncatedFrame {
                available: n as u64,
            }));
        }
        let (body_len, stored_crc) = decode_frame_header(header);
        check_body_len(body_len, self.max_record_bytes).map_err(corrupt)?;
        self.body.resize(body_len as usize, 0);
        let n = read_full(&mut self.reader, &mut self.body)
            .map_err(|e| io_error("read segment", &self.path, e))?;
        if n < self.body.len() {
            return Err(corrupt(Corruption::TruncatedFrame {
                available: (FRAME_HEADER_LEN + n) as u64,
            }));
        }
        decode_body(body_len, stored_crc, &self.body, out).map_err(corrupt)?;
        self.offset += (FRAME_HEADER_LEN + self.body.len()) as u64;
        Ok(Some(at))
    }

    /// Offset of the next frame: after a clean `None`, the length of the
    /// segment's frames.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether the last clean `None` was a zero frame header, not the end of
    /// the file: bytes follow, which must hold no frame.
    pub(crate) fn is_preallocated_end(&self) -> bool {
        self.at_zeros
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Checks a segment header read from `path`, whose name gives `name_lsn`.
pub(crate) fn check_header(
    path: &Path,
    name_lsn: u64,
    bytes: &[u8],
) -> Result<SegmentHeader, WalError> {
    let header = SegmentHeader::decode(bytes).map_err(|e| match e {
        HeaderError::BadMagic => WalError::BadMagic {
            path: path.to_path_buf(),
        },
        HeaderError::UnsupportedVersion(version) => WalError::UnsupportedVersion {
            path: path.to_path_buf(),
            version,
        },
        HeaderError::Corrupt(reason) => WalError::Corrupt {
            segment: path.to_path_buf(),
            offset: 0,
            reason,
        },
    })?;
    if header.first_lsn != name_lsn {
        return Err(WalError::Corrupt {
            segment: path.to_path_buf(),
            offset: 12,
            reason: Corruption::NameMismatch {
                in_header: header.first_lsn,
                in_name: name_lsn,
            },
        });
    }
    Ok(header)
}

/// Reads until `buf` is full or the file ends; returns how many bytes were read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|rest| !rest.is_empty()) {
        match reader.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
