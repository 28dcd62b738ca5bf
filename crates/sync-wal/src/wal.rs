//! [`Wal`]: the handle that appends, syncs (with group commit), reads and
//! truncates a log directory.

use std::fs;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::WalConfig;
use crate::error::WalError;
use crate::file::{LOCK_FILE, io_error};
use crate::format::{BODY_FIXED_LEN, SEGMENT_HEADER_LEN, encode_frame};
use crate::lock::LockedFile;
use crate::reader::{LogReader, WalIter};
use crate::record::WalRecord;
use crate::recovery::{SealedSegment, allocation, recover};
use crate::segment::SegmentWriter;
use crate::storage::{FileStorage, Storage};
use crate::sync_policy::SyncPolicy;

/// Most yields a group-commit leader makes while waiting for more writes.
const MAX_LINGER_YIELDS: u32 = 16;

/// A write-ahead log in one directory.
///
/// `Wal` is `Send + Sync`: share it as `Arc<Wal>`; every method takes `&self`.
/// Appends are serialized by an internal lock; reads run beside them on their
/// own file handles. One `Wal` per directory at a time, across processes:
/// the handle holds an exclusive lock on the directory's `LOCK` file until it
/// is dropped.
///
/// # Examples
///
/// ```
/// use sync_wal::{RecordType, SyncPolicy, Wal, WalConfig, WalRecord};
///
/// let dir = tempfile::tempdir().expect("a temp dir");
/// let mut config = WalConfig::new(dir.path());
/// config.sync = SyncPolicy::Always;
/// let wal = Wal::open(config)?;
/// let lsn = wal.append(&WalRecord {
///     id: "op_1".into(),
///     kind: RecordType::PutOperation,
///     ts_ms: 1_700_000_000_000,
///     payload: br#"{"kind":"message.send"}"#.to_vec(),
/// })?;
/// assert_eq!(lsn, 0);
///
/// let mut ids = Vec::new();
/// wal.replay(0, |record| ids.push(record.id.clone()))?;
/// assert_eq!(ids, ["op_1"]);
/// # Ok::<_, sync_wal::WalError>(())
/// ```
#[derive(Debug)]
pub struct Wal {
    shared: Arc<Shared>,
    flusher: Option<Flusher>,
}

#[derive(Debug)]
struct Shared {
    config: WalConfig,
    writer: Mutex<Writer>,
    commit: Mutex<CommitState>,
    /// Signalled when a sync finishes (group commit followers wait on it).
    synced: Condvar,
    poisoned: AtomicBool,
    /// `Writer::next_lsn`, readable without the writer lock (for `linger`).
    written_lsn: AtomicU64,
    /// Every write, sync, rename and removal goes through it.
    storage: Arc<dyn Storage>,
    /// Held, never read: the exclusive lock lives as long as this file.
    _lock: LockedFile,
}

/// Everything appends change; behind `Shared::writer`.
#[derive(Debug)]
struct Writer {
    active: SegmentWriter,
    sealed: Vec<SealedSegment>,
    next_lsn: u64,
    /// Encode buffer, reused so an append does not allocate.
    scratch: Vec<u8>,
}

/// Group commit bookkeeping; behind `Shared::commit`.
#[derive(Debug, Default)]
struct CommitState {
    /// Every record with an LSN below this is on disk.
    durable_lsn: u64,
    /// A thread is in `sync_data` right now.
    syncing: bool,
    /// `sync_data` calls made by this handle.
    n_syncs: u64,
    /// Threads waiting on `Shared::synced`: a leader with none to wake
    /// skips the notify, whose futex wake is a syscall even with no waiter
    /// (about 2 us of a lone appender's commit).
    waiters: usize,
}

impl Wal {
    /// Opens (creating if needed) the log in `config.dir` and recovers it as
    /// `config.recovery` says (see `docs/FORMAT.md`, "Recovery on open").
    ///
    /// When this returns `Ok`, every record found is readable, a torn tail, if
    /// any, has been cut off durably, and the next append gets the LSN after
    /// the last record found.
    ///
    /// # Errors
    ///
    /// - [`WalError::Locked`] if another handle holds the directory.
    /// - [`WalError::Corrupt`], [`WalError::BadMagic`],
    ///   [`WalError::UnsupportedVersion`] for damage recovery may not repair;
    ///   nothing is changed on disk then.
    /// - [`WalError::InvalidConfig`] for unusable limits.
    /// - [`WalError::Io`] if the file system fails.
    pub fn open(config: WalConfig) -> Result<Self, WalError> {
        Self::open_with_storage(config, Arc::new(FileStorage))
    }

