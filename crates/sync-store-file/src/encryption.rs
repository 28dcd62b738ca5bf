//! Encryption at rest for both file stores: the app's keys ([`KeyRing`],
//! [`EncryptionKey`], [`KeySet`]), the setting that turns it on
//! ([`Encryption`]), and the sealing of WAL records and whole files
//! (`docs/FORMAT.md`, "Encrypted file stores"). No I/O here.
//!
//! The AEAD is XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`), fast
//! in software on every CPU, with or without AES instructions. Its 24-byte
//! nonce is 16 random bytes drawn once per [`Encryption`] (and its clones)
//! then a 64-bit counter: unique for every seal without a system call per
//! seal (a call to the OS's random source per record cost ~1 us). A nonce
//! counted from the LSN alone would repeat once a torn tail is cut and its
//! LSNs are written again; a fresh random prefix per `Encryption` cannot
//! (two prefixes meet with probability 2^-128 per pair).
//!
//! What a seal binds, besides the bytes: a record's LSN, kind, time and id
//! (so a record moved to another place in the log, or given another id,
//! does not authenticate), a file's role (a snapshot is not a JSON store
//! file) and the key id of each.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use sync_wal::WalRecord;
use zeroize::Zeroizing;

use crate::error::{EncryptionProblem, FileStoreError};

/// The length of a key in bytes (256 bits).
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// The first payload byte of a sealed WAL record. No plain payload starts
/// with it: a whole operation is JSON (`{`), a transition starts with its
/// version (1), a removal is empty.
const RECORD_MARKER: u8 = 0xE5;
/// Marker, key id, nonce.
const RECORD_HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
/// What a sealed record's AAD starts with (a domain separator).
const RECORD_CONTEXT: &[u8] = b"sync-store-file record\0";

/// The first 8 bytes of a sealed file.
pub const SEALED_FILE_MAGIC: [u8; 8] = *b"SYNCSEAL";
/// The version of the sealed-file envelope this crate writes and reads.
const SEALED_FILE_VERSION: u32 = 1;
/// Magic, version, role, 3 zero bytes, key id, nonce.
const FILE_HEADER_LEN: usize = 8 + 4 + 1 + 3 + 4 + NONCE_LEN;

/// A 256-bit key and the id it is stored under.
///
/// The id is written beside everything the key seals, so a store can hold
/// data of several keys while it moves to a new one ([`KeySet`]). Give each
/// key its own id; a store never sees the key itself, only the id.
///
/// The bytes are wiped from memory when the key is dropped. `Debug` shows
/// the id only.
///
/// # Examples
///
/// ```
/// use sync_store_file::EncryptionKey;
///
/// // Once, at install: make a key and keep its bytes in the OS keychain.
/// let key = EncryptionKey::generate(1)?;
/// let for_the_keychain: [u8; 32] = *key.as_bytes();
/// // Every start: the same key from the keychain.
/// let key = EncryptionKey::new(1, for_the_keychain);
/// assert_eq!(format!("{key:?}"), "EncryptionKey { id: 1, .. }");
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct EncryptionKey {
    id: u32,
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

impl EncryptionKey {
    /// The key `bytes` under `id`.
    #[must_use]
    pub fn new(id: u32, bytes: [u8; KEY_LEN]) -> Self {
        Self {
            id,
            bytes: Zeroizing::new(bytes),
        }
    }

    /// A new random key under `id`, from the operating system's random
    /// source. Keep [`as_bytes`](Self::as_bytes) somewhere safe (the OS
    /// keychain): a store sealed with it cannot be read without it.
    ///
    /// # Errors
    ///
    /// [`FileStoreError::Random`] if the operating system gives no random
    /// bytes.
    pub fn generate(id: u32) -> Result<Self, FileStoreError> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        random(bytes.as_mut_slice())?;
        Ok(Self { id, bytes })
    }

    /// The key's id.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The key's bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&(*self.bytes).into())
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptionKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Where a store gets its keys: the one new data is sealed with, and any
/// older one by id, for data sealed before a rotation.
///
/// The app implements it over wherever it keeps keys (the OS keychain, a
/// hardware-backed keystore), or uses [`EncryptionKey`] (one key) or
/// [`KeySet`] (a key and those it replaced). Both methods are called on
/// every seal and every open, so they should answer from memory.
pub trait KeyRing: Send + Sync {
    /// The key everything written from now on is sealed with.
    fn current(&self) -> &EncryptionKey;

    /// The key with `id`, if the ring holds it.
    fn key(&self, id: u32) -> Option<&EncryptionKey>;
}

/// One key: new data is sealed with it, and only data under its id opens.
impl KeyRing for EncryptionKey {
    fn current(&self) -> &EncryptionKey {
        self
    }

    fn key(&self, id: u32) -> Option<&EncryptionKey> {
        (id == self.id).then_some(self)
    }
}

/// A current key and the keys it replaced: what a store needs while it
/// moves to a new key (see `rotate_key` on either store).
///
/// # Examples
///
/// ```
/// use sync_store_file::{EncryptionKey, KeyRing, KeySet};
///
/// let keys = KeySet::new(EncryptionKey::new(2, [2; 32])).with_previous(EncryptionKey::new(1, [1; 32]));
/// assert_eq!(keys.current().id(), 2);
/// assert!(keys.key(1).is_some());
/// assert!(keys.key(3).is_none());
/// ```
#[derive(Clone, Debug)]
pub struct KeySet {
    current: EncryptionKey,
    previous: Vec<EncryptionKey>,
}

impl KeySet {
    /// A set whose current key is `current`.
    #[must_use]
    pub fn new(current: EncryptionKey) -> Self {
        Self {
            current,
            previous: Vec::new(),
        }
    }

    /// Adds a key data may still be sealed with.
    #[must_use]
    pub fn with_previous(mut self, key: EncryptionKey) -> Self {
        self.previous.push(key);
        self
    }
}

impl KeyRing for KeySet {
    fn current(&self) -> &EncryptionKey {
        &self.current
    }

    fn key(&self, id: u32) -> Option<&EncryptionKey> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|key| key.id == id)
    }
}

