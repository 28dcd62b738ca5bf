//! Unit tests of the byte layout: round trips, and every way a decoder can refuse.

#![expect(
    clippy::indexing_slicing,
    reason = "tests index known-length test frames; a panic is a failure"
)]

use proptest::prelude::*;

use super::*;

fn record_strategy() -> impl Strategy<Value = WalRecord> {
    let kind = prop_oneof![
        (1u16..=7).prop_map(|c| RecordType::from_code(c).unwrap_or(RecordType::Checkpoint)),
        any::<u8>().prop_map(RecordType::Custom),
    ];
    (
        ".{0,40}",
        kind,
        any::<i64>(),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(id, kind, ts_ms, payload)| WalRecord {
            id,
            kind,
            ts_ms,
            payload,
        })
}

proptest! {
    #[test]
    fn frame_round_trips(record in record_strategy()) {
        let mut bytes = Vec::new();
        let len = encode_frame(&record, u32::MAX, &mut bytes)?;
        prop_assert_eq!(len, bytes.len());
        prop_assert_eq!(len, record.encoded_len());
        let mut out = WalRecord::default();
        prop_assert_eq!(decode_frame(&bytes, u32::MAX, &mut out), Ok(len));
        prop_assert_eq!(out, record);
    }

    #[test]
    fn frames_concatenate(records in proptest::collection::vec(record_strategy(), 0..10)) {
        let mut bytes = Vec::new();
        for record in &records {
            encode_frame(record, u32::MAX, &mut bytes)?;
        }
        let mut at = 0;
        let mut out = WalRecord::default();
        for record in &records {
            at += decode_frame(&bytes[at..], u32::MAX, &mut out).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&out, record);
        }
        prop_assert_eq!(at, bytes.len());
    }

    #[test]
    fn any_flipped_bit_is_detected(record in record_strategy(), bit in any::<prop::sample::Index>()) {
        let mut bytes = Vec::new();
        encode_frame(&record, u32::MAX, &mut bytes)?;
        let bit = bit.index(bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        let mut out = WalRecord::default();
        prop_assert!(decode_frame(&bytes, u32::MAX, &mut out).is_err());
    }

    #[test]
    fn any_truncation_is_detected(record in record_strategy(), cut in any::<prop::sample::Index>()) {
        let mut bytes = Vec::new();
        encode_frame(&record, u32::MAX, &mut bytes)?;
        let cut = cut.index(bytes.len());
        let mut out = WalRecord::default();
        let truncated = matches!(decode_frame(&bytes[..cut], u32::MAX, &mut out), Err(Corruption::TruncatedFrame { .. }));
        prop_assert!(truncated);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut out = WalRecord::default();
        let _ = decode_frame(&bytes, 1 << 20, &mut out);
        let _ = SegmentHeader::decode(&bytes);
    }

    #[test]
    fn header_round_trips(first_lsn in any::<u64>()) {
        let header = SegmentHeader { version: FORMAT_VERSION, first_lsn };
        prop_assert_eq!(SegmentHeader::decode(&header.encode()), Ok(header));
    }
}

#[test]
fn header_layout_is_as_documented() {
    let bytes = SegmentHeader {
        version: 1,
        first_lsn: 0x0102_0304_0506_0708,
    }
    .encode();
    assert_eq!(&bytes[0..8], b"SYNCWAL\0");
    assert_eq!(&bytes[8..12], &[1, 0, 0, 0]);
    assert_eq!(&bytes[12..20], &[8, 7, 6, 5, 4, 3, 2, 1]);
    assert_eq!(
        &bytes[20..24],
        &crc32fast::hash(&bytes[0..20]).to_le_bytes()
    );
}

#[test]
fn frame_layout_is_as_documented() -> Result<(), WalError> {
    let record = WalRecord {
        id: "ab".into(),
        kind: RecordType::MarkDone,
        ts_ms: -2,
        payload: vec![9],
    };
    let mut bytes = Vec::new();
    encode_frame(&record, 100, &mut bytes)?;
    assert_eq!(&bytes[0..4], &17u32.to_le_bytes()); // 14 fixed + 2 id + 1 payload
    assert_eq!(
        &bytes[4..8],
        &frame_crc(&bytes[0..4], &bytes[8..]).to_le_bytes()
    );
    assert_eq!(&bytes[8..10], &3u16.to_le_bytes());
    assert_eq!(&bytes[10..18], &(-2i64).to_le_bytes());
    assert_eq!(&bytes[18..22], &2u32.to_le_bytes());
    assert_eq!(&bytes[22..24], b"ab");
    assert_eq!(&bytes[24..], &[9]);
    Ok(())
}