    /// [`Wal::open`], with every write, sync, rename and removal going
    /// through `storage` instead of straight to the file system: for fault
    /// injection and crash models in tests. Reads and the directory lock
    /// still use the file system.
    ///
    /// # Errors
    ///
    /// As [`Wal::open`].
    pub fn open_with_storage(
        config: WalConfig,
        storage: Arc<dyn Storage>,
    ) -> Result<Self, WalError> {
        validate(&config)?;
        let dir = config.dir.clone();
        if !dir.exists() {
            fs::create_dir_all(&dir).map_err(|e| io_error("create directory", &dir, e))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                storage
                    .sync_dir(parent)
                    .map_err(|e| io_error("fsync directory", parent, e))?;
            }
        }
        let lock = lock_dir(&dir)?;
        let recovered = recover(&config, storage.as_ref())?;
        let next_lsn = recovered.active.first_lsn() + recovered.active.n_frames();
        let shared = Arc::new(Shared {
            writer: Mutex::new(Writer {
                active: recovered.active,
                sealed: recovered.sealed,
                next_lsn,
                scratch: Vec::new(),
            }),
            // What recovery read is what survived: treat it as durable.
            commit: Mutex::new(CommitState {
                durable_lsn: next_lsn,
                ..CommitState::default()
            }),
            synced: Condvar::new(),
            poisoned: AtomicBool::new(false),
            written_lsn: AtomicU64::new(next_lsn),
            storage,
            _lock: lock,
            config,
        });
        let flusher = match shared.config.sync {
            SyncPolicy::Interval(every) => Some(
                Flusher::start(Arc::clone(&shared), every)
                    .map_err(|e| io_error("spawn flusher thread for", &shared.config.dir, e))?,
            ),
            SyncPolicy::Always | SyncPolicy::Never => None,
        };
        Ok(Self { shared, flusher })
    }

    /// Appends one record and returns its LSN.
    ///
    /// Durability on `Ok` follows the configured [`SyncPolicy`]: the frame has
    /// been handed to the OS in one `write` (survives a process crash); under
    /// `Always` it has also been `sync_data`-ed (survives power loss), sharing
    /// the sync with concurrent appenders.
    ///
    /// # Errors
    ///
    /// - [`WalError::RecordTooLarge`] if the body exceeds `max_record_bytes`;
    ///   nothing is written.
    /// - [`WalError::Io`] if the write fails; the partial frame is cut off
    ///   again, and if that fails too the log is poisoned.
    /// - [`WalError::Poisoned`] after an earlier failed sync or unrepaired write.
    pub fn append(&self, record: &WalRecord) -> Result<u64, WalError> {
        self.append_batch(std::slice::from_ref(record))
            .map(|lsns| lsns.start)
    }

    /// Appends records as one `write` and returns their LSNs.
    ///
    /// The batch is acknowledged as a whole, with one sync under
    /// [`SyncPolicy::Always`]. A crash before `Ok` may leave any prefix of the
    /// batch in the log: each frame is checked on its own. An empty batch
    /// writes nothing and returns an empty range at the next LSN.
    ///
    /// # Errors
    ///
    /// As [`Wal::append`]; a record that is too large fails the whole batch
    /// before anything is written.
    pub fn append_batch(&self, records: &[WalRecord]) -> Result<Range<u64>, WalError> {
        let lsns = self.write_batch(records)?;
        if self.shared.config.sync == SyncPolicy::Always && !lsns.is_empty() {
            self.shared.sync_until(lsns.end)?;
        }
        Ok(lsns)
    }

    /// Appends records as one `write`, like [`Wal::append_batch`], but never
    /// waits for a sync, whatever the [`SyncPolicy`].
    ///
    /// Durability on `Ok`: the records survive a process crash (they are in
    /// the OS's hands). They survive power loss once a later synced append,
    /// [`Wal::sync`], or (under `Interval`) the flusher has synced the log:
    /// a sync covers every record before it. Until then a power loss may
    /// drop them, and only together with everything appended after them, so
    /// replay still sees a prefix of the log.
    ///
    /// For records whose loss on power failure is harmless and that are
    /// always followed by a synced record soon, such as a claim that only
    /// counts an attempt.
    ///
    /// # Errors
    ///
    /// As [`Wal::append_batch`].
    pub fn append_batch_unsynced(&self, records: &[WalRecord]) -> Result<Range<u64>, WalError> {
        self.write_batch(records)
    }

    /// Writes `records` as one `write`, without syncing.
    fn write_batch(&self, records: &[WalRecord]) -> Result<Range<u64>, WalError> {
        self.check_poisoned()?;
        let shared = &*self.shared;
        let lsns = {
            let mut writer = lock(&shared.writer);
            let writer = &mut *writer;
            writer.scratch.clear();
            for record in records {
                encode_frame(record, shared.config.max_record_bytes, &mut writer.scratch)?;
            }
            let start = writer.next_lsn;
            if records.is_empty() {
                return Ok(start..start);
            }
            let active_has_frames = writer.active.n_frames() > 0;
            if active_has_frames
                && writer.active.len() + writer.scratch.len() as u64 > shared.config.segment_bytes
            {
                self.roll(writer)?;
            }
            let n_frames = records.len() as u64;
            if let Err((error, poison)) = writer.active.write(&writer.scratch, n_frames) {
                if poison {
                    shared.poisoned.store(true, Ordering::SeqCst);
                }
                return Err(error);
            }
            writer.next_lsn += n_frames;
            shared.written_lsn.store(writer.next_lsn, Ordering::Release);
            start..writer.next_lsn
        };
        Ok(lsns)
    }

    /// Calls `f` with every record whose LSN is `>= from`, in LSN order.
    ///
    /// Reads the records present when the call starts. LSNs below the oldest
    /// retained segment (see [`Wal::truncate_before`]) are gone and skipped.
    /// The record passed to `f` is reused between calls: clone what you keep.
    ///
    /// # Errors
    ///
    /// [`WalError::Corrupt`] at the first bad frame or LSN gap, naming segment
    /// and offset (records before it have been passed to `f`);
    /// [`WalError::Io`] if a read fails, or if a segment was removed by a
    /// concurrent `truncate_before` before it was opened.
    pub fn replay(&self, from: u64, mut f: impl FnMut(&WalRecord)) -> Result<(), WalError> {
        let mut reader = self.reader(from);
        while reader.advance()?.is_some() {
            f(&reader.record);
        }
        Ok(())
    }

    /// An iterator over `(lsn, record)` for every record whose LSN is `>= from`.
    ///
    /// # Errors
    ///
    /// This call itself does not fail today; the iterator yields the errors of
    /// [`Wal::replay`]. The `Result` leaves room for readers that must open
    /// files up front.
    pub fn iter_from(&self, from: u64) -> Result<WalIter, WalError> {
        Ok(WalIter::new(self.reader(from)))
    }

    /// Forces every record appended so far to disk (`sync_data`), whatever the
    /// policy. Returns when they survive power loss.
    ///
    /// # Errors
    ///
    /// [`WalError::Io`] if the sync fails, which also poisons the log;
    /// [`WalError::Poisoned`] after an earlier failure.
    pub fn sync(&self) -> Result<(), WalError> {
        self.check_poisoned()?;
        let end = lock(&self.shared.writer).next_lsn;
        self.shared.sync_until(end)
    }

    /// Removes every whole segment whose records all have LSNs below `lsn`,
    /// and returns how many were removed. The active segment is never removed,
    /// so the next LSN is kept.
    ///
    /// On `Ok` the removal is durable (the directory is fsynced).
    ///
    /// # Errors
    ///
    /// [`WalError::Io`] if a file cannot be removed or the directory not
    /// synced; segments removed before the failure stay removed.
    pub fn truncate_before(&self, lsn: u64) -> Result<usize, WalError> {
        let mut writer = lock(&self.shared.writer);
        let mut n_removed = 0;
        while let Some(oldest) = writer.sealed.first() {
            let next_first = writer
                .sealed
                .get(1)
                .map_or(writer.active.first_lsn(), |s| s.first_lsn);
            if next_first > lsn {
                break;
            }
            self.shared
                .storage
                .remove_file(&oldest.path)
                .map_err(|e| io_error("remove segment", &oldest.path, e))?;
            writer.sealed.remove(0);
            n_removed += 1;
        }
        if n_removed > 0 {
            let dir = &self.shared.config.dir;
            self.shared
                .storage
                .sync_dir(dir)
                .map_err(|e| io_error("fsync directory", dir, e))?;
        }
        Ok(n_removed)
    }

    /// Seals the active segment (synced first, under every policy) and
    /// starts a new one at the next LSN, unless the active segment holds no
    /// record yet. Returns whether it started one.
    ///
    /// After it, every record appended so far is in a sealed segment, so
    /// [`Wal::truncate_before`]`(next_lsn)` can remove all of them: for an
    /// upper layer that must not leave old records behind in the active
    /// segment (a store moving its records to a new encryption key).
    ///
    /// # Errors
    ///
    /// [`WalError::Io`] if the sync or the new segment fails, which poisons
    /// the log (as a roll in an append does); [`WalError::Poisoned`] after
    /// an earlier failure.
    pub fn start_new_segment(&self) -> Result<bool, WalError> {
        self.check_poisoned()?;
        let mut writer = lock(&self.shared.writer);
        if writer.active.n_frames() == 0 {
            return Ok(false);
        }
        self.roll(&mut writer)?;
        Ok(true)
    }

    /// The LSN the next append will get.
    #[must_use]
    pub fn next_lsn(&self) -> u64 {
        lock(&self.shared.writer).next_lsn
    }

    /// The lowest LSN still in the log (the first of the oldest segment).
    /// Equal to [`Wal::next_lsn`] when the log holds no record.
    #[must_use]
    pub fn first_lsn(&self) -> u64 {
        let writer = lock(&self.shared.writer);
        writer
            .sealed
            .first()
            .map_or(writer.active.first_lsn(), |s| s.first_lsn)
    }

    /// How many segment files the log has, the active one included.
    #[must_use]
    pub fn segment_count(&self) -> usize {
        lock(&self.shared.writer).sealed.len() + 1
    }

    /// How many `sync_data` calls this handle has made for appends and
    /// [`Wal::sync`] (not counting segment creation). Under
    /// [`SyncPolicy::Always`] with concurrent appenders it stays below the
    /// number of appends: that is group commit at work.
    #[must_use]
    pub fn sync_count(&self) -> u64 {
        lock(&self.shared.commit).n_syncs
    }

    /// The configuration the log was opened with.
    #[must_use]
    pub fn config(&self) -> &WalConfig {
        &self.shared.config
    }

    /// The log's directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.shared.config.dir
    }

    fn reader(&self, from: u64) -> LogReader {
        let writer = lock(&self.shared.writer);
        let mut segments = writer.sealed.clone();
        segments.push(SealedSegment {
            first_lsn: writer.active.first_lsn(),
            path: writer.active.path().to_path_buf(),
            pinned: None,
        });
        LogReader::new(
            segments,
            from,
            writer.next_lsn,
            self.shared.config.max_record_bytes,
        )
    }

    fn check_poisoned(&self) -> Result<(), WalError> {
        if self.shared.poisoned.load(Ordering::SeqCst) {
            Err(WalError::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Seals the active segment and starts the next one. The old segment is
    /// synced first, under every policy, so only the newest segment can ever
    /// have a torn tail: a group-commit leader need only sync the active file,
    /// and a power loss under `Never` loses a suffix of the log instead of
    /// leaving a hole that recovery must refuse. One sync per segment costs
    /// nothing next to the segment's writes.
    fn roll(&self, writer: &mut Writer) -> Result<(), WalError> {
        if let Err(e) = writer.active.sync() {
            self.shared.poisoned.store(true, Ordering::SeqCst);
            return Err(e);
        }
        // A failure may leave the new segment on disk but unused; appends must
        // not go on into the old one behind it, so the handle stops here.
        let next = SegmentWriter::create(
            self.shared.storage.as_ref(),
            &self.shared.config.dir,
            writer.next_lsn,
            allocation(&self.shared.config, self.shared.storage.as_ref()),
        )
        .inspect_err(|_| {
            self.shared.poisoned.store(true, Ordering::SeqCst);
        })?;
        let old = std::mem::replace(&mut writer.active, next);
        writer.sealed.push(SealedSegment {
            first_lsn: old.first_lsn(),
            path: old.path().to_path_buf(),
            pinned: None,
        });
        Ok(())
    }
}

impl Shared {
    /// Lets appenders that are already runnable finish their writes before the
    /// leader syncs, so one `sync_data` covers them too: yields while new
    /// records keep arriving, a bounded number of times. Alone, the first
    /// yield returns at once and nothing arrives, so a single appender pays
    /// about a microsecond.
    fn linger(&self) {
        let mut seen = self.written_lsn.load(Ordering::Acquire);
        for _ in 0..MAX_LINGER_YIELDS {
            std::thread::yield_now();
            let now = self.written_lsn.load(Ordering::Acquire);
            if now == seen {
                break;
            }
            seen = now;
        }
    }

    /// Returns once every LSN below `end` is on disk. One thread at a time
    /// calls `sync_data` (the leader); threads arriving meanwhile wait for it
    /// and for the next round if its sync started before their write.
    fn sync_until(&self, end: u64) -> Result<(), WalError> {
        let mut commit = lock(&self.commit);
        loop {
            if self.poisoned.load(Ordering::SeqCst) {
                return Err(WalError::Poisoned);
            }
            if commit.durable_lsn >= end {
                return Ok(());
            }
            if commit.syncing {
                commit.waiters += 1;
                commit = self
                    .synced
                    .wait(commit)
                    .unwrap_or_else(PoisonError::into_inner);
                commit.waiters -= 1;
                continue;
            }
            commit.syncing = true;
            drop(commit);
            self.linger();
            // Everything written before this point is covered by this sync.
            // Older segments were synced when they were sealed.
            let (file, path, upto) = {
                let writer = lock(&self.writer);
                (
                    Arc::clone(writer.active.file()),
                    writer.active.path().to_path_buf(),
                    writer.next_lsn,
                )
            };
            let result = file.sync_data();
            commit = lock(&self.commit);
            commit.syncing = false;
            commit.n_syncs += 1;
            match result {
                Ok(()) => commit.durable_lsn = commit.durable_lsn.max(upto),
                // Never retried: after a failed fsync the kernel may have
                // dropped the dirty pages, and a retry could report success.
                Err(e) => {
                    self.poisoned.store(true, Ordering::SeqCst);
                    self.synced.notify_all();
                    return Err(io_error("sync segment", path, e));
                }
            }
            if commit.waiters > 0 {
                self.synced.notify_all();
            }
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        if let Some(flusher) = self.flusher.take() {
            flusher.stop();
            // Best effort: keep the Interval promise for the last interval too.
            let _ = self.sync();
        }
    }
}

/// The background thread of [`SyncPolicy::Interval`].
#[derive(Debug)]
struct Flusher {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: JoinHandle<()>,
}

impl Flusher {
    fn start(shared: Arc<Shared>, every: Duration) -> std::io::Result<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stop_signal = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("sync-wal-flusher".into())
            .spawn(move || {
                let (stopped, wake) = &*stop_signal;
                let mut guard = lock(stopped);
                loop {
                    guard = wake
                        .wait_timeout(guard, every)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    if *guard || shared.poisoned.load(Ordering::SeqCst) {
                        return;
                    }
                    let end = lock(&shared.writer).next_lsn;
                    // An error poisons the log; appends then report it.
                    let _ = shared.sync_until(end);
                }
            })?;
        Ok(Self { stop, thread })
    }

    fn stop(self) {
        *lock(&self.stop.0) = true;
        self.stop.1.notify_all();
        let _ = self.thread.join();
    }
}

fn validate(config: &WalConfig) -> Result<(), WalError> {
    if config.segment_bytes <= SEGMENT_HEADER_LEN as u64 {
        return Err(WalError::InvalidConfig {
            reason: "segment_bytes must exceed the 24-byte segment header",
        });
    }
    if (config.max_record_bytes as usize) < BODY_FIXED_LEN {
        return Err(WalError::InvalidConfig {
            reason: "max_record_bytes must be at least 14 (an empty record)",
        });
    }
    if config.sync == SyncPolicy::Interval(Duration::ZERO) {
        return Err(WalError::InvalidConfig {
            reason: "a sync interval must be longer than zero",
        });
    }
    Ok(())
}

fn lock_dir(dir: &Path) -> Result<LockedFile, WalError> {
    LockedFile::exclusive(&dir.join(LOCK_FILE)).map_err(|e| locked_dir(e, dir))
}

/// A lock error about the directory's lock file, said of the directory.
pub(crate) fn locked_dir(error: WalError, dir: &Path) -> WalError {
    match error {
        WalError::Locked { holder, .. } => WalError::Locked {
            path: dir.to_path_buf(),
            holder,
        },
        other => other,
    }
}

/// Locks a mutex, ignoring poisoning: every critical section here leaves its
/// data consistent before anything that can panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
