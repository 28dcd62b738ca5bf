//! Guards preallocated segments (format version 2): frames are written into
//! zeros ahead of them, a zero frame header ends the frames, recovery cuts a
//! torn write followed by zeros to exactly the complete frames, refuses
//! zeros with frames after them, and a full disk while extending loses
//! nothing.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use sync_wal::testing::{Fault, FaultyStorage};
use sync_wal::{
    Corruption, LogTail, SyncPolicy, Wal, WalConfig, WalError, WalInspector, WalRecord,
};

use crate::{TestResult, config, read_all, record, segment_paths};

const CHUNK: u64 = 4096;

/// Preallocation is for logs that sync: `Always` here.
fn preallocating(dir: &Path) -> WalConfig {
    let mut cfg = config(dir);
    cfg.sync = SyncPolicy::Always;
    cfg.preallocate_bytes = CHUNK;
    cfg
}

fn records(wal: &Wal) -> Result<Vec<WalRecord>, WalError> {
    Ok(read_all(wal)?.into_iter().map(|(_, r)| r).collect())
}

/// Writes `n` records; returns the segment and every frame's end offset.
fn one_segment(dir: &Path, n: u64) -> Result<(std::path::PathBuf, Vec<u64>), WalError> {
    let wal = Wal::open(preallocating(dir))?;
    let mut ends = Vec::new();
    let mut end = 24u64;
    for i in 0..n {
        wal.append(&record(i))?;
        end += record(i).encoded_len() as u64;
        ends.push(end);
    }
    drop(wal);
    let path = segment_paths(dir).pop().ok_or(WalError::InvalidConfig {
        reason: "no segment written",
    })?;
    Ok((path, ends))
}

#[test]
fn frames_go_into_zeros_written_ahead_and_read_back_across_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (path, ends) = one_segment(dir.path(), 5)?;
    let bytes = fs::read(&path)?;
    let frames_end = usize::try_from(*ends.last().ok_or("no frames")?)?;
    assert_eq!(
        bytes.len() as u64,
        24 + CHUNK,
        "one chunk ahead of the header"
    );
    assert_eq!(bytes[8..12], 2u32.to_le_bytes(), "format version 2");
    assert!(bytes[frames_end..].iter().all(|&b| b == 0));

    // Reopen: the frames are all there, appends go on after them.
    let wal = Wal::open(preallocating(dir.path()))?;
    assert_eq!(records(&wal)?, (0..5).map(record).collect::<Vec<_>>());
    for i in 5..200 {
        wal.append(&record(i))?;
    }
    drop(wal);
    let wal = Wal::open(preallocating(dir.path()))?;
    assert_eq!(records(&wal)?, (0..200).map(record).collect::<Vec<_>>());
    Ok(())
}

#[test]
fn preallocation_starts_small_and_doubles_up_to_its_chunk() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cfg = preallocating(dir.path());
    cfg.preallocate_bytes = 256 << 10;
    let wal = Wal::open(cfg)?;
    let segment = segment_paths(dir.path()).pop().ok_or("no segment")?;
    let mut sizes = vec![fs::metadata(&segment)?.len()];
    for i in 0..3_000 {
        wal.append(&WalRecord {
            payload: vec![7; 300],
            ..record(i)
        })?;
        let len = fs::metadata(&segment)?.len();
        if sizes.last() != Some(&len) {
            sizes.push(len);
        }
    }
    let kib = |n: u64| 24 + (n << 10);
    assert_eq!(
        sizes,
        [kib(64), kib(128), kib(256), kib(512), kib(768), kib(1024)]
    );
    Ok(())
}

#[test]
fn a_log_that_never_syncs_appends_instead() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cfg = preallocating(dir.path());
    cfg.sync = SyncPolicy::Never;
    let wal = Wal::open(cfg)?;
    wal.append(&record(0))?;
    let segment = segment_paths(dir.path()).pop().ok_or("no segment")?;
    assert_eq!(
        fs::metadata(&segment)?.len(),
        24 + record(0).encoded_len() as u64
    );
    Ok(())
}

