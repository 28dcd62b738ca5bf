//! Guards one process per store (a second open is `Locked`) and owner-only
//! file permissions.

use sync_outbox::OutboxStore;
use sync_outbox::testing::sample;
use sync_store_file::FileStoreError;

use crate::{TestResult, open_json, open_wal};

#[test]
fn a_second_open_is_locked_until_the_first_is_dropped() -> TestResult {
    let dir = tempfile::tempdir()?;
    let json = open_json(dir.path())?;
    assert!(matches!(
        open_json(dir.path()),
        Err(FileStoreError::Locked { .. })
    ));
    drop(json);
    open_json(dir.path())?;

    let wal = open_wal(dir.path())?;
    assert!(matches!(
        open_wal(dir.path()),
        Err(FileStoreError::Locked { path, .. }) if path == dir.path().join("outbox-wal")
    ));
    drop(wal);
    open_wal(dir.path())?;
    Ok(())
}

#[cfg(unix)]
#[test]
fn files_are_private_to_the_owner() -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    let json = open_json(dir.path())?;
    json.put(&sample("a", 1, 1))?;
    let wal = open_wal(dir.path())?;
    wal.put(&sample("a", 1, 1))?;
    wal.compact()?;
    for path in [
        dir.path().join("outbox.json"),
        dir.path().join("outbox.json.lock"),
        dir.path().join("outbox-wal/snapshot"),
        dir.path().join("outbox-wal/log/00000000000000000000.wal"),
    ] {
        let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    Ok(())
}