#[test]
fn header_errors_are_typed() {
    let good = SegmentHeader {
        version: 1,
        first_lsn: 5,
    }
    .encode();
    assert_eq!(
        SegmentHeader::decode(b"NOTAWAL!xxxxxxxxxxxxxxxx"),
        Err(HeaderError::BadMagic)
    );
    assert_eq!(
        SegmentHeader::decode(&good[..10]),
        Err(HeaderError::Corrupt(Corruption::TruncatedHeader))
    );
    assert_eq!(
        SegmentHeader::decode(&[]),
        Err(HeaderError::Corrupt(Corruption::TruncatedHeader))
    );

    // Every version this crate reads decodes; the next one is refused.
    for version in [1, 2] {
        let header = SegmentHeader {
            version,
            first_lsn: 5,
        };
        assert_eq!(SegmentHeader::decode(&header.encode()), Ok(header));
        assert_eq!(header.zeros_end_frames(), version >= 2);
    }
    let mut v3 = SegmentHeader {
        version: 3,
        first_lsn: 5,
    }
    .encode();
    assert_eq!(
        SegmentHeader::decode(&v3),
        Err(HeaderError::UnsupportedVersion(3))
    );
    v3[12] ^= 1;
    assert!(matches!(
        SegmentHeader::decode(&v3),
        Err(HeaderError::Corrupt(
            Corruption::HeaderChecksumMismatch { .. }
        ))
    ));
}

#[test]
fn oversized_length_is_refused_before_allocation() {
    // A header claiming a 4 GiB body: refused on the length alone.
    let mut bytes = u32::MAX.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[0; 4]);
    let mut out = WalRecord::default();
    assert_eq!(
        decode_frame(&bytes, 1 << 24, &mut out),
        Err(Corruption::LengthOutOfRange {
            len: u32::MAX,
            max: 1 << 24
        })
    );
}

#[test]
fn too_large_record_is_refused_on_encode() {
    let record = WalRecord {
        id: String::new(),
        kind: RecordType::Remove,
        ts_ms: 0,
        payload: vec![0; 100],
    };
    let mut bytes = vec![7];
    let result = encode_frame(&record, 113, &mut bytes);
    assert!(matches!(
        result,
        Err(WalError::RecordTooLarge { len: 114, max: 113 })
    ));
    assert_eq!(bytes, [7], "a refused record leaves the buffer unchanged");
}

#[test]
fn unknown_kind_and_bad_id_are_corruption() -> Result<(), WalError> {
    let record = WalRecord {
        id: "\u{e9}".into(),
        kind: RecordType::MarkDone,
        ts_ms: 0,
        payload: Vec::new(),
    };
    let mut out = WalRecord::default();
    let reframe = |bytes: &mut Vec<u8>| {
        let crc = frame_crc(&bytes[0..4], &bytes[8..]);
        bytes[4..8].copy_from_slice(&crc.to_le_bytes());
    };

    let mut bytes = Vec::new();
    encode_frame(&record, 100, &mut bytes)?;
    bytes[8..10].copy_from_slice(&0u16.to_le_bytes());
    reframe(&mut bytes);
    assert_eq!(
        decode_frame(&bytes, 100, &mut out),
        Err(Corruption::UnknownKind(0))
    );

    let mut bytes = Vec::new();
    encode_frame(&record, 100, &mut bytes)?;
    bytes[18..22].copy_from_slice(&3u32.to_le_bytes()); // id longer than the body
    reframe(&mut bytes);
    assert_eq!(decode_frame(&bytes, 100, &mut out), Err(Corruption::BadId));

    let mut bytes = Vec::new();
    encode_frame(&record, 100, &mut bytes)?;
    bytes[18..22].copy_from_slice(&1u32.to_le_bytes()); // splits the two-byte e-acute
    reframe(&mut bytes);
    assert_eq!(decode_frame(&bytes, 100, &mut out), Err(Corruption::BadId));
    Ok(())
}

#[test]
fn record_type_codes_round_trip() {
    for code in 0..=u16::MAX {
        if let Some(kind) = RecordType::from_code(code) {
            assert_eq!(kind.code(), code);
        } else {
            assert!(
                code == 0 || (8..256).contains(&code) || code >= 512,
                "code {code}"
            );
        }
    }
}
