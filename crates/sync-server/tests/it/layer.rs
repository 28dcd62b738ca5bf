//! Guards the layer's rules end to end through an axum router: replay,
//! 409 while running, 422 on reuse, 5xx not stored, expiry, scopes, the
//! required mode, takeover after a lease, and what is stored.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{Request, StatusCode};
use sync_server::{
    IdempotencyConfig, IdempotencyLayer, IdempotencyStore, KeyRequirement, MemoryIdempotencyStore,
};
use tower_service::Service;

/// A router whose `/notes` counts its runs and answers `201` with a body
/// and headers; `/flaky` answers 503 on its first run; `/slow` waits for a
/// go signal.
struct App {
    router: Router,
    runs: Arc<AtomicUsize>,
    clock: Arc<AtomicI64>,
    store: Arc<MemoryIdempotencyStore>,
    gate: Arc<tokio::sync::Semaphore>,
}

fn app(configure: impl FnOnce(IdempotencyConfig) -> IdempotencyConfig) -> App {
    let runs = Arc::new(AtomicUsize::new(0));
    let clock = Arc::new(AtomicI64::new(1_000_000));
    let store = Arc::new(MemoryIdempotencyStore::default());
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let config = {
        let clock = Arc::clone(&clock);
        configure(
            IdempotencyConfig::default()
                .with_ttl(Duration::from_secs(60))
                .with_lease(Duration::from_secs(5))
                .with_clock(move || clock.load(SeqCst)),
        )
    };
    let (r1, r2, r3) = (Arc::clone(&runs), Arc::clone(&runs), Arc::clone(&runs));
    let g = Arc::clone(&gate);
    let router = Router::new()
        .route(
            "/notes",
            post(move |body: String| async move {
                let n = r1.fetch_add(1, SeqCst) + 1;
                (
                    StatusCode::CREATED,
                    [
                        ("location", format!("/notes/{n}")),
                        ("x-run", n.to_string()),
                    ],
                    format!("note {n}: {body}"),
                )
            }),
        )
        .route(
            "/flaky",
            post(move || async move {
                if r2.fetch_add(1, SeqCst) == 0 {
                    StatusCode::SERVICE_UNAVAILABLE.into_response()
                } else {
                    StatusCode::CREATED.into_response()
                }
            }),
        )
        .route(
            "/limited",
            post(move |body: String| async move {
                // 429 first (the client retries it), then 201.
                if body == "first" {
                    StatusCode::TOO_MANY_REQUESTS
                } else {
                    StatusCode::CREATED
                }
            }),
        )
        .route(
            "/slow",
            post(move || async move {
                let n = r3.fetch_add(1, SeqCst) + 1;
                let _ = g.acquire().await.map(tokio::sync::SemaphorePermit::forget);
                format!("slow {n}")
            }),
        )
        .layer(IdempotencyLayer::new(Arc::clone(&store), config));
    App {
        router,
        runs,
        clock,
        store,
        gate,
    }
}

fn request(path: &str, key: Option<&str>, body: &str) -> Request<Body> {
    let mut builder = Request::post(path);
    if let Some(key) = key {
        builder = builder.header("idempotency-key", key);
    }
    builder
        .body(Body::from(body.to_owned()))
        .unwrap_or_default()
}

