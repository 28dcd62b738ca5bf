//! The change feed's contract, run against each store (SQLite here,
//! PostgreSQL in `end_to_end`): what a pull refuses and how, that nothing of
//! another scope ever leaks, and a model of the feed that any sequence of
//! writes, compactions and pulls must agree with.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::Request;
use sync_protocol::{ChangeOp, PullError, PullErrorCode, PullResponse, RestartReason};
use sync_server::{ChangeFeed, FeedChange, PullConfig, PullService};
use tower_service::Service;

pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;

/// What the contract needs of a store: its feed, and a way to record
/// changes in one transaction.
pub(crate) trait Backend: Send + Sync {
    /// The store.
    type Feed: ChangeFeed;
    /// The store, as a feed.
    fn feed(&self) -> Arc<Self::Feed>;
    /// Records `changes` in one transaction; their versions.
    fn record(
        &self,
        changes: Vec<FeedChange>,
    ) -> impl Future<Output = Result<Vec<i64>, Error>> + Send;
}

/// Every scope a test writes to.
pub(crate) const SCOPES: [&str; 4] = ["alice", "bob", "team", "mallory"];

/// The scopes each test user is entitled to (the `x-user` header stands for
/// an auth layer).
pub(crate) fn entitled(user: &str) -> Vec<String> {
    let scopes: &[&str] = match user {
        "alice" => &["alice", "team"],
        "bob" => &["bob", "team"],
        "mallory" => &["mallory"],
        _ => &[],
    };
    scopes.iter().map(|s| (*s).to_owned()).collect()
}

/// The pull endpoint on `feed`, with users from `x-user`.
pub(crate) fn service<F: ChangeFeed>(feed: Arc<F>, max_page_bytes: usize) -> PullService<F> {
    PullService::new(
        feed,
        PullConfig::new(|parts| {
            entitled(
                parts
                    .headers
                    .get("x-user")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
            )
        })
        .with_max_page_bytes(max_page_bytes),
    )
}

/// A pull's outcome.
#[derive(Debug)]
pub(crate) enum Pulled {
    Page(PullResponse),
    Refused(u16, PullError),
}

/// `GET /pull?{query}` as `user`.
pub(crate) async fn pull<F: ChangeFeed>(
    service: &mut PullService<F>,
    user: &str,
    query: &str,
) -> Result<Pulled, Error> {
    let request = Request::get(format!("/pull?{query}"))
        .header("x-user", user)
        .body(Body::empty())?;
    let Ok(answer) = service.call(request).await;
    let status = answer.status().as_u16();
    let bytes = axum::body::to_bytes(answer.into_body(), usize::MAX).await?;
    if status == 200 {
        Ok(Pulled::Page(serde_json::from_slice(&bytes)?))
    } else {
        let error = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{status} {}: {e}", String::from_utf8_lossy(&bytes)))?;
        Ok(Pulled::Refused(status, error))
    }
}

fn page(pulled: Pulled) -> Result<PullResponse, Error> {
    match pulled {
        Pulled::Page(page) => Ok(page),
        Pulled::Refused(status, error) => Err(format!("refused {status}: {error:?}").into()),
    }
}

fn refused(pulled: Pulled, status: u16, code: PullErrorCode, what: &str) -> Result<(), Error> {
    match pulled {
        Pulled::Refused(s, e) if s == status && e.error == code => Ok(()),
        other => Err(format!("{what}: expected {status} {code}, got {other:?}").into()),
    }
}

fn restart(pulled: Pulled, reason: RestartReason, what: &str) -> Result<(), Error> {
    match pulled {
        Pulled::Refused(410, e)
            if e.error == PullErrorCode::Restart && e.reason == Some(reason) =>
        {
            Ok(())
        }
        other => Err(format!("{what}: expected 410 {reason:?}, got {other:?}").into()),
    }
}

