//! Reading the log in LSN order across segments: [`WalIter`].

use std::collections::VecDeque;

use crate::error::{Corruption, WalError};
use crate::record::WalRecord;
use crate::recovery::SealedSegment;
use crate::segment::SegmentReader;

/// Reads records with LSNs in `from..end` across a fixed list of segments,
/// checking every frame and the LSN continuity between segments.
#[derive(Debug)]
pub(crate) struct LogReader {
    /// Segments not yet opened, oldest first.
    pending: VecDeque<SealedSegment>,
    current: Option<SegmentReader>,
    /// LSN of the next frame `current` will return.
    lsn: u64,
    from: u64,
    end: u64,
    max_record_bytes: u32,
    /// The last record read; reused so a scan allocates only when a record
    /// outgrows it.
    pub(crate) record: WalRecord,
    /// The segment and byte offset of `record`'s frame.
    pub(crate) position: Option<(std::path::PathBuf, u64)>,
    /// Returned once on reaching `end`: damage after the last readable record
    /// that a read-only view must report instead of ending quietly.
    trailing_error: Option<WalError>,
}

impl LogReader {
    /// `segments` must be sorted by first LSN; `end` is the log's next LSN at
    /// the time of the snapshot, so records appended later are not read.
    pub(crate) fn new(
        segments: Vec<SealedSegment>,
        from: u64,
        end: u64,
        max_record_bytes: u32,
    ) -> Self {
        // Start in the last segment whose first LSN is <= from; LSNs below the
        // oldest retained segment were truncated away.
        let skip = segments
            .iter()
            .rposition(|s| s.first_lsn <= from)
            .unwrap_or(0);
        let pending: VecDeque<_> = segments.into_iter().skip(skip).collect();
        let lsn = pending.front().map_or(end, |s| s.first_lsn);
        Self {
            pending,
            current: None,
            lsn,
            from,
            end,
            max_record_bytes,
            record: WalRecord::default(),
            position: None,
            trailing_error: None,
        }
    }

    /// Makes the reader fail with `error` where it would otherwise end.
    pub(crate) fn with_trailing_error(mut self, error: Option<WalError>) -> Self {
        self.trailing_error = error;
        self
    }

    /// Reads the next record with LSN `>= from` into `self.record` and returns
    /// its LSN, or `None` past the end.
    pub(crate) fn advance(&mut self) -> Result<Option<u64>, WalError> {
        loop {
            if self.lsn >= self.end {
                return match self.trailing_error.take() {
                    Some(e) => Err(e),
                    None => Ok(None),
                };
            }
            let Some(reader) = self.current.as_mut() else {
                self.open_next()?;
                continue;
            };
            let at = reader.offset();
            if reader.next_into(&mut self.record)?.is_some() {
                let lsn = self.lsn;
                self.lsn += 1;
                if lsn >= self.from {
                    match &mut self.position {
                        Some((path, offset)) if path == reader.path() => *offset = at,
                        position => *position = Some((reader.path().to_path_buf(), at)),
                    }
                    return Ok(Some(lsn));
                }
            } else {
                // A segment ended before the log's end: the next one must
                // continue exactly where this one stopped.
                let expected = self.lsn;
                let segment = reader.path().to_path_buf();
                let offset = reader.offset();
                self.current = None;
                match self.pending.front() {
                    Some(next) if next.first_lsn == expected => {}
                    Some(next) => {
                        return Err(WalError::Corrupt {
                            segment: next.path.clone(),
                            offset: 0,
                            reason: Corruption::LsnGap {
                                expected,
                                found: next.first_lsn,
                            },
                        });
                    }
                    None => {
                        return Err(WalError::Corrupt {
                            segment,
                            offset,
                            reason: Corruption::TruncatedFrame { available: 0 },
                        });
                    }
                }
            }
        }
    }

    fn open_next(&mut self) -> Result<(), WalError> {
        let Some(segment) = self.pending.pop_front() else {
            // Only reachable if `end` is past the last segment's records, which
            // `advance` reports when that segment ends.
            self.lsn = self.end;
            return Ok(());
        };
        if segment.first_lsn != self.lsn {
            return Err(WalError::Corrupt {
                segment: segment.path,
                offset: 0,
                reason: Corruption::LsnGap {
                    expected: self.lsn,
                    found: segment.first_lsn,
                },
            });
        }
        self.current = Some(segment.reader(self.max_record_bytes)?);
        Ok(())
    }
}

/// An iterator over `(lsn, record)` pairs, from [`Wal::iter_from`](crate::Wal::iter_from).
///
/// It reads the records that existed when it was made; later appends are not
/// seen. After an error it yields `None`.
///
/// # Examples
///
/// ```
/// use sync_wal::{RecordType, Wal, WalConfig, WalRecord};
///
/// let dir = tempfile::tempdir()?;
/// let wal = Wal::open(WalConfig::new(dir.path()))?;
/// for n in 0..3 {
///     wal.append(&WalRecord { id: format!("op_{n}"), kind: RecordType::PutOperation, ts_ms: n, payload: vec![] })?;
/// }
/// let ids: Vec<String> = wal.iter_from(1)?.map(|item| item.map(|(_, r)| r.id)).collect::<Result<_, _>>()?;
/// assert_eq!(ids, ["op_1", "op_2"]);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct WalIter {
    reader: LogReader,
    done: bool,
}

impl WalIter {
    pub(crate) fn new(reader: LogReader) -> Self {
        Self {
            reader,
            done: false,
        }
    }

    /// The segment file and the byte offset of the frame of the record the
    /// iterator returned last; `None` before the first. For errors an upper
    /// layer finds in a record's payload (a store that cannot decode it),
    /// which should name where the bytes are, as the log's own errors do.
    #[must_use]
    pub fn position(&self) -> Option<(&std::path::Path, u64)> {
        self.reader
            .position
            .as_ref()
            .map(|(path, offset)| (path.as_path(), *offset))
    }
}

impl Iterator for WalIter {
    type Item = Result<(u64, WalRecord), WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.reader.advance() {
            Ok(Some(lsn)) => Some(Ok((lsn, self.reader.record.clone()))),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl std::iter::FusedIterator for WalIter {}
