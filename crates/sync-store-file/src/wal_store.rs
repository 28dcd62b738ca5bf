//! [`WalOutboxStore`]: every change is one appended WAL record; snapshots
//! and truncation keep the log near the size of the live set.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use sync_outbox::{MemoryOutboxStore, Operation, OutboxError, OutboxStats, OutboxStore};
use sync_wal::{
    FileStorage, RecordType, Storage, SyncPolicy, Wal, WalConfig, WalInspector, WalIter, WalRecord,
};

use crate::encryption::{Encryption, FileRole, open_file, open_record, seal_file, seal_record};
use crate::error::{FileStoreError, io_error, json_reason};
use crate::file::{locked, replace_atomically, temp_path};
use crate::snapshot::Snapshot;

/// Settings of a [`WalOutboxStore`].
#[derive(Clone, Debug, PartialEq)]
pub struct WalOutboxStoreConfig {
    /// The store's directory (holds `log/` and `snapshot`). Created if missing.
    pub dir: PathBuf,
    /// When appended changes reach the disk. Default [`SyncPolicy::Always`]
    /// (group commit: concurrent writers share one `fdatasync`).
    /// [`SyncPolicy::Never`] survives a process crash but may lose recent
    /// changes on power loss or a kernel crash.
    pub sync: SyncPolicy,
    /// Segment size of the log; truncation after a snapshot frees whole
    /// segments. Default 4 MiB.
    pub segment_bytes: u64,
    /// Compact no earlier than this many records since the last snapshot.
    /// Default 10,000.
    pub compact_min_records: u64,
    /// Compact when the records since the last snapshot exceed this many
    /// times the live operations. Default 4.0.
    pub compact_ratio: f64,
    /// Encryption at rest: every record's payload and every snapshot sealed
    /// with the ring's current key (`docs/FORMAT.md`, "Encrypted file
    /// stores"). Default `None`: plain.
    pub encryption: Option<Encryption>,
}

impl WalOutboxStoreConfig {
    /// Defaults for a store in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            sync: SyncPolicy::Always,
            segment_bytes: 4 << 20,
            compact_min_records: 10_000,
            compact_ratio: 4.0,
            encryption: None,
        }
    }

    /// The same settings, with the store encrypted at rest.
    #[must_use]
    pub fn with_encryption(mut self, encryption: Encryption) -> Self {
        self.encryption = Some(encryption);
        self
    }
}

impl Default for WalOutboxStoreConfig {
    fn default() -> Self {
        Self::new("outbox-wal")
    }
}

/// An [`OutboxStore`] on [`sync_wal`]: each change appends one record (the
/// whole operation as JSON, or a removal), so a change costs O(size of the
/// operation), not O(queue).
///
/// On open, the latest snapshot is loaded and the log replayed after it.
/// When the log holds many more records than live operations (see
/// [`WalOutboxStoreConfig`]), the store writes a snapshot (temp file, sync,
/// rename, directory fsync) and truncates the log below it; a crash at any
/// step recovers, and no change acknowledged before or during it is lost.
///
/// Durability on `Ok` follows [`WalOutboxStoreConfig::sync`].
///
/// With [`WalOutboxStoreConfig::encryption`], each record's payload is
/// sealed (XChaCha20-Poly1305) bound to its LSN, kind, time and id, and each
/// snapshot is sealed whole; the frame's id, kind and time stay readable
/// (the log needs them; they hold no payload). Appends are sealed under a
/// lock that fixes their LSNs, then synced outside it, so group commit still
/// shares one sync among concurrent writers. Do not append to
/// [`wal`](Self::wal) directly: the store owns its LSNs.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use sync_outbox::{Operation, Outbox, OutboxConfig, OutboxStore};
/// use sync_store_file::{WalOutboxStore, WalOutboxStoreConfig};
///
/// let dir = tempfile::tempdir().expect("a temp dir");
/// let id = {
///     let store = Arc::new(WalOutboxStore::open(WalOutboxStoreConfig::new(dir.path().join("outbox-wal")))?);
///     Outbox::new(OutboxConfig::default(), store).enqueue(Operation::new("message.send", "/api/messages", "{}"), 0)?
/// };
/// let reopened = WalOutboxStore::open(WalOutboxStoreConfig::new(dir.path().join("outbox-wal")))?;
/// assert!(reopened.get(&id)?.is_some());
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct WalOutboxStore {
    config: WalOutboxStoreConfig,
    wal: Wal,
    index: MemoryOutboxStore,
    /// Changes hold it shared from append to index update; a snapshot takes
    /// it exclusively, so the state it copies matches the log's next LSN.
    gate: RwLock<()>,
    records_since_snapshot: AtomicU64,
    compacting: AtomicBool,
    compactions: AtomicU64,
    last_compaction_error: Mutex<Option<String>>,
    /// The log's storage; snapshots are written through it too.
    storage: Arc<dyn Storage>,
    /// With encryption: held from reading the next LSN to appending the
    /// records sealed for it.
    seal: Mutex<()>,
    /// One snapshot at a time (they share the temp file).
    compaction: Mutex<()>,
}

