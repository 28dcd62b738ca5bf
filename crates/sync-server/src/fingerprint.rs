//! The fingerprint of a request: what makes a repeat "the same request".
//! SHA-256 over the method, the path with its query, and the body, each
//! length-prefixed so that no two different requests share an input.

use sha2::{Digest, Sha256};

/// SHA-256 of a request's method, path and query, and body.
///
/// # Examples
///
/// ```
/// use sync_server::Fingerprint;
///
/// let a = Fingerprint::of("POST", "/notes", br#"{"text":"hi"}"#);
/// assert_eq!(a, Fingerprint::of("POST", "/notes", br#"{"text":"hi"}"#));
/// assert_ne!(a, Fingerprint::of("POST", "/notes", br#"{"text":"ho"}"#));
/// assert_ne!(a, Fingerprint::of("PUT", "/notes", br#"{"text":"hi"}"#));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a request.
    #[must_use]
    pub fn of(method: &str, path_and_query: &str, body: &[u8]) -> Self {
        let mut hash = Sha256::new();
        for part in [method.as_bytes(), path_and_query.as_bytes(), body] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part);
        }
        Self(hash.finalize().into())
    }

    /// The 32 bytes, as stored.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// From stored bytes; `None` unless exactly 32.
    #[must_use]
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The first 8 bytes are plenty to tell two apart in a log.
        for byte in self.0.iter().take(8) {
            write!(f, "{byte:02x}")?;
        }
        f.write_str("..")
    }
}
