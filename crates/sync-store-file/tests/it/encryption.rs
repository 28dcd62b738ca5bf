//! Guards encryption at rest of both file stores: nothing of a payload in
//! the files, a wrong key / flipped byte / swapped record / missing key
//! refused with the file and offset and nothing changed, plain stores
//! moving to encryption, and key rotation through a power loss at any call.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;
use sync_outbox::testing::sample;
use sync_outbox::{Operation, OutboxStore};
use sync_store_file::{
    Encryption, EncryptionKey, EncryptionProblem, FileStoreError, JsonOutboxStore,
    JsonOutboxStoreConfig, KeySet, WalOutboxStore, WalOutboxStoreConfig,
};
use sync_wal::Storage;
use sync_wal::testing::CrashStorage;

use crate::TestResult;

const SECRET: &str = "the-user-s-secret-note";

fn old_key() -> EncryptionKey {
    EncryptionKey::new(1, [1; 32])
}

fn new_key() -> EncryptionKey {
    EncryptionKey::new(2, [2; 32])
}

fn secret_op(n: u64) -> Operation {
    let mut op = sample(&format!("op_{n}"), n, 0);
    op.payload = format!(r#"{{"text":"{SECRET} {n}"}}"#);
    op
}

fn wal_config(dir: &Path, encryption: Option<Encryption>) -> WalOutboxStoreConfig {
    let mut config = WalOutboxStoreConfig::new(dir.join("outbox-wal"));
    config.compact_min_records = 1_000_000;
    config.encryption = encryption;
    config
}

fn json_config(dir: &Path, encryption: Option<Encryption>) -> JsonOutboxStoreConfig {
    JsonOutboxStoreConfig {
        encryption,
        ..JsonOutboxStoreConfig::new(dir.join("outbox.json"))
    }
}

/// Every file under `dir`, with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.insert(path, bytes);
            }
        }
    }
    out
}

/// `bytes` without the zeros the log preallocates at a segment's end (open
/// gives them back to the file system; they hold nothing).
fn trimmed(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |at| at + 1);
    &bytes[..end]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn ids(store: &dyn OutboxStore) -> Vec<String> {
    let mut ids: Vec<String> = store
        .load_all()
        .map(|ops| ops.into_iter().map(|op| op.id).collect())
        .unwrap_or_default();
    ids.sort();
    ids
}

/// The frames of a segment file: (offset, length of header and body).
fn frames(segment: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 24;
    while let Some(len) = segment.get(at..at + 4) {
        let len = u32::from_le_bytes(len.try_into().unwrap_or_default()) as usize;
        if len == 0 {
            break;
        }
        out.push((at, 8 + len));
        at += 8 + len;
    }
    out
}

/// Sets a frame's CRC to match its bytes, as someone changing the file on
/// purpose would.
fn fix_crc(segment: &mut [u8], frame: usize) {
    let len = u32::from_le_bytes(segment[frame..frame + 4].try_into().unwrap_or_default()) as usize;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&segment[frame..frame + 4]);
    crc.update(&segment[frame + 8..frame + 8 + len]);
    segment[frame + 4..frame + 8].copy_from_slice(&crc.finalize().to_le_bytes());
}

fn only_segment(dir: &Path) -> PathBuf {
    let log = dir.join("outbox-wal").join("log");
    let mut segments: Vec<PathBuf> = files(&log)
        .into_keys()
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    assert_eq!(segments.len(), 1, "{segments:?}");
    segments.remove(0)
}

fn encryption_error(error: FileStoreError) -> (PathBuf, u64, EncryptionProblem) {
    match error {
        FileStoreError::Encryption {
            path,
            offset,
            problem,
        } => (path, offset, problem),
        other => panic!("expected an encryption error, got {other:?}"),
    }
}

