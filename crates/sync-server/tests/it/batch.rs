//! Guards the batch endpoint: each element runs through the layer on its
//! own key, so an element sent before (alone or in an earlier batch) is
//! replayed, never applied twice, and results come back per key.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use http::{Request, StatusCode};
use sync_outbox::{BatchOperation, BatchRequest, BatchResponse};
use sync_server::{BatchService, IdempotencyConfig, IdempotencyLayer, MemoryIdempotencyStore};
use tower_service::Service;

fn element(key: &str, target: &str, payload: &str) -> BatchOperation {
    BatchOperation {
        idempotency_key: key.into(),
        kind: "note.create".into(),
        method: "POST".into(),
        target: target.into(),
        payload: payload.into(),
        traceparent: None,
    }
}

#[tokio::test]
async fn each_element_is_deduped_on_its_own_key() -> Result<(), Box<dyn std::error::Error>> {
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let store = Arc::new(MemoryIdempotencyStore::default());
    let api: Router = Router::new()
        .route(
            "/notes",
            post(move |body: String| async move {
                counted.fetch_add(1, SeqCst);
                if body == "bad" {
                    (StatusCode::UNPROCESSABLE_ENTITY, "bad note".to_owned())
                } else {
                    (StatusCode::CREATED, format!("stored {body}"))
                }
            }),
        )
        .route(
            "/down",
            post(|| async { (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "7")]) }),
        )
        .layer(IdempotencyLayer::new(store, IdempotencyConfig::default()));
    let app: Router = Router::new()
        .route_service("/sync/batch", BatchService::new(api.clone()))
        .merge(api);

    // One operation arrives alone first.
    let single = Request::post("/notes")
        .header("idempotency-key", "a")
        .body(Body::from("one"))?;
    let Ok(_) = app.clone().call(single).await;

    let batch = BatchRequest {
        operations: vec![
            element("a", "/notes", "one"),
            element("b", "/notes", "two"),
            element("c", "/notes", "bad"),
            element("d", "/down", ""),
        ],
    };
    let send = |batch: &BatchRequest| {
        Request::post("/sync/batch")
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(batch).unwrap_or_default()))
            .unwrap_or_default()
    };
    let Ok(response) = app.clone().call(send(&batch)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
    let answer: BatchResponse = serde_json::from_slice(&body)?;
    let by_key: Vec<(&str, u16, Option<&str>, Option<&str>)> = answer
        .results
        .iter()
        .map(|r| {
            (
                r.idempotency_key.as_str(),
                r.status,
                r.retry_after.as_deref(),
                r.body.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        by_key,
        vec![
            ("a", 201, None, Some("stored one")),
            ("b", 201, None, Some("stored two")),
            ("c", 422, None, Some("bad note")),
            ("d", 503, Some("7"), None),
        ]
    );
    assert_eq!(runs.load(SeqCst), 3, "a was applied once, alone");

    // The whole batch again: nothing new is applied.
    let Ok(_) = app.clone().call(send(&batch)).await;
    assert_eq!(runs.load(SeqCst), 3);

    // Not a batch: 400.
    let Ok(bad) = app
        .clone()
        .call(Request::post("/sync/batch").body(Body::from("{"))?)
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    Ok(())
}

/// Who an auth layer in front says the caller is.
#[derive(Clone, Debug)]
struct User(String);

#[tokio::test]
async fn batch_elements_keep_the_scope_an_outer_layer_set() -> Result<(), Box<dyn std::error::Error>>
{
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let store = Arc::new(MemoryIdempotencyStore::default());
    let config = IdempotencyConfig::default().with_scope(|parts| {
        parts
            .extensions
            .get::<User>()
            .map(|u| u.0.clone())
            .unwrap_or_default()
    });
    let api: Router = Router::new()
        .route(
            "/notes",
            post(move || async move {
                counted.fetch_add(1, SeqCst);
                StatusCode::CREATED
            }),
        )
        .layer(IdempotencyLayer::new(store, config));
    let app: Router = Router::new()
        .route_service("/sync/batch", BatchService::new(api.clone()))
        .merge(api)
        .layer(axum::middleware::from_fn(
            |mut request: Request<Body>, next: axum::middleware::Next| async move {
                let user = request
                    .headers()
                    .get("x-user")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                request.extensions_mut().insert(User(user));
                next.run(request).await
            },
        ));
    let single = Request::post("/notes")
        .header("x-user", "alice")
        .header("idempotency-key", "a")
        .body(Body::from("one"))?;
    let Ok(_) = app.clone().call(single).await;
    let batch = BatchRequest {
        operations: vec![element("a", "/notes", "one")],
    };
    let as_user = |user: &str| {
        Request::post("/sync/batch")
            .header("x-user", user)
            .body(Body::from(serde_json::to_vec(&batch).unwrap_or_default()))
            .unwrap_or_default()
    };
    // Alice's resend in a batch is her key: replayed, not run.
    let Ok(_) = app.clone().call(as_user("alice")).await;
    assert_eq!(runs.load(SeqCst), 1);
    // Bob's key "a" is his own.
    let Ok(_) = app.clone().call(as_user("bob")).await;
    assert_eq!(runs.load(SeqCst), 2);
    Ok(())
}

#[tokio::test]
async fn an_element_is_routed_as_its_own_request() -> Result<(), Box<dyn std::error::Error>> {
    let store = Arc::new(MemoryIdempotencyStore::default());
    let api: Router = Router::new()
        .route(
            "/notes/{id}",
            post(
                |path: axum::extract::MatchedPath,
                 axum::extract::Path(id): axum::extract::Path<String>| async move {
                    format!("{} {id}", path.as_str())
                },
            ),
        )
        .layer(IdempotencyLayer::new(store, IdempotencyConfig::default()));
    let app: Router = Router::new()
        .route_service("/sync/batch", BatchService::new(api.clone()))
        .merge(api);
    let batch = BatchRequest {
        operations: vec![element("e1", "/notes/7", "{}")],
    };
    let Ok(response) = app
        .clone()
        .call(Request::post("/sync/batch").body(Body::from(serde_json::to_vec(&batch)?))?)
        .await;
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
    let answer: BatchResponse = serde_json::from_slice(&body)?;
    let result = answer.results.first().ok_or("no result")?;
    assert_eq!(result.status, 200, "{result:?}");
    assert_eq!(result.body.as_deref(), Some("/notes/{id} 7"));
    Ok(())
}