/// Turns on encryption at rest for a file store: every record, snapshot
/// and store file it writes is sealed with the ring's current key.
///
/// Set it with `with_encryption` on [`JsonOutboxStoreConfig`] or
/// [`WalOutboxStoreConfig`]. What a store reads must be sealed by a key in
/// the ring; plain (unencrypted) content is refused unless
/// [`accept_plaintext`](Self::accept_plaintext) is set, for the first open
/// of a store that was written before encryption was turned on.
///
/// Two settings are equal if they share the same ring (`Arc::ptr_eq`).
///
/// [`JsonOutboxStoreConfig`]: crate::JsonOutboxStoreConfig
/// [`WalOutboxStoreConfig`]: crate::WalOutboxStoreConfig
///
/// # Examples
///
/// ```
/// use sync_outbox::{Operation, Outbox, OutboxConfig};
/// use sync_store_file::{Encryption, EncryptionKey, WalOutboxStore, WalOutboxStoreConfig};
///
/// let dir = tempfile::tempdir().expect("a temp dir");
/// let key = EncryptionKey::new(1, [7; 32]); // from the OS keychain
/// let config = WalOutboxStoreConfig::new(dir.path()).with_encryption(Encryption::new(key));
/// let outbox = Outbox::new(OutboxConfig::default(), std::sync::Arc::new(WalOutboxStore::open(config)?));
/// outbox.enqueue(Operation::new("note.put", "/api/notes/1", r#"{"text":"my secret"}"#), 0)?;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Encryption {
    keys: Arc<dyn KeyRing>,
    accept_plaintext: bool,
    nonces: Arc<Nonces>,
}

/// The nonces of one [`Encryption`] and its clones: a random prefix drawn
/// at the first seal, then a counter.
#[derive(Debug, Default)]
struct Nonces {
    prefix: OnceLock<[u8; 16]>,
    next: AtomicU64,
}

impl Nonces {
    fn next(&self) -> Result<[u8; NONCE_LEN], FileStoreError> {
        let prefix = if let Some(prefix) = self.prefix.get() {
            prefix
        } else {
            let mut fresh = [0u8; 16];
            random(&mut fresh)?;
            self.prefix.get_or_init(|| fresh)
        };
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..16].copy_from_slice(prefix);
        nonce[16..].copy_from_slice(&self.next.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        Ok(nonce)
    }
}

impl Encryption {
    /// Encryption with the keys of `keys`; plain content refused.
    pub fn new(keys: impl KeyRing + 'static) -> Self {
        Self::from_shared(Arc::new(keys))
    }

    /// [`Encryption::new`] with a ring the app shares.
    #[must_use]
    pub fn from_shared(keys: Arc<dyn KeyRing>) -> Self {
        Self {
            keys,
            accept_plaintext: false,
            nonces: Arc::default(),
        }
    }

    /// Whether plain (unencrypted) records and files are read rather than
    /// refused. Default `false`: with it off, nobody who can write the files
    /// can slip in content the store did not seal.
    ///
    /// Turn it on for the first open of a store written without
    /// encryption; new writes are sealed, and `rotate_key` seals what is
    /// left. Then turn it off again.
    #[must_use]
    pub fn accept_plaintext(mut self, accept: bool) -> Self {
        self.accept_plaintext = accept;
        self
    }

    /// The ring.
    #[must_use]
    pub fn keys(&self) -> &dyn KeyRing {
        self.keys.as_ref()
    }