#[test]
fn neither_store_s_files_hold_a_payload_and_both_reopen_with_the_key() -> TestResult {
    let dir = tempfile::tempdir()?;
    let key = || Some(Encryption::new(old_key()));
    {
        let wal = WalOutboxStore::open(wal_config(dir.path(), key()))?;
        let json = JsonOutboxStore::open(json_config(dir.path(), key()))?;
        for n in 0..5 {
            wal.put(&secret_op(n))?;
            json.put(&secret_op(n))?;
        }
        wal.compact()?;
        for n in 5..8 {
            wal.put(&secret_op(n))?;
            json.put(&secret_op(n))?;
        }
        wal.remove("op_0")?;
        json.remove("op_0")?;
    }
    let on_disk = files(dir.path());
    assert!(on_disk.keys().any(|p| p.ends_with("snapshot")));
    for (path, bytes) in &on_disk {
        assert!(
            !contains(bytes, SECRET.as_bytes()),
            "{} holds the payload",
            path.display()
        );
        assert!(
            !contains(bytes, b"message.send"),
            "{} holds the kind",
            path.display()
        );
    }
    let expected: Vec<String> = (1..8).map(|n| format!("op_{n}")).collect();
    let wal = WalOutboxStore::open(wal_config(dir.path(), key()))?;
    let json = JsonOutboxStore::open(json_config(dir.path(), key()))?;
    assert_eq!(ids(&wal), expected);
    assert_eq!(ids(&json), expected);
    assert_eq!(wal.get("op_3")?, Some(secret_op(3)));
    assert_eq!(json.get("op_3")?, Some(secret_op(3)));
    drop((wal, json));
    // synctl's way in: read-only, with the key.
    let wal = WalOutboxStore::load_read_only_with_encryption(
        dir.path().join("outbox-wal"),
        &Encryption::new(old_key()),
    )?;
    assert_eq!(ids(&wal), expected);
    let json = JsonOutboxStore::load_read_only_with_encryption(
        dir.path().join("outbox.json"),
        &Encryption::new(old_key()),
    )?;
    assert_eq!(ids(&json), expected);
    Ok(())
}

#[test]
fn a_wrong_or_missing_key_is_refused_naming_the_file_and_offset_and_changes_nothing() -> TestResult
{
    let dir = tempfile::tempdir()?;
    {
        let wal = WalOutboxStore::open(wal_config(dir.path(), Some(Encryption::new(old_key()))))?;
        let json =
            JsonOutboxStore::open(json_config(dir.path(), Some(Encryption::new(old_key()))))?;
        for n in 0..3 {
            wal.put(&secret_op(n))?;
            json.put(&secret_op(n))?;
        }
    }
    let before = files(dir.path());
    let segment = only_segment(dir.path());
    let first_payload = {
        // The first frame's payload: frame header 8, kind/time/id length 14, the id.
        (24 + 8 + 14 + "op_0".len()) as u64
    };
    let wrong = || Some(Encryption::new(EncryptionKey::new(1, [9; 32])));
    let cases: Vec<(Option<Encryption>, EncryptionProblem, u64)> = vec![
        (wrong(), EncryptionProblem::NotAuthentic { key_id: 1 }, 29),
        (
            Some(Encryption::new(new_key())),
            EncryptionProblem::UnknownKey { key_id: 1 },
            1,
        ),
        (None, EncryptionProblem::NoKeys, 0),
    ];
    for (encryption, problem, in_payload) in cases {
        let error = WalOutboxStore::open(wal_config(dir.path(), encryption.clone()))
            .err()
            .ok_or("the WAL store opened")?;
        assert_eq!(
            encryption_error(error),
            (segment.clone(), first_payload + in_payload, problem.clone())
        );
        let error = JsonOutboxStore::open(json_config(dir.path(), encryption))
            .err()
            .ok_or("the JSON store opened")?;
        let file_offset = match problem {
            EncryptionProblem::NotAuthentic { .. } => 44,
            EncryptionProblem::UnknownKey { .. } => 16,
            _ => 0,
        };
        assert_eq!(
            encryption_error(error),
            (dir.path().join("outbox.json"), file_offset, problem)
        );
    }
    // Never a silently empty queue, never a rewrite: every byte as it was.
    let not_locks = |files: BTreeMap<PathBuf, Vec<u8>>| {
        files
            .into_iter()
            .filter(|(path, _)| {
                !path.to_string_lossy().ends_with(".lock") && !path.ends_with("LOCK")
            })
            .map(|(path, bytes)| (path, trimmed(&bytes).to_vec()))
            .collect::<BTreeMap<_, _>>()
    };
    assert!(
        not_locks(before) == not_locks(files(dir.path())),
        "a refused open changed a file"
    );
    Ok(())
}

