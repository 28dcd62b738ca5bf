//! The record a caller appends: [`WalRecord`] and its [`RecordType`].

/// What a record means to the layer above the log.
///
/// The log itself gives no meaning to any kind: it stores and returns it.
/// The named kinds cover the outbox's state transitions; a standalone user of
/// the log picks its own with [`RecordType::Custom`].
///
/// # Examples
///
/// ```
/// use sync_wal::RecordType;
///
/// assert_eq!(RecordType::from_code(RecordType::MarkDone.code()), Some(RecordType::MarkDone));
/// assert_eq!(RecordType::Custom(7).code(), 256 + 7);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordType {
    /// A whole operation was stored (inserted or replaced).
    PutOperation,
    /// An operation was claimed for sending.
    MarkInFlight,
    /// An operation was acknowledged by the server.
    MarkDone,
    /// An operation failed permanently.
    MarkFailed,
    /// An operation went back to pending (a retry).
    MarkPending,
    /// An operation was removed.
    Remove,
    /// A point up to which an upper layer has saved its state elsewhere.
    Checkpoint,
    /// A kind chosen by a standalone user of the log.
    Custom(u8),
}

impl RecordType {
    /// The `u16` stored on disk for this kind (see `docs/FORMAT.md`).
    #[must_use]
    pub const fn code(self) -> u16 {
        match self {
            Self::PutOperation => 1,
            Self::MarkInFlight => 2,
            Self::MarkDone => 3,
            Self::MarkFailed => 4,
            Self::MarkPending => 5,
            Self::Remove => 6,
            Self::Checkpoint => 7,
            Self::Custom(n) => 256 + n as u16,
        }
    }

    /// The kind stored as `code`, or `None` if no kind has that code.
    #[must_use]
    pub fn from_code(code: u16) -> Option<Self> {
        Some(match code {
            1 => Self::PutOperation,
            2 => Self::MarkInFlight,
            3 => Self::MarkDone,
            4 => Self::MarkFailed,
            5 => Self::MarkPending,
            6 => Self::Remove,
            7 => Self::Checkpoint,
            _ => {
                return code
                    .checked_sub(256)
                    .and_then(|n| u8::try_from(n).ok())
                    .map(Self::Custom);
            }
        })
    }
}

/// One entry of the log.
///
/// The log assigns each appended record a log sequence number (LSN); the LSN
/// is not part of the record.
///
/// # Examples
///
/// ```
/// use sync_wal::{RecordType, WalRecord};
///
/// let record = WalRecord {
///     id: "op_1".into(),
///     kind: RecordType::PutOperation,
///     ts_ms: 1_700_000_000_000,
///     payload: br#"{"kind":"message.send"}"#.to_vec(),
/// };
/// assert_eq!(record.encoded_len(), 8 + 14 + 4 + 23);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalRecord {
    /// The id of the thing the record is about (an operation id, for the outbox).
    pub id: String,
    /// What the record means.
    pub kind: RecordType,
    /// The caller's timestamp, in milliseconds.
    pub ts_ms: i64,
    /// Opaque bytes.
    pub payload: Vec<u8>,
}

impl WalRecord {
    /// How many bytes this record takes on disk, frame header included.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        crate::format::FRAME_HEADER_LEN
            + crate::format::BODY_FIXED_LEN
            + self.id.len()
            + self.payload.len()
    }
}

impl Default for WalRecord {
    fn default() -> Self {
        Self {
            id: String::new(),
            kind: RecordType::Custom(0),
            ts_ms: 0,
            payload: Vec::new(),
        }
    }
}
