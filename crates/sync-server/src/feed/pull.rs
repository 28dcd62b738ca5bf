//! `PullService`: the pull endpoint (`docs/PROTOCOL.md`, "Pulling changes")
//! over any [`ChangeFeed`]: reads the request, checks the caller's scopes
//! and the cursor, reads one page, and answers the page or a typed error.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{Method, Request, StatusCode};
use sync_protocol::{
    DEFAULT_PULL_LIMIT, PullError, PullErrorCode, PullRequest, PullResponse, RestartReason,
};
use tokio::sync::OnceCell;
use tower_service::Service;

use super::cursor::{Cursor, scopes_hash};
use super::{ChangeFeed, FeedKey, FeedQuery, Position};
use crate::response::StoredResponse;

/// The scopes a request is entitled to read, from its parts (an auth
/// layer's extension, a verified header).
pub type EntitledScopesFn = Arc<dyn Fn(&Parts) -> Vec<String> + Send + Sync>;

/// Settings of a [`PullService`].
///
/// # Examples
///
/// ```
/// use sync_server::PullConfig;
///
/// // What an auth layer in front put in the request's extensions.
/// #[derive(Clone)]
/// struct User { id: u64, teams: Vec<u64> }
///
/// let config = PullConfig::new(|parts| match parts.extensions.get::<User>() {
///     Some(user) => std::iter::once(format!("user:{}", user.id))
///         .chain(user.teams.iter().map(|t| format!("team:{t}")))
///         .collect(),
///     None => Vec::new(), // answered 403 no_scopes
/// });
/// assert_eq!(config.max_page_bytes, 4 << 20);
/// ```
#[derive(Clone)]
pub struct PullConfig {
    /// The scopes the request may read. **This is the feed's security**:
    /// a pull never answers a change of any other scope, whatever its
    /// cursor or `scope` parameters say. An empty list is answered `403
    /// no_scopes`.
    pub entitled_scopes: EntitledScopesFn,
    /// A page stops growing past this many bytes of entity state (with at
    /// least one change), so a feed of large entities answers in bounded
    /// memory; `more` says the rest is waiting. Default 4 MiB.
    pub max_page_bytes: usize,
}

impl PullConfig {
    /// Settings where `entitled_scopes` decides what each request may read.
    #[must_use]
    pub fn new(entitled_scopes: impl Fn(&Parts) -> Vec<String> + Send + Sync + 'static) -> Self {
        Self {
            entitled_scopes: Arc::new(entitled_scopes),
            max_page_bytes: 4 << 20,
        }
    }

    /// Sets [`max_page_bytes`](Self::max_page_bytes).
    #[must_use]
    pub fn with_max_page_bytes(mut self, bytes: usize) -> Self {
        self.max_page_bytes = bytes;
        self
    }
}

impl fmt::Debug for PullConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PullConfig")
            .field("max_page_bytes", &self.max_page_bytes)
            .finish_non_exhaustive()
    }
}