#[test]
fn a_changed_byte_in_any_sealed_payload_is_refused_at_its_offset() -> TestResult {
    let dir = tempfile::tempdir()?;
    let key = || Some(Encryption::new(old_key()));
    {
        let wal = WalOutboxStore::open(wal_config(dir.path(), key()))?;
        wal.put(&secret_op(0))?;
        wal.put(&secret_op(1))?;
    }
    let segment = only_segment(dir.path());
    let clean = std::fs::read(&segment)?;
    let (frame, len) = frames(&clean)[1];
    let payload = frame + 8 + 14 + "op_1".len();
    // Every byte of the second record's payload, changed by someone who
    // also fixes the frame's CRC (so the log itself sees no damage).
    for at in payload..frame + len {
        let mut bytes = clean.clone();
        bytes[at] ^= 0x20;
        fix_crc(&mut bytes, frame);
        std::fs::write(&segment, &bytes)?;
        let error = WalOutboxStore::open(wal_config(dir.path(), key()))
            .err()
            .ok_or_else(|| format!("opened with byte {at} changed"))?;
        let (path, offset, problem) = encryption_error(error);
        assert_eq!(path, segment);
        let in_payload = offset - payload as u64;
        match problem {
            // The marker: now a "plain" record, which encryption refuses.
            EncryptionProblem::Unencrypted => assert_eq!(at, payload),
            // The key id: a key the ring does not hold.
            EncryptionProblem::UnknownKey { .. } => assert!((1..5).contains(&(at - payload))),
            EncryptionProblem::NotAuthentic { key_id: 1 } => assert_eq!(in_payload, 29),
            other => panic!("byte {at}: {other:?}"),
        }
        assert!(
            trimmed(&std::fs::read(&segment)?) == trimmed(&bytes),
            "byte {at}: the log was changed"
        );
    }
    // The JSON store: every byte of its file.
    {
        let json = JsonOutboxStore::open(json_config(dir.path(), key()))?;
        json.put(&secret_op(0))?;
    }
    let path = dir.path().join("outbox.json");
    let clean = std::fs::read(&path)?;
    for at in 0..clean.len() {
        let mut bytes = clean.clone();
        bytes[at] ^= 0x01;
        std::fs::write(&path, &bytes)?;
        let result = JsonOutboxStore::open(json_config(dir.path(), key()));
        assert!(
            matches!(result, Err(FileStoreError::Encryption { ref path, .. }) if path.ends_with("outbox.json")),
            "byte {at}: {result:?}"
        );
        assert!(
            std::fs::read(&path)? == bytes,
            "byte {at}: the file was changed"
        );
    }
    Ok(())
}

#[test]
fn swapped_records_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let key = || Some(Encryption::new(old_key()));
    {
        let wal = WalOutboxStore::open(wal_config(dir.path(), key()))?;
        let mut op = secret_op(0);
        wal.put(&op)?;
        op.status = sync_outbox::OperationStatus::InFlight;
        op.attempt = 1;
        wal.put(&op)?;
        op.status = sync_outbox::OperationStatus::Done;
        wal.put(&op)?;
    }
    let segment = only_segment(dir.path());
    let clean = std::fs::read(&segment)?;
    let f = frames(&clean);
    // Swap the claim and the result: two whole frames, each with a valid
    // CRC; replayed as they stand, the operation would end in flight.
    let (a, a_len) = f[1];
    let (b, b_len) = f[2];
    let mut swapped = clean[..a].to_vec();
    swapped.extend_from_slice(&clean[b..b + b_len]);
    swapped.extend_from_slice(&clean[a..a + a_len]);
    swapped.extend_from_slice(&clean[b + b_len..]);
    std::fs::write(&segment, &swapped)?;
    let error = WalOutboxStore::open(wal_config(dir.path(), key()))
        .err()
        .ok_or("a log with swapped records opened")?;
    let (path, offset, problem) = encryption_error(error);
    assert_eq!(path, segment);
    assert_eq!(offset, (a + 8 + 14 + "op_0".len() + 29) as u64);
    assert_eq!(problem, EncryptionProblem::NotAuthentic { key_id: 1 });
    Ok(())
}

