//! [`JsonOutboxStore`]: the whole outbox as one JSON document a person can
//! `cat`, replaced atomically on every change.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use sync_outbox::{MemoryOutboxStore, Operation, OutboxError, OutboxStats, OutboxStore};
use sync_wal::{FileStorage, Storage};

use crate::encryption::{Encryption, FileRole, open_file, seal_file};
use crate::error::{FileStoreError, io_error, json_reason};
use crate::file::{lock_file, lock_file_shared, replace_atomically, sibling_path};

/// The `format` field of every store file.
pub const JSON_FORMAT_NAME: &str = "sync-outbox";
/// The `version` field this crate writes and reads.
pub const JSON_FORMAT_VERSION: u32 = 1;

/// Settings of a [`JsonOutboxStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonOutboxStoreConfig {
    /// The JSON file. Its directory must exist. Default `outbox.json`.
    pub file_path: PathBuf,
    /// Indent the JSON for people. Default `true`.
    pub pretty_json: bool,
    /// Encryption at rest: the whole file sealed with the ring's current
    /// key (`docs/FORMAT.md`, "Encrypted file stores"). Default `None`: plain
    /// JSON.
    pub encryption: Option<Encryption>,
}

impl JsonOutboxStoreConfig {
    /// Defaults for a store in the file `file_path`.
    pub fn new(file_path: impl Into<PathBuf>) -> Self {
        Self {
            file_path: file_path.into(),
            ..Self::default()
        }
    }

    /// The same settings, with the file encrypted at rest.
    #[must_use]
    pub fn with_encryption(mut self, encryption: Encryption) -> Self {
        self.encryption = Some(encryption);
        self
    }
}

impl Default for JsonOutboxStoreConfig {
    fn default() -> Self {
        Self {
            file_path: PathBuf::from("outbox.json"),
            pretty_json: true,
            encryption: None,
        }
    }
}

/// The file's document.
#[derive(Debug, Serialize, Deserialize)]
struct Document {
    format: String,
    version: u32,
    operations: Vec<Operation>,
}

/// An [`OutboxStore`] in one JSON file: every field of every operation is
/// there to read with `cat`.
///
/// Every change rewrites the whole file (temp file, `sync_data`, rename,
/// directory fsync), so a change returns `Ok` only once it survives power
/// loss, and a crash at any moment leaves the old or the new file, never a
/// torn one. The cost is O(n) per change: fine for tens or hundreds of
/// pending operations; for queues that grow, use
/// [`WalOutboxStore`](crate::WalOutboxStore).
///
/// One process at a time: the store holds an exclusive lock on
/// `<file>.lock` until it is dropped. Files are created mode 0600 on unix.
///
/// With [`JsonOutboxStoreConfig::encryption`], the file is the JSON
/// document sealed whole (XChaCha20-Poly1305) and nothing of it can be read
/// with `cat`; every rewrite seals it with a fresh nonce under the ring's
/// current key.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use sync_outbox::{Operation, Outbox, OutboxConfig};
/// use sync_store_file::{JsonOutboxStore, JsonOutboxStoreConfig};
///
/// let dir = tempfile::tempdir().expect("a temp dir");
/// let store = Arc::new(JsonOutboxStore::open(JsonOutboxStoreConfig::new(dir.path().join("outbox.json")))?);
/// let outbox = Outbox::new(OutboxConfig::default(), store);
/// outbox.enqueue(Operation::new("message.send", "/api/messages", r#"{"text":"hi"}"#), 0)?;
/// let text = std::fs::read_to_string(dir.path().join("outbox.json")).expect("readable");
/// assert!(text.contains(r#""kind": "message.send""#));
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct JsonOutboxStore {
    config: JsonOutboxStoreConfig,
    /// The file's content, indexed for queries.
    index: MemoryOutboxStore,
    /// Serializes rewrites of the file.
    writer: Mutex<()>,
    /// Every rewrite goes through it.
    storage: Arc<dyn Storage>,
    /// Held, never read: the lock lives as long as this file.
    _lock: sync_wal::LockedFile,
}

impl JsonOutboxStore {
    /// Opens the store, creating nothing until the first change. A missing
    /// file is an empty store.
    ///
    /// # Errors
    ///
    /// - [`FileStoreError::Locked`] if another handle holds `<file>.lock`.
    /// - [`FileStoreError::Corrupt`] (with line and column) if the file does not
    ///   parse, has another format or version, or repeats an id; the file is
    ///   left byte-for-byte untouched, and no store is opened over it.
    /// - [`FileStoreError::Encryption`] (with the offset) if the file is
    ///   encrypted and cannot be read with the configured keys (or none are
    ///   configured), or is plain where encryption refuses plain content;
    ///   the file is left untouched, and no store is opened over it.
    /// - [`FileStoreError::Io`] if it cannot be read.
    pub fn open(config: JsonOutboxStoreConfig) -> Result<Self, FileStoreError> {
        Self::open_with_storage(config, Arc::new(FileStorage))
    }

