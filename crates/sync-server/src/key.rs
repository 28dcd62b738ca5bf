//! The `Idempotency-Key` header: what a valid value is. The names and the
//! length limit are the protocol's (`sync_protocol`).

use sync_protocol::MAX_KEY_LEN;

/// The key in a header value, or `None` if it is not a valid key.
///
/// The draft sends the key as a structured-field string (`"abc"`); plain
/// tokens (`abc`, as `sync-transport-http` sends an operation's id) are
/// accepted too. A key is 1 to 255 visible ASCII characters.
pub(crate) fn parse_key(value: &[u8]) -> Option<String> {
    let value = value.trim_ascii();
    let inner = value
        .strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(value);
    let valid = !inner.is_empty()
        && inner.len() <= MAX_KEY_LEN
        && inner.iter().all(|b| b.is_ascii_graphic() && *b != b'"');
    valid.then(|| String::from_utf8_lossy(inner).into_owned())
}

#[cfg(test)]
mod tests;
