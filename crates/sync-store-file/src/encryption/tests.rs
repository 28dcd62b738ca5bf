//! Sealing and opening records and files: round trips, and every change to
//! the sealed bytes, the place or the key refused with its offset.

#![expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

use proptest::prelude::*;
use sync_wal::{RecordType, WalRecord};

use super::*;

fn ring() -> Encryption {
    Encryption::new(
        KeySet::new(EncryptionKey::new(2, [2; 32])).with_previous(EncryptionKey::new(1, [1; 32])),
    )
}

fn record(id: &str, kind: RecordType, ts_ms: i64, payload: &[u8]) -> WalRecord {
    WalRecord {
        id: id.into(),
        kind,
        ts_ms,
        payload: payload.to_vec(),
    }
}

fn kinds() -> impl Strategy<Value = RecordType> {
    prop_oneof![
        Just(RecordType::PutOperation),
        Just(RecordType::MarkInFlight),
        Just(RecordType::MarkDone),
        Just(RecordType::Remove),
    ]
}

proptest! {
    #[test]
    fn a_sealed_record_opens_to_its_payload_at_its_lsn_only(
        id in "[a-z0-9_]{1,20}",
        kind in kinds(),
        ts_ms: i64,
        lsn in 0u64..1_000_000,
        payload in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let encryption = ring();
        let plain = record(&id, kind, ts_ms, &payload);
        let mut sealed = plain.clone();
        seal_record(&encryption, lsn, &mut sealed).unwrap();
        prop_assert_eq!(sealed.payload.len(), payload.len() + RECORD_HEADER_LEN + TAG_LEN);
        prop_assert_eq!(sealed.payload[0], RECORD_MARKER);
        let mut opened = sealed.clone();
        open_record(Some(&encryption), lsn, &mut opened).unwrap();
        prop_assert_eq!(&opened, &plain);
        // Moved to another LSN (a swapped or replayed record): refused.
        let mut moved = sealed.clone();
        prop_assert_eq!(
            open_record(Some(&encryption), lsn + 1, &mut moved),
            Err((RECORD_HEADER_LEN as u64, EncryptionProblem::NotAuthentic { key_id: 2 }))
        );
        // Under another id or kind or time: refused.
        for changed in [
            WalRecord { id: format!("{id}x"), ..sealed.clone() },
            WalRecord { kind: RecordType::MarkFailed, ..sealed.clone() },
            WalRecord { ts_ms: ts_ms.wrapping_add(1), ..sealed.clone() },
        ] {
            let mut changed = changed;
            prop_assert!(open_record(Some(&encryption), lsn, &mut changed).is_err());
        }
    }

    #[test]
    fn any_flipped_byte_of_a_sealed_record_is_refused(
        payload in proptest::collection::vec(any::<u8>(), 0..100),
        at: prop::sample::Index,
        bit in 0u8..8,
    ) {
        let encryption = ring();
        let mut sealed = record("op_1", RecordType::PutOperation, 5, &payload);
        seal_record(&encryption, 9, &mut sealed).unwrap();
        let at = at.index(sealed.payload.len());
        sealed.payload[at] ^= 1 << bit;
        let result = open_record(Some(&encryption), 9, &mut sealed);
        // A flipped marker makes a "plain" record, refused as such; a
        // flipped key id names a key the ring lacks (or the other key,
        // which does not authenticate); anything else fails the tag.
        prop_assert!(result.is_err(), "flip at {} opened", at);
    }

    #[test]
    fn any_prefix_of_a_sealed_record_or_file_is_an_error_not_a_panic(
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        cut: prop::sample::Index,
    ) {
        let encryption = ring();
        let mut sealed = record("op_1", RecordType::PutOperation, 5, &payload);
        seal_record(&encryption, 0, &mut sealed).unwrap();
        let cut = cut.index(sealed.payload.len());
        sealed.payload.truncate(cut);
        prop_assert!(open_record(Some(&encryption), 0, &mut sealed).is_err());
        let file = seal_file(&encryption, FileRole::JsonStore, &payload).unwrap();
        let cut = cut.min(file.len() - 1);
        prop_assert!(open_file(Some(&encryption), FileRole::JsonStore, &file[..cut]).is_err());
    }

    #[test]
    fn a_sealed_file_opens_for_its_role_only_and_any_flip_is_refused(
        plain in proptest::collection::vec(any::<u8>(), 0..500),
        at: prop::sample::Index,
        bit in 0u8..8,
    ) {
        let encryption = ring();
        let sealed = seal_file(&encryption, FileRole::Snapshot, &plain).unwrap();
        prop_assert!(is_sealed_file(&sealed));
        let opened = open_file(Some(&encryption), FileRole::Snapshot, &sealed).unwrap();
        prop_assert_eq!(opened.as_ref(), plain.as_slice());
        prop_assert!(open_file(Some(&encryption), FileRole::JsonStore, &sealed).is_err());
        let mut flipped = sealed.clone();
        let at = at.index(flipped.len());
        flipped[at] ^= 1 << bit;
        prop_assert!(open_file(Some(&encryption), FileRole::Snapshot, &flipped).is_err(), "flip at {} opened", at);
    }
}