    /// [`JsonOutboxStore::open`], with every rewrite (create, write, sync,
    /// rename, directory sync) going through `storage`: for fault injection
    /// and power-loss models in tests (see `sync_wal::testing`). Reads and
    /// the lock use the file system.
    ///
    /// # Errors
    ///
    /// As [`JsonOutboxStore::open`].
    pub fn open_with_storage(
        config: JsonOutboxStoreConfig,
        storage: Arc<dyn Storage>,
    ) -> Result<Self, FileStoreError> {
        let path = config.file_path.clone();
        let lock = lock_file(&lock_path(&path), &path)?;
        let index = load(&path, config.encryption.as_ref())?;
        Ok(Self {
            config,
            index,
            writer: Mutex::new(()),
            storage,
            _lock: lock,
        })
    }

    /// Reads the store file at `path` without opening it for writing: no
    /// file is created or changed. For inspection tools such as `synctl`.
    ///
    /// With no application holding the store, it holds a shared lock on
    /// `<file>.lock` (if it exists) while it reads. While one does, it
    /// reads without the lock and without blocking it: the store replaces
    /// its file whole (write beside, rename over), so one read of it is
    /// always one complete version.
    ///
    /// # Errors
    ///
    /// As [`JsonOutboxStore::open`]: [`FileStoreError::Corrupt`] or
    /// [`FileStoreError::Io`]; a missing file is an empty store.
    ///
    /// # Examples
    ///
    /// ```
    /// use sync_outbox::{Operation, OutboxStore};
    /// use sync_store_file::{JsonOutboxStore, JsonOutboxStoreConfig};
    ///
    /// let dir = tempfile::tempdir().expect("a temp dir");
    /// let path = dir.path().join("outbox.json");
    /// let mut op = Operation::new("message.send", "/api/messages", "{}");
    /// op.id = "op_1".into();
    /// JsonOutboxStore::open(JsonOutboxStoreConfig::new(path.clone()))?
    ///     .put(&op)?;
    /// assert_eq!(JsonOutboxStore::load_read_only(&path)?.load_all()?.len(), 1);
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    pub fn load_read_only(path: impl AsRef<Path>) -> Result<MemoryOutboxStore, FileStoreError> {
        Self::load_read_only_inner(path.as_ref(), None)
    }

    /// [`JsonOutboxStore::load_read_only`] for a store encrypted with the
    /// keys of `encryption`.
    ///
    /// # Errors
    ///
    /// As [`JsonOutboxStore::open`], [`FileStoreError::Encryption`] included.
    pub fn load_read_only_with_encryption(
        path: impl AsRef<Path>,
        encryption: &Encryption,
    ) -> Result<MemoryOutboxStore, FileStoreError> {
        Self::load_read_only_inner(path.as_ref(), Some(encryption))
    }

    fn load_read_only_inner(
        path: &Path,
        encryption: Option<&Encryption>,
    ) -> Result<MemoryOutboxStore, FileStoreError> {
        // Held if it can be: with no writer, nobody may open one meanwhile.
        let _lock = match lock_file_shared(&lock_path(path), path) {
            Err(FileStoreError::Locked { .. }) => None,
            other => other?,
        };
        load(path, encryption)
    }

    /// Rewrites the file sealed with the ring's current key: after `Ok`, no
    /// older key (and no plain text, for a store opened with
    /// [`Encryption::accept_plaintext`]) is needed to open it. Durable on
    /// `Ok`; a crash at any moment leaves the old file (which the old key
    /// opens) or the new one (which the new key opens), as every rewrite
    /// does. Without encryption, a plain rewrite.
    ///
    /// # Errors
    ///
    /// [`FileStoreError::Io`] or [`FileStoreError::Random`]; the old file
    /// is still in place.
    pub fn rotate_key(&self) -> Result<(), FileStoreError> {
        self.rewrite(Change::Put(&[]))
    }

