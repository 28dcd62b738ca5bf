//! Guards recovery of the newest segment: a torn tail is cut to exactly the
//! complete frames before it, damage with valid frames after it is refused,
//! `Strict` refuses both, and no damaged byte ever reads as a different record.

use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use sync_wal::{RecoveryMode, Wal, WalConfig, WalError, WalRecord};

use crate::{TestResult, appending_config, config, read_all, record, segment_paths};

/// Writes `n` records into one segment; returns the config, the segment path
/// and the end offset of every frame.
fn one_segment_log(dir: &Path, n: u64) -> Result<(WalConfig, PathBuf, Vec<u64>), WalError> {
    let cfg = appending_config(dir);
    let wal = Wal::open(cfg.clone())?;
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
    Ok((cfg, path, ends))
}

fn records(wal: &Wal) -> Result<Vec<WalRecord>, WalError> {
    Ok(read_all(wal)?.into_iter().map(|(_, r)| r).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn truncation_at_any_byte_keeps_exactly_the_complete_prefix(n in 1u64..12, cut in any::<prop::sample::Index>()) {
        let dir = tempfile::tempdir()?;
        let (cfg, path, ends) = one_segment_log(dir.path(), n)?;
        let total = *ends.last().unwrap_or(&24);
        let cut = 24 + cut.index(usize::try_from(total - 24 + 1)?) as u64;
        fs::OpenOptions::new().write(true).open(&path)?.set_len(cut)?;

        let wal = Wal::open(cfg.clone())?;
        let complete = ends.iter().filter(|&&end| end <= cut).count() as u64;
        prop_assert_eq!(records(&wal)?, (0..complete).map(record).collect::<Vec<_>>());
        prop_assert_eq!(wal.next_lsn(), complete);
        // The cut is on disk, and appends continue after the last good record.
        let good_len = ends.iter().copied().filter(|&end| end <= cut).max().unwrap_or(24);
        prop_assert_eq!(fs::metadata(&path)?.len(), good_len);
        prop_assert_eq!(wal.append(&record(complete))?, complete);
        drop(wal);
        let wal = Wal::open(cfg)?;
        prop_assert_eq!(records(&wal)?, (0..=complete).map(record).collect::<Vec<_>>());
    }

    #[test]
    fn a_flipped_byte_is_refused_or_cut_never_misread(n in 1u64..10, at in any::<prop::sample::Index>(), mask in 1u8..=255) {
        let dir = tempfile::tempdir()?;
        let (cfg, path, ends) = one_segment_log(dir.path(), n)?;
        let mut bytes = fs::read(&path)?;
        let at = at.index(bytes.len());
        bytes[at] ^= mask;
        fs::write(&path, &bytes)?;

        match Wal::open(cfg) {
            Ok(wal) => {
                // Only a flip in the last frame may be cut as a torn tail.
                let got = records(&wal)?;
                let last_frame_start = if n >= 2 { ends[ends.len() - 2] } else { 24 };
                prop_assert!(at as u64 >= last_frame_start, "flip at {} before the last frame was not refused", at);
                prop_assert_eq!(got, (0..n - 1).map(record).collect::<Vec<_>>());
            }
            Err(WalError::Corrupt { segment, .. }) => {
                prop_assert_eq!(segment, path.clone());
                prop_assert_eq!(fs::read(&path)?, bytes, "a refused segment is left untouched");
            }
            Err(WalError::BadMagic { .. } | WalError::UnsupportedVersion { .. }) => prop_assert!(at < 24),
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }
}

#[test]
fn zeros_after_the_last_frame_are_a_torn_tail() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (cfg, path, ends) = one_segment_log(dir.path(), 5)?;
    let mut file = fs::OpenOptions::new().append(true).open(&path)?;
    std::io::Write::write_all(&mut file, &[0u8; 4096])?;
    drop(file);
    let wal = Wal::open(cfg)?;
    assert_eq!(records(&wal)?, (0..5).map(record).collect::<Vec<_>>());
    assert_eq!(fs::metadata(&path)?.len(), ends[4]);
    Ok(())
}

#[test]
fn damage_followed_by_valid_frames_is_corruption_and_untouched() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (cfg, path, ends) = one_segment_log(dir.path(), 6)?;
    let mut bytes = fs::read(&path)?;
    let second_frame = usize::try_from(ends[0])?;
    bytes[second_frame + 10] ^= 0x40; // inside the body of frame 1
    fs::write(&path, &bytes)?;
    match Wal::open(cfg) {
        Err(WalError::Corrupt {
            segment, offset, ..
        }) => {
            assert_eq!(segment, path);
            assert_eq!(offset, ends[0]);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    assert_eq!(fs::read(&path)?, bytes);
    Ok(())
}

#[test]
fn strict_mode_refuses_a_torn_tail() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (mut cfg, path, ends) = one_segment_log(dir.path(), 4)?;
    fs::OpenOptions::new()
        .write(true)
        .open(&path)?
        .set_len(ends[3] - 3)?;
    let bytes = fs::read(&path)?;
    cfg.recovery = RecoveryMode::Strict;
    match Wal::open(cfg.clone()) {
        Err(WalError::Corrupt { offset, .. }) => assert_eq!(offset, ends[2]),
        other => panic!("expected corruption, got {other:?}"),
    }
    assert_eq!(fs::read(&path)?, bytes);
    // The same log opens under the default mode, minus the torn record.
    cfg.recovery = RecoveryMode::TolerateTornTail;
    assert_eq!(
        records(&Wal::open(cfg)?)?,
        (0..3).map(record).collect::<Vec<_>>()
    );
    Ok(())
}

#[test]
fn damage_in_an_older_segment_is_reported_on_read() -> TestResult {
    let dir = tempfile::tempdir()?;
    // Appending: the file's last byte is its last frame's.
    let mut cfg = appending_config(dir.path());
    cfg.segment_bytes = 200;
    let wal = Wal::open(cfg.clone())?;
    for n in 0..20 {
        wal.append(&record(n))?;
    }
    drop(wal);
    let first = segment_paths(dir.path()).remove(0);
    let mut bytes = fs::read(&first)?;
    let last = bytes.len() - 1;
    bytes[last] ^= 1; // the last frame of a sealed segment is not a torn tail
    fs::write(&first, &bytes)?;
    let wal = Wal::open(cfg)?;
    match read_all(&wal) {
        Err(WalError::Corrupt { segment, .. }) => assert_eq!(segment, first),
        other => panic!("expected corruption, got {other:?}"),
    }
    Ok(())
}

#[test]
fn a_missing_middle_segment_is_an_lsn_gap() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    cfg.segment_bytes = 150;
    let wal = Wal::open(cfg.clone())?;
    for n in 0..30 {
        wal.append(&record(n))?;
    }
    drop(wal);
    let paths = segment_paths(dir.path());
    assert!(paths.len() >= 3);
    fs::remove_file(&paths[1])?;
    let wal = Wal::open(cfg)?;
    let error = read_all(&wal).err();
    assert!(
        matches!(
            error,
            Some(WalError::Corrupt {
                reason: sync_wal::Corruption::LsnGap { .. },
                ..
            })
        ),
        "{error:?}"
    );
    Ok(())
}
