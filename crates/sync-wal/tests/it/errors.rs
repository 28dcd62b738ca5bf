//! Guards that bad input and misuse get typed errors naming the file, never a
//! panic and never a change on disk: locks, limits, garbage, empty and foreign
//! files, wrong magic and version.

use std::fs;

use sync_wal::{Corruption, Wal, WalConfig, WalError, WalRecord};

use crate::{TestResult, config, read_all, record, segment_paths};

#[test]
fn a_second_open_of_the_same_directory_is_locked() -> TestResult {
    let dir = tempfile::tempdir()?;
    let wal = Wal::open(config(dir.path()))?;
    match Wal::open(config(dir.path())) {
        Err(WalError::Locked { path: locked, .. }) => assert_eq!(locked, dir.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(wal);
    Wal::open(config(dir.path()))?;
    Ok(())
}

#[test]
fn a_record_over_the_limit_is_refused_and_nothing_written() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    cfg.max_record_bytes = 100;
    let wal = Wal::open(cfg)?;
    let big = WalRecord {
        payload: vec![0; 100],
        ..record(0)
    };
    assert!(matches!(
        wal.append(&big),
        Err(WalError::RecordTooLarge { max: 100, .. })
    ));
    assert!(matches!(
        wal.append_batch(&[record(1), big]),
        Err(WalError::RecordTooLarge { .. })
    ));
    assert_eq!(wal.next_lsn(), 0);
    assert_eq!(read_all(&wal)?.len(), 0);
    assert_eq!(wal.append(&record(2))?, 0);
    Ok(())
}

#[test]
fn a_length_over_the_limit_on_disk_is_corruption() -> TestResult {
    let dir = tempfile::tempdir()?;
    let wal = Wal::open(config(dir.path()))?;
    wal.append(&WalRecord {
        payload: vec![1; 200],
        ..record(0)
    })?;
    wal.append(&record(1))?;
    drop(wal);
    let mut cfg = config(dir.path());
    cfg.max_record_bytes = 100;
    match Wal::open(cfg) {
        Err(WalError::Corrupt {
            offset: 24,
            reason: Corruption::LengthOutOfRange { max: 100, .. },
            ..
        }) => {}
        other => panic!("expected corruption, got {other:?}"),
    }
    Ok(())
}

#[test]
fn garbage_empty_and_foreign_files() -> TestResult {
    // Garbage under a segment's name: not ours, refused, untouched.
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("00000000000000000000.wal");
    fs::write(&path, b"this is not a write-ahead log at all")?;
    assert!(
        matches!(Wal::open(config(dir.path())), Err(WalError::BadMagic { path: p }) if p == path)
    );
    assert_eq!(fs::read(&path)?, b"this is not a write-ahead log at all");

    // An empty segment file has no header: corruption, untouched.
    fs::write(&path, b"")?;
    assert!(matches!(
        Wal::open(config(dir.path())),
        Err(WalError::Corrupt {
            reason: Corruption::TruncatedHeader,
            offset: 0,
            ..
        })
    ));
    assert_eq!(fs::metadata(&path)?.len(), 0);

    // Foreign files are ignored; half-created segments are removed.
    let dir = tempfile::tempdir()?;
    fs::write(dir.path().join(".DS_Store"), b"\0\0\0\x01Bud1")?;
    fs::write(dir.path().join("notes.txt"), b"hello")?;
    fs::write(dir.path().join("123.wal"), b"short name, not ours")?;
    fs::write(dir.path().join("00000000000000000007.wal.tmp"), b"SYNC")?;
    let wal = Wal::open(config(dir.path()))?;
    wal.append(&record(0))?;
    assert!(dir.path().join(".DS_Store").exists());
    assert!(!dir.path().join("00000000000000000007.wal.tmp").exists());
    assert_eq!(read_all(&wal)?.len(), 1);
    Ok(())
}

#[test]
fn wrong_magic_version_and_name_in_a_header() -> TestResult {
    let dir = tempfile::tempdir()?;
    let wal = Wal::open(config(dir.path()))?;
    wal.append(&record(0))?;
    drop(wal);
    let path = segment_paths(dir.path()).remove(0);
    let good = fs::read(&path)?;

    let mut bad = good.clone();
    bad[0] = b'X';
    fs::write(&path, &bad)?;
    assert!(matches!(
        Wal::open(config(dir.path())),
        Err(WalError::BadMagic { .. })
    ));

    let mut bad = good.clone();
    bad[8..12].copy_from_slice(&9u32.to_le_bytes());
    let crc = crc32fast::hash(&bad[0..20]);
    bad[20..24].copy_from_slice(&crc.to_le_bytes());
    fs::write(&path, &bad)?;
    assert!(matches!(
        Wal::open(config(dir.path())),
        Err(WalError::UnsupportedVersion { version: 9, .. })
    ));
    assert_eq!(fs::read(&path)?, bad);

    let mut bad = good.clone();
    bad[12] = 5;
    fs::write(&path, &bad)?;
    assert!(matches!(
        Wal::open(config(dir.path())),
        Err(WalError::Corrupt {
            reason: Corruption::HeaderChecksumMismatch { .. },
            ..
        })
    ));

    // A valid header under the wrong name.
    fs::write(&path, &good)?;
    fs::rename(&path, dir.path().join("00000000000000000003.wal"))?;
    assert!(matches!(
        Wal::open(config(dir.path())),
        Err(WalError::Corrupt {
            reason: Corruption::NameMismatch {
                in_header: 0,
                in_name: 3
            },
            ..
        })
    ));
    Ok(())
}

#[test]
fn unusable_configs_are_refused() {
    let dir = std::env::temp_dir().join("sync-wal-never-created");
    let mut cfg = WalConfig::new(&dir);
    cfg.segment_bytes = 24;
    assert!(matches!(
        Wal::open(cfg),
        Err(WalError::InvalidConfig { .. })
    ));
    let mut cfg = WalConfig::new(&dir);
    cfg.max_record_bytes = 3;
    assert!(matches!(
        Wal::open(cfg),
        Err(WalError::InvalidConfig { .. })
    ));
    let mut cfg = WalConfig::new(&dir);
    cfg.sync = sync_wal::SyncPolicy::Interval(std::time::Duration::ZERO);
    assert!(matches!(
        Wal::open(cfg),
        Err(WalError::InvalidConfig { .. })
    ));
    assert!(!dir.exists());
}

#[test]
fn errors_name_the_file_and_offset() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("00000000000000000000.wal");
    fs::write(&path, b"")?;
    let message = Wal::open(config(dir.path()))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(message.contains("00000000000000000000.wal"), "{message}");
    assert!(message.contains("offset 0"), "{message}");
    Ok(())
}

#[cfg(unix)]
#[test]
fn files_are_private_to_the_owner() -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    cfg.segment_bytes = 100;
    let wal = Wal::open(cfg)?;
    for n in 0..10 {
        wal.append(&record(n))?;
    }
    let mut paths = segment_paths(dir.path());
    paths.push(dir.path().join("LOCK"));
    assert!(paths.len() > 2);
    for path in paths {
        let mode = fs::metadata(&path)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    Ok(())
}