    /// Whether plain content is read.
    #[must_use]
    pub fn accepts_plaintext(&self) -> bool {
        self.accept_plaintext
    }
}

impl fmt::Debug for Encryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encryption")
            .field("current_key_id", &self.keys.current().id)
            .field("accept_plaintext", &self.accept_plaintext)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Encryption {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.keys, &other.keys) && self.accept_plaintext == other.accept_plaintext
    }
}

impl Eq for Encryption {}

/// Fills `out` from the operating system's random source.
fn random(out: &mut [u8]) -> Result<(), FileStoreError> {
    getrandom::fill(out).map_err(|e| FileStoreError::Random {
        reason: e.to_string(),
    })
}

/// The AAD of a record at `lsn`: everything of its frame but the payload,
/// then the sealed payload's marker and key id.
fn record_aad(lsn: u64, record: &WalRecord, header: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(RECORD_CONTEXT.len() + 22 + record.id.len() + 5);
    aad.extend_from_slice(RECORD_CONTEXT);
    aad.extend_from_slice(&lsn.to_le_bytes());
    aad.extend_from_slice(&record.kind.code().to_le_bytes());
    aad.extend_from_slice(&record.ts_ms.to_le_bytes());
    aad.extend_from_slice(&(record.id.len() as u64).to_le_bytes());
    aad.extend_from_slice(record.id.as_bytes());
    aad.extend_from_slice(header.get(..5).unwrap_or_default());
    aad
}

/// Replaces the payload of `record`, to be appended at `lsn`, with its
/// sealed form: marker, key id, nonce, ciphertext and tag.
pub(crate) fn seal_record(
    encryption: &Encryption,
    lsn: u64,
    record: &mut WalRecord,
) -> Result<(), FileStoreError> {
    let key = encryption.keys.current();
    let mut sealed = Vec::with_capacity(RECORD_HEADER_LEN + record.payload.len() + TAG_LEN);
    sealed.push(RECORD_MARKER);
    sealed.extend_from_slice(&key.id.to_le_bytes());
    let nonce = encryption.nonces.next()?;
    sealed.extend_from_slice(&nonce);
    let aad = record_aad(lsn, record, &sealed);
    sealed.extend_from_slice(&record.payload);
    let tag = seal(key, &nonce, &aad, sealed.get_mut(RECORD_HEADER_LEN..))?;
    sealed.extend_from_slice(&tag);
    record.payload = sealed;
    Ok(())
}

/// Replaces a sealed payload of `record`, read at `lsn`, with the plain one;
/// leaves a plain payload as it is if `encryption` accepts it (or is
/// `None`). `Err` has the offset of the problem in the payload.
pub(crate) fn open_record(
    encryption: Option<&Encryption>,
    lsn: u64,
    record: &mut WalRecord,
) -> Result<(), (u64, EncryptionProblem)> {
    let sealed = record.payload.first() == Some(&RECORD_MARKER);
    let Some(encryption) = keys_for(encryption, sealed)? else {
        return Ok(());
    };
    let payload = &record.payload;
    let (Some(header), Some(body)) = (
        payload.get(..RECORD_HEADER_LEN),
        payload
            .get(RECORD_HEADER_LEN..)
            .filter(|body| body.len() >= TAG_LEN),
    ) else {
        return Err((
            0,
            EncryptionProblem::Malformed(format!(
                "a sealed record of {} bytes, shorter than its header and tag ({})",
                payload.len(),
                RECORD_HEADER_LEN + TAG_LEN
            )),
        ));
    };
    let key_id = u32::from_le_bytes(array(header, 1));
    let nonce: [u8; NONCE_LEN] = array(header, 5);
    let key = encryption
        .keys
        .key(key_id)
        .ok_or((1, EncryptionProblem::UnknownKey { key_id }))?;
    let aad = record_aad(lsn, record, header);
    let mut plain = body.to_vec();
    open(key, &nonce, &aad, &mut plain).map_err(|()| {
        (
            RECORD_HEADER_LEN as u64,
            EncryptionProblem::NotAuthentic { key_id },
        )
    })?;
    record.payload = plain;
    Ok(())
}

/// What a sealed file holds; part of its AAD, so one cannot stand in for
/// the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileRole {
    /// A JSON store's file.
    JsonStore = 1,
    /// A WAL store's snapshot.
    Snapshot = 2,
}

/// Whether `bytes` start like a sealed file.
pub(crate) fn is_sealed_file(bytes: &[u8]) -> bool {
    bytes.starts_with(&SEALED_FILE_MAGIC)
}