/// Serves `GET {pull_target}?cursor=..&limit=..&scope=..`: the next page of
/// the feed for the caller's scopes, as a [`PullResponse`], or a
/// [`PullError`] (`400 bad_cursor | bad_limit | bad_query`, `403
/// scope_forbidden | no_scopes`, `410 restart` with its reason, `500` if
/// the store fails, `405` for another method).
///
/// Without a cursor the caller gets a snapshot first: the current state of
/// every entity in its scopes, in pages, without the deletes from before it
/// began; the page that says `more: false` ends it, and its cursor follows
/// the feed from there. A
/// cursor is bound to the scopes it was issued for: a request whose scopes
/// differ (the user joined a team, or it is another user's cursor) is told
/// to start again, since what it pulled so far does not cover the new set.
///
/// A pull is a `GET`, so it passes an [`IdempotencyLayer`] untouched; route
/// it beside the app's routes.
///
/// [`IdempotencyLayer`]: crate::IdempotencyLayer
///
/// # Examples
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// use std::sync::Arc;
/// use axum::{Router, body::Body};
/// use http::Request;
/// use sync_server::{FeedChange, PullConfig, PullService, SqliteIdempotencyStore};
/// use tower_service::Service;
///
/// let dir = tempfile::tempdir()?;
/// let store = Arc::new(SqliteIdempotencyStore::open(dir.path().join("server.db")).await?);
/// store.call(|db| {
///     let tx = db.transaction()?;
///     SqliteIdempotencyStore::record(&tx, &FeedChange::upsert("user:7", "note", "n1", &"hi"))?;
///     tx.commit()
/// }).await?;
///
/// // Every caller here is user 7; a real app reads its auth layer's extension.
/// let pull = PullService::new(store, PullConfig::new(|_| vec!["user:7".to_owned()]));
/// let mut app: Router = Router::new().route_service("/sync/pull", pull);
/// let answer = app.call(Request::get("/sync/pull").body(Body::empty())?).await?;
/// let bytes = axum::body::to_bytes(answer.into_body(), usize::MAX).await?;
/// let page: sync_protocol::PullResponse = serde_json::from_slice(&bytes)?;
/// assert_eq!((page.changes.len(), page.more, page.snapshot), (1, false, true));
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
pub struct PullService<F> {
    feed: Arc<F>,
    config: PullConfig,
    key: Arc<OnceCell<FeedKey>>,
}

impl<F> Clone for PullService<F> {
    fn clone(&self) -> Self {
        Self {
            feed: Arc::clone(&self.feed),
            config: self.config.clone(),
            key: Arc::clone(&self.key),
        }
    }
}

impl<F> fmt::Debug for PullService<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PullService")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<F: ChangeFeed> PullService<F> {
    /// Serves `feed`'s changes to the scopes `config` entitles each request
    /// to.
    #[must_use]
    pub fn new(feed: Arc<F>, config: PullConfig) -> Self {
        Self {
            feed,
            config,
            key: Arc::new(OnceCell::new()),
        }
    }

    /// Answers one pull: the page, or the typed error.
    async fn pull(&self, parts: &Parts) -> Result<PullResponse, Refusal> {
        let request = PullRequest::from_query(parts.uri.query().unwrap_or(""))?;
        let scopes = self.scopes(parts, &request.scopes)?;
        let key = self
            .key
            .get_or_try_init(|| self.feed.feed_key())
            .await
            .map_err(Refusal::Store)?;
        let hash = scopes_hash(&scopes);
        let cursor = match &request.cursor {
            None => None,
            Some(text) => {
                let cursor = Cursor::decode(text, key).ok_or(PullErrorCode::BadCursor)?;
                if cursor.scopes != hash {
                    return Err(Refusal::Restart(RestartReason::ScopesChanged));
                }
                Some(cursor)
            }
        };
        let limit = request.limit.unwrap_or(DEFAULT_PULL_LIMIT) as usize;
        let (after, deletes_from) = match cursor {
            Some(c) => (c.position, c.snapshot_from.unwrap_or(i64::MIN)),
            // A new device: everything, without deletes (it has nothing to
            // delete). Its snapshot starts at this read's horizon.
            None => (Position::START, i64::MAX),
        };
        let page = self
            .feed
            .read(FeedQuery {
                scopes,
                after,
                deletes_from,
                limit,
                max_bytes: self.config.max_page_bytes,
            })
            .await
            .map_err(Refusal::Store)?;
        // Both checks use the horizons this read saw, in its snapshot.
        let snapshot_from = match cursor {
            Some(c) => {
                if c.position.version >= page.horizon {
                    return Err(Refusal::Restart(RestartReason::CursorAhead));
                }
                // The deletes this cursor still needs start after its
                // position (and, in a snapshot, at its start).
                let needs_deletes_from =
                    c.position.version.max(c.snapshot_from.unwrap_or(i64::MIN));
                if needs_deletes_from < page.compacted_below {
                    return Err(Refusal::Restart(RestartReason::CursorCompacted));
                }
                c.snapshot_from
            }
            None => Some(page.horizon),
        };
        Ok(Self::answer(page, snapshot_from, hash, key))
    }

    /// The scopes this pull reads: those requested, each one the caller's,
    /// or all the caller's; sorted and deduplicated.
    fn scopes(&self, parts: &Parts, requested: &[String]) -> Result<Vec<String>, Refusal> {
        let entitled = (self.config.entitled_scopes)(parts);
        if entitled.is_empty() {
            return Err(PullErrorCode::NoScopes.into());
        }
        let mut scopes = if requested.is_empty() {
            entitled
        } else if requested.iter().all(|s| entitled.contains(s)) {
            requested.to_vec()
        } else {
            return Err(PullErrorCode::ScopeForbidden.into());
        };
        scopes.sort_unstable();
        scopes.dedup();
        Ok(scopes)
    }

    /// The answer to a page read: its changes, the next cursor, and what it
    /// covers.
    fn answer(
        page: super::FeedPage,
        snapshot_from: Option<i64>,
        scopes: [u8; 8],
        key: &FeedKey,
    ) -> PullResponse {
        let more = page.more;
        let last = page.changes.last().map(|(position, _)| *position);
        let changes = page.changes.into_iter().map(|(_, change)| change).collect();
        let (position, covers_below) = match last {
            // More is waiting: everything before this page's last version is
            // in, its own version maybe only in part.
            Some(last) if more => (last, last.version),
            // Caught up: every change below the horizon is in, so the next
            // pull starts there, past other scopes' changes too.
            _ => (Position::below(page.horizon), page.horizon),
        };
        let cursor = Cursor {
            position,
            snapshot_from: if more { snapshot_from } else { None },
            scopes,
        };
        PullResponse {
            changes,
            cursor: cursor.encode(key),
            more,
            covers_below,
            snapshot: snapshot_from.is_some(),
        }
    }
}

