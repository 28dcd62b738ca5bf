//! The pull cursor: where a device is in the feed, which scopes it was
//! issued for, and whether it is still in its first snapshot. Opaque to the
//! client, authenticated by the feed's secret (HMAC-SHA-256), so a garbled,
//! cut or foreign cursor is refused (`400 bad_cursor`) before anything is
//! read.
//!
//! Layout (66 bytes, sent as 132 lowercase hex digits): format `1` (1 byte),
//! the feed id (16), the position's version and seq (8 + 8, little-endian, as every integer here),
//! flags (1: bit 0 = in a snapshot), the snapshot's start version (8), the
//! scopes' hash (8), the MAC of everything before it (16).

use sha2::{Digest, Sha256};

use super::{FeedKey, Position};

const FORMAT: u8 = 1;
const BODY: usize = 1 + 16 + 8 + 8 + 1 + 8 + 8;
const MAC: usize = 16;

/// A decoded cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cursor {
    /// After this position.
    pub(crate) position: Position,
    /// `Some(start)` while the device is in its first snapshot, begun when
    /// the visible horizon was `start`: deletes below it are left out.
    pub(crate) snapshot_from: Option<i64>,
    /// The hash of the scopes it was issued for ([`scopes_hash`]).
    pub(crate) scopes: [u8; 8],
}

impl Cursor {
    /// The cursor as the client carries it.
    pub(crate) fn encode(&self, key: &FeedKey) -> String {
        let mut bytes = Vec::with_capacity(BODY + MAC);
        bytes.push(FORMAT);
        bytes.extend_from_slice(&key.id);
        bytes.extend_from_slice(&self.position.version.to_le_bytes());
        bytes.extend_from_slice(&self.position.seq.to_le_bytes());
        bytes.push(u8::from(self.snapshot_from.is_some()));
        bytes.extend_from_slice(&self.snapshot_from.unwrap_or(0).to_le_bytes());
        bytes.extend_from_slice(&self.scopes);
        let mac = hmac_sha256(&key.secret, &bytes);
        bytes.extend_from_slice(&mac[..MAC]);
        hex(&bytes)
    }

    /// Reads a cursor this feed issued; `None` for anything else (not hex,
    /// the wrong length or format, another feed's id, a MAC that does not
    /// match).
    pub(crate) fn decode(text: &str, key: &FeedKey) -> Option<Self> {
        let bytes = unhex(text)?;
        if bytes.len() != BODY + MAC || bytes[0] != FORMAT {
            return None;
        }
        let (body, mac) = bytes.split_at(BODY);
        let expected = hmac_sha256(&key.secret, body);
        // Compared in full whatever differs first: no timing hint at which
        // byte a forgery went wrong.
        let differs = expected[..MAC]
            .iter()
            .zip(mac)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if differs != 0 || body[1..17] != key.id {
            return None;
        }
        let int = |at: usize| {
            let mut le = [0u8; 8];
            le.copy_from_slice(&body[at..at + 8]);
            i64::from_le_bytes(le)
        };
        let snapshot = match body[33] {
            0 => None,
            1 => Some(int(34)),
            _ => return None,
        };
        let mut scopes = [0u8; 8];
        scopes.copy_from_slice(&body[42..50]);
        Some(Self {
            position: Position {
                version: int(17),
                seq: int(25),
            },
            snapshot_from: snapshot,
            scopes,
        })
    }
}

/// The hash a cursor keeps of the (sorted, deduplicated) scopes it was
/// issued for: each scope length-prefixed, so no two lists share an input.
pub(crate) fn scopes_hash(scopes: &[String]) -> [u8; 8] {
    let mut hash = Sha256::new();
    for scope in scopes {
        hash.update((scope.len() as u64).to_le_bytes());
        hash.update(scope.as_bytes());
    }
    let digest = hash.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// HMAC-SHA-256 (RFC 2104) with a key of at most one block (64 bytes).
pub(crate) fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    block[..key.len().min(64)].copy_from_slice(&key[..key.len().min(64)]);
    let inner = Sha256::new()
        .chain_update(block.map(|b| b ^ 0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(block.map(|b| b ^ 0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// Bytes from hex (either case); `None` for anything else.
pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |c: u8| char::from(c).to_digit(16);
            u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests;
