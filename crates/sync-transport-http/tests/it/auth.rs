//! Guards credentials: a stale token is refreshed once on `401` and the
//! request sent again at once, by the blocking transport (`tiny_http`) and by
//! `AsyncHttpTransport` inside an `AsyncSyncEngine` against a real axum
//! server on 127.0.0.1; a second `401` follows `retry_auth_failures`; a
//! failing provider makes the send retryable; tokens never show in errors or
//! `Debug`.

use std::collections::HashMap;
use std::error::Error;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use sync_engine::{
    AsyncSyncEngine, AsyncSyncTransport, NetworkProbe, NetworkProbeConfig, SyncEngineConfig,
    SyncTransport,
};
use sync_outbox::{MemoryOutboxStore, OperationStatus, Outbox, OutboxConfig, OutboxStore};
use sync_transport_http::{AsyncHttpTransport, AuthProvider, HttpTransport, HttpTransportConfig};

use crate::{Reply, TestResult, TestServer, op};

type BoxError = Box<dyn Error + Send + Sync>;

/// A bearer token that `refresh` replaces with `fresh`; counts refreshes.
#[derive(Debug)]
struct Bearer {
    token: Mutex<String>,
    fresh: String,
    refreshes: AtomicUsize,
    broken: bool,
}

impl Bearer {
    fn new(stale: &str, fresh: &str) -> Self {
        Self {
            token: Mutex::new(stale.into()),
            fresh: fresh.into(),
            refreshes: AtomicUsize::new(0),
            broken: false,
        }
    }
}

impl AuthProvider for Bearer {
    fn headers(&self) -> Result<Vec<(String, String)>, BoxError> {
        let token = self.token.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(vec![("Authorization".into(), format!("Bearer {token}"))])
    }

    fn refresh(&self) -> Result<(), BoxError> {
        self.refreshes.fetch_add(1, SeqCst);
        if self.broken {
            return Err("token endpoint down (secret-refresh-detail)".into());
        }
        self.fresh
            .clone_into(&mut self.token.lock().unwrap_or_else(PoisonError::into_inner));
        Ok(())
    }
}

fn config(base_url: &str) -> HttpTransportConfig {
    HttpTransportConfig {
        base_url: base_url.into(),
        ..HttpTransportConfig::default()
    }
}

#[test]
fn the_blocking_transport_refreshes_once_and_resends_at_once() -> TestResult {
    let server = TestServer::start(|_, seen| {
        if seen.header("Authorization") == Some("Bearer t2") {
            Reply::status(201)
        } else {
            Reply::status(401)
        }
    })?;
    let bearer = Arc::new(Bearer::new("t1", "t2"));
    let transport = HttpTransport::new(config(&server.base_url))?.with_auth(bearer.clone());
    assert!(
        transport
            .send(&op("op_1", "note.create", "/notes", "{}"))
            .ok
    );
    assert_eq!(bearer.refreshes.load(SeqCst), 1);
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "the refused request and its resend");
    assert_eq!(seen[1].header("Idempotency-Key"), Some("op_1"));
    // The next request uses the refreshed token directly.
    assert!(
        transport
            .send(&op("op_2", "note.create", "/notes", "{}"))
            .ok
    );
    assert_eq!(server.seen().len(), 3);
    assert!(!format!("{transport:?}").contains("t2"));
    Ok(())
}

#[test]
fn a_second_401_follows_retry_auth_failures() -> TestResult {
    let server = TestServer::start(|_, _| Reply::status(401))?;
    for retry_auth_failures in [false, true] {
        let bearer = Arc::new(Bearer::new("t1", "still-bad"));
        let transport = HttpTransport::new(HttpTransportConfig {
            retry_auth_failures,
            ..config(&server.base_url)
        })?
        .with_auth(bearer.clone());
        let result = transport.send(&op("op_1", "k", "/t", "{}"));
        assert!(!result.ok);
        assert_eq!(result.retryable, retry_auth_failures);
        assert_eq!(
            bearer.refreshes.load(SeqCst),
            1,
            "refreshed once, not in a loop"
        );
    }
    Ok(())
}