async fn send(router: &Router, request: Request<Body>) -> (Response, String) {
    let Ok(response) = router.clone().call(request).await;
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    (
        Response::from_parts(parts, Body::empty()),
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

#[tokio::test]
async fn a_repeat_gets_the_first_response_replayed_and_the_handler_runs_once() {
    let app = app(|c| c);
    let (first, first_body) = send(&app.router, request("/notes", Some("k1"), "hi")).await;
    let (again, again_body) = send(&app.router, request("/notes", Some("k1"), "hi")).await;
    assert_eq!(app.runs.load(SeqCst), 1);
    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again_body, first_body);
    assert_eq!(again.headers()["location"], "/notes/1");
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert!(first.headers().get("idempotent-replayed").is_none());
    // Only the headers that matter are stored.
    assert_eq!(first.headers()["x-run"], "1");
    assert!(again.headers().get("x-run").is_none());
    // A quoted key (the draft's structured-field form) is the same key.
    let (quoted, _) = send(&app.router, request("/notes", Some("\"k1\""), "hi")).await;
    assert_eq!(quoted.headers()["idempotent-replayed"], "true");
    assert_eq!(app.runs.load(SeqCst), 1);
}

#[tokio::test]
async fn the_same_key_on_another_request_gets_422() {
    let app = app(|c| c);
    send(&app.router, request("/notes", Some("k1"), "hi")).await;
    let (other_body, _) = send(&app.router, request("/notes", Some("k1"), "ho")).await;
    let (other_path, _) = send(&app.router, request("/flaky", Some("k1"), "hi")).await;
    assert_eq!(other_body.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(other_path.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.runs.load(SeqCst), 1);
}

#[tokio::test]
async fn a_repeat_while_the_first_runs_gets_409_with_retry_after() {
    let app = app(|c| c);
    let router = app.router.clone();
    let first = tokio::spawn(async move { send(&router, request("/slow", Some("s1"), "")).await });
    while app.runs.load(SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let (busy, _) = send(&app.router, request("/slow", Some("s1"), "")).await;
    assert_eq!(busy.status(), StatusCode::CONFLICT);
    assert_eq!(busy.headers()["retry-after"], "5");
    app.gate.add_permits(1);
    let (done, body) = first.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(done.status(), StatusCode::OK);
    let (replayed, replay_body) = send(&app.router, request("/slow", Some("s1"), "")).await;
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    assert_eq!(replay_body, body);
    assert_eq!(app.runs.load(SeqCst), 1);
}

#[tokio::test]
async fn a_5xx_is_not_stored_so_the_retry_runs_again() {
    let app = app(|c| c);
    let (first, _) = send(&app.router, request("/flaky", Some("f1"), "")).await;
    let (retry, _) = send(&app.router, request("/flaky", Some("f1"), "")).await;
    let (replay, _) = send(&app.router, request("/flaky", Some("f1"), "")).await;
    assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert!(retry.headers().get("idempotent-replayed").is_none());
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(app.runs.load(SeqCst), 2);
}

#[tokio::test]
async fn a_key_outlives_its_response_then_expires_and_purge_frees_it()
-> Result<(), sync_server::ServerError> {
    let app = app(|c| c.with_key_memory(Duration::from_secs(120)));
    send(&app.router, request("/notes", Some("k1"), "hi")).await;
    app.clock.fetch_add(59_999, SeqCst);
    let (kept, body) = send(&app.router, request("/notes", Some("k1"), "hi")).await;
    assert_eq!(kept.headers()["idempotent-replayed"], "true");
    assert_eq!(body, "note 1: hi");
    // The response expired; the key is remembered: the status alone, never
    // a second run, and still a mismatch for another body.
    app.clock.fetch_add(1, SeqCst);
    let (remembered, body) = send(&app.router, request("/notes", Some("k1"), "hi")).await;
    assert_eq!(remembered.status(), StatusCode::CREATED);
    assert_eq!(remembered.headers()["idempotent-replayed"], "true");
    assert_eq!(remembered.headers()["idempotent-response-expired"], "true");
    assert_eq!(body, "");
    let (reused, _) = send(&app.router, request("/notes", Some("k1"), "other body")).await;
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.runs.load(SeqCst), 1);
    // Past the key memory: forgotten, a request with the key is new.
    app.clock.fetch_add(60_000, SeqCst);
    let (fresh, body) = send(&app.router, request("/notes", Some("k1"), "other body")).await;
    assert!(fresh.headers().get("idempotent-replayed").is_none());
    assert_eq!(body, "note 2: other body");
    // Only keys past their memory are purged.
    send(&app.router, request("/notes", Some("k2"), "x")).await;
    app.clock.fetch_add(120_000, SeqCst);
    send(&app.router, request("/notes", Some("k3"), "x")).await;
    assert_eq!(app.store.purge_expired(app.clock.load(SeqCst)).await?, 2);
    assert_eq!(app.store.len(), 1);
    Ok(())
}

#[tokio::test]
async fn scopes_keep_the_keys_of_different_users_apart() {
    let app = app(|c| {
        c.with_scope(|parts| {
            parts
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        })
    });
    let as_user = |user: &str| {
        let mut r = request("/notes", Some("k1"), "hi");
        r.headers_mut().insert(
            "authorization",
            user.parse().unwrap_or_else(|_| unreachable!()),
        );
        r
    };
    send(&app.router, as_user("alice")).await;
    let (bob, _) = send(&app.router, as_user("bob")).await;
    let (alice, _) = send(&app.router, as_user("alice")).await;
    assert!(bob.headers().get("idempotent-replayed").is_none());
    assert_eq!(alice.headers()["idempotent-replayed"], "true");
    assert_eq!(app.runs.load(SeqCst), 2);
}

#[tokio::test]
async fn without_a_key_requests_pass_or_get_400_when_a_key_is_required() {
    let optional = app(|c| c);
    send(&optional.router, request("/notes", None, "a")).await;
    send(&optional.router, request("/notes", None, "a")).await;
    assert_eq!(
        optional.runs.load(SeqCst),
        2,
        "no key: nothing to dedupe on"
    );

    let required = app(|c| c.with_requirement(KeyRequirement::Required));
    let (refused, body) = send(&required.router, request("/notes", None, "a")).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert!(body.contains("idempotency_key_required"), "{body}");
    let (bad, _) = send(&required.router, request("/notes", Some("a b"), "a")).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(required.runs.load(SeqCst), 0);
}

#[tokio::test]
async fn a_request_over_the_size_limit_gets_413_and_runs_nothing() {
    let app = app(|mut c| {
        c.max_request_bytes = 8;
        c
    });
    let (big, _) = send(&app.router, request("/notes", Some("k"), "123456789")).await;
    assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(app.runs.load(SeqCst), 0);
    assert!(app.store.is_empty());
}

#[tokio::test]
async fn a_request_past_its_lease_is_taken_over_and_its_late_result_is_not_stored() {
    let app = app(|c| c);
    let router = app.router.clone();
    let first = tokio::spawn(async move { send(&router, request("/slow", Some("s1"), "")).await });
    while app.runs.load(SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    // The first request's server is presumed dead once its lease passes.
    app.clock.fetch_add(5_000, SeqCst);
    let router = app.router.clone();
    let second = tokio::spawn(async move { send(&router, request("/slow", Some("s1"), "")).await });
    while app.runs.load(SeqCst) < 2 {
        tokio::task::yield_now().await;
    }
    // The first (its server presumed dead) finishes late: its answer reaches
    // its client but is fenced off by its lost token and not stored.
    app.gate.add_permits(1);
    let (_, late_body) = first.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(late_body, "slow 1");
    let (busy, _) = send(&app.router, request("/slow", Some("s1"), "")).await;
    assert_eq!(
        busy.status(),
        StatusCode::CONFLICT,
        "the key is the second's"
    );
    app.gate.add_permits(1);
    let (_, stored_body) = second.await.unwrap_or_else(|e| panic!("{e}"));
    let (replay, replay_body) = send(&app.router, request("/slow", Some("s1"), "")).await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay_body, stored_body);
    assert_eq!(stored_body, "slow 2");
    assert_eq!(app.runs.load(SeqCst), 2);
}

#[tokio::test]
async fn a_retryable_4xx_is_not_stored_either() {
    let app = app(|c| c);
    let (limited, _) = send(&app.router, request("/limited", Some("l1"), "first")).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    // Released: the same key runs again (here with another body, which a
    // stored key would have refused with 422).
    let (again, _) = send(&app.router, request("/limited", Some("l1"), "second")).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert!(again.headers().get("idempotent-replayed").is_none());
}