impl WalOutboxStore {
    /// Opens (creating if needed) the store in `config.dir`.
    ///
    /// # Errors
    ///
    /// - [`FileStoreError::Locked`] if another handle has the store.
    /// - [`FileStoreError::Wal`] for a damaged log (nothing is changed then,
    ///   beyond cutting a torn tail).
    /// - [`FileStoreError::CorruptSnapshot`] if the snapshot fails its checks; it
    ///   is left untouched.
    /// - [`FileStoreError::CorruptRecord`] if a record holds no operation or the
    ///   log does not continue the snapshot.
    /// - [`FileStoreError::Encryption`] (naming the snapshot or the segment,
    ///   and the offset) if encrypted content cannot be read with the
    ///   configured keys (or none are configured), or plain content is found
    ///   where encryption refuses it; nothing is changed.
    /// - [`FileStoreError::Io`].
    pub fn open(config: WalOutboxStoreConfig) -> Result<Self, FileStoreError> {
        Self::open_with_storage(config, Arc::new(FileStorage))
    }

    /// [`WalOutboxStore::open`], with every write, sync, rename and removal
    /// of the log and the snapshot going through `storage`: for fault
    /// injection and power-loss models in tests (see `sync_wal::testing`).
    /// Reads and the lock use the file system.
    ///
    /// # Errors
    ///
    /// As [`WalOutboxStore::open`].
    pub fn open_with_storage(
        config: WalOutboxStoreConfig,
        storage: Arc<dyn Storage>,
    ) -> Result<Self, FileStoreError> {
        std::fs::create_dir_all(&config.dir)
            .map_err(|e| io_error("create directory", &config.dir, e))?;
        let mut wal_config = WalConfig::new(config.dir.join("log"));
        wal_config.sync = config.sync;
        wal_config.segment_bytes = config.segment_bytes;
        // Opening the log takes its lock: from here on this handle owns the directory.
        let wal = Wal::open_with_storage(wal_config, Arc::clone(&storage))
            .map_err(|e| locked(e, &config.dir))?;
        let snapshot_path = config.dir.join("snapshot");
        // A snapshot a crash interrupted before its rename: never in effect.
        let _ = storage.remove_file(&temp_path(&snapshot_path));
        let index = MemoryOutboxStore::new();
        let encryption = config.encryption.as_ref();
        let start = load_snapshot(&index, &snapshot_path, wal.dir(), encryption)?;
        replay(
            &index,
            start,
            wal.first_lsn(),
            wal.dir(),
            wal.iter_from(start)?,
            encryption,
        )?;
        let records_since_snapshot = AtomicU64::new(wal.next_lsn().saturating_sub(start));
        Ok(Self {
            config,
            wal,
            index,
            gate: RwLock::new(()),
            records_since_snapshot,
            compacting: AtomicBool::new(false),
            compactions: AtomicU64::new(0),
            last_compaction_error: Mutex::new(None),
            storage,
            seal: Mutex::new(()),
            compaction: Mutex::new(()),
        })
    }