/// Pulls as `user` until caught up; every change it got.
async fn pull_all<F: ChangeFeed>(
    service: &mut PullService<F>,
    user: &str,
    mut cursor: Option<String>,
) -> Result<(Vec<sync_protocol::Change>, String), Error> {
    let mut changes = Vec::new();
    for _ in 0..10_000 {
        let query = cursor
            .as_ref()
            .map_or_else(|| "limit=2".to_owned(), |c| format!("cursor={c}&limit=2"));
        let answer = page(pull(service, user, &query).await?)?;
        changes.extend(answer.changes);
        if !answer.more {
            return Ok((changes, answer.cursor));
        }
        cursor = Some(answer.cursor);
    }
    Err("never caught up".into())
}

/// Every refusal of the wire, with what it must not reveal. `other` is a
/// second, separate feed (its cursors are foreign here).
pub(crate) async fn check_refusals<B: Backend>(backend: &B, other: &B) -> Result<(), Error> {
    let mut writes = Vec::new();
    for scope in SCOPES {
        for n in 0..3 {
            writes.push(FeedChange::upsert(
                scope,
                "note",
                &format!("{scope}-{n}"),
                &serde_json::json!({ "secret of": scope }),
            ));
        }
    }
    backend.record(writes).await?;
    other
        .record(vec![FeedChange::upsert("alice", "note", "x", &1)])
        .await?;
    let mut svc = service(backend.feed(), 1 << 20);

    // A new device gets a snapshot of its own scopes, nothing else.
    let (got, cursor) = pull_all(&mut svc, "alice", None).await?;
    let scopes: BTreeSet<&str> = got.iter().map(|c| c.scope.as_str()).collect();
    if scopes != BTreeSet::from(["alice", "team"]) || got.len() != 6 {
        return Err(format!("alice's snapshot: {got:?}").into());
    }
    // Her scope parameter narrows; someone else's scope is forbidden.
    let team = page(pull(&mut svc, "alice", "scope=team").await?)?;
    if team.changes.len() != 3 || team.changes.iter().any(|c| c.scope != "team") {
        return Err(format!("scope=team: {team:?}").into());
    }
    for query in [
        "scope=bob",
        "scope=team&scope=mallory",
        "scope=",
        "scope=alice%00",
    ] {
        refused(
            pull(&mut svc, "alice", query).await?,
            403,
            PullErrorCode::ScopeForbidden,
            query,
        )?;
    }
    refused(
        pull(&mut svc, "nobody", "").await?,
        403,
        PullErrorCode::NoScopes,
        "no scopes",
    )?;

    // Garbled, cut, altered, foreign cursors: 400, nothing read.
    let foreign = page(pull(&mut service(other.feed(), 1 << 20), "alice", "").await?)?.cursor;
    let mut altered = cursor.clone().into_bytes();
    altered[40] = if altered[40] == b'0' { b'1' } else { b'0' };
    let altered = String::from_utf8(altered)?;
    for (what, bad) in [
        ("empty", String::new()),
        ("not hex", "zz".repeat(66)),
        ("cut", cursor[..cursor.len() - 2].to_owned()),
        ("altered", altered),
        ("too long", format!("{cursor}00")),
        ("huge", "ab".repeat(15_000)),
        ("foreign", foreign),
    ] {
        refused(
            pull(&mut svc, "alice", &format!("cursor={bad}")).await?,
            400,
            PullErrorCode::BadCursor,
            what,
        )?;
    }
    // Limits out of range, parameters twice.
    for query in ["limit=0", "limit=1000000000", "limit=-5", "limit=many"] {
        refused(
            pull(&mut svc, "alice", query).await?,
            400,
            PullErrorCode::BadLimit,
            query,
        )?;
    }
    refused(
        pull(
            &mut svc,
            "alice",
            &format!("cursor={cursor}&cursor={cursor}"),
        )
        .await?,
        400,
        PullErrorCode::BadQuery,
        "two cursors",
    )?;
    // Alice's cursor in Bob's hands (or after her scopes changed): start
    // again, and not one change of hers in the answer.
    restart(
        pull(&mut svc, "bob", &format!("cursor={cursor}")).await?,
        RestartReason::ScopesChanged,
        "alice's cursor as bob",
    )?;
    restart(
        pull(&mut svc, "alice", &format!("cursor={cursor}&scope=alice")).await?,
        RestartReason::ScopesChanged,
        "alice's cursor for a narrower set",
    )?;

    check_compaction(backend, &mut svc, &cursor).await
}

