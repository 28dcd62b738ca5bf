//! Guards that what is appended is what is read back, in order, across reopen
//! and segment boundaries, by `replay` and `iter_from` alike.

use proptest::prelude::*;
use sync_wal::{RecordType, SyncPolicy, Wal, WalRecord};

use crate::{TestResult, config, read_all, record};

fn arb_record() -> impl Strategy<Value = WalRecord> {
    (
        "[a-z0-9_\u{e9}]{0,12}",
        prop_oneof![
            Just(RecordType::PutOperation),
            Just(RecordType::MarkDone),
            any::<u8>().prop_map(RecordType::Custom)
        ],
        any::<i64>(),
        proptest::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(id, kind, ts_ms, payload)| WalRecord {
            id,
            kind,
            ts_ms,
            payload,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn any_sequence_round_trips_through_reopen(
        batches in proptest::collection::vec(proptest::collection::vec(arb_record(), 1..5), 0..20),
        segment_bytes in 100u64..2_000,
        reopen_every in 1usize..6,
    ) {
        let dir = tempfile::tempdir()?;
        let mut cfg = config(dir.path());
        cfg.segment_bytes = segment_bytes;
        let mut expected = Vec::new();
        let mut wal = Wal::open(cfg.clone())?;
        for (i, batch) in batches.iter().enumerate() {
            if i % reopen_every == 0 {
                drop(wal);
                wal = Wal::open(cfg.clone())?;
            }
            let lsns = if batch.len() == 1 {
                let lsn = wal.append(&batch[0])?;
                lsn..lsn + 1
            } else {
                wal.append_batch(batch)?
            };
            prop_assert_eq!(lsns.start, expected.len() as u64);
            prop_assert_eq!(lsns.end - lsns.start, batch.len() as u64);
            expected.extend(batch.iter().cloned());
        }
        drop(wal);
        let wal = Wal::open(cfg)?;
        prop_assert_eq!(wal.next_lsn(), expected.len() as u64);
        let mut replayed = Vec::new();
        wal.replay(0, |r| replayed.push(r.clone()))?;
        prop_assert_eq!(&replayed, &expected);
        for from in [0, expected.len() / 2, expected.len()] {
            let items = wal.iter_from(from as u64)?.collect::<Result<Vec<_>, _>>()?;
            let want: Vec<(u64, WalRecord)> =
                expected.iter().cloned().enumerate().skip(from).map(|(i, r)| (i as u64, r)).collect();
            prop_assert_eq!(items, want);
        }
    }
}

#[test]
fn every_policy_round_trips() -> TestResult {
    for policy in [
        SyncPolicy::Always,
        SyncPolicy::Never,
        SyncPolicy::Interval(std::time::Duration::from_millis(5)),
    ] {
        let dir = tempfile::tempdir()?;
        let mut cfg = config(dir.path());
        cfg.sync = policy;
        {
            let wal = Wal::open(cfg.clone())?;
            for n in 0..20 {
                assert_eq!(wal.append(&record(n))?, n);
            }
            wal.sync()?;
        }
        let wal = Wal::open(cfg)?;
        let got: Vec<WalRecord> = read_all(&wal)?.into_iter().map(|(_, r)| r).collect();
        let want: Vec<WalRecord> = (0..20).map(record).collect();
        assert_eq!(got, want, "{policy:?}");
    }
    Ok(())
}

#[test]
fn empty_batch_writes_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let wal = Wal::open(config(dir.path()))?;
    wal.append(&record(0))?;
    assert_eq!(wal.append_batch(&[])?, 1..1);
    assert_eq!(wal.next_lsn(), 1);
    assert_eq!(read_all(&wal)?.len(), 1);
    Ok(())
}

#[test]
fn iterators_see_the_log_as_it_was_when_made() -> TestResult {
    let dir = tempfile::tempdir()?;
    let wal = Wal::open(config(dir.path()))?;
    wal.append(&record(0))?;
    let iter = wal.iter_from(0)?;
    wal.append(&record(1))?;
    assert_eq!(iter.count(), 1);
    assert_eq!(read_all(&wal)?.len(), 2);
    Ok(())
}

#[test]
fn reading_past_the_end_is_empty() -> TestResult {
    let dir = tempfile::tempdir()?;
    let wal = Wal::open(config(dir.path()))?;
    assert_eq!(read_all(&wal)?.len(), 0);
    wal.append(&record(0))?;
    assert_eq!(wal.iter_from(1)?.count(), 0);
    assert_eq!(wal.iter_from(u64::MAX)?.count(), 0);
    Ok(())
}