    /// Reads the store in `dir` without opening it for writing: loads the
    /// snapshot and replays the log into memory, changing nothing on disk (a
    /// torn tail is read up to, not cut; a leftover temp snapshot is ignored,
    /// not deleted). For inspection tools such as `synctl`.
    ///
    /// It works while an application has the store open, without blocking
    /// or changing anything of it: the log is read as a live view (see
    /// `sync_wal::WalInspector`: its segments are pinned open first, so a
    /// compaction cannot remove one from under the read, and the view ends
    /// at the last complete record), and the snapshot is read after that,
    /// so it is never older than the log's oldest segment. The result is
    /// the store's state after some complete record written at the moment
    /// of the call: consistent, if not the very latest. With no
    /// application, it holds a shared lock on the log while it reads.
    ///
    /// # Errors
    ///
    /// As [`WalOutboxStore::open`]: the same corruption errors (a record
    /// still being written by a live application is not one).
    ///
    /// # Examples
    ///
    /// ```
    /// use sync_outbox::{Operation, OutboxStore};
    /// use sync_store_file::{WalOutboxStore, WalOutboxStoreConfig};
    ///
    /// let dir = tempfile::tempdir().expect("a temp dir");
    /// let mut op = Operation::new("message.send", "/api/messages", "{}");
    /// op.id = "op_1".into();
    /// WalOutboxStore::open(WalOutboxStoreConfig::new(dir.path()))?.put(&op)?;
    /// let contents = WalOutboxStore::load_read_only(dir.path())?;
    /// assert_eq!(contents.load_all()?.len(), 1);
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    pub fn load_read_only(dir: impl AsRef<Path>) -> Result<MemoryOutboxStore, FileStoreError> {
        Self::load_read_only_inner(dir.as_ref(), None)
    }

    /// [`WalOutboxStore::load_read_only`] for a store encrypted with the
    /// keys of `encryption`.
    ///
    /// # Errors
    ///
    /// As [`WalOutboxStore::open`], [`FileStoreError::Encryption`] included.
    pub fn load_read_only_with_encryption(
        dir: impl AsRef<Path>,
        encryption: &Encryption,
    ) -> Result<MemoryOutboxStore, FileStoreError> {
        Self::load_read_only_inner(dir.as_ref(), Some(encryption))
    }

    fn load_read_only_inner(
        dir: &Path,
        encryption: Option<&Encryption>,
    ) -> Result<MemoryOutboxStore, FileStoreError> {
        let inspector = WalInspector::open(dir.join("log")).map_err(|e| locked(e, dir))?;
        let index = MemoryOutboxStore::new();
        let start = load_snapshot(&index, &dir.join("snapshot"), inspector.dir(), encryption)?;
        replay(
            &index,
            start,
            inspector.first_lsn(),
            inspector.dir(),
            inspector.iter_from(start),
            encryption,
        )?;
        Ok(index)
    }

    /// The store's directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    /// The underlying log.
    #[must_use]
    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    /// How many snapshots this handle has written.
    #[must_use]
    pub fn compaction_count(&self) -> u64 {
        self.compactions.load(Ordering::Relaxed)
    }

