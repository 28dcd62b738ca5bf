//! Which header values are keys.

use super::parse_key;

#[test]
fn plain_and_quoted_keys_are_read_and_bad_ones_refused() {
    assert_eq!(parse_key(b"abc-1").as_deref(), Some("abc-1"));
    assert_eq!(parse_key(b"\"abc-1\"").as_deref(), Some("abc-1"));
    assert_eq!(parse_key(b" abc ").as_deref(), Some("abc"));
    assert_eq!(parse_key(b""), None);
    assert_eq!(parse_key(b"\"\""), None);
    assert_eq!(parse_key(b"a b"), None);
    assert_eq!(parse_key("caf\u{e9}".as_bytes()), None);
    assert_eq!(parse_key(&[b'k'; 256]), None);
    assert!(parse_key(&[b'k'; 255]).is_some());
}