#[test]
fn a_plain_store_moves_to_encryption_through_accept_plaintext_and_rotate_key() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let wal = WalOutboxStore::open(wal_config(dir.path(), None))?;
        let json = JsonOutboxStore::open(json_config(dir.path(), None))?;
        for n in 0..4 {
            wal.put(&secret_op(n))?;
            json.put(&secret_op(n))?;
        }
        wal.compact()?;
        wal.put(&secret_op(4))?;
    }
    let key = || Some(Encryption::new(old_key()));
    // With encryption that refuses plain content, plain files are refused.
    let error = WalOutboxStore::open(wal_config(dir.path(), key()))
        .err()
        .ok_or("opened")?;
    let (path, offset, problem) = encryption_error(error);
    assert_eq!(
        (path, offset, problem),
        (
            dir.path().join("outbox-wal").join("snapshot"),
            0,
            EncryptionProblem::Unencrypted
        )
    );
    let error = JsonOutboxStore::open(json_config(dir.path(), key()))
        .err()
        .ok_or("opened")?;
    assert_eq!(encryption_error(error).2, EncryptionProblem::Unencrypted);
    // The first open after turning encryption on.
    let migrating = || Some(Encryption::new(old_key()).accept_plaintext(true));
    {
        let wal = WalOutboxStore::open(wal_config(dir.path(), migrating()))?;
        let json = JsonOutboxStore::open(json_config(dir.path(), migrating()))?;
        assert_eq!(ids(&wal).len(), 5);
        assert_eq!(ids(&json).len(), 4);
        wal.put(&secret_op(5))?;
        wal.rotate_key()?;
        json.rotate_key()?;
    }
    for (path, bytes) in files(dir.path()) {
        assert!(
            !contains(&bytes, SECRET.as_bytes()),
            "{} still plain",
            path.display()
        );
    }
    let wal = WalOutboxStore::open(wal_config(dir.path(), key()))?;
    let json = JsonOutboxStore::open(json_config(dir.path(), key()))?;
    assert_eq!(ids(&wal).len(), 6);
    assert_eq!(ids(&json).len(), 4);
    Ok(())
}

#[test]
fn after_rotate_key_the_new_key_alone_opens_and_the_old_one_does_not() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let wal = WalOutboxStore::open(wal_config(dir.path(), Some(Encryption::new(old_key()))))?;
        let json =
            JsonOutboxStore::open(json_config(dir.path(), Some(Encryption::new(old_key()))))?;
        for n in 0..4 {
            wal.put(&secret_op(n))?;
            json.put(&secret_op(n))?;
        }
        wal.compact()?;
        wal.put(&secret_op(4))?;
    }
    let both = || {
        Some(Encryption::new(
            KeySet::new(new_key()).with_previous(old_key()),
        ))
    };
    {
        let wal = WalOutboxStore::open(wal_config(dir.path(), both()))?;
        let json = JsonOutboxStore::open(json_config(dir.path(), both()))?;
        wal.rotate_key()?;
        json.rotate_key()?;
        // Changes after the rotation too.
        wal.put(&secret_op(5))?;
        assert_eq!(wal.wal().segment_count(), 1, "every older segment removed");
    }
    let new_only = || Some(Encryption::new(new_key()));
    assert_eq!(
        ids(&WalOutboxStore::open(wal_config(dir.path(), new_only()))?).len(),
        6
    );
    assert_eq!(
        ids(&JsonOutboxStore::open(json_config(dir.path(), new_only()))?).len(),
        4
    );
    let old_only = || Some(Encryption::new(old_key()));
    for error in [
        WalOutboxStore::open(wal_config(dir.path(), old_only())).err(),
        JsonOutboxStore::open(json_config(dir.path(), old_only())).err(),
    ] {
        let (_, _, problem) = encryption_error(error.ok_or("the old key opened it")?);
        assert_eq!(problem, EncryptionProblem::UnknownKey { key_id: 2 });
    }
    Ok(())
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Wal,
    Json,
}