    /// The error of the last automatic compaction that failed, if any. A
    /// failed compaction loses nothing: the log still holds every change.
    #[must_use]
    pub fn last_compaction_error(&self) -> Option<String> {
        self.last_compaction_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Writes a snapshot of the live operations and truncates the log below
    /// it. Durable on `Ok`. Changes may continue meanwhile; they land after
    /// the snapshot's LSN and are replayed on open.
    ///
    /// # Errors
    ///
    /// [`FileStoreError::Io`] or [`FileStoreError::Wal`]; the store stays consistent
    /// (the old snapshot and the full log remain, or the new snapshot does).
    pub fn compact(&self) -> Result<(), FileStoreError> {
        self.compact_from(false)
    }

    /// Moves the whole store to the ring's current key: writes a snapshot
    /// sealed with it, starts a new log segment at the snapshot's LSN, and
    /// removes every older segment, so no record or snapshot of an older key
    /// (or plain one, for a store opened with
    /// [`Encryption::accept_plaintext`]) is left in the store's files. After
    /// `Ok` the ring may drop the older keys. Durable on `Ok`. Changes may go
    /// on meanwhile; they are sealed with the current key.
    ///
    /// A crash at any step leaves a store the ring of old and new keys
    /// opens with nothing lost: before the new snapshot's rename, the old
    /// snapshot and the whole log; after it, the new snapshot and the
    /// records after it (the old segments left behind are below the
    /// snapshot and never read; the next compaction removes them).
    /// Without encryption, a compaction that leaves no older record.
    ///
    /// # Errors
    ///
    /// [`FileStoreError::Io`], [`FileStoreError::Wal`] or
    /// [`FileStoreError::Random`]; what is on disk is one of the states
    /// above.
    pub fn rotate_key(&self) -> Result<(), FileStoreError> {
        self.compact_from(true)
    }

    /// Writes a snapshot and truncates the log below it; with
    /// `new_segment`, the snapshot's LSN starts a new segment, so every
    /// older record goes.
    fn compact_from(&self, new_segment: bool) -> Result<(), FileStoreError> {
        let _one = self
            .compaction
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let snapshot = {
            let _exclusive = self.gate.write().unwrap_or_else(PoisonError::into_inner);
            let operations = self
                .index
                .load_all()
                .map_err(|e| corrupt_record(&self.wal, 0, &e))?;
            if new_segment {
                self.wal.start_new_segment()?;
            }
            Snapshot {
                lsn: self.wal.next_lsn(),
                operations,
            }
        };
        let bytes = snapshot
            .encode()
            .map_err(|e| io_error("encode snapshot", self.dir(), std::io::Error::other(e)))?;
        let bytes = match &self.config.encryption {
            Some(encryption) => seal_file(encryption, FileRole::Snapshot, &bytes)?,
            None => bytes,
        };
        replace_atomically(
            self.storage.as_ref(),
            &self.config.dir.join("snapshot"),
            &bytes,
        )?;
        self.wal.truncate_before(snapshot.lsn)?;
        self.records_since_snapshot.store(
            self.wal.next_lsn().saturating_sub(snapshot.lsn),
            Ordering::Relaxed,
        );
        self.compactions.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The records that store `ops`, in order. An id twice in `ops` is a
    /// whole record the second time: a transition is relative to what the
    /// index holds, and the first is not in it yet.
    fn records_of(&self, ops: &[Operation]) -> Result<Vec<WalRecord>, OutboxError> {
        let mut records = Vec::with_capacity(ops.len());
        // A claim or a result of one operation needs no set.
        let mut seen = std::collections::HashSet::new();
        for op in ops {
            let repeated = ops.len() > 1 && !seen.insert(op.id.as_str());
            records.push(if repeated {
                put_record(op)?
            } else {
                record_of(&self.index, op)?
            });
        }
        Ok(records)
    }

    /// Appends `records` (synced as the policy says) and applies `change` to
    /// the index, under the shared gate.
    fn append(
        &self,
        records: Vec<WalRecord>,
        change: impl FnOnce() -> Result<(), OutboxError>,
    ) -> Result<(), OutboxError> {
        self.append_with(records, true, change)
    }

    /// [`Self::append`]; with `synced` false, never synced (see
    /// `put_unsynced`).
    fn append_with(
        &self,
        records: Vec<WalRecord>,
        synced: bool,
        change: impl FnOnce() -> Result<(), OutboxError>,
    ) -> Result<(), OutboxError> {
        let n_records = records.len() as u64;
        {
            let _shared = self.gate.read().unwrap_or_else(PoisonError::into_inner);
            match &self.config.encryption {
                None if synced => self.wal.append_batch(&records).map(drop),
                None => self.wal.append_batch_unsynced(&records).map(drop),
                Some(encryption) => {
                    self.append_sealed(encryption, records)?;
                    if synced && self.config.sync == SyncPolicy::Always {
                        self.wal.sync()
                    } else {
                        Ok(())
                    }
                }
            }
            .map_err(FileStoreError::from)?;
            change()?;
        }
        let n = self
            .records_since_snapshot
            .fetch_add(n_records, Ordering::Relaxed)
            + n_records;
        self.maybe_compact(n)
    }

    /// Seals `records` for the LSNs they will get and appends them, not
    /// synced. The seal binds each record to its LSN, so reading the next
    /// LSN and appending happen under one lock; the sync, which group
    /// commit shares among writers, comes after it.
    fn append_sealed(
        &self,
        encryption: &Encryption,
        mut records: Vec<WalRecord>,
    ) -> Result<(), FileStoreError> {
        let _seal = self.seal.lock().unwrap_or_else(PoisonError::into_inner);
        let first = self.wal.next_lsn();
        for (lsn, record) in (first..).zip(records.iter_mut()) {
            seal_record(encryption, lsn, record)?;
        }
        let lsns = self.wal.append_batch_unsynced(&records)?;
        if lsns.start == first {
            Ok(())
        } else {
            Err(FileStoreError::CorruptRecord {
                dir: self.wal.dir().to_path_buf(),
                lsn: lsns.start,
                reason: format!(
                    "records sealed for lsn {first} were appended at lsn {}: something else appends to the store's log",
                    lsns.start
                ),
            })
        }
    }

    fn maybe_compact(&self, records_since_snapshot: u64) -> Result<(), OutboxError> {
        if records_since_snapshot < self.config.compact_min_records {
            return Ok(());
        }
        let live = self.index.stats()?.total();
        #[expect(
            clippy::cast_precision_loss,
            reason = "a threshold; precision does not matter"
        )]
        let due = records_since_snapshot as f64 > self.config.compact_ratio * live as f64;
        if due && !self.compacting.swap(true, Ordering::AcqRel) {
            // The change itself is durable already: a failed compaction is
            // recorded, not returned as the change's error.
            let result = self.compact_from(false);
            *self
                .last_compaction_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = result.err().map(|e| e.to_string());
            self.compacting.store(false, Ordering::Release);
        }
        Ok(())
    }
}

