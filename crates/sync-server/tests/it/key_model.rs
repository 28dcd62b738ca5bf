//! Guards the key state machine of every store against a plain model:
//! random sequences of begin (two fingerprints), complete and release by
//! any claim (current or fenced off), time moving past leases, response
//! expiry and the end of the key memory, and purges. After every step the
//! store's answer is the model's.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::StatusCode;
use proptest::prelude::*;
use sync_server::{
    Begin, Fingerprint, IdempotencyStore, KeyClaim, KeyExpiry, MemoryIdempotencyStore, ServerError,
    SqliteIdempotencyStore, StoredResponse,
};

const LEASE: i64 = 1_000;
const TTL: i64 = 5_000;
const MEMORY: i64 = 12_000;

#[derive(Clone, Debug)]
enum Step {
    Begin { key: u8, print: u8 },
    Complete { pick: usize, status: u16 },
    Release { pick: usize },
    Advance { ms: i64 },
    Purge,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..3, 0u8..2).prop_map(|(key, print)| Step::Begin { key, print }),
        3 => (any::<usize>(), prop_oneof![Just(201u16), Just(422)])
            .prop_map(|(pick, status)| Step::Complete { pick, status }),
        1 => any::<usize>().prop_map(|pick| Step::Release { pick }),
        2 => (0i64..2_500).prop_map(|ms| Step::Advance { ms }),
        1 => Just(Step::Purge),
    ]
}

#[derive(Clone, Debug, PartialEq)]
enum ModelKey {
    Running {
        print: u8,
        claim: usize,
        lease_until: i64,
    },
    Completed {
        print: u8,
        status: u16,
        expires: i64,
        remembered: i64,
    },
}

fn fingerprint(print: u8) -> Fingerprint {
    Fingerprint::of("POST", "/t", &[print])
}

#[expect(
    clippy::too_many_lines,
    reason = "one match arm per step, side by side with the model"
)]
async fn run(store: Arc<dyn IdempotencyStore>, steps: &[Step]) -> Result<(), TestCaseError> {
    let fail = |e: ServerError| TestCaseError::fail(e.to_string());
    let mut model: BTreeMap<u8, ModelKey> = BTreeMap::new();
    // Every claim ever handed out, with the key it is for.
    let mut claims: Vec<(u8, KeyClaim)> = Vec::new();
    let mut now = 0i64;
    for step in steps {
        match step {
            Step::Begin { key, print } => {
                let got = store
                    .begin("", &format!("k{key}"), fingerprint(*print), now, LEASE)
                    .await
                    .map_err(fail)?;
                let want = match model.get(key) {
                    Some(ModelKey::Completed { remembered, .. }) if *remembered <= now => None,
                    other => other.cloned(),
                };
                // New, expired, or past its lease with the same request:
                // the request runs under a new claim.
                let may_start = match &want {
                    None => true,
                    Some(ModelKey::Running {
                        print: p,
                        lease_until,
                        ..
                    }) => *p == *print && *lease_until <= now,
                    Some(ModelKey::Completed { .. }) => false,
                };
                match (want, got) {
                    (_, Begin::Started(claim)) if may_start => {
                        model.insert(
                            *key,
                            ModelKey::Running {
                                print: *print,
                                claim: claims.len(),
                                lease_until: now + LEASE,
                            },
                        );
                        claims.push((*key, claim));
                    }
                    (
                        Some(ModelKey::Running {
                            print: p,
                            lease_until,
                            ..
                        }),
                        Begin::InProgress { retry_after_ms },
                    ) if p == *print && lease_until > now => {
                        prop_assert_eq!(retry_after_ms, lease_until - now);
                    }
                    (
                        Some(ModelKey::Completed {
                            print: p,
                            status,
                            expires,
                            ..
                        }),
                        Begin::Replay(response),
                    ) if p == *print && expires > now => {
                        prop_assert_eq!(response.status, status);
                    }
                    (
                        Some(ModelKey::Completed {
                            print: p,
                            status,
                            expires,
                            ..
                        }),
                        Begin::Remembered { status: got },
                    ) if p == *print && expires <= now => {
                        prop_assert_eq!(got, status);
                    }
                    (
                        Some(
                            ModelKey::Running { print: p, .. }
                            | ModelKey::Completed { print: p, .. },
                        ),
                        Begin::Mismatch,
                    ) if p != *print => {}
                    (want, got) => {
                        return Err(TestCaseError::fail(format!(
                            "begin k{key} with print {print} at {now}: model {want:?}, store {got:?}"
                        )));
                    }
                }
            }
            Step::Complete { pick, status } => {
                if claims.is_empty() {
                    continue;
                }
                let index = pick % claims.len();
                let (key, claim) = &claims[index];
                let response =
                    StoredResponse::new(StatusCode::from_u16(*status).unwrap_or(StatusCode::OK));
                let expiry = KeyExpiry::after(now, TTL, MEMORY);
                let got = store.complete(claim, &response, expiry).await;
                let holds = matches!(model.get(key), Some(ModelKey::Running { claim: c, .. }) if *c == index);
                match got {
                    Ok(()) => {
                        prop_assert!(
                            holds,
                            "claim {} of k{} completed without holding it",
                            index,
                            key
                        );
                        let print = match model.get(key) {
                            Some(ModelKey::Running { print, .. }) => *print,
                            _ => unreachable!("holds"),
                        };
                        model.insert(
                            *key,
                            ModelKey::Completed {
                                print,
                                status: *status,
                                expires: now + TTL,
                                remembered: now + MEMORY,
                            },
                        );
                    }
                    Err(ServerError::KeyLost { .. }) => {
                        prop_assert!(
                            !holds,
                            "claim {} of k{} was refused while holding it",
                            index,
                            key
                        );
                    }
                    Err(e) => return Err(fail(e)),
                }
            }
            Step::Release { pick } => {
                if claims.is_empty() {
                    continue;
                }
                let index = pick % claims.len();
                let (key, claim) = &claims[index];
                store.release(claim).await.map_err(fail)?;
                if matches!(model.get(key), Some(ModelKey::Running { claim: c, .. }) if *c == index)
                {
                    model.remove(key);
                }
            }
            Step::Advance { ms } => now += ms,
            Step::Purge => {
                let purged = store.purge_expired(now).await.map_err(fail)?;
                let before = model.len();
                model.retain(|_, k| match k {
                    ModelKey::Completed { remembered, .. } => *remembered > now,
                    ModelKey::Running { lease_until, .. } => *lease_until > now,
                });
                prop_assert_eq!(purged, (before - model.len()) as u64);
            }
        }
    }
    Ok(())
}

fn block_on(
    future: impl std::future::Future<Output = Result<(), TestCaseError>>,
) -> Result<(), TestCaseError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| TestCaseError::fail(e.to_string()))?
        .block_on(future)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_memory_store_matches_the_model(steps in proptest::collection::vec(step(), 1..60)) {
        block_on(run(Arc::new(MemoryIdempotencyStore::default()), &steps))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn the_sqlite_store_matches_the_model(steps in proptest::collection::vec(step(), 1..60)) {
        block_on(async {
            let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let store = SqliteIdempotencyStore::open(dir.path().join("keys.db"))
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            run(Arc::new(store), &steps).await
        })?;
    }
}
