//! The cursor's format: HMAC against RFC 4231's vectors, every cursor
//! survives its text, and any change to the text (a flipped digit, a cut, a
//! cursor of another feed) is refused.

use proptest::prelude::*;

use super::{Cursor, hex, hmac_sha256, scopes_hash, unhex};
use crate::feed::{FeedKey, Position};

#[test]
fn hmac_matches_rfc_4231() {
    assert_eq!(
        hex(&hmac_sha256(&[0x0b; 20], b"Hi There")),
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
    );
    assert_eq!(
        hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn hex_round_trips_and_refuses_non_hex() {
    assert_eq!(unhex("00ff7A"), Some(vec![0, 255, 122]));
    assert_eq!(unhex("0"), None);
    assert_eq!(unhex("zz"), None);
    assert_eq!(unhex("+1"), None);
    assert_eq!(hex(&[0, 255, 122]), "00ff7a");
}

#[test]
fn scope_lists_that_differ_hash_apart() {
    let list = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_ne!(
        scopes_hash(&list(&["ab", "c"])),
        scopes_hash(&list(&["a", "bc"]))
    );
    assert_ne!(scopes_hash(&list(&["a"])), scopes_hash(&list(&["a", ""])));
    assert_eq!(
        scopes_hash(&list(&["a", "b"])),
        scopes_hash(&list(&["a", "b"]))
    );
}

fn feed_key(seed: u8) -> FeedKey {
    FeedKey {
        id: [seed; 16],
        secret: [seed.wrapping_add(1); 32],
    }
}

fn cursor() -> impl Strategy<Value = Cursor> {
    (
        any::<i64>(),
        any::<i64>(),
        prop::option::of(any::<i64>()),
        any::<[u8; 8]>(),
    )
        .prop_map(|(version, seq, snapshot_from, scopes)| Cursor {
            position: Position { version, seq },
            snapshot_from,
            scopes,
        })
}

proptest! {
    #[test]
    fn every_cursor_survives_its_text(cursor in cursor()) {
        let key = feed_key(3);
        let text = cursor.encode(&key);
        prop_assert_eq!(text.len(), 132);
        prop_assert_eq!(Cursor::decode(&text, &key), Some(cursor));
        prop_assert_eq!(Cursor::decode(&text.to_uppercase(), &key), Some(cursor));
    }

    #[test]
    fn a_changed_digit_a_cut_or_another_feed_is_refused(cursor in cursor(), at in 0usize..132, to in 0u32..16) {
        let key = feed_key(3);
        let text = cursor.encode(&key);
        let mut changed: Vec<char> = text.chars().collect();
        let digit = char::from_digit(to, 16).unwrap_or('0');
        prop_assume!(changed[at] != digit);
        changed[at] = digit;
        let changed: String = changed.into_iter().collect();
        prop_assert_eq!(Cursor::decode(&changed, &key), None);
        prop_assert_eq!(Cursor::decode(&text[..at], &key), None);
        prop_assert_eq!(Cursor::decode(&text, &feed_key(4)), None);
        // The same secret under another feed id: still foreign.
        let other = FeedKey { id: [9; 16], ..feed_key(3) };
        prop_assert_eq!(Cursor::decode(&text, &other), None);
    }
}