/// Loads the snapshot at `path`, if any, into `index`; returns the LSN the
/// log must be replayed from.
fn load_snapshot(
    index: &MemoryOutboxStore,
    path: &Path,
    log_dir: &Path,
    encryption: Option<&Encryption>,
) -> Result<u64, FileStoreError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let plain = open_file(encryption, FileRole::Snapshot, &bytes).map_err(
                |(offset, problem)| FileStoreError::Encryption {
                    path: path.to_path_buf(),
                    offset,
                    problem,
                },
            )?;
            let snapshot = Snapshot::decode(&plain).map_err(|(offset, reason)| {
                FileStoreError::CorruptSnapshot {
                    path: path.to_path_buf(),
                    offset,
                    reason,
                }
            })?;
            index
                .put_batch(&snapshot.operations)
                .map_err(|e| FileStoreError::CorruptRecord {
                    dir: log_dir.to_path_buf(),
                    lsn: snapshot.lsn,
                    reason: e.to_string(),
                })?;
            Ok(snapshot.lsn)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_error("read snapshot", path, e)),
    }
}

/// Replays the records from `start` into `index`. The log must reach back
/// to `start`: records below its first LSN were truncated after a snapshot.
fn replay(
    index: &MemoryOutboxStore,
    start: u64,
    log_first_lsn: u64,
    log_dir: &Path,
    mut records: WalIter,
    encryption: Option<&Encryption>,
) -> Result<(), FileStoreError> {
    let corrupt = |lsn, reason| FileStoreError::CorruptRecord {
        dir: log_dir.to_path_buf(),
        lsn,
        reason,
    };
    if log_first_lsn > start {
        return Err(corrupt(
            start,
            format!("the log starts at lsn {log_first_lsn}, after the snapshot's lsn {start}"),
        ));
    }
    while let Some(item) = records.next() {
        let (lsn, mut record) = item?;
        if let Err((offset, problem)) = open_record(encryption, lsn, &mut record) {
            // Where the payload is: the frame, its 8-byte header, the
            // body's kind, time and id length (14 bytes), then the id.
            let (path, frame) = records
                .position()
                .map_or((log_dir.to_path_buf(), 0), |(p, at)| (p.to_path_buf(), at));
            return Err(FileStoreError::Encryption {
                path,
                offset: frame + 8 + 14 + record.id.len() as u64 + offset,
                problem,
            });
        }
        apply(index, &record).map_err(|reason| corrupt(lsn, reason))?;
    }
    Ok(())
}

/// The record that stores `op`: a small transition record when it differs
/// from the stored operation `index` holds only in the fields of its life
/// (a claim, a result, a retry), else the whole operation.
fn record_of(index: &MemoryOutboxStore, op: &Operation) -> Result<WalRecord, OutboxError> {
    match index.inspect(&op.id, |old| crate::transition::record(old, op)) {
        Some(Some(record)) => Ok(record),
        _ => put_record(op),
    }
}

/// The record that stores the whole of `op`.
fn put_record(op: &Operation) -> Result<WalRecord, OutboxError> {
    let payload = serde_json::to_vec(op).map_err(OutboxError::store)?;
    Ok(WalRecord {
        id: op.id.clone(),
        kind: RecordType::PutOperation,
        ts_ms: op.updated_at_ms,
        payload,
    })
}

