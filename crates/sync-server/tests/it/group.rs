//! Guards all-or-nothing groups on SQLite: a transfer group (debit, credit)
//! applied whole with its results; a group whose second member is refused
//! leaves nothing applied, feed changes included, and its refusal is stored
//! and replayed; a repeat of an applied group is replayed, not applied
//! again; a group inside a batch is one element, applied whole; and a
//! member's error rolls the group back and releases the key, so the retry
//! runs it once.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{Request, StatusCode};
use sync_server::{
    BatchService, FeedChange, GroupOperation, GroupRequest, Idempotency, IdempotencyConfig,
    IdempotencyLayer, Member, ServerError, SqliteIdempotencyStore, StoredResponse,
};
use tower_service::Service;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// `POST /sync/group`: each member moves `cents` in or out of the account
/// its target names (`/accounts/{name}`); an account that would go below
/// zero refuses; an account named `broken` makes the SQL fail.
async fn group(
    State(store): State<Arc<SqliteIdempotencyStore>>,
    idem: Idempotency,
    body: String,
) -> Result<Response, ServerError> {
    let Ok(group) = serde_json::from_str::<GroupRequest>(&body) else {
        return Ok(StatusCode::BAD_REQUEST.into_response());
    };
    store
        .transaction(&idem, move |tx| {
            SqliteIdempotencyStore::apply_group(tx, &group, |tx, op| {
                let name = op.target.trim_start_matches("/accounts/");
                let cents = serde_json::from_str::<serde_json::Value>(&op.payload)
                    .ok()
                    .and_then(|v| v["cents"].as_i64())
                    .unwrap_or(0);
                let delta = if op.kind == "debit" { -cents } else { cents };
                if name == "broken" {
                    tx.execute("INSERT INTO no_such_table VALUES (1)", [])?;
                }
                let balance: i64 = tx.query_row(
                    "UPDATE accounts SET balance = balance + ?1 WHERE name = ?2 RETURNING balance",
                    sync_server::rusqlite::params![delta, name],
                    |row| row.get(0),
                )?;
                SqliteIdempotencyStore::record(
                    tx,
                    &FeedChange::upsert(
                        "bank",
                        "account",
                        name,
                        &serde_json::json!({ "balance": balance }),
                    ),
                )?;
                if balance < 0 {
                    return Ok(Member::Refused(StoredResponse::json(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        &serde_json::json!({ "error": "insufficient_funds", "account": name }),
                    )));
                }
                Ok(Member::Applied(serde_json::json!({ "balance": balance })))
            })
        })
        .await
}

async fn bank(dir: &std::path::Path) -> Result<(Router, Arc<SqliteIdempotencyStore>), ServerError> {
    let store = Arc::new(SqliteIdempotencyStore::open(dir.join("bank.db")).await?);
    store
        .call(|db| {
            db.execute_batch(
                "CREATE TABLE accounts (name TEXT PRIMARY KEY, balance INTEGER NOT NULL);
                 INSERT INTO accounts VALUES ('a', 1000), ('b', 0), ('broken', 0);",
            )
        })
        .await?;
    let api: Router = Router::new()
        .route("/sync/group", post(group))
        .layer(IdempotencyLayer::new(
            Arc::clone(&store),
            IdempotencyConfig::default(),
        ))
        .with_state(Arc::clone(&store));
    let app = Router::new()
        .route_service("/sync/batch", BatchService::new(api.clone()))
        .merge(api);
    Ok((app, store))
}

fn transfer(from: &str, to: &str, cents: i64) -> GroupRequest {
    let payload = serde_json::json!({ "cents": cents }).to_string();
    GroupRequest {
        operations: vec![
            GroupOperation::new("debit", format!("/accounts/{from}"), payload.clone()),
            GroupOperation::new("credit", format!("/accounts/{to}"), payload),
        ],
    }
}

fn request(key: &str, group: &GroupRequest) -> Result<Request<Body>, Box<dyn std::error::Error>> {
    Ok(Request::post("/sync/group")
        .header("idempotency-key", key)
        .body(Body::from(serde_json::to_string(group)?))?)
}

