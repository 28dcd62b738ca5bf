//! File-system helpers shared by both stores: owner-only files, the sibling
//! lock, atomic replace (temp, sync, rename, directory fsync).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use sync_wal::Storage;

use crate::error::{StoreError, io_error};

/// Options that create files readable by the owner only (0600 on unix).
pub(crate) fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

/// Takes an exclusive lock on `lock_path` for as long as the returned file lives.
pub(crate) fn lock_file(lock_path: &Path, store_path: &Path) -> Result<File, StoreError> {
    let file = private_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock_path)
        .map_err(|e| io_error("open lock file", lock_path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked {
            path: store_path.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(io_error("lock", lock_path, e)),
    }
}

/// Takes a shared lock on `lock_path`, if it exists, for as long as the
/// returned file lives; creates nothing. No lock file means no store was
/// ever opened there.
pub(crate) fn lock_file_shared(
    lock_path: &Path,
    store_path: &Path,
) -> Result<Option<File>, StoreError> {
    let file = match File::open(lock_path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("open lock file", lock_path, e)),
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked {
            path: store_path.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(io_error("lock", lock_path, e)),
    }
}

/// Replaces `path` with `bytes` so that a crash at any moment leaves either
/// the old or the new file: write a temp file beside it, `sync_data`, rename
/// over, fsync the directory, each through `storage`. Durable (survives
/// power loss) on `Ok`.
pub(crate) fn replace_atomically(
    storage: &dyn Storage,
    path: &Path,
    bytes: &[u8],
) -> Result<(), StoreError> {
    let temp = temp_path(path);
    let file = storage
        .create(&temp)
        .map_err(|e| io_error("create temp file", &temp, e))?;
    file.write_all(bytes)
        .map_err(|e| io_error("write temp file", &temp, e))?;
    file.sync_data()
        .map_err(|e| io_error("sync temp file", &temp, e))?;
    drop(file);
    storage
        .rename(&temp, path)
        .map_err(|e| io_error("rename temp file over", path, e))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    storage
        .sync_dir(dir)
        .map_err(|e| io_error("fsync directory", dir, e))
}

/// The temp file `replace_atomically` writes before renaming.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    sibling_path(path, ".tmp")
}

/// `<file><suffix>`, in the same directory as `path`.
pub(crate) fn sibling_path(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path
        .file_name()
        .map(std::ffi::OsStr::to_os_string)
        .unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}
