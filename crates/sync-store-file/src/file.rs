//! File-system helpers shared by both stores: the sibling lock (through
//! `sync_wal::LockedFile`), atomic replace (temp, sync, rename, directory
//! fsync).

use std::path::{Path, PathBuf};

use sync_wal::{LockedFile, Storage, WalError};

use crate::error::{FileStoreError, io_error};

/// Takes an exclusive lock on `lock_path` for as long as the returned guard
/// lives; refused as `FileStoreError::Locked` naming `store_path` and the holder.
pub(crate) fn lock_file(lock_path: &Path, store_path: &Path) -> Result<LockedFile, FileStoreError> {
    LockedFile::exclusive(lock_path).map_err(|e| locked(e, store_path))
}

/// Takes a shared lock on `lock_path`, if it exists, for as long as the
/// returned guard lives; creates nothing. No lock file means no store was
/// ever opened there.
pub(crate) fn lock_file_shared(
    lock_path: &Path,
    store_path: &Path,
) -> Result<Option<LockedFile>, FileStoreError> {
    LockedFile::shared(lock_path).map_err(|e| locked(e, store_path))
}

/// A lock error said of the store.
pub(crate) fn locked(error: WalError, store_path: &Path) -> FileStoreError {
    match error {
        WalError::Locked { holder, .. } => FileStoreError::Locked {
            path: store_path.to_path_buf(),
            holder,
        },
        other => FileStoreError::Wal(other),
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
) -> Result<(), FileStoreError> {
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
