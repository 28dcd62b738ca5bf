//! One segment file: [`SegmentWriter`] appends frames to the active segment,
//! [`SegmentReader`] reads frames back in order.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Corruption, WalError};
use crate::file::{io_error, segment_name, temp_segment_name};
use crate::format::{
    FORMAT_VERSION, FRAME_HEADER_LEN, HeaderError, SEGMENT_HEADER_LEN, SegmentHeader,
    check_body_len, decode_body, decode_frame_header,
};
use crate::record::WalRecord;
use crate::storage::{Storage, StorageFile};

/// Read buffer for sequential scans: large enough that a replay is a few big
/// reads, small enough not to matter in memory.
const READ_BUFFER_BYTES: usize = 256 << 10;

/// The segment being appended to.
#[derive(Debug)]
pub(crate) struct SegmentWriter {
    /// Shared so a group-commit leader can `sync_data` without holding the
    /// writer lock.
    file: Arc<dyn StorageFile>,
    path: PathBuf,
    first_lsn: u64,
    /// Bytes in the file, header included.
    len: u64,
    n_frames: u64,
}

impl SegmentWriter {
    /// Creates the segment that starts at `first_lsn`: header written to a temp
    /// file, synced, renamed into place, directory fsynced. When this returns,
    /// the empty segment survives power loss.
    pub(crate) fn create(
        storage: &dyn Storage,
        dir: &Path,
        first_lsn: u64,
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
        file.sync_data()
            .map_err(|e| io_error("sync segment header", &temp, e))?;
        drop(file);
        storage
            .rename(&temp, &path)
            .map_err(|e| io_error("rename segment", &path, e))?;
        storage
            .sync_dir(dir)
            .map_err(|e| io_error("fsync directory", dir, e))?;
        Self::open(storage, path, first_lsn, SEGMENT_HEADER_LEN as u64, 0)
    }

    /// Opens an existing, recovered segment for appending after its `len`
    /// valid bytes, which hold `n_frames` frames.
    pub(crate) fn open(
        storage: &dyn Storage,
        path: PathBuf,
        first_lsn: u64,
        len: u64,
        n_frames: u64,
    ) -> Result<Self, WalError> {
        // Append mode: every write lands at the end, which recovery has already
        // cut back to the last good frame.
        let file = storage
            .open_append(&path)
            .map_err(|e| io_error("open segment", &path, e))?;
        Ok(Self {
            file: Arc::from(file),
            path,
            first_lsn,
            len,
            n_frames,
        })
    }

    /// Writes `bytes`, holding `n_frames` whole frames, in one call.
    ///
    /// On error the file is cut back to its previous length so no partial frame
    /// is left for a later append to follow. If even that fails, the returned
    /// flag is `true` and the caller must stop writing.
    pub(crate) fn write(&mut self, bytes: &[u8], n_frames: u64) -> Result<(), (WalError, bool)> {
        match self.file.write_all(bytes) {
            Ok(()) => {
                self.len += bytes.len() as u64;
                self.n_frames += n_frames;
                Ok(())
            }
            Err(e) => {
                let undone = self.file.set_len(self.len).is_ok();
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

/// Reads the frames of one segment in order, checking each.
#[derive(Debug)]
pub(crate) struct SegmentReader {
    reader: BufReader<File>,
    path: PathBuf,
    /// Offset of the next frame.
    offset: u64,
    max_record_bytes: u32,
    body: Vec<u8>,
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
        let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, file);
        let mut header = [0u8; SEGMENT_HEADER_LEN];
        let n = read_full(&mut reader, &mut header)
            .map_err(|e| io_error("read segment header", path, e))?;
        check_header(path, name_lsn, header.get(..n).unwrap_or_default())?;
        Ok(Self {
            reader,
            path: path.to_path_buf(),
            offset: SEGMENT_HEADER_LEN as u64,
            max_record_bytes,
            body: Vec::new(),
        })
    }

    /// Reads the next frame into `out` and returns its offset, or `None` at a
    /// clean end of file.
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

    /// Offset of the next frame: after a clean `None`, the segment's length.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
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
