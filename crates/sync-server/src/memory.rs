//! `MemoryIdempotencyStore`: keys in a map, for tests and single-process
//! servers that may forget keys on restart.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::error::ServerError;
use crate::fingerprint::Fingerprint;
use crate::record::{KeyRecord, KeyState, decide};
use crate::response::StoredResponse;
use crate::store::{Begin, IdempotencyStore, KeyClaim, KeyExpiry};

/// Keys in memory. Nothing survives a restart: a retry after one is
/// processed again, so this is for tests and for effects that are
/// harmless to repeat.
///
/// # Examples
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// use sync_server::{Begin, Fingerprint, IdempotencyStore, KeyExpiry, MemoryIdempotencyStore, StoredResponse};
///
/// let store = MemoryIdempotencyStore::default();
/// let print = Fingerprint::of("POST", "/notes", b"{}");
/// let Begin::Started(claim) = store.begin("", "op-1", print, 0, 30_000).await? else { panic!() };
/// let day = 86_400_000;
/// store.complete(&claim, &StoredResponse::new(http::StatusCode::CREATED), KeyExpiry::after(0, day, 30 * day)).await?;
/// let again = store.begin("", "op-1", print, 1_000, 30_000).await?;
/// assert!(matches!(again, Begin::Replay(r) if r.status == 201));
/// let days_later = store.begin("", "op-1", print, 3 * day, 30_000).await?;
/// assert_eq!(days_later, Begin::Remembered { status: 201 });
/// # Ok::<_, sync_server::ServerError>(())
/// # })?;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct MemoryIdempotencyStore {
    keys: Mutex<HashMap<(String, String), KeyRecord>>,
}

impl MemoryIdempotencyStore {
    /// How many keys are stored (running or completed, expired or not).
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no key is stored.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), KeyRecord>> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl IdempotencyStore for MemoryIdempotencyStore {
    async fn begin(
        &self,
        scope: &str,
        key: &str,
        fingerprint: Fingerprint,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Begin, ServerError> {
        let mut keys = self.lock();
        let id = (scope.to_owned(), key.to_owned());
        Ok(
            if let Some(answer) = decide(keys.get(&id), &fingerprint, now_ms).answer() {
                answer
            } else {
                let claim = KeyClaim::new(scope, key, fingerprint);
                keys.insert(
                    id,
                    KeyRecord {
                        fingerprint,
                        state: KeyState::Running {
                            token: claim.token.clone(),
                            lease_until_ms: now_ms.saturating_add(lease_ms),
                        },
                    },
                );
                Begin::Started(claim)
            },
        )
    }

    async fn complete(
        &self,
        claim: &KeyClaim,
        response: &StoredResponse,
        expiry: KeyExpiry,
    ) -> Result<(), ServerError> {
        let mut keys = self.lock();
        let id = (claim.scope.clone(), claim.key.clone());
        match keys.get_mut(&id) {
            Some(record) if holds(record, claim) => {
                record.state = KeyState::Completed {
                    response: response.clone(),
                    expires_at_ms: expiry.response_until_ms,
                    remembered_until_ms: expiry.remembered_until_ms,
                };
                Ok(())
            }
            _ => Err(ServerError::KeyLost {
                key: claim.key.clone(),
            }),
        }
    }

    async fn release(&self, claim: &KeyClaim) -> Result<(), ServerError> {
        let mut keys = self.lock();
        let id = (claim.scope.clone(), claim.key.clone());
        if keys.get(&id).is_some_and(|record| holds(record, claim)) {
            keys.remove(&id);
        }
        Ok(())
    }

    async fn purge_expired(&self, now_ms: i64) -> Result<u64, ServerError> {
        let mut keys = self.lock();
        let before = keys.len();
        keys.retain(|_, record| match &mut record.state {
            KeyState::Completed {
                remembered_until_ms,
                ..
            } if *remembered_until_ms <= now_ms => false,
            KeyState::Completed {
                response,
                expires_at_ms,
                ..
            } => {
                // Expired: only the status is remembered.
                if *expires_at_ms <= now_ms {
                    response.body = Vec::new();
                    response.headers = Vec::new();
                }
                true
            }
            KeyState::Running { lease_until_ms, .. } => *lease_until_ms > now_ms,
        });
        Ok((before - keys.len()) as u64)
    }
}

/// Whether `claim` still holds the key `record` is for.
pub(crate) fn holds(record: &KeyRecord, claim: &KeyClaim) -> bool {
    matches!(&record.state, KeyState::Running { token, .. } if *token == claim.token)
}
