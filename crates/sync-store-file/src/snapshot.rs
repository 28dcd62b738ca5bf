//! The byte layout of a WAL store snapshot: a CRC-checked JSON array of the
//! live operations and the log position it covers. No I/O here.
//!
//! ```text
//! offset size field
//!      0    8 magic     b"SYNCSNAP"
//!      8    4 version   u32 = 1
//!     12    8 lsn       u64: replay the log from this LSN
//!     20    8 body_len  u64
//!     28    4 crc       u32, CRC-32 of bytes 0..28 then the body
//!     32    - body      JSON array of operations
//! ```
//! All integers little-endian.

use sync_outbox::Operation;

/// The first 8 bytes of a snapshot.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"SYNCSNAP";
/// The snapshot version this crate writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;
const HEADER_LEN: usize = 32;

/// A decoded snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// The first LSN not reflected in `operations`.
    pub lsn: u64,
    /// Every live operation at `lsn`.
    pub operations: Vec<Operation>,
}

impl Snapshot {
    /// Encodes the snapshot.
    ///
    /// # Errors
    ///
    /// The JSON encoder's error (it has none for `Operation` in practice).
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        // The body is written in place after a header whose length and CRC
        // are filled in last: one buffer, no copy of a body that can be
        // tens of megabytes.
        let mut out = Vec::with_capacity(HEADER_LEN + 512 * self.operations.len());
        out.extend_from_slice(&SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        out.extend_from_slice(&self.lsn.to_le_bytes());
        out.extend_from_slice(&[0; 12]);
        serde_json::to_writer(&mut out, &self.operations)?;
        let body_len = (out.len() - HEADER_LEN) as u64;
        if let Some(slot) = out.get_mut(20..28) {
            slot.copy_from_slice(&body_len.to_le_bytes());
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(out.get(..28).unwrap_or_default());
        crc.update(out.get(HEADER_LEN..).unwrap_or_default());
        let crc = crc.finalize();
        if let Some(slot) = out.get_mut(28..HEADER_LEN) {
            slot.copy_from_slice(&crc.to_le_bytes());
        }
        Ok(out)
    }

    /// Decodes a snapshot, checking everything before trusting anything.
    ///
    /// # Errors
    ///
    /// `(offset, reason)` of the first problem.
    pub fn decode(bytes: &[u8]) -> Result<Self, (u64, String)> {
        let header = bytes
            .get(..HEADER_LEN)
            .ok_or((0, format!("{} bytes, shorter than a header", bytes.len())))?;
        if header.get(0..8) != Some(&SNAPSHOT_MAGIC[..]) {
            return Err((0, "bad magic".into()));
        }
        let version = u32::from_le_bytes(array(header, 8));
        if version != SNAPSHOT_VERSION {
            return Err((8, format!("unsupported version {version}")));
        }
        let lsn = u64::from_le_bytes(array(header, 12));
        let body_len = u64::from_le_bytes(array(header, 20));
        let body = bytes.get(HEADER_LEN..).unwrap_or_default();
        if body.len() as u64 != body_len {
            return Err((
                20,
                format!("body is {} bytes, header says {body_len}", body.len()),
            ));
        }
        let stored = u32::from_le_bytes(array(header, 28));
        let mut crc = crc32fast::Hasher::new();
        crc.update(header.get(..28).unwrap_or_default());
        crc.update(body);
        let computed = crc.finalize();
        if stored != computed {
            return Err((
                28,
                format!("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"),
            ));
        }
        let operations = serde_json::from_slice(body)
            .map_err(|e| (HEADER_LEN as u64, crate::error::json_reason(&e)))?;
        Ok(Self { lsn, operations })
    }
}

fn array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = bytes.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}