/// A cursor that has not seen a delete compaction dropped is told to start
/// again, and the new snapshot lacks the deleted entity.
async fn check_compaction<B: Backend>(
    backend: &B,
    svc: &mut PullService<B::Feed>,
    cursor: &str,
) -> Result<(), Error> {
    // A delete she has not seen, compacted away: start again.
    backend
        .record(vec![FeedChange::delete("alice", "note", "alice-0")])
        .await?;
    let compacted = compact_all(&*backend.feed()).await?;
    if compacted.deletes_dropped != 1 {
        return Err(format!("compaction: {compacted:?}").into());
    }
    restart(
        pull(svc, "alice", &format!("cursor={cursor}")).await?,
        RestartReason::CursorCompacted,
        "a cursor below the compaction horizon",
    )?;
    // Starting again works, and the deleted note is not in it.
    let (again, _) = pull_all(svc, "alice", None).await?;
    if again.len() != 5 || again.iter().any(|c| c.id == "alice-0") {
        return Err(format!("the snapshot after the restart: {again:?}").into());
    }
    // A POST is not a pull.
    let post = svc
        .call(
            Request::post("/pull")
                .header("x-user", "alice")
                .body(Body::empty())?,
        )
        .await;
    let Ok(post) = post;
    if post.status() != 405 {
        return Err(format!("POST: {}", post.status()).into());
    }
    Ok(())
}

/// Drops every delete: waits a few ms first, since deletes are aged by the
/// database's clock in whole milliseconds.
pub(crate) async fn compact_all<F: ChangeFeed>(feed: &F) -> Result<sync_server::Compaction, Error> {
    tokio::time::sleep(Duration::from_millis(3)).await;
    Ok(feed.compact(Duration::ZERO).await?)
}

/// One step of the model test.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    /// One transaction: `(scope, entity id, Some(value) | None for delete)`.
    Write(Vec<(usize, u8, Option<u16>)>),
    /// Drop every delete old enough.
    Compact,
    /// Reader `reader` pulls one page of at most `limit`.
    Pull { reader: usize, limit: u32 },
}

/// Any step: writes of one to three changes (30% deletes), compactions,
/// pulls of one to three changes.
pub(crate) fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        5 => prop::collection::vec((0..4usize, 0..6u8, prop::option::weighted(0.7, any::<u16>())), 1..4)
            .prop_map(Op::Write),
        1 => Just(Op::Compact),
        5 => (0..4usize, 1..4u32).prop_map(|(reader, limit)| Op::Pull { reader, limit }),
    ]
}

/// The readers of the model: a user, and the scope parameter it pulls with.
pub(crate) const READERS: [(&str, &str); 4] = [
    ("alice", ""),
    ("bob", ""),
    ("mallory", ""),
    ("alice", "&scope=team"),
];

type Key = (String, String, String);

/// A device in the model.
#[derive(Debug, Default)]
struct Reader {
    cursor: Option<String>,
    state: BTreeMap<Key, serde_json::Value>,
    covers_below: i64,
    last_version: i64,
    restarts: usize,
}

impl Reader {
    fn scopes(index: usize) -> Vec<String> {
        let (user, narrow) = READERS[index];
        if narrow.is_empty() {
            entitled(user)
        } else {
            vec!["team".to_owned()]
        }
    }

