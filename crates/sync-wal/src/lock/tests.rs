//! The lock guard: one exclusive holder, named to whoever is refused;
//! shared readers beside each other but not beside a writer; released on
//! drop; no file created by a reader.

use super::LockedFile;
use crate::error::WalError;

#[test]
fn a_refused_opener_learns_who_holds_the_lock() -> Result<(), WalError> {
    let dir = tempfile::tempdir().map_err(|e| crate::file::io_error("tempdir", "", e))?;
    let path = dir.path().join("LOCK");
    let held = LockedFile::exclusive(&path)?;
    for attempt in [
        LockedFile::exclusive(&path).map(drop),
        LockedFile::shared(&path).map(drop),
    ] {
        match attempt {
            Err(WalError::Locked { holder, path: p }) => {
                assert_eq!(p, path);
                assert!(
                    holder.starts_with(&format!("pid {} (", std::process::id())),
                    "{holder}"
                );
            }
            other => panic!("the lock was taken twice: {other:?}"),
        }
    }
    drop(held);
    let first = LockedFile::shared(&path)?;
    let second = LockedFile::shared(&path)?;
    assert!(first.is_some() && second.is_some(), "readers share");
    assert!(matches!(
        LockedFile::exclusive(&path),
        Err(WalError::Locked { .. })
    ));
    drop((first, second));
    assert!(LockedFile::shared(&dir.path().join("none"))?.is_none());
    assert!(
        !dir.path().join("none").exists(),
        "a reader creates nothing"
    );
    Ok(())
}
