//! Guards segment rollover, `truncate_before`, and LSN continuity across both.

use sync_wal::{Wal, WalRecord};

use crate::{TestResult, config, read_all, record, segment_paths};

#[test]
fn segments_roll_at_the_configured_size() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    cfg.segment_bytes = 200;
    let wal = Wal::open(cfg.clone())?;
    for n in 0..30 {
        wal.append(&record(n))?;
    }
    let paths = segment_paths(dir.path());
    assert!(
        paths.len() > 3,
        "expected several segments, got {}",
        paths.len()
    );
    assert_eq!(paths.len(), wal.segment_count());
    for path in &paths {
        let len = std::fs::metadata(path)?.len();
        // A segment only exceeds the limit when it holds a single large record.
        assert!(
            len <= 200 || len <= 24 + record(29).encoded_len() as u64,
            "{} is {len} bytes",
            path.display()
        );
    }
    // Names are the first LSN of each segment.
    assert!(paths[0].ends_with("00000000000000000000.wal"));
    drop(wal);
    let wal = Wal::open(cfg)?;
    assert_eq!(
        read_all(&wal)?
            .into_iter()
            .map(|(_, r)| r)
            .collect::<Vec<_>>(),
        (0..30).map(record).collect::<Vec<_>>()
    );
    Ok(())
}

#[test]
fn a_record_larger_than_a_segment_gets_its_own() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    cfg.segment_bytes = 100;
    let wal = Wal::open(cfg)?;
    let big = WalRecord {
        payload: vec![7; 500],
        ..record(1)
    };
    wal.append(&record(0))?;
    wal.append(&big)?;
    wal.append(&record(2))?;
    assert_eq!(wal.segment_count(), 3);
    let got: Vec<WalRecord> = read_all(&wal)?.into_iter().map(|(_, r)| r).collect();
    assert_eq!(got, vec![record(0), big, record(2)]);
    Ok(())
}

#[test]
fn truncate_before_drops_whole_segments_only() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    cfg.segment_bytes = 150;
    let wal = Wal::open(cfg.clone())?;
    for n in 0..40 {
        wal.append(&record(n))?;
    }
    let before = wal.segment_count();
    let removed = wal.truncate_before(20)?;
    assert!(removed > 0);
    assert_eq!(wal.segment_count(), before - removed);
    let first = wal.first_lsn();
    assert!(first <= 20, "record 20 must survive, first lsn is {first}");
    let items = read_all(&wal)?;
    assert_eq!(items.first().map(|(lsn, _)| *lsn), Some(first));
    for (lsn, r) in &items {
        assert_eq!(r, &record(*lsn));
    }
    assert_eq!(items.len() as u64, 40 - first);

    // The active segment is never removed: the next LSN survives reopen.
    assert!(wal.truncate_before(u64::MAX)? > 0);
    assert_eq!(wal.segment_count(), 1);
    drop(wal);
    let wal = Wal::open(cfg)?;
    assert_eq!(wal.next_lsn(), 40);
    assert_eq!(wal.append(&record(40))?, 40);
    assert_eq!(wal.truncate_before(0)?, 0);
    Ok(())
}

#[test]
fn replay_from_below_the_oldest_segment_starts_at_the_oldest() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    cfg.segment_bytes = 150;
    let wal = Wal::open(cfg)?;
    for n in 0..40 {
        wal.append(&record(n))?;
    }
    wal.truncate_before(30)?;
    let mut lsns = Vec::new();
    wal.replay(0, |r| lsns.push(r.ts_ms / 10))?;
    assert_eq!(lsns.first().copied(), i64::try_from(wal.first_lsn()).ok());
    assert_eq!(lsns.last().copied(), Some(39));
    Ok(())
}

#[test]
fn start_new_segment_lets_truncation_remove_every_record_so_far() -> TestResult {
    let dir = tempfile::tempdir()?;
    let wal = Wal::open(config(dir.path()))?;
    // An empty active segment is not rolled: no second file for nothing.
    assert!(!wal.start_new_segment()?);
    for n in 0..5 {
        wal.append(&record(n))?;
    }
    assert!(wal.start_new_segment()?);
    assert!(!wal.start_new_segment()?, "the new segment is empty");
    assert_eq!(wal.segment_count(), 2);
    assert_eq!(wal.truncate_before(wal.next_lsn())?, 1);
    assert_eq!(wal.first_lsn(), 5);
    wal.append(&record(5))?;
    drop(wal);
    let wal = Wal::open(config(dir.path()))?;
    let lsns: Vec<u64> = read_all(&wal)?.into_iter().map(|(lsn, _)| lsn).collect();
    assert_eq!(lsns, [5]);
    Ok(())
}

#[test]
fn the_iterator_names_each_record_s_segment_and_offset() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    cfg.segment_bytes = 200;
    let wal = Wal::open(cfg)?;
    for n in 0..12 {
        wal.append(&record(n))?;
    }
    let mut iter = wal.iter_from(0)?;
    assert_eq!(iter.position(), None);
    let mut seen = Vec::new();
    while let Some(item) = iter.next() {
        let (lsn, record) = item?;
        let (path, offset) = iter.position().ok_or("a position after a record")?;
        // The frame at that offset is this record: its body starts 8 bytes in.
        let bytes = std::fs::read(path)?;
        let body = &bytes[usize::try_from(offset)? + 8..];
        assert_eq!(
            &body[14..14 + record.id.len()],
            record.id.as_bytes(),
            "lsn {lsn}"
        );
        seen.push((path.to_path_buf(), offset));
    }
    assert_eq!(seen.len(), 12);
    // Across segments: each segment's first record is right after its header.
    let firsts = seen.iter().filter(|(_, offset)| *offset == 24).count();
    assert_eq!(firsts, wal.segment_count());
    Ok(())
}
