//! Test doubles of [`Storage`] (feature `testing`): [`FaultyStorage`] fails
//! one chosen call the way a full disk or a dying device does, and
//! [`CrashStorage`] models power loss, keeping only what was synced. Used by
//! this crate's tests and by the tests of the stores built on it.
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use sync_wal::testing::CrashStorage;
//! use sync_wal::{RecordType, SyncPolicy, Wal, WalConfig, WalRecord};
//!
//! let dir = tempfile::tempdir()?;
//! let storage = CrashStorage::default();
//! let mut config = WalConfig::new(dir.path());
//! config.sync = SyncPolicy::Always;
//! let wal = Wal::open_with_storage(config.clone(), Arc::new(storage.clone()))?;
//! wal.append(&WalRecord { id: "a".into(), kind: RecordType::Custom(0), ts_ms: 0, payload: vec![] })?;
//! storage.crash(|_unsynced| 0)?; // the power goes out
//! drop(wal);
//! assert_eq!(Wal::open(config)?.next_lsn(), 1, "the synced record survived");
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::storage::{FileStorage, Storage, StorageFile};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28) // ENOSPC: no space left on device
}

/// The one fault a [`FaultyStorage`] injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Every call works.
    None,
    /// Every write from the `n`th on (counting from 0) stores `keep` bytes,
    /// then fails with ENOSPC, until the fault is cleared.
    DiskFullFromWrite {
        /// The first write that fails.
        n: u64,
        /// Bytes of a failing write that reach the file.
        keep: usize,
    },
    /// Like `DiskFullFromWrite`, and cutting the partial write back fails too.
    DiskFullAndStuck {
        /// The first write that fails.
        n: u64,
        /// Bytes of a failing write that reach the file.
        keep: usize,
    },
    /// The `n`th `sync_data` fails with EIO (and only that one).
    SyncFails {
        /// Which sync fails, counting from 0.
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

/// Real files, with one injected fault; clones share the fault.
#[derive(Debug, Clone)]
pub struct FaultyStorage(Arc<FaultState>);

impl FaultyStorage {
    /// A storage that injects `fault`.
    #[must_use]
    pub fn new(fault: Fault) -> Self {
        Self(Arc::new(FaultState {
            fault: Mutex::new(fault),
            writes: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
        }))
    }

    /// The disk has room again; devices work again.
    pub fn clear(&self) {
        self.set(Fault::None);
    }

    /// Injects `fault` from now on.
    pub fn set(&self, fault: Fault) {
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

    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        let n = self.state.writes.fetch_add(1, SeqCst);
        match *lock(&self.state.fault) {
            Fault::DiskFullFromWrite { n: from, keep }
            | Fault::DiskFullAndStuck { n: from, keep }
                if n >= from =>
            {
                self.inner.write_at(
                    bytes.get(..keep.min(bytes.len())).unwrap_or_default(),
                    offset,
                )?;
                Err(enospc())
            }
            _ => self.inner.write_at(bytes, offset),
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

    fn supports_write_at(&self) -> bool {
        FileStorage.supports_write_at()
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(FaultyFile {
            inner: FileStorage.open_write(path)?,
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
#[derive(Clone, Debug)]
struct Durability {
    /// Bytes written.
    len: u64,
    /// Bytes known on disk: the length at the last sync.
    synced_len: u64,
    /// Lowest offset written since the last sync (`len` right after it).
    /// Bytes from here on are what a power loss may tear; the log only
    /// writes at offsets below `synced_len` over zeros it synced there
    /// (a preallocated segment), so a lost overwrite reverts to zeros.
    unsynced_from: u64,
    /// Its directory entry survives (its directory was synced since it was
    /// created or renamed).
    entry_durable: bool,
    /// The durable file this one replaced by a rename not yet made durable:
    /// a power loss brings it back.
    replaced: Option<Vec<u8>>,
}

#[derive(Debug, Default)]
struct CrashState {
    files: HashMap<PathBuf, Durability>,
    crashed: bool,
    /// Storage calls made so far.
    calls: u64,
    /// The call that loses the power, if any.
    crash_at: Option<u64>,
    /// Seed of the torn prefixes of a crash at `crash_at`.
    seed: u64,
}

/// Real files, plus a record of what a power loss would keep.
///
/// [`crash`](Self::crash), or the call chosen by
/// [`crash_at_call`](Self::crash_at_call), loses the power:
///
/// - every file is cut to what was synced, plus a torn prefix of the rest;
/// - a file whose directory entry was never synced disappears, and a file
///   it replaced by a rename comes back;
/// - every later call fails.
///
/// It assumes what `docs/FORMAT.md` assumes of the disk: unsynced data is
/// lost as a suffix, a sync covers every write before it, a synced
/// directory keeps its entries. A removal whose directory was not synced is
/// taken as done. Clones share the record.
#[derive(Debug, Clone, Default)]
pub struct CrashStorage(Arc<Mutex<CrashState>>);

impl CrashStorage {
    /// A storage that loses the power during its `n`th call (counting from
    /// 1: creates, writes, syncs, renames, removals), tearing unsynced data
    /// at points drawn from `seed`. That call and every later one fail.
    #[must_use]
    pub fn crash_at_call(n: u64, seed: u64) -> Self {
        Self(Arc::new(Mutex::new(CrashState {
            crash_at: Some(n),
            seed: seed | 1,
            ..CrashState::default()
        })))
    }

    /// Storage calls made so far.
    #[must_use]
    pub fn calls(&self) -> u64 {
        lock(&self.0).calls
    }

    /// Whether the power has been lost.
    #[must_use]
    pub fn crashed(&self) -> bool {
        lock(&self.0).crashed
    }

    /// Power loss now. `torn(unsynced)` picks how many of a file's unsynced
    /// bytes reached the disk anyway (a prefix).
    ///
    /// # Errors
    ///
    /// The file system's, while cutting, restoring or removing files.
    pub fn crash(&self, torn: impl FnMut(u64) -> u64) -> io::Result<()> {
        let mut state = lock(&self.0);
        lose_power(&mut state, torn)
    }

    /// Counts a call; fails it if the power is off or goes off now.
    fn enter(&self) -> io::Result<MutexGuard<'_, CrashState>> {
        let mut state = lock(&self.0);
        if state.crashed {
            return Err(io::Error::other("the power is off"));
        }
        state.calls += 1;
        if state.crash_at == Some(state.calls) {
            let mut rng = state.seed;
            lose_power(&mut state, |unsynced| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % (unsynced + 1)
            })?;
            return Err(io::Error::other("the power went off"));
        }
        Ok(state)
    }
}

fn lose_power(state: &mut CrashState, mut torn: impl FnMut(u64) -> u64) -> io::Result<()> {
    state.crashed = true;
    for (path, file) in &state.files {
        if file.entry_durable {
            if path.exists() {
                let from = file.unsynced_from.min(file.synced_len);
                let unsynced = file.len.saturating_sub(from);
                let keep = from + torn(unsynced).min(unsynced);
                let handle = std::fs::OpenOptions::new().write(true).open(path)?;
                // Lost overwrites of synced zeros are zeros again.
                let zeros = file.synced_len.min(file.len).saturating_sub(keep);
                if zeros > 0 {
                    let zeros = vec![0u8; usize::try_from(zeros).unwrap_or(usize::MAX)];
                    let mut handle = &handle;
                    io::Seek::seek(&mut handle, io::SeekFrom::Start(keep))?;
                    io::Write::write_all(&mut handle, &zeros)?;
                }
                handle.set_len(keep.max(file.synced_len.min(file.len)))?;
            }
        } else if let Some(old) = &file.replaced {
            std::fs::write(path, old)?;
        } else if path.exists() {
            std::fs::remove_file(path)?;
        }
    }
    Ok(())
}

/// A file written through a [`CrashStorage`].
#[derive(Debug)]
struct CrashFile {
    inner: Box<dyn StorageFile>,
    path: PathBuf,
    storage: CrashStorage,
}

impl StorageFile for CrashFile {
    fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.storage.enter()?;
        self.inner.write_all(bytes)?;
        if let Some(file) = state.files.get_mut(&self.path) {
            file.unsynced_from = file.unsynced_from.min(file.len);
            file.len += bytes.len() as u64;
        }
        Ok(())
    }

    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        let mut state = self.storage.enter()?;
        self.inner.write_at(bytes, offset)?;
        if let Some(file) = state.files.get_mut(&self.path) {
            file.unsynced_from = file.unsynced_from.min(offset);
            file.len = file.len.max(offset + bytes.len() as u64);
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.storage.enter()?;
        self.inner.sync_data()?;
        if let Some(file) = state.files.get_mut(&self.path) {
            file.synced_len = file.len;
            file.unsynced_from = file.len;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.storage.enter()?;
        self.inner.set_len(len)?;
        if let Some(file) = state.files.get_mut(&self.path) {
            file.len = len;
            file.synced_len = file.synced_len.min(len);
            file.unsynced_from = file.unsynced_from.min(len);
        }
        Ok(())
    }
}

impl CrashStorage {
    /// Tracks an existing file opened for writing.
    fn open_existing(
        &self,
        path: &Path,
        inner: Box<dyn StorageFile>,
    ) -> io::Result<Box<dyn StorageFile>> {
        let mut state = self.enter()?;
        let len = std::fs::metadata(path)?.len();
        // A file from before this storage existed is on disk already.
        state.files.entry(path.to_path_buf()).or_insert(Durability {
            len,
            synced_len: len,
            unsynced_from: len,
            entry_durable: true,
            replaced: None,
        });
        Ok(Box::new(CrashFile {
            inner,
            path: path.to_path_buf(),
            storage: self.clone(),
        }))
    }
}

impl Storage for CrashStorage {
    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let mut state = self.enter()?;
        let inner = FileStorage.create(path)?;
        state.files.insert(
            path.to_path_buf(),
            Durability {
                len: 0,
                synced_len: 0,
                unsynced_from: 0,
                entry_durable: false,
                replaced: None,
            },
        );
        Ok(Box::new(CrashFile {
            inner,
            path: path.to_path_buf(),
            storage: self.clone(),
        }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let inner = FileStorage.open_append(path)?;
        self.open_existing(path, inner)
    }

    fn supports_write_at(&self) -> bool {
        FileStorage.supports_write_at()
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let inner = FileStorage.open_write(path)?;
        self.open_existing(path, inner)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.enter()?;
        // What a power loss before the next directory sync brings back.
        let replaced = match state.files.get(to) {
            Some(old) if old.entry_durable => {
                let mut bytes = std::fs::read(to)?;
                bytes.truncate(usize::try_from(old.synced_len).unwrap_or(usize::MAX));
                Some(bytes)
            }
            Some(old) => old.replaced.clone(),
            None => std::fs::read(to).ok(),
        };
        FileStorage.rename(from, to)?;
        if let Some(mut file) = state.files.remove(from) {
            file.entry_durable = false;
            file.replaced = replaced;
            state.files.insert(to.to_path_buf(), file);
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.enter()?;
        FileStorage.remove_file(path)?;
        state.files.remove(path);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.enter()?;
        FileStorage.sync_dir(dir)?;
        for (path, file) in &mut state.files {
            if path.parent() == Some(dir) {
                file.entry_durable = true;
                file.replaced = None;
            }
        }
        Ok(())
    }
}
