//! The fuzz targets of `sync`, as plain functions over bytes.
//!
//! Each target feeds arbitrary bytes to one decoder and checks what must
//! hold whatever the bytes: no panic, a typed error or a value that
//! round-trips, and no file changed by a refusal. The same functions run
//! under libFuzzer (`cargo xtask fuzz`, binaries in `fuzz/libfuzzer`) and
//! over the committed corpus and regressions in `cargo test`
//! (`fuzz/tests/corpus.rs`).
//!
//! | target | decoder |
//! | --- | --- |
//! | [`wal_frames`] | `sync_wal::format::decode_frame` on a byte slice |
//! | [`wal_log`] | a segment file read by `WalInspector` and recovered by `Wal::open` |
//! | [`snapshot`] | `sync_store_file::snapshot::Snapshot::decode` |
//! | [`json_store`] | a JSON store file loaded by `JsonOutboxStore` |
//! | [`sealed_json_store`] | an encrypted JSON store file (the sealed-file envelope) |
//! | [`sealed_wal_store`] | a segment of an encrypted `WalOutboxStore` (sealed records) |
//!
//! A target panics (which libFuzzer reports as a crash) exactly when an
//! invariant is broken.

#![deny(missing_docs)]

use std::fs;
use std::path::Path;

use sync_outbox::{Operation, OutboxStore};
use sync_store_file::snapshot::Snapshot;
use sync_store_file::{
    Encryption, EncryptionKey, JsonOutboxStore, JsonOutboxStoreConfig, WalOutboxStore,
    WalOutboxStoreConfig,
};
use sync_wal::format::{FRAME_HEADER_LEN, decode_frame, encode_frame};
use sync_wal::{RecordType, Wal, WalConfig, WalInspector, WalRecord};

/// The record limit the targets decode with: small, so a length field can
/// point far past it and the limit check is exercised.
const MAX_RECORD_BYTES: u32 = 1 << 16;

/// Decodes frames one after another from `data`. Every frame that decodes
/// must encode back to exactly the bytes it was read from.
///
/// # Panics
///
/// When an invariant is broken (the finding of a fuzz run).
pub fn wal_frames(data: &[u8]) {
    let mut rest = data;
    let mut record = WalRecord::default();
    let mut encoded = Vec::new();
    while let Ok(len) = decode_frame(rest, MAX_RECORD_BYTES, &mut record) {
        assert!(
            len >= FRAME_HEADER_LEN && len <= rest.len(),
            "frame length {len} out of its input"
        );
        encoded.clear();
        encode_frame(&record, MAX_RECORD_BYTES, &mut encoded).expect("a decoded record encodes");
        assert_eq!(
            Some(encoded.as_slice()),
            rest.get(..len),
            "frame does not round-trip"
        );
        rest = rest.get(len..).unwrap_or_default();
    }
}

/// Writes `data` as the only segment of a log, then reads it with
/// [`WalInspector`] and recovers it with [`Wal::open`]. The inspector must
/// change no byte; when both succeed they must read the same records; a
/// recovered log must take an append and read it back after a reopen.
///
/// # Panics
///
/// When an invariant is broken.
pub fn wal_log(data: &[u8]) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let segment = dir.path().join("00000000000000000000.wal");
    fs::write(&segment, data).expect("write the segment");
    let mut config = WalConfig::new(dir.path());
    config.max_record_bytes = MAX_RECORD_BYTES;

    let viewed = WalInspector::open_with(&config)
        .and_then(|view| view.iter_from(0).collect::<Result<Vec<_>, _>>());
    assert_eq!(
        read(&segment),
        data,
        "the read-only view changed the segment"
    );

    let Ok(wal) = Wal::open(config.clone()) else {
        assert_eq!(read(&segment), data, "a refused log was changed");
        return;
    };
    let recovered: Vec<(u64, WalRecord)> = wal
        .iter_from(0)
        .and_then(Iterator::collect)
        .expect("a recovered log reads back");
    if let Ok(viewed) = viewed {
        assert_eq!(viewed, recovered, "view and recovery disagree");
    }
    let extra = WalRecord {
        id: "fuzz".into(),
        kind: RecordType::Custom(9),
        ts_ms: 1,
        payload: b"after recovery".to_vec(),
    };
    let lsn = wal.append(&extra).expect("a recovered log takes an append");
    assert_eq!(lsn, recovered.len() as u64);
    drop(wal);
    let reopened: Vec<(u64, WalRecord)> = Wal::open(config)
        .and_then(|wal| wal.iter_from(0)?.collect())
        .expect("the log reopens after an append");
    assert_eq!(reopened.len(), recovered.len() + 1);
    assert_eq!(reopened.last().map(|(_, r)| r), Some(&extra));
}