async fn body(response: Response) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
    Ok(serde_json::from_slice(&bytes)?)
}

async fn balances(store: &SqliteIdempotencyStore) -> Result<(i64, i64, i64), ServerError> {
    store
        .call(|db| {
            db.query_row(
                "SELECT (SELECT balance FROM accounts WHERE name = 'a'),
                        (SELECT balance FROM accounts WHERE name = 'b'),
                        (SELECT coalesce(max(last), 0) FROM sync_feed_clock)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_applies_whole_or_not_at_all_and_its_answer_is_replayed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (mut app, store) = bank(dir.path()).await?;

    let ok = app.call(request("t1", &transfer("a", "b", 300))?).await?;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(
        body(ok).await?,
        serde_json::json!({ "results": [{ "balance": 700 }, { "balance": 300 }] })
    );
    assert_eq!(balances(&store).await?, (700, 300, 2));

    // The same group again (a lost answer): replayed, not applied twice.
    let again = app.call(request("t1", &transfer("a", "b", 300))?).await?;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(balances(&store).await?, (700, 300, 2));

    // The debit of b goes below zero after the credit of a was applied:
    // the credit is undone with it, the feed keeps neither, and the refusal
    // is stored for the retry.
    let refused = app.call(request("t2", &transfer("b", "a", 500))?).await?;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        balances(&store).await?,
        (700, 300, 2),
        "nothing of it applied"
    );
    let reverse = GroupRequest {
        operations: vec![
            GroupOperation::new("credit", "/accounts/a", r#"{"cents":500}"#),
            GroupOperation::new("debit", "/accounts/b", r#"{"cents":500}"#),
        ],
    };
    let refused = app.call(request("t3", &reverse)?).await?;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body(refused).await?["account"], "b");
    assert_eq!(
        balances(&store).await?,
        (700, 300, 2),
        "the applied credit was undone"
    );
    let replay = app.call(request("t3", &reverse)?).await?;
    assert_eq!(
        (replay.status(), &replay.headers()["idempotent-replayed"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &"true".parse()?)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_member_releases_the_key_and_a_group_in_a_batch_is_one_element() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (mut app, store) = bank(dir.path()).await?;

    // The credit's SQL fails after the debit: rolled back, key released.
    let failed = app
        .call(request("t1", &transfer("a", "broken", 100))?)
        .await?;
    assert!(failed.status().is_server_error(), "{}", failed.status());
    assert_eq!(balances(&store).await?, (1000, 0, 0));
    let retry = app
        .call(request("t1", &transfer("a", "broken", 100))?)
        .await?;
    assert!(retry.status().is_server_error(), "runs again, not replayed");

    // A batch carrying the group as one element, twice.
    let element = serde_json::json!({
        "idempotency_key": "t4",
        "kind": "transfer",
        "method": "POST",
        "target": "/sync/group",
        "payload": serde_json::to_string(&transfer("a", "b", 250))?,
    });
    let batch = || -> Result<Request<Body>, Box<dyn std::error::Error>> {
        let body = serde_json::json!({ "operations": [element.clone()] }).to_string();
        Ok(Request::post("/sync/batch").body(Body::from(body))?)
    };
    let answer = body(app.call(batch()?).await?).await?;
    assert_eq!(answer["results"][0]["status"], 200, "{answer}");
    let again = body(app.call(batch()?).await?).await?;
    assert_eq!(again["results"][0]["status"], 200);
    assert_eq!(
        balances(&store).await?,
        (750, 250, 2),
        "applied once, whole"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_group_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (mut app, store) = bank(dir.path()).await?;
    let empty = GroupRequest {
        operations: Vec::new(),
    };
    let refused = app.call(request("e", &empty)?).await?;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body(refused).await?["error"], "empty_group");
    assert_eq!(balances(&store).await?, (1000, 0, 0));
    Ok(())
}
