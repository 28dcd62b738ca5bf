//! The contract every `IdempotencyStore` keeps, run against each store:
//! one claim per key however many ask at once, fencing by token, replay,
//! release, takeover after the lease, expiry and purge.

use std::sync::Arc;

use http::StatusCode;
use sync_server::{Begin, Fingerprint, IdempotencyStore, KeyExpiry, ServerError, StoredResponse};

fn print(body: &[u8]) -> Fingerprint {
    Fingerprint::of("POST", "/notes", body)
}

/// Runs the whole contract on `store`, using keys under `scope` only.
pub(crate) async fn check(
    store: Arc<dyn IdempotencyStore>,
    scope: &str,
) -> Result<(), ServerError> {
    let now = 10_000;
    let lease = 1_000;
    // Eight at once: exactly one gets the key, the rest are told it runs.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = Arc::clone(&store);
        let scope = scope.to_owned();
        tasks.push(tokio::spawn(async move {
            store.begin(&scope, "race", print(b"a"), now, lease).await
        }));
    }
    let mut started = Vec::new();
    for task in tasks {
        match task.await.map_err(ServerError::Blocking)?? {
            Begin::Started(claim) => started.push(claim),
            Begin::InProgress { retry_after_ms } => assert_eq!(retry_after_ms, lease),
            other => panic!("a concurrent duplicate got {other:?}"),
        }
    }
    assert_eq!(started.len(), 1, "one claim per key");
    let claim = started.remove(0);

    // Completed: replayed; another fingerprint is a mismatch.
    let created = StoredResponse::json(StatusCode::CREATED, &serde_json::json!({"id": 1}))
        .with_header("location", "/notes/1");
    store
        .complete(&claim, &created, until(now + 60_000))
        .await?;
    match store
        .begin(scope, "race", print(b"a"), now + 1, lease)
        .await?
    {
        Begin::Replay(response) => assert_eq!(response, created),
        other => panic!("expected a replay, got {other:?}"),
    }
    assert_eq!(
        store
            .begin(scope, "race", print(b"b"), now + 1, lease)
            .await?,
        Begin::Mismatch
    );
    // A second completion of a completed key is fenced off.
    assert!(matches!(
        store.complete(&claim, &created, until(now + 60_000)).await,
        Err(ServerError::KeyLost { .. })
    ));

    check_release_lease_and_expiry(&*store, scope, &created).await
}

/// The second half of the contract: release, takeover, bytes, expiry.
async fn check_release_lease_and_expiry(
    store: &dyn IdempotencyStore,
    scope: &str,
    created: &StoredResponse,
) -> Result<(), ServerError> {
    let now = 10_000;
    let lease = 1_000;
    // Released (a 5xx): the next request starts afresh.
    let Begin::Started(first) = store
        .begin(scope, "released", print(b"a"), now, lease)
        .await?
    else {
        panic!("a new key must start");
    };
    store.release(&first).await?;
    let Begin::Started(_) = store
        .begin(scope, "released", print(b"a"), now, lease)
        .await?
    else {
        panic!("a released key must start again");
    };

    // Past its lease, a running key is taken over; the old holder is fenced.
    let Begin::Started(old) = store.begin(scope, "lease", print(b"a"), now, lease).await? else {
        panic!("a new key must start");
    };
    let Begin::Started(new) = store
        .begin(scope, "lease", print(b"a"), now + lease, lease)
        .await?
    else {
        panic!("a key past its lease must be taken over");
    };
    assert_ne!(old.token, new.token);
    assert!(matches!(
        store.complete(&old, created, until(now + 60_000)).await,
        Err(ServerError::KeyLost { .. })
    ));
    store.release(&old).await?; // does nothing: not the holder
    store.complete(&new, created, until(now + 60_000)).await?;
    assert!(matches!(
        store
            .begin(scope, "lease", print(b"a"), now + lease + 1, lease)
            .await?,
        Begin::Replay(_)
    ));

    // Bodies and headers round-trip byte for byte.
    let Begin::Started(binary) = store
        .begin(scope, "binary", print(b"a"), now, lease)
        .await?
    else {
        panic!("a new key must start");
    };
    let odd = StoredResponse::new(StatusCode::ACCEPTED)
        .with_header("etag", "\"v1\"")
        .with_body(vec![0u8, 255, 10, 13]);
    // The response lives 10 ms, the key's memory 20 ms.
    store
        .complete(
            &binary,
            &odd,
            KeyExpiry {
                response_until_ms: now + 10,
                remembered_until_ms: now + 20,
            },
        )
        .await?;
    match store
        .begin(scope, "binary", print(b"a"), now + 9, lease)
        .await?
    {
        Begin::Replay(response) => assert_eq!(response, odd),
        other => panic!("expected a replay, got {other:?}"),
    }

    // The response expired, the key is remembered: its status alone, and
    // still a mismatch for another request. A purge drops the response,
    // not the key.
    assert_eq!(
        store
            .begin(scope, "binary", print(b"a"), now + 10, lease)
            .await?,
        Begin::Remembered { status: 202 }
    );
    assert_eq!(store.purge_expired(now + 15).await?, 0);
    assert_eq!(
        store
            .begin(scope, "binary", print(b"a"), now + 15, lease)
            .await?,
        Begin::Remembered { status: 202 }
    );
    assert_eq!(
        store
            .begin(scope, "binary", print(b"other"), now + 15, lease)
            .await?,
        Begin::Mismatch
    );
    // Past its memory: forgotten (even with another fingerprint), and purged.
    match store
        .begin(scope, "binary", print(b"other"), now + 20, lease)
        .await?
    {
        Begin::Started(claim) => store.release(&claim).await?,
        other => panic!("a forgotten key must start again, got {other:?}"),
    }
    let purged = store.purge_expired(now + 60_000).await?;
    assert!(purged >= 2, "purged {purged}");
    Ok(())
}

/// A response and a key memory that both end at `at`.
fn until(at: i64) -> KeyExpiry {
    KeyExpiry {
        response_until_ms: at,
        remembered_until_ms: at,
    }
}
