//! [`Storage`]: every write, sync, rename and removal a log makes, behind a
//! small trait, so tests can inject faults (a full disk, a failing fsync) and
//! model power loss. [`FileStorage`] is the real file system.
//!
//! Reads do not go through it: recovery and readers open segment files
//! directly, so a test double that models a crash must leave on disk what
//! the crash would have left.

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// Where a log's writes go. [`FileStorage`] is the file system; implement
/// it to inject faults or to model a crash.
///
/// # Examples
///
/// A storage whose fsyncs all fail: the append that needs one reports the
/// failure and poisons the log.
///
/// ```
/// use std::io;
/// use std::path::Path;
/// use std::sync::Arc;
/// use sync_wal::{FileStorage, RecordType, Storage, StorageFile, SyncPolicy, Wal, WalConfig, WalError, WalRecord};
///
/// #[derive(Debug)]
/// struct NoSync(FileStorage);
/// #[derive(Debug)]
/// struct NoSyncFile(Box<dyn StorageFile>);
///
/// impl StorageFile for NoSyncFile {
///     fn write_all(&self, bytes: &[u8]) -> io::Result<()> { self.0.write_all(bytes) }
///     fn sync_data(&self) -> io::Result<()> { Err(io::Error::other("injected")) }
///     fn set_len(&self, len: u64) -> io::Result<()> { self.0.set_len(len) }
/// }
///
/// impl Storage for NoSync {
///     fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
///         // The new segment's header must be synced; let it through.
///         self.0.create(path)
///     }
///     fn open_append(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
///         Ok(Box::new(NoSyncFile(self.0.open_append(path)?)))
///     }
///     fn rename(&self, from: &Path, to: &Path) -> io::Result<()> { self.0.rename(from, to) }
///     fn remove_file(&self, path: &Path) -> io::Result<()> { self.0.remove_file(path) }
///     fn sync_dir(&self, dir: &Path) -> io::Result<()> { self.0.sync_dir(dir) }
/// }
///
/// let dir = tempfile::tempdir()?;
/// let mut config = WalConfig::new(dir.path());
/// config.sync = SyncPolicy::Always;
/// let wal = Wal::open_with_storage(config, Arc::new(NoSync(FileStorage)))?;
/// let record = WalRecord { id: "a".into(), kind: RecordType::Custom(0), ts_ms: 0, payload: vec![] };
/// assert!(matches!(wal.append(&record), Err(WalError::Io { .. })));
/// assert!(matches!(wal.append(&record), Err(WalError::Poisoned)));
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
pub trait Storage: Send + Sync + fmt::Debug {
    /// Creates `path` (mode 0600 on unix), truncating it if it exists, for
    /// writing.
    ///
    /// # Errors
    ///
    /// The file system's.
    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;

    /// Opens the existing `path` so that every write lands at its end.
    ///
    /// # Errors
    ///
    /// The file system's.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;

    /// Whether files of this storage support [`StorageFile::write_at`] and
    /// [`Storage::open_write`]. The log preallocates segments (see
    /// `WalConfig::preallocate_bytes`) only on a storage that does. Default
    /// `false`.
    fn supports_write_at(&self) -> bool {
        false
    }

    /// Opens the existing `path` for writes at given offsets
    /// ([`StorageFile::write_at`]), without truncating it. Called only when
    /// [`supports_write_at`](Self::supports_write_at) is `true`.
    ///
    /// # Errors
    ///
    /// The file system's; the default returns [`io::ErrorKind::Unsupported`].
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let _ = path;
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Renames `from` to `to`, replacing `to`.
    ///
    /// # Errors
    ///
    /// The file system's.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes `path`.
    ///
    /// # Errors
    ///
    /// The file system's.
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Makes the creation, rename or removal of entries in `dir` durable
    /// (an fsync of the directory on unix).
    ///
    /// # Errors
    ///
    /// The file system's.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// A file open for writing through a [`Storage`]. Shared between threads: a
/// group-commit leader syncs while appenders wait.
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// Writes all of `bytes` at the end of the file.
    ///
    /// # Errors
    ///
    /// The file system's; part of `bytes` may have been written.
    fn write_all(&self, bytes: &[u8]) -> io::Result<()>;

    /// Writes all of `bytes` at `offset`, extending the file if they reach
    /// past its end. Used only on files from [`Storage::create`] or
    /// [`Storage::open_write`], when the storage
    /// [`supports_write_at`](Storage::supports_write_at).
    ///
    /// # Errors
    ///
    /// The file system's; part of `bytes` may have been written. The default
    /// returns [`io::ErrorKind::Unsupported`].
    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        let _ = (bytes, offset);
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Forces the file's data (and the size needed to read it) to disk.
    ///
    /// # Errors
    ///
    /// The file system's. The log never retries a failed sync.
    fn sync_data(&self) -> io::Result<()>;

    /// Forces the file's data and all its metadata to disk. Defaults to
    /// [`sync_data`](Self::sync_data).
    ///
    /// # Errors
    ///
    /// The file system's.
    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }

    /// Cuts or extends the file to `len` bytes.
    ///
    /// # Errors
    ///
    /// The file system's.
    fn set_len(&self, len: u64) -> io::Result<()>;
}

/// The real file system: what [`Wal::open`](crate::Wal::open) uses.
#[derive(Clone, Copy, Debug, Default)]
pub struct FileStorage;

impl Storage for FileStorage {
    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let file = crate::file::private_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Box::new(OsFile(file)))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let file = crate::file::private_options().append(true).open(path)?;
        Ok(Box::new(OsFile(file)))
    }

    fn supports_write_at(&self) -> bool {
        cfg!(unix) || cfg!(windows)
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let file = crate::file::private_options().write(true).open(path)?;
        Ok(Box::new(OsFile(file)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        #[cfg(unix)]
        {
            File::open(dir)?.sync_all()
        }
        #[cfg(not(unix))]
        {
            // Directories cannot be opened as files there; the platform's
            // rename is taken as durable.
            let _ = dir;
            Ok(())
        }
    }
}

/// A [`File`] as a [`StorageFile`].
#[derive(Debug)]
struct OsFile(File);

impl StorageFile for OsFile {
    fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        (&self.0).write_all(bytes)
    }

    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        #[cfg(unix)]
        {
            std::os::unix::fs::FileExt::write_all_at(&self.0, bytes, offset)
        }
        #[cfg(windows)]
        {
            let mut written = 0;
            while let Some(rest) = bytes.get(written..).filter(|rest| !rest.is_empty()) {
                let at = offset + written as u64;
                match std::os::windows::fs::FileExt::seek_write(&self.0, rest, at) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => written += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }
        #[cfg(not(any(unix, windows)))]
        {
            let _ = (bytes, offset);
            Err(io::ErrorKind::Unsupported.into())
        }
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}