/// `plain` sealed as a whole file of `role` with the ring's current key.
pub(crate) fn seal_file(
    encryption: &Encryption,
    role: FileRole,
    plain: &[u8],
) -> Result<Vec<u8>, FileStoreError> {
    let key = encryption.keys.current();
    let mut out = Vec::with_capacity(FILE_HEADER_LEN + plain.len() + TAG_LEN);
    out.extend_from_slice(&SEALED_FILE_MAGIC);
    out.extend_from_slice(&SEALED_FILE_VERSION.to_le_bytes());
    out.push(role as u8);
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(&key.id.to_le_bytes());
    let nonce = encryption.nonces.next()?;
    out.extend_from_slice(&nonce);
    let aad = out.clone();
    out.extend_from_slice(plain);
    let tag = seal(key, &nonce, &aad, out.get_mut(FILE_HEADER_LEN..))?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// The plain bytes of the file `bytes` of `role`: opened if sealed, as they
/// are if plain and `encryption` accepts that (or is `None`). `Err` has the
/// offset of the problem in the file.
pub(crate) fn open_file<'a>(
    encryption: Option<&Encryption>,
    role: FileRole,
    bytes: &'a [u8],
) -> Result<std::borrow::Cow<'a, [u8]>, (u64, EncryptionProblem)> {
    let Some(encryption) = keys_for(encryption, is_sealed_file(bytes))? else {
        return Ok(bytes.into());
    };
    let (Some(header), Some(body)) = (
        bytes.get(..FILE_HEADER_LEN),
        bytes
            .get(FILE_HEADER_LEN..)
            .filter(|body| body.len() >= TAG_LEN),
    ) else {
        return Err((
            0,
            EncryptionProblem::Malformed(format!(
                "a sealed file of {} bytes, shorter than its header and tag ({})",
                bytes.len(),
                FILE_HEADER_LEN + TAG_LEN
            )),
        ));
    };
    let version = u32::from_le_bytes(array(header, 8));
    if version != SEALED_FILE_VERSION {
        return Err((
            8,
            EncryptionProblem::Malformed(format!("unsupported sealed-file version {version}")),
        ));
    }
    let stored_role = header.get(12).copied().unwrap_or_default();
    if stored_role != role as u8 || header.get(13..16) != Some(&[0, 0, 0][..]) {
        return Err((
            12,
            EncryptionProblem::Malformed(format!(
                "sealed file role {stored_role}, expected {} ({role:?})",
                role as u8
            )),
        ));
    }
    let key_id = u32::from_le_bytes(array(header, 16));
    let nonce: [u8; NONCE_LEN] = array(header, 20);
    let key = encryption
        .keys
        .key(key_id)
        .ok_or((16, EncryptionProblem::UnknownKey { key_id }))?;
    let mut plain = body.to_vec();
    open(key, &nonce, header, &mut plain).map_err(|()| {
        (
            FILE_HEADER_LEN as u64,
            EncryptionProblem::NotAuthentic { key_id },
        )
    })?;
    Ok(plain.into())
}

/// The encryption to open content with when it is `sealed`; `None` for
/// plain content read as it is (no encryption configured, or it accepts
/// plain content).
fn keys_for(
    encryption: Option<&Encryption>,
    sealed: bool,
) -> Result<Option<&Encryption>, (u64, EncryptionProblem)> {
    match (encryption, sealed) {
        (None, false) => Ok(None),
        (None, true) => Err((0, EncryptionProblem::NoKeys)),
        (Some(e), false) if e.accept_plaintext => Ok(None),
        (Some(_), false) => Err((0, EncryptionProblem::Unencrypted)),
        (Some(e), true) => Ok(Some(e)),
    }
}

/// Encrypts `buffer` in place; returns the tag.
fn seal(
    key: &EncryptionKey,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buffer: Option<&mut [u8]>,
) -> Result<Tag, FileStoreError> {
    key.cipher()
        .encrypt_inout_detached(
            &XNonce::from(*nonce),
            aad,
            buffer.unwrap_or_default().into(),
        )
        // Only a message over 256 GiB fails; no record or file is one.
        .map_err(|_| FileStoreError::InvalidOperation {
            reason: "too large to encrypt",
        })
}

/// Checks and decrypts `sealed` (ciphertext then tag) in place, leaving the
/// plain bytes.
fn open(
    key: &EncryptionKey,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    sealed: &mut Vec<u8>,
) -> Result<(), ()> {
    let body_len = sealed.len().checked_sub(TAG_LEN).ok_or(())?;
    let tag = Tag::try_from(sealed.get(body_len..).unwrap_or_default()).map_err(drop)?;
    let body = sealed.get_mut(..body_len).ok_or(())?;
    key.cipher()
        .decrypt_inout_detached(&XNonce::from(*nonce), aad, body.into(), &tag)
        .map_err(drop)?;
    sealed.truncate(body_len);
    Ok(())
}

fn array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = bytes.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

#[cfg(test)]
mod tests;