    /// One pull; checks what a page promises and applies it.
    async fn step<F: ChangeFeed>(
        &mut self,
        index: usize,
        service: &mut PullService<F>,
        limit: u32,
    ) -> Result<bool, Error> {
        let (user, narrow) = READERS[index];
        let query = match &self.cursor {
            Some(c) => format!("cursor={c}&limit={limit}{narrow}"),
            None => format!("limit={limit}{narrow}"),
        };
        let answer = match pull(service, user, &query).await? {
            Pulled::Page(page) => page,
            Pulled::Refused(410, e) if e.reason == Some(RestartReason::CursorCompacted) => {
                // Start again: drop what came from the server.
                *self = Self {
                    restarts: self.restarts + 1,
                    ..Self::default()
                };
                return Ok(true);
            }
            Pulled::Refused(status, e) => {
                return Err(format!("reader {index} refused {status}: {e:?}").into());
            }
        };
        let scopes = Reader::scopes(index);
        if self.cursor.is_none() && answer.changes.iter().any(|c| c.op == ChangeOp::Delete) {
            return Err(format!("reader {index}: a delete in a new device's first page").into());
        }
        for change in &answer.changes {
            if !scopes.contains(&change.scope) {
                return Err(format!("reader {index} got another scope's {change:?}").into());
            }
            if change.version < self.last_version {
                return Err(format!(
                    "reader {index}: version {} after {}",
                    change.version, self.last_version
                )
                .into());
            }
            self.last_version = change.version;
            let key = (
                change.scope.clone(),
                change.entity.clone(),
                change.id.clone(),
            );
            match &change.op {
                ChangeOp::Upsert { state } => {
                    self.state.insert(key, state.clone());
                }
                ChangeOp::Delete => {
                    self.state.remove(&key);
                }
            }
        }
        if answer.covers_below < self.covers_below {
            return Err(format!(
                "reader {index}: covers_below went back from {} to {}",
                self.covers_below, answer.covers_below
            )
            .into());
        }
        if answer.changes.len() > limit as usize {
            return Err(format!("reader {index}: more than {limit} changes").into());
        }
        self.covers_below = answer.covers_below;
        self.cursor = Some(answer.cursor);
        Ok(answer.more)
    }
}

/// Runs `ops` against `backend` and a plain map, then has every reader pull
/// until done: each must hold exactly the model's state of its scopes, and
/// cover every version written.
pub(crate) async fn check_model<B: Backend>(
    backend: &B,
    ops: &[Op],
    max_page_bytes: usize,
) -> Result<(), Error> {
    let mut service = service(backend.feed(), max_page_bytes);
    let mut model: BTreeMap<Key, serde_json::Value> = BTreeMap::new();
    let mut readers: Vec<Reader> = (0..READERS.len()).map(|_| Reader::default()).collect();
    let mut newest = i64::MIN;
    for op in ops {
        match op {
            Op::Write(changes) => {
                let mut batch = Vec::new();
                for &(scope, id, value) in changes {
                    let scope = SCOPES[scope % SCOPES.len()];
                    let id = format!("e{id}");
                    let key = (scope.to_owned(), "thing".to_owned(), id.clone());
                    if let Some(v) = value {
                        let state = serde_json::json!({ "v": v });
                        batch.push(FeedChange::upsert(scope, "thing", &id, &state));
                        model.insert(key, state);
                    } else {
                        batch.push(FeedChange::delete(scope, "thing", &id));
                        model.remove(&key);
                    }
                }
                let versions = backend.record(batch).await?;
                newest = versions.into_iter().fold(newest, i64::max);
            }
            Op::Compact => {
                compact_all(&*backend.feed()).await?;
            }
            Op::Pull { reader, limit } => {
                let index = reader % READERS.len();
                readers[index].step(index, &mut service, *limit).await?;
            }
        }
    }
    for (index, reader) in readers.iter_mut().enumerate() {
        let mut pulls = 0;
        while reader.step(index, &mut service, 3).await? {
            pulls += 1;
            if pulls > 10_000 {
                return Err(format!("reader {index} never caught up").into());
            }
        }
        let scopes = Reader::scopes(index);
        let expected: BTreeMap<Key, serde_json::Value> = model
            .iter()
            .filter(|((scope, _, _), _)| scopes.contains(scope))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if reader.state != expected {
            return Err(format!(
                "reader {index} ended with {:?}, the server has {expected:?}",
                reader.state
            )
            .into());
        }
        if newest != i64::MIN && reader.covers_below <= newest {
            return Err(format!(
                "reader {index} caught up but covers below {}, not version {newest}",
                reader.covers_below
            )
            .into());
        }
    }
    Ok(())
}
