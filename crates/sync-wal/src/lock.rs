//! [`LockedFile`]: the one lock-file guard of the workspace. The log, every
//! store and `synctl` take their locks through it, so a lock that cannot be
//! taken always says who holds it.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::WalError;
use crate::file::{io_error, private_options};

/// An advisory lock on a file (`File::try_lock`), held until the value is
/// dropped.
///
/// An exclusive lock writes its holder into the file (`pid 4242
/// (notes-app)`), so an opener that finds it taken can name the process in
/// [`WalError::Locked`]: what to close, not just "locked". Shared locks, taken
/// by readers beside a running application, write nothing.
///
/// # Examples
///
/// ```
/// use sync_wal::{LockedFile, WalError};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("store.lock");
/// let held = LockedFile::exclusive(&path)?;
/// match LockedFile::exclusive(&path) {
///     Err(WalError::Locked { holder, .. }) => assert!(holder.starts_with("pid ")),
///     other => panic!("a second lock was taken: {other:?}"),
/// }
/// drop(held);
/// assert!(LockedFile::exclusive(&path).is_ok(), "released on drop");
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct LockedFile {
    path: PathBuf,
    _file: File,
}

impl LockedFile {
    /// Takes an exclusive lock on `path`, creating the file (mode 0600) if
    /// needed, and writes this process as its holder.
    ///
    /// # Errors
    ///
    /// [`WalError::Locked`] (with the holder) if another handle, in this
    /// process or another, holds it; [`WalError::Io`] if the file cannot be
    /// opened or locked.
    pub fn exclusive(path: &Path) -> Result<Self, WalError> {
        let mut file = private_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io_error("open lock file", path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(held(&mut file, path)),
            Err(std::fs::TryLockError::Error(e)) => return Err(io_error("lock", path, e)),
        }
        // Who holds it, for whoever is refused next. Best effort: the lock
        // holds whether or not this is written.
        let _ = file
            .set_len(0)
            .and_then(|()| file.write_all(holder_of_this_process().as_bytes()));
        Ok(Self {
            path: path.to_path_buf(),
            _file: file,
        })
    }

    /// Takes a shared lock on `path` if the file exists; `Ok(None)` if it
    /// does not (no writer ever locked it). Creates and writes nothing.
    ///
    /// # Errors
    ///
    /// [`WalError::Locked`] (with the holder) if a writer holds it
    /// exclusively; [`WalError::Io`] if it cannot be opened or locked.
    pub fn shared(path: &Path) -> Result<Option<Self>, WalError> {
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("open lock file", path, e)),
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(Some(Self {
                path: path.to_path_buf(),
                _file: file,
            })),
            Err(std::fs::TryLockError::WouldBlock) => Err(held(&mut file, path)),
            Err(std::fs::TryLockError::Error(e)) => Err(io_error("lock", path, e)),
        }
    }

    /// The lock file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The error for a lock someone else holds, naming them if they said who
/// they are.
fn held(file: &mut File, path: &Path) -> WalError {
    let mut text = String::new();
    let _ = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| file.take(200).read_to_string(&mut text));
    let holder = text.trim();
    WalError::Locked {
        path: path.to_path_buf(),
        holder: if holder.is_empty() || !holder.is_ascii() {
            "another process".to_owned()
        } else {
            holder.to_owned()
        },
    }
}

/// `pid 4242 (notes-app)`.
fn holder_of_this_process() -> String {
    let program = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "unknown program".to_owned());
    format!("pid {} ({program})", std::process::id())
}

#[cfg(test)]
mod tests;