#[test]
fn sealed_preallocated_segments_read_through_their_zeros() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cfg = preallocating(dir.path());
    cfg.segment_bytes = 1_000;
    let wal = Wal::open(cfg.clone())?;
    for i in 0..300 {
        wal.append(&record(i))?;
    }
    assert!(segment_paths(dir.path()).len() > 3);
    // A live reader and a reopen both see every record, in order.
    assert_eq!(records(&wal)?, (0..300).map(record).collect::<Vec<_>>());
    drop(wal);
    let report = WalInspector::open(dir.path())?.verify(|_, _| {})?;
    assert_eq!(report.records, 300);
    assert_eq!(report.tail, LogTail::Clean);
    let wal = Wal::open(cfg)?;
    assert_eq!(records(&wal)?, (0..300).map(record).collect::<Vec<_>>());
    Ok(())
}

#[test]
fn zeros_with_a_frame_after_them_are_a_hole_not_an_end() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (path, ends) = one_segment(dir.path(), 4)?;
    let mut bytes = fs::read(&path)?;
    // Zero the second frame's header: the third and fourth frames follow.
    let second = usize::try_from(ends[0])?;
    bytes[second..second + 8].fill(0);
    fs::write(&path, &bytes)?;
    match Wal::open(preallocating(dir.path())) {
        Err(WalError::Corrupt {
            segment,
            offset,
            reason: Corruption::ZeroedFrameHeader,
        }) => {
            assert_eq!(segment, path);
            assert_eq!(offset, ends[0]);
        }
        other => panic!("expected a zeroed frame header, got {other:?}"),
    }
    assert_eq!(
        fs::read(&path)?,
        bytes,
        "a refused segment is left untouched"
    );
    Ok(())
}

#[test]
fn a_full_disk_while_extending_fails_the_append_and_loses_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cfg = preallocating(dir.path());
    cfg.sync = SyncPolicy::Always;
    // Write 0 is the header, writes 1.. are the first chunk's zeros and the
    // frames; from write 30 on the disk is full, keeping 7 bytes of each.
    let storage = FaultyStorage::new(Fault::DiskFullFromWrite { n: 30, keep: 7 });
    let wal = Wal::open_with_storage(cfg.clone(), Arc::new(storage.clone()))?;
    let mut acked = Vec::new();
    let mut failures = 0;
    for i in 0..200 {
        match wal.append(&record(i)) {
            Ok(_) => acked.push(record(i)),
            Err(_) => failures += 1,
        }
        if failures == 3 {
            storage.clear();
        }
    }
    assert!(failures >= 3, "the fault was never hit");
    assert!(acked.len() > 150, "appends went on after the disk had room");
    drop(wal);
    let wal = Wal::open(cfg)?;
    assert_eq!(records(&wal)?, acked);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A power loss mid-write leaves a prefix of the frame, then garbage
    /// or zeros, then the preallocated zeros: recovery keeps exactly the
    /// complete frames before it and appends after them.
    #[test]
    fn a_torn_write_into_zeros_is_cut_to_the_complete_frames(
        n in 1u64..12, cut in any::<prop::sample::Index>(), garbage in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let dir = tempfile::tempdir()?;
        let (path, ends) = one_segment(dir.path(), n)?;
        let total = *ends.last().unwrap_or(&24);
        let cut = 24 + cut.index(usize::try_from(total - 24 + 1)?) as u64;
        let original = fs::read(&path)?;
        let mut bytes = original.clone();
        // Everything from the cut is lost; some garbage may land there.
        let from = usize::try_from(cut)?;
        for b in bytes.iter_mut().skip(from) { *b = 0; }
        for (b, g) in bytes.iter_mut().skip(from).zip(&garbage) { *b = *g; }
        fs::write(&path, &bytes)?;

        // The frames before the cut are complete, and so is one the garbage
        // happens to rewrite byte for byte (the shrunk case of the saved
        // regression: its last byte lost, and the garbage is that byte).
        let mut complete = 0u64;
        for &end in &ends {
            let end = usize::try_from(end)?;
            if bytes.get(..end) != original.get(..end) {
                break;
            }
            complete += 1;
        }
        let wal = Wal::open(preallocating(dir.path()))?;
        prop_assert_eq!(records(&wal)?, (0..complete).map(record).collect::<Vec<_>>());
        prop_assert_eq!(wal.append(&record(complete))?, complete);
        drop(wal);
        let wal = Wal::open(preallocating(dir.path()))?;
        prop_assert_eq!(records(&wal)?, (0..=complete).map(record).collect::<Vec<_>>());
    }
}
