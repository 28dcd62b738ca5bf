//! Guards `WalInspector`: it reads what `Wal` wrote, reports a torn tail
//! without cutting it, names the first damaged frame, never changes a byte on
//! disk, and honours the directory lock with no writer; beside a writer, it
//! is a live view that ends at the last complete record and keeps reading
//! segments a compaction removes.

use std::fs;
use std::path::Path;

use proptest::prelude::*;
use sync_wal::{Corruption, LogTail, Wal, WalError, WalInspector, WalRecord};

use crate::{TestResult, appending_config, config, record, segment_paths};

/// Writes `n` records into segments of about `segment_bytes`.
fn write_log(dir: &Path, n: u64, segment_bytes: u64) -> Result<(), WalError> {
    let mut cfg = appending_config(dir);
    cfg.segment_bytes = segment_bytes;
    let wal = Wal::open(cfg)?;
    for i in 0..n {
        wal.append(&record(i))?;
    }
    Ok(())
}

/// Every file in `dir` with its bytes, to prove nothing changed.
fn snapshot(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, std::io::Error> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        files.push((
            entry.file_name().to_string_lossy().into_owned(),
            fs::read(entry.path())?,
        ));
    }
    files.sort();
    Ok(files)
}

fn records(inspector: &WalInspector, from: u64) -> Result<Vec<(u64, WalRecord)>, WalError> {
    inspector.iter_from(from).collect()
}

#[test]
fn reads_and_verifies_a_clean_log_across_segments() -> TestResult {
    let dir = tempfile::tempdir()?;
    write_log(dir.path(), 200, 1024)?;
    let inspector = WalInspector::open(dir.path())?;
    assert!(inspector.segments().len() > 3, "the log rolled");
    assert_eq!(inspector.next_lsn(), 200);
    let all = records(&inspector, 0)?;
    assert_eq!(all, (0..200).map(|n| (n, record(n))).collect::<Vec<_>>());
    assert_eq!(records(&inspector, 150)?.len(), 50);

    let mut calls = Vec::new();
    let report = inspector.verify(|done, total| calls.push((done, total)))?;
    assert_eq!(report.records, 200);
    assert_eq!(report.segments, inspector.segments().len());
    assert_eq!((report.first_lsn, report.next_lsn), (0, 200));
    assert_eq!(report.tail, LogTail::Clean);
    let by_kind: u64 = report.records_by_kind.iter().map(|(_, n)| n).sum();
    assert_eq!(by_kind, 200);
    let total: u64 = segment_paths(dir.path())
        .iter()
        .map(|p| fs::metadata(p).map(|m| m.len()))
        .sum::<Result<_, _>>()?;
    assert_eq!(report.bytes, total);
    assert_eq!(calls.last(), Some(&(total, total)), "progress ends at 100%");
    Ok(())
}

#[test]
fn reports_a_torn_tail_and_leaves_it_for_the_writer_to_cut() -> TestResult {
    let dir = tempfile::tempdir()?;
    write_log(dir.path(), 10, 1 << 20)?;
    let segment = segment_paths(dir.path()).pop().ok_or("no segment")?;
    let full_len = fs::metadata(&segment)?.len();
    fs::OpenOptions::new()
        .write(true)
        .open(&segment)?
        .set_len(full_len - 3)?;
    let before = snapshot(dir.path())?;

    let inspector = WalInspector::open(dir.path())?;
    let report = inspector.verify(|_, _| {})?;
    assert_eq!(report.records, 9);
    let LogTail::Torn { offset, len, .. } = report.tail else {
        panic!("expected a torn tail, got {:?}", report.tail);
    };
    assert_eq!(offset + len, full_len - 3);
    assert_eq!(records(&inspector, 0)?.len(), 9);
    drop(inspector);
    assert_eq!(
        snapshot(dir.path())?,
        before,
        "a read-only view changed the log"
    );
    Ok(())
}