/// Decodes `data` as a WAL store snapshot; a snapshot that decodes must
/// encode and decode to the same operations.
///
/// # Panics
///
/// When an invariant is broken.
pub fn snapshot(data: &[u8]) {
    let Ok(snapshot) = Snapshot::decode(data) else {
        return;
    };
    let bytes = snapshot.encode().expect("a decoded snapshot encodes");
    let again = Snapshot::decode(&bytes).expect("an encoded snapshot decodes");
    assert_eq!(again.lsn, snapshot.lsn);
    assert_eq!(again.operations, snapshot.operations);
}

/// Loads `data` as a JSON store file. A file that loads must open as a
/// store that keeps its operations across a change and a reopen; a file that
/// does not load must be refused by `open` too, and left byte for byte.
///
/// # Panics
///
/// When an invariant is broken.
pub fn json_store(data: &[u8]) {
    json_store_with(data, None);
}

/// The key of the sealed targets and their seeds.
#[must_use]
pub fn fuzz_encryption() -> Encryption {
    Encryption::new(EncryptionKey::new(1, [0x42; 32]))
}

/// [`json_store`] for a store encrypted with [`fuzz_encryption`]: the file
/// is opened through the sealed-file envelope, with the same invariants.
///
/// # Panics
///
/// When an invariant is broken.
pub fn sealed_json_store(data: &[u8]) {
    json_store_with(data, Some(&fuzz_encryption()));
}

fn json_store_with(data: &[u8], encryption: Option<&Encryption>) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("outbox.json");
    fs::write(&path, data).expect("write the store file");
    let config = JsonOutboxStoreConfig {
        pretty_json: false,
        encryption: encryption.cloned(),
        ..JsonOutboxStoreConfig::new(path.clone())
    };
    let loaded = match encryption {
        Some(encryption) => JsonOutboxStore::load_read_only_with_encryption(&path, encryption),
        None => JsonOutboxStore::load_read_only(&path),
    };
    assert_eq!(read(&path), data, "a read-only load changed the file");
    let Ok(loaded) = loaded else {
        assert!(
            JsonOutboxStore::open(config).is_err(),
            "open accepted what load refused"
        );
        assert_eq!(read(&path), data, "a refused file was changed");
        return;
    };
    let before = loaded.load_all().expect("memory store");
    let store = JsonOutboxStore::open(config.clone()).expect("open accepts what load accepted");
    // An id already in the file is replaced; otherwise the op is added.
    let op = added_op();
    store.put(&op).expect("a change to a loaded store");
    drop(store);
    let after = JsonOutboxStore::open(config)
        .expect("the rewritten file reopens")
        .load_all()
        .expect("memory store");
    assert_kept(before, op, after);
}

/// Writes `data` as the only segment of an encrypted WAL store's log (key
/// [`fuzz_encryption`]), then reads it read-only and opens it. A refusal is
/// a typed error; the read-only view changes no byte; when both succeed
/// they hold the same operations; an opened store must keep them, with one
/// more, across a reopen.
///
/// # Panics
///
/// When an invariant is broken.
pub fn sealed_wal_store(data: &[u8]) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store_dir = dir.path().join("outbox-wal");
    let log = store_dir.join("log");
    fs::create_dir_all(&log).expect("the log directory");
    let segment = log.join("00000000000000000000.wal");
    fs::write(&segment, data).expect("write the segment");
    let encryption = fuzz_encryption();
    let viewed = WalOutboxStore::load_read_only_with_encryption(&store_dir, &encryption);
    assert_eq!(
        read(&segment),
        data,
        "the read-only view changed the segment"
    );
    let config = WalOutboxStoreConfig::new(&store_dir).with_encryption(encryption);
    let Ok(store) = WalOutboxStore::open(config.clone()) else {
        return;
    };
    let mut before = store.load_all().expect("memory index");
    before.sort_by(|a, b| a.id.cmp(&b.id));
    if let Ok(viewed) = viewed {
        let mut viewed = viewed.load_all().expect("memory store");
        viewed.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(viewed, before, "view and open disagree");
    }
    let op = added_op();
    store.put(&op).expect("a change to an opened store");
    drop(store);
    let after = WalOutboxStore::open(config)
        .expect("the store reopens after a change")
        .load_all()
        .expect("memory index");
    assert_kept(before, op, after);
}

/// The operation the store targets add to what they opened.
fn added_op() -> Operation {
    let mut op = Operation::new("fuzz", "/fuzz", "{}");
    op.id = "fuzz-added-op".into();
    op
}

/// `after` (reopened) holds `before` with `added` put (replacing an
/// operation of its id).
fn assert_kept(mut before: Vec<Operation>, added: Operation, mut after: Vec<Operation>) {
    before.retain(|o| o.id != added.id);
    before.push(added);
    before.sort_by(|a, b| a.id.cmp(&b.id));
    after.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(
        after, before,
        "operations lost or changed by a change and a reopen"
    );
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_default()
}