fn open_with(
    kind: Kind,
    dir: &Path,
    encryption: Encryption,
    storage: Arc<dyn Storage>,
) -> Result<Arc<dyn RotateKey>, FileStoreError> {
    Ok(match kind {
        Kind::Wal => Arc::new(WalOutboxStore::open_with_storage(
            wal_config(dir, Some(encryption)),
            storage,
        )?),
        Kind::Json => Arc::new(JsonOutboxStore::open_with_storage(
            json_config(dir, Some(encryption)),
            storage,
        )?),
    })
}

/// Both stores' `rotate_key`, for one test over both.
trait RotateKey: OutboxStore {
    fn rotate(&self) -> Result<(), FileStoreError>;
}

impl RotateKey for WalOutboxStore {
    fn rotate(&self) -> Result<(), FileStoreError> {
        self.rotate_key()
    }
}

impl RotateKey for JsonOutboxStore {
    fn rotate(&self) -> Result<(), FileStoreError> {
        self.rotate_key()
    }
}

/// Writes `n` operations under the old key, then rotates to the new one
/// (and writes one more) on storage whose power fails at call `crash_at`.
fn rotate_through_a_power_loss(kind: Kind, n: u64, crash_at: u64, seed: u64) -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let store = open_with(
            kind,
            dir.path(),
            Encryption::new(old_key()),
            Arc::new(sync_wal::FileStorage),
        )?;
        for i in 0..n {
            store.put(&secret_op(i))?;
            if i == n / 2 {
                // A snapshot (or file) of the old key, and records after it.
                store.rotate()?;
            }
        }
    }
    let both = || Encryption::new(KeySet::new(new_key()).with_previous(old_key()));
    let storage = CrashStorage::crash_at_call(crash_at, seed);
    let mut expected: Vec<String> = (0..n).map(|i| format!("op_{i}")).collect();
    let mut rotated = false;
    let mut extra_in_doubt = false;
    if let Ok(store) = open_with(kind, dir.path(), both(), Arc::new(storage.clone())) {
        rotated = store.rotate().is_ok();
        if rotated {
            let extra = secret_op(n);
            if store.put(&extra).is_ok() {
                expected.push(extra.id);
            } else {
                extra_in_doubt = true;
            }
        }
    }
    if !storage.crashed() {
        storage.crash(|_| 0)?;
    }
    expected.sort();
    let reopened =
        open_with(kind, dir.path(), both(), Arc::new(sync_wal::FileStorage)).map_err(|e| {
            format!("{kind:?}: power failed at call {crash_at}: reopen with both keys: {e}")
        })?;
    let mut found = ids(reopened.as_ref());
    if extra_in_doubt {
        found.retain(|id| *id != format!("op_{n}"));
    }
    assert_eq!(found, expected, "{kind:?}: power failed at call {crash_at}");
    drop(reopened);
    if rotated {
        let new_only = open_with(
            kind,
            dir.path(),
            Encryption::new(new_key()),
            Arc::new(sync_wal::FileStorage),
        )
        .map_err(|e| {
            format!("{kind:?}: rotated, power failed at call {crash_at}: the new key alone: {e}")
        })?;
        let mut found = ids(new_only.as_ref());
        if extra_in_doubt {
            found.retain(|id| *id != format!("op_{n}"));
        }
        assert_eq!(found, expected);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn a_wal_store_s_rotation_survives_a_power_loss_at_any_call(
        n in 1u64..12, crash_at in 1u64..40, seed in any::<u64>(),
    ) {
        rotate_through_a_power_loss(Kind::Wal, n, crash_at, seed)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
    }

    #[test]
    fn a_json_store_s_rotation_survives_a_power_loss_at_any_call(
        n in 1u64..12, crash_at in 1u64..20, seed in any::<u64>(),
    ) {
        rotate_through_a_power_loss(Kind::Json, n, crash_at, seed)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
}