#[test]
fn names_the_segment_and_offset_of_damage_in_an_older_segment() -> TestResult {
    let dir = tempfile::tempdir()?;
    write_log(dir.path(), 100, 1024)?;
    let first = segment_paths(dir.path())
        .into_iter()
        .next()
        .ok_or("no segment")?;
    let mut bytes = fs::read(&first)?;
    // The first frame's CRC field starts right after the 24-byte header and
    // the 4-byte length.
    *bytes.get_mut(24 + 4).ok_or("short segment")? ^= 0xff;
    fs::write(&first, &bytes)?;

    let inspector = WalInspector::open(dir.path())?;
    let error = inspector.verify(|_, _| {}).err().ok_or("verify passed")?;
    match error {
        WalError::Corrupt {
            segment,
            offset,
            reason,
        } => {
            assert_eq!(segment, first);
            assert_eq!(offset, 24);
            assert!(matches!(reason, Corruption::ChecksumMismatch { .. }));
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(records(&inspector, 0).is_err(), "iteration reports it too");
    Ok(())
}

#[test]
fn a_quiet_view_locks_out_a_writer_until_it_is_dropped() -> TestResult {
    let dir = tempfile::tempdir()?;
    write_log(dir.path(), 3, 1 << 20)?;
    let first = WalInspector::open(dir.path())?;
    let second = WalInspector::open(dir.path())?;
    assert!(!first.is_live() && !second.is_live());
    assert!(matches!(
        Wal::open(config(dir.path())),
        Err(WalError::Locked { .. })
    ));
    drop((first, second));
    Wal::open(config(dir.path()))?;
    Ok(())
}

#[test]
fn a_live_view_reads_the_complete_records_beside_a_writer_without_blocking_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    write_log(dir.path(), 3, 1 << 20)?;
    let wal = Wal::open(appending_config(dir.path()))?;
    wal.append(&record(3))?;
    // A write in progress: half a frame at the end of the newest segment.
    let newest = segment_paths(dir.path()).pop().ok_or("no segment")?;
    let mut half = fs::read(&newest)?;
    let frame_start = half.len();
    wal.append(&record(4))?;
    half = fs::read(&newest)?;
    half.truncate(frame_start + (half.len() - frame_start) / 2);
    fs::write(&newest, &half)?;

    let view = WalInspector::open(dir.path())?;
    assert!(view.is_live());
    assert_eq!(
        view.tail(),
        &LogTail::Clean,
        "a write in progress is no damage"
    );
    let expected: Vec<(u64, WalRecord)> = (0..4).map(|n| (n, record(n))).collect();
    assert_eq!(records(&view, 0)?, expected);
    let report = view.verify(|_, _| {})?;
    assert_eq!((report.records, report.next_lsn, report.live), (4, 4, true));
    // The writer goes on meanwhile: the view holds no lock.
    let mut more = appending_config(dir.path());
    more.segment_bytes = 1 << 20;
    drop(wal);
    let wal = Wal::open(more)?;
    wal.append(&record(4))?;
    assert_eq!(
        records(&view, 0)?,
        expected,
        "a view is fixed at its opening"
    );
    Ok(())
}

#[test]
fn a_live_view_keeps_reading_segments_a_compaction_removes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cfg = appending_config(dir.path());
    cfg.segment_bytes = 1024;
    let wal = Wal::open(cfg)?;
    for n in 0..200 {
        wal.append(&record(n))?;
    }
    let view = WalInspector::open(dir.path())?;
    assert!(view.is_live());
    let segments_before = segment_paths(dir.path()).len();
    let removed = wal.truncate_before(150)?;
    assert!(removed > 0 && segment_paths(dir.path()).len() < segments_before);
    // Every record of the view is still there, from its first LSN.
    let expected: Vec<(u64, WalRecord)> = (0..200).map(|n| (n, record(n))).collect();
    assert_eq!(records(&view, 0)?, expected);
    assert_eq!(view.verify(|_, _| {})?.records, 200);
    // A view opened after the compaction starts where the log now starts.
    let later = WalInspector::open(dir.path())?;
    assert!(later.first_lsn() > 0 && later.first_lsn() <= 150);
    assert_eq!(records(&later, 150)?, expected[150..].to_vec());
    Ok(())
}

#[test]
fn a_missing_directory_is_an_io_error_naming_it() {
    let error = WalInspector::open("/nonexistent/sync-wal-inspect").err();
    assert!(
        matches!(&error, Some(WalError::Io { path, .. }) if path.ends_with("sync-wal-inspect")),
        "{error:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever byte is flipped, the view and the writer agree: the records
    /// the view reads before any error are exactly those `Wal::open` keeps,
    /// and the view never touches the files.
    #[test]
    fn agrees_with_recovery_on_any_flipped_byte(n in 1u64..20, at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let dir = tempfile::tempdir()?;
        write_log(dir.path(), n, 1 << 20)?;
        let segment = segment_paths(dir.path()).pop().ok_or_else(|| TestCaseError::fail("no segment"))?;
        let mut bytes = fs::read(&segment)?;
        let i = at.index(bytes.len());
        if let Some(b) = bytes.get_mut(i) { *b ^= 1 << bit; }
        fs::write(&segment, &bytes)?;
        let before = snapshot(dir.path())?;

        let viewed: Result<Vec<_>, _> = WalInspector::open(dir.path()).and_then(|v| records(&v, 0));
        prop_assert_eq!(snapshot(dir.path())?, before);
        let recovered: Result<Vec<_>, _> = Wal::open(config(dir.path())).and_then(|w| w.iter_from(0)?.collect());
        match (viewed, recovered) {
            (Ok(v), Ok(r)) => prop_assert_eq!(v, r),
            (Err(_), Err(_)) => {}
            (v, r) => prop_assert!(false, "view {:?} vs recovery {:?}", v.map(|x| x.len()), r.map(|x| x.len())),
        }
    }
}