#[test]
fn a_failing_provider_makes_the_send_retryable_and_stays_unquoted() -> TestResult {
    let server = TestServer::start(|_, _| Reply::status(401))?;
    let bearer = Arc::new(Bearer {
        broken: true,
        ..Bearer::new("t1", "t2")
    });
    let transport = HttpTransport::new(config(&server.base_url))?.with_auth(bearer);
    let result = transport.send(&op("op_1", "k", "/t", "{}"));
    assert!(!result.ok && result.retryable);
    assert!(
        !result.error.contains("secret-refresh-detail"),
        "{}",
        result.error
    );
    Ok(())
}

/// The upstream of the async test: requires `Bearer t2`, applies each
/// `Idempotency-Key` once, and fails the first `fail_first` good requests.
#[derive(Debug, Default)]
struct Upstream {
    applied: Mutex<HashMap<String, usize>>,
    requests: AtomicUsize,
    fail_first: AtomicUsize,
}

async fn create_note(State(upstream): State<Arc<Upstream>>, headers: HeaderMap) -> StatusCode {
    upstream.requests.fetch_add(1, SeqCst);
    let authorized = headers
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == b"Bearer t2");
    if !authorized {
        return StatusCode::UNAUTHORIZED;
    }
    if upstream
        .fail_first
        .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()) else {
        return StatusCode::BAD_REQUEST;
    };
    *upstream
        .applied
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(key.to_owned())
        .or_default() += 1;
    StatusCode::CREATED
}

#[test]
fn reqwest_to_axum_with_a_token_refresh_through_the_async_engine() -> TestResult {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime
        .block_on(async {
            let upstream = Arc::new(Upstream {
                fail_first: AtomicUsize::new(2),
                ..Upstream::default()
            });
            let app = Router::new()
                .route("/notes", post(create_note))
                .with_state(Arc::clone(&upstream));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let base_url = format!("http://{}", listener.local_addr()?);
            let server = tokio::spawn(async move { axum::serve(listener, app).await });

            let bearer = Arc::new(Bearer::new("t1", "t2"));
            let transport = AsyncHttpTransport::new(config(&base_url))?.with_auth(bearer.clone());
            assert!(!format!("{transport:?}").contains("t1"));
            let store = Arc::new(MemoryOutboxStore::new());
            let retry = sync_outbox::RetryPolicy {
                base_delay: std::time::Duration::from_millis(10),
                ..sync_outbox::RetryPolicy::default()
            };
            let outbox = Arc::new(Outbox::new(
                OutboxConfig {
                    retry,
                    ..OutboxConfig::default()
                },
                store.clone(),
            ));
            let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
            let engine = AsyncSyncEngine::new(
                SyncEngineConfig::default(),
                outbox.clone(),
                probe,
                Arc::new(transport) as Arc<dyn AsyncSyncTransport>,
            );
            engine.start().await?;
            let queue = sync_engine::AsyncOutbox::new(outbox);
            let mut ids = Vec::new();
            for n in 0..5 {
                ids.push(
                    queue
                        .enqueue(sync_outbox::Operation::new(
                            "note.create",
                            "/notes",
                            format!(r#"{{"n":{n}}}"#),
                        ))
                        .await?,
                );
            }
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
            while !ids.iter().all(|id| {
                store.get(id).ok().flatten().map(|op| op.status) == Some(OperationStatus::Done)
            }) {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "not all done in 20 s"
                );
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            engine.stop().await?;
            server.abort();

            assert_eq!(
                bearer.refreshes.load(SeqCst),
                1,
                "one refresh served them all"
            );
            let applied = upstream.applied.lock().map_err(|_| "poisoned")?;
            assert_eq!(applied.len(), 5);
            assert!(applied.values().all(|&n| n == 1), "{applied:?}");
            assert_eq!(engine.last_error(), None);
            Ok::<_, Box<dyn Error>>(())
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}
