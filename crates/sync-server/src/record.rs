//! The life of one idempotency key, as a pure function of what is stored
//! and the request that arrives: new -> running -> completed (its response
//! replayed until it expires, then only its status remembered until the key
//! memory ends), or released again (a 5xx, a handler that gave up). Every
//! store decides with [`decide`], under its own row lock, so the rules are
//! the same on SQLite, PostgreSQL and in memory.

use crate::fingerprint::Fingerprint;
use crate::response::StoredResponse;

/// What a store holds for one `(scope, key)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    /// The fingerprint of the first request with this key.
    pub fingerprint: Fingerprint,
    /// Where the key is in its life.
    pub state: KeyState,
}

/// Where a key is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// A request with this key is being processed.
    Running {
        /// The fencing token of the request that holds it: only that request
        /// may complete or release the key.
        token: String,
        /// Until when (ms since the Unix epoch) the holder is presumed
        /// alive. A server killed mid-request leaves its key running; once
        /// this passes, a retry takes the key over.
        lease_until_ms: i64,
    },
    /// The first request finished; its response is replayed to repeats
    /// until `expires_at_ms`, then only its status until
    /// `remembered_until_ms`.
    Completed {
        /// The stored response. Once it has expired a store may drop its
        /// headers and body (`purge_expired` does): only the status counts
        /// then.
        response: StoredResponse,
        /// Until this (ms since the Unix epoch) the whole response is
        /// replayed.
        expires_at_ms: i64,
        /// Until this (ms since the Unix epoch) the key is remembered as
        /// applied: a repeat gets the status alone, never a second run.
        /// After it the key is forgotten and a request with it is new again.
        remembered_until_ms: i64,
    },
}

/// What a request with a key gets, decided from the stored record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing stored (or only an expired record): the request runs, and the
    /// store writes `Running` with a new token.
    Start,
    /// A running request's lease has passed (its server is presumed dead):
    /// the request takes the key over under a new token.
    TakeOver,
    /// The same request completed before: replay its response.
    Replay(StoredResponse),
    /// The same request completed so long ago that its response expired,
    /// but the key is still remembered: answer its status with an empty
    /// body (`Idempotent-Response-Expired: true`), never run it again.
    Remembered {
        /// The status of the first request's response.
        status: u16,
    },
    /// The same request is still running: answer 409, try again after this
    /// many ms.
    InProgress {
        /// How long until the running request's lease ends.
        retry_after_ms: i64,
    },
    /// The key was used for a different request (another method, path or
    /// body): answer 422.
    Mismatch,
}

impl Decision {
    /// The answer a request gets without claiming the key, or `None` when it
    /// may run ([`Start`](Self::Start), [`TakeOver`](Self::TakeOver)) and the
    /// store must record a new claim.
    pub(crate) fn answer(self) -> Option<crate::store::Begin> {
        use crate::store::Begin;
        match self {
            Self::Start | Self::TakeOver => None,
            Self::Replay(response) => Some(Begin::Replay(response)),
            Self::Remembered { status } => Some(Begin::Remembered { status }),
            Self::InProgress { retry_after_ms } => Some(Begin::InProgress { retry_after_ms }),
            Self::Mismatch => Some(Begin::Mismatch),
        }
    }
}

/// Decides what a request with `fingerprint` gets at `now_ms`, given what is
/// stored for its key.
///
/// A fingerprint mismatch wins over everything but the end of the key's
/// memory: a key reused for another request is a client bug, whether the
/// first is running or done.
#[must_use]
pub fn decide(stored: Option<&KeyRecord>, fingerprint: &Fingerprint, now_ms: i64) -> Decision {
    let Some(record) = stored else {
        return Decision::Start;
    };
    if let KeyState::Completed {
        remembered_until_ms,
        ..
    } = record.state
        && remembered_until_ms <= now_ms
    {
        return Decision::Start;
    }
    if record.fingerprint != *fingerprint {
        return Decision::Mismatch;
    }
    match &record.state {
        KeyState::Completed {
            response,
            expires_at_ms,
            ..
        } if *expires_at_ms <= now_ms => Decision::Remembered {
            status: response.status,
        },
        KeyState::Completed { response, .. } => Decision::Replay(response.clone()),
        KeyState::Running { lease_until_ms, .. } if *lease_until_ms <= now_ms => Decision::TakeOver,
        KeyState::Running { lease_until_ms, .. } => Decision::InProgress {
            retry_after_ms: lease_until_ms - now_ms,
        },
    }
}

/// A key's row as both SQL stores hold it, before it is checked.
#[derive(Debug)]
pub(crate) struct KeyRow {
    pub(crate) scope: String,
    pub(crate) key: String,
    pub(crate) fingerprint: Vec<u8>,
    /// 0 running, 1 completed.
    pub(crate) state: i64,
    pub(crate) token: Option<String>,
    pub(crate) lease_until_ms: Option<i64>,
    pub(crate) status: Option<i64>,
    pub(crate) headers: Option<String>,
    pub(crate) body: Option<Vec<u8>>,
    pub(crate) expires_at_ms: Option<i64>,
    pub(crate) remembered_until_ms: Option<i64>,
}

/// The columns of a key row, in the order both SQL stores select them.
pub(crate) const KEY_COLUMNS: &str = "fingerprint, state, token, lease_until_ms, status, headers, \
     body, expires_at_ms, remembered_until_ms";

impl KeyRow {
    /// The record this row holds, or [`ServerError::CorruptRecord`] naming
    /// what is wrong with it.
    pub(crate) fn into_record(self, table: &'static str) -> Result<KeyRecord, crate::ServerError> {
        let corrupt = |problem: String| crate::ServerError::CorruptRecord {
            table,
            scope: self.scope.clone(),
            key: self.key.clone(),
            problem,
        };
        let fingerprint = Fingerprint::from_slice(&self.fingerprint)
            .ok_or_else(|| corrupt(format!("fingerprint of {} bytes", self.fingerprint.len())))?;
        let state = match self.state {
            0 => KeyState::Running {
                token: self
                    .token
                    .clone()
                    .ok_or_else(|| corrupt("running without a token".into()))?,
                lease_until_ms: self
                    .lease_until_ms
                    .ok_or_else(|| corrupt("running without a lease".into()))?,
            },
            1 => {
                let (Some(status), Some(expires_at_ms), Some(remembered_until_ms)) =
                    (self.status, self.expires_at_ms, self.remembered_until_ms)
                else {
                    return Err(corrupt("completed without its status or expiry".into()));
                };
                // Headers and body are dropped once the response expires.
                KeyState::Completed {
                    response: StoredResponse::from_columns(
                        status,
                        self.headers.as_deref().unwrap_or("[]"),
                        self.body.clone().unwrap_or_default(),
                    )
                    .map_err(corrupt)?,
                    expires_at_ms,
                    remembered_until_ms,
                }
            }
            other => return Err(corrupt(format!("unknown state {other}"))),
        };
        Ok(KeyRecord { fingerprint, state })
    }
}

#[cfg(test)]
mod tests;
