//! Test doubles of `sync_wal::Storage`: `FaultyStorage` fails one chosen
//! call the way a full disk or a dying device does, and `CrashStorage`
//! models power loss, keeping only what was synced.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use sync_wal::{FileStorage, Storage, StorageFile};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28) // ENOSPC: no space left on device
}

/// The one fault a `FaultyStorage` injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    None,
    /// Every write from the `n`th on (counting from 0) stores `keep` bytes,
    /// then fails with ENOSPC, until the fault is cleared.
    DiskFullFromWrite {
        n: u64,
        keep: usize,
    },
    /// Like `DiskFullFromWrite`, and cutting the partial write back fails too.
    DiskFullAndStuck {
        n: u64,
        keep: usize,
    },
    /// The `n`th `sync_data` fails with EIO (and only that one).
    SyncFails {
        n: u64,
    },
    /// Creating a file fails with ENOSPC.
    CreateFails,
    /// Renaming fails with EIO.
    RenameFails,
    /// Removing a file fails with EIO.
    RemoveFails,
}

#[derive(Debug)]
struct FaultState {
    fault: Mutex<Fault>,
    writes: AtomicU64,
    syncs: AtomicU64,
}

/// Real files, with one injected fault.
#[derive(Debug, Clone)]
pub(crate) struct FaultyStorage(Arc<FaultState>);

impl FaultyStorage {
    pub(crate) fn new(fault: Fault) -> Self {
        Self(Arc::new(FaultState {
            fault: Mutex::new(fault),
            writes: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
        }))
    }

    /// The disk has room again; devices work again.
    pub(crate) fn clear(&self) {
        self.set(Fault::None);
    }

    /// Injects `fault` from now on.
    pub(crate) fn set(&self, fault: Fault) {
        *lock(&self.0.fault) = fault;
    }

    fn fault(&self) -> Fault {
        *lock(&self.0.fault)
    }
}

#[derive(Debug)]
struct FaultyFile {
    inner: Box<dyn StorageFile>,
    state: Arc<FaultState>,
}

impl StorageFile for FaultyFile {
    fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        let n = self.state.writes.fetch_add(1, SeqCst);
        match *lock(&self.state.fault) {
            Fault::DiskFullFromWrite { n: from, keep }
            | Fault::DiskFullAndStuck { n: from, keep }
                if n >= from =>
            {
                self.inner
                    .write_all(bytes.get(..keep.min(bytes.len())).unwrap_or_default())?;
                Err(enospc())
            }
            _ => self.inner.write_all(bytes),
        }
    }

    fn sync_data(&self) -> io::Result<()> {
        let n = self.state.syncs.fetch_add(1, SeqCst);
        if *lock(&self.state.fault) == (Fault::SyncFails { n }) {
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
        self.inner.sync_data()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        if matches!(*lock(&self.state.fault), Fault::DiskFullAndStuck { .. }) {
            return Err(io::Error::from_raw_os_error(5));
        }
        self.inner.set_len(len)
    }
}

impl Storage for FaultyStorage {
    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        if self.fault() == Fault::CreateFails {
            return Err(enospc());
        }
        Ok(Box::new(FaultyFile {
            inner: FileStorage.create(path)?,
            state: Arc::clone(&self.0),
        }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(FaultyFile {
            inner: FileStorage.open_append(path)?,
            state: Arc::clone(&self.0),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        if self.fault() == Fault::RenameFails {
            return Err(io::Error::from_raw_os_error(5));
        }
        FileStorage.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        if self.fault() == Fault::RemoveFails {
            return Err(io::Error::from_raw_os_error(5));
        }
        FileStorage.remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        FileStorage.sync_dir(dir)
    }
}

/// What the disk holds of one file, as far as power loss is concerned.
#[derive(Clone, Copy, Debug)]
struct Durability {
    /// Bytes written.
    len: u64,
    /// Bytes known on disk: the length at the last sync.
    synced_len: u64,
    /// Its directory entry survives (its directory was synced since it was
    /// created or renamed).
    entry_durable: bool,
}

#[derive(Debug, Default)]
struct CrashState {
    files: HashMap<PathBuf, Durability>,
    crashed: bool,
}

/// Real files, plus a record of what a power loss would keep. `crash` cuts
/// every file to what was synced plus a torn prefix of the rest, deletes
/// files whose directory entry was never synced, and fails every later call.
#[derive(Debug, Clone, Default)]
pub(crate) struct CrashStorage(Arc<Mutex<CrashState>>);

impl CrashStorage {
    /// Power loss. `torn(unsynced)` picks how many of a file's unsynced bytes
    /// reached the disk anyway (a prefix).
    pub(crate) fn crash(&self, mut torn: impl FnMut(u64) -> u64) -> io::Result<()> {
        let mut state = lock(&self.0);
        state.crashed = true;
        for (path, file) in &state.files {
            if !path.exists() {
                continue;
            }
            if file.entry_durable {
                let keep = file.synced_len
                    + torn(file.len - file.synced_len).min(file.len - file.synced_len);
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)?
                    .set_len(keep)?;
            } else {
                std::fs::remove_file(path)?;
            }
        }
        Ok(())
    }

    fn check(&self) -> io::Result<MutexGuard<'_, CrashState>> {
        let state = lock(&self.0);
        if state.crashed {
            Err(io::Error::other("the power is off"))
        } else {
            Ok(state)
        }
    }
}

#[derive(Debug)]
struct CrashFile {
    inner: Box<dyn StorageFile>,
    path: PathBuf,
    storage: CrashStorage,
}

impl StorageFile for CrashFile {
    fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.storage.check()?;
        self.inner.write_all(bytes)?;
        if let Some(file) = state.files.get_mut(&self.path) {
            file.len += bytes.len() as u64;
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.storage.check()?;
        self.inner.sync_data()?;
        if let Some(file) = state.files.get_mut(&self.path) {
            file.synced_len = file.len;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.storage.check()?;
        self.inner.set_len(len)?;
        if let Some(file) = state.files.get_mut(&self.path) {
            file.len = len;
            file.synced_len = file.synced_len.min(len);
        }
        Ok(())
    }
}

impl Storage for CrashStorage {
    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let mut state = self.check()?;
        let inner = FileStorage.create(path)?;
        state.files.insert(
            path.to_path_buf(),
            Durability {
                len: 0,
                synced_len: 0,
                entry_durable: false,
            },
        );
        Ok(Box::new(CrashFile {
            inner,
            path: path.to_path_buf(),
            storage: self.clone(),
        }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let mut state = self.check()?;
        let inner = FileStorage.open_append(path)?;
        let len = std::fs::metadata(path)?.len();
        // A file from before this storage existed is on disk already.
        state.files.entry(path.to_path_buf()).or_insert(Durability {
            len,
            synced_len: len,
            entry_durable: true,
        });
        Ok(Box::new(CrashFile {
            inner,
            path: path.to_path_buf(),
            storage: self.clone(),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.check()?;
        FileStorage.rename(from, to)?;
        if let Some(mut file) = state.files.remove(from) {
            file.entry_durable = false;
            state.files.insert(to.to_path_buf(), file);
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.check()?;
        FileStorage.remove_file(path)?;
        state.files.remove(path);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.check()?;
        FileStorage.sync_dir(dir)?;
        for (path, file) in &mut state.files {
            if path.parent() == Some(dir) {
                file.entry_durable = true;
            }
        }
        Ok(())
    }
}
