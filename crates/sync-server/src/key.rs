//! The `Idempotency-Key` header: its name and what a valid value is.

/// The header a client sends its key in (IETF httpapi draft
/// "The Idempotency-Key HTTP Header Field").
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The header set on a replayed response.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// The longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

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
