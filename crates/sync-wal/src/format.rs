//! The byte layout of segments and frames (`docs/FORMAT.md`): encode and decode on
//! slices, no I/O, so it can be fuzzed and tested alone.
//!
//! All integers are little-endian.

use crate::error::{Corruption, WalError};
use crate::record::{RecordType, WalRecord};

/// The first 8 bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"SYNCWAL\0";
/// The format version this crate writes. It reads this one and every older
/// one (down to [`OLDEST_FORMAT_VERSION`]).
///
/// Version 2 differs from 1 in one rule: a frame header of eight zero bytes
/// ends a segment's frames (the rest of the file is zeros a writer has
/// preallocated). No frame can start so, as a body is at least
/// [`BODY_FIXED_LEN`] bytes long.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format version this crate reads.
pub const OLDEST_FORMAT_VERSION: u32 = 1;
/// The frame header that ends the frames of a version 2 segment.
pub const END_OF_FRAMES: [u8; FRAME_HEADER_LEN] = [0; FRAME_HEADER_LEN];
/// Length of the segment header: magic, version, first LSN, header CRC.
pub const SEGMENT_HEADER_LEN: usize = 24;
/// Length of a frame header: body length and CRC.
pub const FRAME_HEADER_LEN: usize = 8;
/// Length of the fixed part of a body: kind, timestamp, id length.
pub const BODY_FIXED_LEN: usize = 14;

/// The decoded header of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The format version the segment was written with.
    pub version: u32,
    /// The LSN of the segment's first frame.
    pub first_lsn: u64,
}

/// Why a segment header could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// The first 8 bytes are not [`SEGMENT_MAGIC`].
    BadMagic,
    /// The version is not one this crate reads.
    UnsupportedVersion(u32),
    /// Anything else: short header or CRC mismatch.
    Corrupt(Corruption),
}

impl SegmentHeader {
    /// Whether [`END_OF_FRAMES`] ends this segment's frames (version 2 on).
    #[must_use]
    pub fn zeros_end_frames(&self) -> bool {
        self.version >= 2
    }

    /// Encodes the header as the 24 bytes that start a segment.
    #[must_use]
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut out = [0u8; SEGMENT_HEADER_LEN];
        out[0..8].copy_from_slice(&SEGMENT_MAGIC);
        out[8..12].copy_from_slice(&self.version.to_le_bytes());
        out[12..20].copy_from_slice(&self.first_lsn.to_le_bytes());
        let crc = crc32fast::hash(&out[0..20]);
        out[20..24].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes the start of a segment file.
    ///
    /// # Errors
    ///
    /// [`HeaderError::BadMagic`] if the bytes do not start with the magic,
    /// [`HeaderError::UnsupportedVersion`] for a version outside
    /// [`OLDEST_FORMAT_VERSION`]`..=`[`FORMAT_VERSION`], [`HeaderError::Corrupt`] for a short header or a CRC
    /// mismatch.
    pub fn decode(bytes: &[u8]) -> Result<Self, HeaderError> {
        let magic = bytes
            .get(0..8)
            .ok_or(HeaderError::Corrupt(Corruption::TruncatedHeader))?;
        if magic != SEGMENT_MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let header = bytes
            .get(0..SEGMENT_HEADER_LEN)
            .ok_or(HeaderError::Corrupt(Corruption::TruncatedHeader))?;
        let version = read_u32(header, 8);
        let first_lsn = read_u64(header, 12);
        let stored = read_u32(header, 20);
        let computed = crc32fast::hash(header.get(0..20).unwrap_or_default());
        if stored != computed {
            return Err(HeaderError::Corrupt(Corruption::HeaderChecksumMismatch {
                stored,
                computed,
            }));
        }
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(HeaderError::UnsupportedVersion(version));
        }
        Ok(Self { version, first_lsn })
    }
}

/// The length of `record`'s body on disk (kind, timestamp, id length, id, payload).
#[must_use]
pub fn body_len(record: &WalRecord) -> usize {
    BODY_FIXED_LEN + record.id.len() + record.payload.len()
}

/// Appends the frame of `record` to `out` and returns the frame's length.
///
/// # Errors
///
/// [`WalError::RecordTooLarge`] if the body would be longer than
/// `max_record_bytes`; `out` is then unchanged.
pub fn encode_frame(
    record: &WalRecord,
    max_record_bytes: u32,
    out: &mut Vec<u8>,
) -> Result<usize, WalError> {
    let len = body_len(record);
    let body_len = u32::try_from(len)
        .ok()
        .filter(|&n| n <= max_record_bytes)
        .ok_or(WalError::RecordTooLarge {
            len: len as u64,
            max: u64::from(max_record_bytes),
        })?;
    // id_len <= body_len, so it fits in a u32 too.
    let id_len = u32::try_from(record.id.len()).unwrap_or(u32::MAX);

    // The fixed 22 bytes are built on the stack so a frame is three copies,
    // not seven: appending many small records is dominated by this function.
    let mut head = [0u8; FRAME_HEADER_LEN + BODY_FIXED_LEN];
    head[0..4].copy_from_slice(&body_len.to_le_bytes());
    head[8..10].copy_from_slice(&record.kind.code().to_le_bytes());
    head[10..18].copy_from_slice(&record.ts_ms.to_le_bytes());
    head[18..22].copy_from_slice(&id_len.to_le_bytes());

    let start = out.len();
    out.reserve(FRAME_HEADER_LEN + len);
    out.extend_from_slice(&head);
    out.extend_from_slice(record.id.as_bytes());
    out.extend_from_slice(&record.payload);
    // One CRC pass over the contiguous body is faster than feeding the
    // fields to the hasher one by one.
    let crc = frame_crc(
        &head[0..4],
        out.get(start + FRAME_HEADER_LEN..).unwrap_or_default(),
    );
    if let Some(slot) = out.get_mut(start + 4..start + FRAME_HEADER_LEN) {
        slot.copy_from_slice(&crc.to_le_bytes());
    }
    Ok(FRAME_HEADER_LEN + len)
}

