//! [`FileDownloadState`]: a device's place in the server's change feed, in
//! a small JSON file beside a WAL or JSON store, replaced atomically.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use sync_outbox::OutboxError;
use sync_outbox::download::{DownloadState, DownloadStateStore};
use sync_wal::{FileStorage, LockedFile, Storage};

use crate::error::{FileStoreError, io_error};
use crate::file::{lock_file, replace_atomically, sibling_path};

/// The download state ([`DownloadState`]: the pull cursor, `covers_below`,
/// the held changes) in one JSON file, for an app whose data lives beside a
/// [`WalOutboxStore`](crate::WalOutboxStore) or
/// [`JsonOutboxStore`](crate::JsonOutboxStore). Use it with
/// [`AppDownload`](sync_outbox::download::AppDownload).
///
/// Every [`save`](DownloadStateStore::save) replaces the file atomically
/// (temp file, `sync_data`, rename, directory fsync): durable against power
/// loss on `Ok`, and a crash leaves the old state or the new one. It is
/// saved after the app's apply returns, so a crash between the two applies
/// the page again: the app's apply must be idempotent (see
/// [`ApplyChanges`](sync_outbox::download::ApplyChanges)). A file that is not
/// a download state is refused (a typed error naming it), never overwritten.
/// Held by one process at a time (a `.lock` beside it).
///
/// # Examples
///
/// ```
/// use sync_outbox::download::{DownloadState, DownloadStateStore};
/// use sync_store_file::FileDownloadState;
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("download.json");
/// let file = FileDownloadState::open(&path)?;
/// assert_eq!(file.load()?, DownloadState::default());
/// file.save(&DownloadState { cursor: Some("c1".into()), ..DownloadState::default() })?;
/// drop(file);
/// assert_eq!(FileDownloadState::open(&path)?.load()?.cursor.as_deref(), Some("c1"));
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
pub struct FileDownloadState {
    path: PathBuf,
    storage: Arc<dyn Storage>,
    state: Mutex<DownloadState>,
    _lock: LockedFile,
}

impl std::fmt::Debug for FileDownloadState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileDownloadState")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl FileDownloadState {
    /// Opens the state at `path` (none yet: the default state, nothing
    /// written until the first save).
    ///
    /// # Errors
    ///
    /// [`FileStoreError::Locked`] if another process holds it;
    /// [`FileStoreError::Corrupt`] if the file is not a download state (it
    /// is left as it is); [`FileStoreError::Io`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, FileStoreError> {
        let path = path.as_ref().to_path_buf();
        let lock = lock_file(&sibling_path(&path, ".lock"), &path)?;
        let state = read(&path)?;
        Ok(Self {
            path,
            storage: Arc::new(FileStorage),
            state: Mutex::new(state),
            _lock: lock,
        })
    }

    /// Reads the state at `path` without taking it, beside a running app:
    /// for `synctl`. The default state if there is no file.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open), but for `Locked`.
    pub fn read_only(path: impl AsRef<Path>) -> Result<DownloadState, FileStoreError> {
        read(path.as_ref())
    }

    /// The file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The state in `path`, or the default one if there is none.
fn read(path: &Path) -> Result<DownloadState, FileStoreError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| FileStoreError::Corrupt {
            path: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
            reason: format!("not a download state: {e}"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DownloadState::default()),
        Err(e) => Err(io_error("read", path, e)),
    }
}

impl DownloadStateStore for FileDownloadState {
    fn load(&self) -> Result<DownloadState, OutboxError> {
        Ok(self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone())
    }

    fn save(&self, state: &DownloadState) -> Result<(), OutboxError> {
        let mut current = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let bytes = serde_json::to_vec(state).map_err(OutboxError::store)?;
        replace_atomically(&*self.storage, &self.path, &bytes).map_err(OutboxError::store)?;
        *current = state.clone();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