    /// The store file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.config.file_path
    }

    /// Rewrites the file with `change` applied, then applies it in memory:
    /// the file is the truth and memory follows it.
    fn rewrite(&self, change: Change<'_>) -> Result<(), FileStoreError> {
        // A file this store could not open again must never be written.
        if let Change::Put(batch) = change
            && batch.iter().any(|op| op.id.is_empty())
        {
            return Err(FileStoreError::InvalidOperation {
                reason: "empty operation id",
            });
        }
        let _writer = lock(&self.writer);
        let in_memory = |e: OutboxError| corrupt(self.path(), 0, 0, e.to_string());
        let mut ops: HashMap<String, Operation> = self
            .index
            .load_all()
            .map_err(in_memory)?
            .into_iter()
            .map(|op| (op.id.clone(), op))
            .collect();
        match change {
            Change::Put(batch) => ops.extend(batch.iter().map(|op| (op.id.clone(), op.clone()))),
            Change::Remove(id) => {
                ops.remove(id);
            }
        }
        let mut operations: Vec<Operation> = ops.into_values().collect();
        operations.sort_by(|a, b| (a.seq, &a.id).cmp(&(b.seq, &b.id)));
        let document = Document {
            format: JSON_FORMAT_NAME.into(),
            version: JSON_FORMAT_VERSION,
            operations,
        };
        let bytes = if self.config.pretty_json {
            serde_json::to_vec_pretty(&document)
        } else {
            serde_json::to_vec(&document)
        }
        .map_err(|e| io_error("encode store file", self.path(), std::io::Error::other(e)))?;
        let bytes = match &self.config.encryption {
            Some(encryption) => seal_file(encryption, FileRole::JsonStore, &bytes)?,
            None => bytes,
        };
        replace_atomically(self.storage.as_ref(), self.path(), &bytes)?;
        match change {
            Change::Put(batch) => self.index.put_batch(batch).map_err(in_memory),
            Change::Remove(id) => self.index.remove(id).map(drop).map_err(in_memory),
        }
    }
}

/// One change to the store.
#[derive(Clone, Copy)]
enum Change<'a> {
    Put(&'a [Operation]),
    Remove(&'a str),
}

/// `<file>.lock`, beside the store file.
fn lock_path(path: &Path) -> PathBuf {
    sibling_path(path, ".lock")
}

/// The operations of the store file at `path` (none if it is missing).
fn load(path: &Path, encryption: Option<&Encryption>) -> Result<MemoryOutboxStore, FileStoreError> {
    let index = MemoryOutboxStore::new();
    match std::fs::read(path) {
        Ok(bytes) => {
            let plain = open_file(encryption, FileRole::JsonStore, &bytes).map_err(
                |(offset, problem)| FileStoreError::Encryption {
                    path: path.to_path_buf(),
                    offset,
                    problem,
                },
            )?;
            index
                .put_batch(&parse(path, &plain)?)
                .map_err(|e| corrupt(path, 0, 0, e.to_string()))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("read store file", path, e)),
    }
    Ok(index)
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<Operation>, FileStoreError> {
    let document: Document = serde_json::from_slice(bytes)
        .map_err(|e| corrupt(path, e.line(), e.column(), json_reason(&e)))?;
    if document.format != JSON_FORMAT_NAME {
        return Err(corrupt(
            path,
            0,
            0,
            format!("format is {:?}, not {JSON_FORMAT_NAME:?}", document.format),
        ));
    }
    if document.version != JSON_FORMAT_VERSION {
        return Err(corrupt(
            path,
            0,
            0,
            format!("unsupported version {}", document.version),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for op in &document.operations {
        if op.id.is_empty() || !seen.insert(op.id.as_str()) {
            return Err(corrupt(
                path,
                0,
                0,
                format!("empty or duplicate operation id {:?}", op.id),
            ));
        }
    }
    Ok(document.operations)
}

fn corrupt(path: &Path, line: usize, column: usize, reason: String) -> FileStoreError {
    FileStoreError::Corrupt {
        path: path.to_path_buf(),
        line,
        column,
        reason,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl OutboxStore for JsonOutboxStore {
    /// Durable on `Ok`: the file was replaced and the directory fsynced.
    fn put(&self, op: &Operation) -> Result<(), OutboxError> {
        self.rewrite(Change::Put(std::slice::from_ref(op)))
            .map_err(Into::into)
    }

    /// One rewrite for the whole batch; durable on `Ok`, all or nothing.
    fn put_batch(&self, batch: &[Operation]) -> Result<(), OutboxError> {
        self.rewrite(Change::Put(batch)).map_err(Into::into)
    }

    fn get(&self, id: &str) -> Result<Option<Operation>, OutboxError> {
        self.index.get(id)
    }

    /// Durable on `Ok` (a rewrite), unless there was no such id.
    fn remove(&self, id: &str) -> Result<bool, OutboxError> {
        if self.index.get(id)?.is_none() {
            return Ok(false);
        }
        self.rewrite(Change::Remove(id))?;
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
