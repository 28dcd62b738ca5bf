//! [`DatabaseKey`] (feature `sqlcipher`): the key an encrypted database is
//! opened with.

use std::fmt;

/// The key of a database encrypted with SQLCipher (feature `sqlcipher`):
/// every page AES-256 encrypted and HMAC-SHA512 authenticated, so a lost
/// phone or laptop gives away neither the queued operations nor the app's
/// rows. The app gets the key from the OS keychain (not this crate's job)
/// and passes it with [`SqliteOutboxStoreConfig::with_key`](crate::SqliteOutboxStoreConfig::with_key).
///
/// Its `Debug` never shows the key.
///
/// # Examples
///
/// ```
/// use sync_store_sqlite::{DatabaseKey, SqliteOutboxStore, SqliteOutboxStoreConfig};
///
/// let dir = tempfile::tempdir()?;
/// let key = DatabaseKey::raw([7; 32]); // from the keychain
/// let config = SqliteOutboxStoreConfig::new(dir.path().join("app.db")).with_key(key);
/// let store = SqliteOutboxStore::open(config)?;
/// # drop(store);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseKey {
    /// What `PRAGMA key` is given: a passphrase, or `x'<64 hex>'`.
    pragma: String,
}

impl DatabaseKey {
    /// A 256-bit key used as it is (SQLCipher's raw key: no key
    /// derivation, so opening costs nothing extra). Prefer this with a key
    /// from a keychain.
    #[must_use]
    pub fn raw(key: [u8; 32]) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut pragma = String::with_capacity(67);
        pragma.push_str("x'");
        for byte in key {
            pragma.push(char::from(HEX[usize::from(byte >> 4)]));
            pragma.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        pragma.push('\'');
        Self { pragma }
    }

    /// A passphrase, stretched by SQLCipher (PBKDF2-HMAC-SHA512, 256,000
    /// iterations: opening takes a noticeable fraction of a second, on
    /// purpose).
    #[must_use]
    pub fn passphrase(passphrase: impl Into<String>) -> Self {
        Self {
            pragma: passphrase.into(),
        }
    }

    pub(crate) fn pragma(&self) -> &str {
        &self.pragma
    }
}

impl fmt::Debug for DatabaseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DatabaseKey(..)")
    }
}