/// Why a pull is not answered with a page.
enum Refusal {
    Code(PullErrorCode),
    Restart(RestartReason),
    Store(crate::ServerError),
}

impl From<PullErrorCode> for Refusal {
    fn from(code: PullErrorCode) -> Self {
        Self::Code(code)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (error, reason) = match self {
            Self::Code(code) => (code, None),
            Self::Restart(reason) => (PullErrorCode::Restart, Some(reason)),
            Self::Store(e) => {
                tracing::error!(error = %e, "pull: the feed could not be read");
                return e.into_response();
            }
        };
        let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST);
        StoredResponse::json(status, &PullError { error, reason }).into_response()
    }
}

impl<F: ChangeFeed> Service<Request<Body>> for PullService<F> {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            if request.method() != Method::GET {
                return Ok(StatusCode::METHOD_NOT_ALLOWED.into_response());
            }
            let (parts, _body) = request.into_parts();
            Ok(match this.pull(&parts).await {
                Ok(page) => {
                    served(Some(page.changes.len()));
                    StoredResponse::json(StatusCode::OK, &page).into_response()
                }
                Err(refusal) => {
                    served(None);
                    refusal.into_response()
                }
            })
        })
    }
}

/// Counts a pull served (`sync.server.pulls`, by outcome: `ok`, `refused`)
/// and the changes it served (`sync.server.pull.changes`); feature
/// `metrics`.
#[cfg(feature = "metrics")]
fn served(changes: Option<usize>) {
    match changes {
        Some(n) => {
            metrics::counter!("sync.server.pulls", "outcome" => "ok").increment(1);
            metrics::counter!("sync.server.pull.changes")
                .increment(u64::try_from(n).unwrap_or(u64::MAX));
        }
        None => metrics::counter!("sync.server.pulls", "outcome" => "refused").increment(1),
    }
}

#[cfg(not(feature = "metrics"))]
fn served(_changes: Option<usize>) {}
