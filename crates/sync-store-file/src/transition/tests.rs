//! Transition records: every change of an operation's life round-trips
//! through its record, any other change is refused (a whole record then),
//! and any bytes decode to a value or an error naming an offset, never a
//! panic.

use proptest::prelude::*;
use sync_outbox::{Need, Operation, OperationStatus};
use sync_wal::{RecordType, WalRecord};

use super::{apply, record, status_of};

fn status() -> impl Strategy<Value = OperationStatus> {
    prop_oneof![
        Just(OperationStatus::Pending),
        Just(OperationStatus::InFlight),
        Just(OperationStatus::Done),
        Just(OperationStatus::Failed),
    ]
}

fn base() -> Operation {
    let mut op = Operation::new("note.create", "/notes/tmp-1", r#"{"title":"caf\u00e9"}"#)
        .needing(Need::new("op_0", "/id", "tmp-1"));
    op.id = "op_1".into();
    op.seq = 7;
    op.account = Some("ann".into());
    op.ordering_key = Some("note/1".into());
    op.keep_answer = true;
    op
}

prop_compose! {
    fn life()(
        status in status(),
        attempt in any::<u32>(),
        due in any::<i64>(),
        updated in any::<i64>(),
        error in ".{0,40}",
        first in any::<Option<i64>>(),
        unanswered in any::<u32>(),
        version in any::<Option<i64>>(),
    ) -> Operation {
        let mut op = base();
        op.status = status;
        op.attempt = attempt;
        op.next_retry_at_ms = due;
        op.updated_at_ms = updated;
        op.last_error = error;
        op.first_sent_at_ms = first;
        op.unanswered_sends = unanswered;
        op.server_version = version;
        op
    }
}

proptest! {
    #[test]
    fn a_life_change_round_trips(new in life()) {
        let old = base();
        let record = record(&old, &new).ok_or_else(|| TestCaseError::fail("no record"))?;
        prop_assert!(record.payload.len() < 40 + new.last_error.len());
        let status = status_of(record.kind).ok_or_else(|| TestCaseError::fail("kind"))?;
        let mut replayed = old;
        apply(&mut replayed, status, &record).map_err(TestCaseError::fail)?;
        prop_assert_eq!(replayed, new);
    }

    #[test]
    fn any_bytes_are_a_transition_or_an_error_with_an_offset(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let record = WalRecord { id: "op_1".into(), kind: RecordType::MarkDone, ts_ms: 5, payload: bytes };
        let mut op = base();
        if let Err(reason) = apply(&mut op, OperationStatus::Done, &record) {
            prop_assert!(reason.contains("offset"), "{}", reason);
        }
    }
}

#[test]
fn any_other_change_is_a_whole_record() {
    let old = base();
    let changes: [fn(&mut Operation); 6] = [
        |op| op.payload.push(' '),
        |op| op.target.push('/'),
        |op| op.answer = Some("{}".into()),
        |op| op.needs.clear(),
        |op| op.idempotency_key = "op_1.1".into(),
        |op| op.payload_version = 2,
    ];
    for change in changes {
        let mut new = old.clone();
        change(&mut new);
        assert!(record(&old, &new).is_none(), "{new:?}");
    }
}

#[test]
fn a_truncated_payload_names_where_it_ends() {
    let mut new = base();
    new.status = OperationStatus::Failed;
    new.last_error = "HTTP 422".into();
    let mut record = record(&base(), &new).expect("a transition");
    record.payload.truncate(record.payload.len() - 3);
    let error = apply(&mut base(), OperationStatus::Failed, &record).expect_err("truncated");
    assert!(error.contains("offset"), "{error}");
}
