//! Transition records: a claim, a result or a retry as a small binary
//! record instead of the whole operation as JSON (`docs/FORMAT.md`, "The
//! WAL store's records").
//!
//! A cycle rewrites an operation three times (enqueue, claim, result), and
//! two of those change only the fields of its life: status, attempt, due
//! time, error, the resend window's start, unanswered sends, the server's
//! version. Those two are written as the record kind naming the new status
//! (`MarkInFlight`, `MarkDone`, `MarkFailed`, `MarkPending`), the change
//! time in the frame's `ts_ms`, and this payload; replay applies it to the
//! operation already in the index. Anything else changed (a payload, a
//! correction, an answer kept) is a whole `PutOperation` record, as before.

use sync_outbox::{Operation, OperationStatus};
use sync_wal::{RecordType, WalRecord};

/// The first byte of every transition payload.
const VERSION: u8 = 1;
/// Flag bits of the payload's flags byte.
const HAS_FIRST_SENT: u8 = 1;
const HAS_SERVER_VERSION: u8 = 2;

/// The record for `new` if it differs from `old` (the stored operation with
/// its id) only in the fields of its life; `None` otherwise.
pub(crate) fn record(old: &Operation, new: &Operation) -> Option<WalRecord> {
    if !same_apart_from_life(old, new) {
        return None;
    }
    let kind = match new.status {
        OperationStatus::InFlight => RecordType::MarkInFlight,
        OperationStatus::Done => RecordType::MarkDone,
        OperationStatus::Failed => RecordType::MarkFailed,
        OperationStatus::Pending => RecordType::MarkPending,
    };
    let error = new.last_error.as_bytes();
    let mut payload = Vec::with_capacity(32 + error.len());
    payload.push(VERSION);
    payload.extend_from_slice(&new.attempt.to_le_bytes());
    payload.extend_from_slice(&new.next_retry_at_ms.to_le_bytes());
    payload.extend_from_slice(&new.unanswered_sends.to_le_bytes());
    let flags = u8::from(new.first_sent_at_ms.is_some()) * HAS_FIRST_SENT
        + u8::from(new.server_version.is_some()) * HAS_SERVER_VERSION;
    payload.push(flags);
    if let Some(first) = new.first_sent_at_ms {
        payload.extend_from_slice(&first.to_le_bytes());
    }
    if let Some(version) = new.server_version {
        payload.extend_from_slice(&version.to_le_bytes());
    }
    payload.extend_from_slice(&u32::try_from(error.len()).ok()?.to_le_bytes());
    payload.extend_from_slice(error);
    Some(WalRecord {
        id: new.id.clone(),
        kind,
        ts_ms: new.updated_at_ms,
        payload,
    })
}

/// Applies the transition `record` (of kind `status`) to `op`. `Err` names
/// the offset in the payload and what is wrong; `op` may be half changed
/// then (the caller discards it).
pub(crate) fn apply(
    op: &mut Operation,
    status: OperationStatus,
    record: &WalRecord,
) -> Result<(), String> {
    let mut reader = Reader {
        bytes: &record.payload,
        at: 0,
    };
    let version = reader.u8()?;
    if version != VERSION {
        return Err(format!(
            "transition payload version {version} at offset 0, expected {VERSION}"
        ));
    }
    op.attempt = reader.u32()?;
    op.next_retry_at_ms = reader.i64()?;
    op.unanswered_sends = reader.u32()?;
    let flags_at = reader.at;
    let flags = reader.u8()?;
    if flags & !(HAS_FIRST_SENT | HAS_SERVER_VERSION) != 0 {
        return Err(format!(
            "unknown transition flags {flags:#04x} at offset {flags_at}"
        ));
    }
    op.first_sent_at_ms = if flags & HAS_FIRST_SENT == 0 {
        None
    } else {
        Some(reader.i64()?)
    };
    op.server_version = if flags & HAS_SERVER_VERSION == 0 {
        None
    } else {
        Some(reader.i64()?)
    };
    let len_at = reader.at;
    let len = usize::try_from(reader.u32()?).unwrap_or(usize::MAX);
    let error = reader.take(len).map_err(|_| {
        format!("an error of {len} bytes at offset {len_at} runs past the payload's end")
    })?;
    op.last_error = String::from_utf8(error.to_vec())
        .map_err(|_| format!("the error at offset {} is not UTF-8", len_at + 4))?;
    if reader.at != reader.bytes.len() {
        return Err(format!(
            "{} bytes after the transition at offset {}",
            reader.bytes.len() - reader.at,
            reader.at
        ));
    }
    op.status = status;
    op.updated_at_ms = record.ts_ms;
    Ok(())
}

/// The status a transition record kind sets, if `kind` is one.
pub(crate) fn status_of(kind: RecordType) -> Option<OperationStatus> {
    Some(match kind {
        RecordType::MarkInFlight => OperationStatus::InFlight,
        RecordType::MarkDone => OperationStatus::Done,
        RecordType::MarkFailed => OperationStatus::Failed,
        RecordType::MarkPending => OperationStatus::Pending,
        _ => return None,
    })
}

/// Whether `old` and `new` are the same operation apart from the fields a
/// transition record carries. Every field is named: a field added to
/// `Operation` fails to compile here until it is sorted into one side.
fn same_apart_from_life(old: &Operation, new: &Operation) -> bool {
    let Operation {
        id,
        kind,
        target,
        payload,
        status: _,
        attempt: _,
        next_retry_at_ms: _,
        last_error: _,
        created_at_ms,
        updated_at_ms: _,
        ordering_key,
        coalesce_key,
        owner,
        seq,
        ordering,
        idempotency_key,
        replaced_keys,
        first_sent_at_ms: _,
        unanswered_sends: _,
        server_version: _,
        payload_version,
        account,
        keep_answer,
        answer,
        needs,
        traceparent,
    } = new;
    *id == old.id
        && *seq == old.seq
        && *created_at_ms == old.created_at_ms
        && *payload_version == old.payload_version
        && *keep_answer == old.keep_answer
        && *ordering == old.ordering
        && *kind == old.kind
        && *target == old.target
        && *payload == old.payload
        && *ordering_key == old.ordering_key
        && *coalesce_key == old.coalesce_key
        && *owner == old.owner
        && *idempotency_key == old.idempotency_key
        && *replaced_keys == old.replaced_keys
        && *account == old.account
        && *answer == old.answer
        && *needs == old.needs
        && *traceparent == old.traceparent
}

/// Reads little-endian fields, naming the offset of what is missing.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!(
                "the transition payload ends at offset {}, {n} more bytes expected at offset {}",
                self.bytes.len(),
                self.at
            ));
        };
        let slice = self.bytes.get(self.at..end).unwrap_or_default();
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests;