/// Replays one record into the index.
fn apply(index: &MemoryOutboxStore, record: &WalRecord) -> Result<(), String> {
    match record.kind {
        RecordType::PutOperation => {
            let op: Operation =
                serde_json::from_slice(&record.payload).map_err(|e| json_reason(&e))?;
            if op.id != record.id {
                return Err(format!(
                    "record id {:?} holds operation {:?}",
                    record.id, op.id
                ));
            }
            index.put(&op).map_err(|e| e.to_string())
        }
        RecordType::Remove => index
            .remove(&record.id)
            .map(drop)
            .map_err(|e| e.to_string()),
        kind => {
            let Some(status) = crate::transition::status_of(kind) else {
                return Err(format!("unexpected record kind {kind:?}"));
            };
            let mut op = index
                .get(&record.id)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("a transition of {:?}, which is not stored", record.id))?;
            crate::transition::apply(&mut op, status, record)?;
            index.put(&op).map_err(|e| e.to_string())
        }
    }
}

fn corrupt_record(wal: &Wal, lsn: u64, error: &OutboxError) -> FileStoreError {
    FileStoreError::CorruptRecord {
        dir: wal.dir().to_path_buf(),
        lsn,
        reason: error.to_string(),
    }
}

impl OutboxStore for WalOutboxStore {
    /// One appended record; durable on `Ok` as the configured `SyncPolicy` says.
    fn put(&self, op: &Operation) -> Result<(), OutboxError> {
        self.append(vec![record_of(&self.index, op)?], || self.index.put(op))
    }

    /// One `write` (and, under `Always`, one sync) for the whole batch.
    fn put_batch(&self, ops: &[Operation]) -> Result<(), OutboxError> {
        let records = self.records_of(ops)?;
        self.append(records, || self.index.put_batch(ops))
    }

    /// One `write` for all of `ops`, **not synced** under any policy: in
    /// the page cache on `Ok`, so a process crash loses nothing. The next
    /// synced append or [`sync`](OutboxStore::sync) makes it durable, since
    /// a sync covers every record before it. A power loss before that drops
    /// it with every later record: a claim is undone (the operations are
    /// `Pending` again with their previous attempt) and results recorded
    /// since the last sync are undone, so those operations are sent again.
    /// Nothing acknowledged to the app is lost. Claims (`put_claimed`) go
    /// through here too.
    fn put_unsynced(&self, ops: &[Operation]) -> Result<(), OutboxError> {
        let records = self.records_of(ops)?;
        self.append_with(records, false, || self.index.put_batch(ops))
    }

    /// Under `SyncPolicy::Always`, one `fdatasync` covering every record
    /// appended so far (shared with concurrent writers); under `Interval`
    /// and `Never`, nothing: those policies promise no more for a synced
    /// write either.
    fn sync(&self) -> Result<(), OutboxError> {
        if self.config.sync == SyncPolicy::Always {
            self.wal.sync().map_err(FileStoreError::from)?;
        }
        Ok(())
    }

    fn get(&self, id: &str) -> Result<Option<Operation>, OutboxError> {
        self.index.get(id)
    }

    /// One appended removal record, if the id exists; durable as `put`.
    fn remove(&self, id: &str) -> Result<bool, OutboxError> {
        if self.index.get(id)?.is_none() {
            return Ok(false);
        }
        let record = WalRecord {
            id: id.to_owned(),
            kind: RecordType::Remove,
            ts_ms: 0,
            payload: Vec::new(),
        };
        self.append(vec![record], || self.index.remove(id).map(drop))?;
        Ok(true)
    }

    fn load_all(&self) -> Result<Vec<Operation>, OutboxError> {
        self.index.load_all()
    }

    fn ready(&self, now_ms: i64, limit: usize) -> Result<Vec<Operation>, OutboxError> {
        self.index.ready(now_ms, limit)
    }

    fn next_due_ms(&self) -> Result<Option<i64>, OutboxError> {
        self.index.next_due_ms()
    }

    /// Kept by the in-memory index as the store writes: O(log n), no I/O.
    fn stats(&self) -> Result<OutboxStats, OutboxError> {
        self.index.stats()
    }
}