/// The CRC stored in a frame: CRC-32 of the length field, then the body.
#[must_use]
pub fn frame_crc(len_field: &[u8], body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(len_field);
    hasher.update(body);
    hasher.finalize()
}

/// Splits a frame header into its body length and stored CRC.
#[must_use]
pub fn decode_frame_header(header: [u8; FRAME_HEADER_LEN]) -> (u32, u32) {
    let [l0, l1, l2, l3, c0, c1, c2, c3] = header;
    (
        u32::from_le_bytes([l0, l1, l2, l3]),
        u32::from_le_bytes([c0, c1, c2, c3]),
    )
}

/// Checks a body length read from disk before anything is allocated for it.
///
/// # Errors
///
/// [`Corruption::LengthOutOfRange`] if `body_len` is shorter than a body can be
/// or longer than `max_record_bytes`.
pub fn check_body_len(body_len: u32, max_record_bytes: u32) -> Result<(), Corruption> {
    if (body_len as usize) < BODY_FIXED_LEN || body_len > max_record_bytes {
        return Err(Corruption::LengthOutOfRange {
            len: body_len,
            max: max_record_bytes,
        });
    }
    Ok(())
}

/// Checks a body against its stored CRC and decodes it into `out`, reusing
/// `out`'s buffers so a scan allocates only when a record outgrows them.
///
/// # Errors
///
/// [`Corruption::ChecksumMismatch`], [`Corruption::UnknownKind`] or
/// [`Corruption::BadId`]; `out` is unspecified after an error.
pub fn decode_body(
    body_len: u32,
    stored_crc: u32,
    body: &[u8],
    out: &mut WalRecord,
) -> Result<(), Corruption> {
    let computed = frame_crc(&body_len.to_le_bytes(), body);
    if computed != stored_crc {
        return Err(Corruption::ChecksumMismatch {
            stored: stored_crc,
            computed,
        });
    }
    let fixed = body
        .get(..BODY_FIXED_LEN)
        .ok_or(Corruption::LengthOutOfRange {
            len: body_len,
            max: u32::MAX,
        })?;
    let code = u16::from_le_bytes(read_array(fixed, 0));
    out.kind = RecordType::from_code(code).ok_or(Corruption::UnknownKind(code))?;
    out.ts_ms = i64::from_le_bytes(read_array(fixed, 2));
    let id_len = read_u32(fixed, 10) as usize;
    let rest = body.get(BODY_FIXED_LEN..).unwrap_or_default();
    let (id, payload) = rest.split_at_checked(id_len).ok_or(Corruption::BadId)?;
    let id = std::str::from_utf8(id).map_err(|_| Corruption::BadId)?;
    out.id.clear();
    out.id.push_str(id);
    out.payload.clear();
    out.payload.extend_from_slice(payload);
    Ok(())
}

/// Decodes the frame at the start of `bytes` into `out` and returns the frame's
/// length.
///
/// # Errors
///
/// [`Corruption::TruncatedFrame`] if `bytes` ends before the frame does, and
/// the errors of [`check_body_len`] and [`decode_body`].
///
/// # Examples
///
/// ```
/// use sync_wal::format::{decode_frame, encode_frame};
/// use sync_wal::{RecordType, WalRecord};
///
/// let record = WalRecord { id: "a".into(), kind: RecordType::MarkDone, ts_ms: 5, payload: vec![1, 2] };
/// let mut bytes = Vec::new();
/// encode_frame(&record, 1024, &mut bytes)?;
/// let mut decoded = WalRecord::default();
/// assert_eq!(decode_frame(&bytes, 1024, &mut decoded), Ok(bytes.len()));
/// assert_eq!(decoded, record);
/// # Ok::<_, sync_wal::WalError>(())
/// ```
pub fn decode_frame(
    bytes: &[u8],
    max_record_bytes: u32,
    out: &mut WalRecord,
) -> Result<usize, Corruption> {
    let truncated = Corruption::TruncatedFrame {
        available: bytes.len() as u64,
    };
    let header: [u8; FRAME_HEADER_LEN] = bytes
        .get(..FRAME_HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(truncated)?;
    let (body_len, stored_crc) = decode_frame_header(header);
    check_body_len(body_len, max_record_bytes)?;
    let end = FRAME_HEADER_LEN + body_len as usize;
    let body = bytes.get(FRAME_HEADER_LEN..end).ok_or(truncated)?;
    decode_body(body_len, stored_crc, body, out)?;
    Ok(end)
}

fn read_array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = bytes.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(read_array(bytes, at))
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(read_array(bytes, at))
}

#[cfg(test)]
mod tests;