#[test]
fn seals_use_the_current_key_and_older_keys_still_open() {
    let old = Encryption::new(EncryptionKey::new(1, [1; 32]));
    let mut sealed = record("op_1", RecordType::PutOperation, 0, b"{}");
    seal_record(&old, 3, &mut sealed).unwrap();
    assert_eq!(&sealed.payload[1..5], &1u32.to_le_bytes());
    // The rotated ring reads the old key's records and seals with the new.
    let rotated = ring();
    open_record(Some(&rotated), 3, &mut sealed.clone()).unwrap();
    let mut fresh = record("op_1", RecordType::PutOperation, 0, b"{}");
    seal_record(&rotated, 4, &mut fresh).unwrap();
    assert_eq!(&fresh.payload[1..5], &2u32.to_le_bytes());
    // The old ring alone does not hold key 2.
    assert_eq!(
        open_record(Some(&old), 4, &mut fresh),
        Err((1, EncryptionProblem::UnknownKey { key_id: 2 }))
    );
}

#[test]
fn a_wrong_key_under_the_right_id_does_not_authenticate() {
    let mut sealed = record("op_1", RecordType::PutOperation, 0, b"{\"secret\":1}");
    seal_record(
        &Encryption::new(EncryptionKey::new(1, [1; 32])),
        0,
        &mut sealed,
    )
    .unwrap();
    let wrong = Encryption::new(EncryptionKey::new(1, [9; 32]));
    assert_eq!(
        open_record(Some(&wrong), 0, &mut sealed),
        Err((29, EncryptionProblem::NotAuthentic { key_id: 1 }))
    );
    let file = seal_file(
        &Encryption::new(EncryptionKey::new(1, [1; 32])),
        FileRole::JsonStore,
        b"{}",
    )
    .unwrap();
    assert_eq!(
        open_file(Some(&wrong), FileRole::JsonStore, &file),
        Err((44, EncryptionProblem::NotAuthentic { key_id: 1 }))
    );
}

#[test]
fn plain_content_is_read_without_keys_and_refused_with_them_unless_accepted() {
    let mut plain = record("op_1", RecordType::PutOperation, 0, b"{}");
    open_record(None, 0, &mut plain).unwrap();
    assert_eq!(
        open_record(Some(&ring()), 0, &mut plain),
        Err((0, EncryptionProblem::Unencrypted))
    );
    open_record(Some(&ring().accept_plaintext(true)), 0, &mut plain).unwrap();
    assert_eq!(plain.payload, b"{}");
    // Sealed, and no keys: said so, not misread as plain.
    let mut sealed = plain.clone();
    seal_record(&ring(), 0, &mut sealed).unwrap();
    assert_eq!(
        open_record(None, 0, &mut sealed),
        Err((0, EncryptionProblem::NoKeys))
    );
    let file = seal_file(&ring(), FileRole::JsonStore, b"{}").unwrap();
    assert_eq!(
        open_file(None, FileRole::JsonStore, &file),
        Err((0, EncryptionProblem::NoKeys))
    );
    assert_eq!(
        open_file(Some(&ring()), FileRole::JsonStore, b"{}"),
        Err((0, EncryptionProblem::Unencrypted))
    );
}

#[test]
fn two_seals_of_the_same_bytes_differ() {
    let keys = Encryption::new(EncryptionKey::new(1, [1; 32]));
    let a = seal_file(&keys, FileRole::JsonStore, b"same").unwrap();
    let b = seal_file(&keys, FileRole::JsonStore, b"same").unwrap();
    assert_ne!(a, b, "a fresh random nonce each time");
    assert_ne!(
        EncryptionKey::generate(1).unwrap().as_bytes(),
        EncryptionKey::generate(1).unwrap().as_bytes()
    );
}
