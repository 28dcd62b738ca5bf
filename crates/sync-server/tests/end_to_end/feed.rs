//! The change feed end to end: a reader following the feed over HTTP
//! through a server's SIGKILL and restart, the feed's contract and model on
//! the live PostgreSQL, and the concurrency race that a cursor must survive
//! (with the naive reader that does not).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sync_protocol::PullResponse;
use sync_server::{FeedChange, PostgresIdempotencyStore};

use super::feed_contract::{self, Backend};
use super::{Error, Instance};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// One pull of `scope` from `url`: the page, `None` if the server cannot
/// be reached (it is being restarted); any refusal is an error.
fn pull_once(
    agent: &ureq::Agent,
    url: &str,
    scope: &str,
    cursor: Option<&str>,
) -> Result<Option<PullResponse>, Error> {
    let query = sync_protocol::PullRequest {
        cursor: cursor.map(str::to_owned),
        limit: Some(100),
        scopes: vec![scope.to_owned()],
    }
    .to_query();
    let Ok(mut answer) = agent.get(format!("{url}/sync/pull?{query}")).call() else {
        return Ok(None);
    };
    let status = answer.status().as_u16();
    let body = answer.body_mut().read_to_string()?;
    if status != 200 {
        return Err(format!("pull refused {status}: {body}").into());
    }
    Ok(Some(serde_json::from_str(&body)?))
}

/// What a follower saw.
#[derive(Debug, Default)]
pub(super) struct Followed {
    pub(super) pulls: usize,
    pub(super) unreachable: usize,
    /// How many times each entity id came.
    pub(super) seen: HashMap<String, usize>,
    /// Changes whose version was below the one before.
    pub(super) out_of_order: usize,
}

impl Followed {
    pub(super) fn duplicates(&self) -> usize {
        self.seen.values().map(|n| n - 1).sum()
    }
}

/// A device following one scope on one instance, from before the traffic
/// to after it, through kills and restarts, keeping its cursor.
pub(super) struct Follower {
    stop: Sender<usize>,
    thread: JoinHandle<Result<Followed, Error>>,
}

impl Follower {
    pub(super) fn start(url: String, scope: &'static str) -> Self {
        let (stop, stopped) = mpsc::channel::<usize>();
        let thread = std::thread::spawn(move || {
            let agent = agent();
            let mut followed = Followed::default();
            let mut cursor: Option<String> = None;
            let mut last_version = i64::MIN;
            // Set by `finish`: how many entities to wait for, and until when.
            let mut expected: Option<(usize, Instant)> = None;
            loop {
                let Some(page) = pull_once(&agent, &url, scope, cursor.as_deref())? else {
                    followed.unreachable += 1;
                    // The server is restarting: wait a little (or for the stop).
                    if let Ok(n) = stopped.recv_timeout(Duration::from_millis(20)) {
                        expected = Some((n, Instant::now() + Duration::from_secs(30)));
                    }
                    continue;
                };
                followed.pulls += 1;
                for change in &page.changes {
                    if change.version < last_version {
                        followed.out_of_order += 1;
                    }
                    last_version = change.version;
                    *followed.seen.entry(change.id.clone()).or_default() += 1;
                }
                cursor = Some(page.cursor);
                if page.more {
                    continue;
                }
                if let Some((n, until)) = expected
                    && (followed.seen.len() >= n || Instant::now() >= until)
                {
                    return Ok(followed);
                }
                // Caught up: the stop signal doubles as the pause between
                // pulls, so no sleep holds up the end.
                match stopped.recv_timeout(Duration::from_millis(5)) {
                    Ok(n) => expected = Some((n, Instant::now() + Duration::from_secs(30))),
                    Err(RecvTimeoutError::Disconnected) if expected.is_none() => {
                        return Err("the follower was dropped".into());
                    }
                    Err(_) => {}
                }
            }
        });
        Self { stop, thread }
    }

    /// Stops following once `expected` entities have come (or 30 s pass),
    /// catching up first.
    pub(super) fn finish(self, expected: usize) -> Result<Followed, Error> {
        let _ = self.stop.send(expected);
        self.thread
            .join()
            .map_err(|_| Error::from("the follower panicked"))?
    }
}

/// Every effect has its change and every change its effect: the
/// transaction that was killed left neither.
pub(super) fn check_rows(effects: i64, changes: i64, unmatched: i64) -> Result<(), Error> {
    if effects != changes || unmatched != 0 {
        return Err(format!(
            "effects and changes disagree: {effects} effects, {changes} changes, \
             {unmatched} without their other half"
        )
        .into());
    }
    Ok(())
}

/// `(effects, changes, unmatched)`: the effects, the notes' changes, and
/// those of either without the other. The same SQL on both stores.
const ROWS: &str = "SELECT (SELECT count(*) FROM effects),
    (SELECT count(*) FROM sync_feed WHERE scope = 'e2e'),
    (SELECT count(*) FROM effects e
       WHERE NOT EXISTS (SELECT 1 FROM sync_feed f WHERE f.id = e.op_key))
  + (SELECT count(*) FROM sync_feed f WHERE f.scope = 'e2e'
       AND NOT EXISTS (SELECT 1 FROM effects e WHERE e.op_key = f.id))";

/// `(effects, changes, unmatched)` in the SQLite database.
pub(super) fn sqlite_rows(path: &std::path::Path) -> Result<(i64, i64, i64), Error> {
    let db = sync_server::rusqlite::Connection::open(path)?;
    Ok(db.query_row(ROWS, [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?)
}

/// The same on PostgreSQL.
pub(super) fn postgres_rows(conn: &str) -> Result<(i64, i64, i64), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = PostgresIdempotencyStore::connect(conn, 1)?;
        let row = store.pool().get().await?.query_one(ROWS, &[]).await?;
        Ok((row.get(0), row.get(1), row.get(2)))
    })
}

/// PostgreSQL as a feed backend: each write one transaction.
struct Pg {
    store: Arc<PostgresIdempotencyStore>,
}

impl Pg {
    async fn fresh(
        admin: &PostgresIdempotencyStore,
        conn: &str,
        name: &str,
    ) -> Result<Self, Error> {
        admin
            .pool()
            .get()
            .await?
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
        let store = PostgresIdempotencyStore::connect(
            &conn.replace("dbname=postgres", &format!("dbname={name}")),
            4,
        )?;
        store.migrate().await?;
        Ok(Self {
            store: Arc::new(store),
        })
    }
}

impl Backend for Pg {
    type Feed = PostgresIdempotencyStore;

    fn feed(&self) -> Arc<PostgresIdempotencyStore> {
        Arc::clone(&self.store)
    }

    async fn record(&self, changes: Vec<FeedChange>) -> Result<Vec<i64>, Error> {
        let mut client = self.store.pool().get().await?;
        let tx = client.transaction().await?;
        let mut versions = Vec::with_capacity(changes.len());
        for change in &changes {
            versions.push(PostgresIdempotencyStore::record(&*tx, change).await?);
        }
        tx.commit().await?;
        Ok(versions)
    }
}

/// The feed's contract on the live server: every refusal, and the model
/// against `cases` random histories, each on a database of its own.
pub(super) fn check_contract(conn: &str, cases: u32) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let admin = PostgresIdempotencyStore::connect(conn, 1)?;
    runtime.block_on(async {
        let a = Pg::fresh(&admin, conn, "feed_a").await?;
        let b = Pg::fresh(&admin, conn, "feed_b").await?;
        feed_contract::check_refusals(&a, &b).await?;
        check_restored_elsewhere(&Pg::fresh(&admin, conn, "feed_restored").await?).await
    })?;
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let case = std::sync::atomic::AtomicUsize::new(0);
    let strategy = (
        proptest::collection::vec(feed_contract::op(), 1..40),
        proptest::bool::ANY,
    )
        .boxed();
    runner
        .run(&strategy, |(ops, small_pages)| {
            let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            runtime
                .block_on(async {
                    let backend = Pg::fresh(&admin, conn, &format!("feed_model_{case}")).await?;
                    let bytes = if small_pages { 20 } else { 1 << 20 };
                    feed_contract::check_model(&backend, &ops, bytes).await
                })
                .map_err(|e| TestCaseError::fail(e.to_string()))
        })
        .map_err(|e| Error::from(format!("the feed model on PostgreSQL: {e}")))
}

/// A feed loaded into a cluster whose transaction ids are far behind the
/// one it came from (a `pg_dump` restored elsewhere, here simulated by
/// moving its versions 10^12 ahead): before `migrate`, a new device sees
/// nothing (every version is above the horizon); after it, everything.
async fn check_restored_elsewhere(pg: &Pg) -> Result<(), Error> {
    pg.record(vec![
        FeedChange::upsert("alice", "note", "1", &1),
        FeedChange::upsert("alice", "note", "2", &2),
    ])
    .await?;
    pg.store
        .pool()
        .get()
        .await?
        .batch_execute(
            "UPDATE sync_feed SET version = version + 1000000000000;
             UPDATE sync_feed_meta SET value = (value::bigint + 1000000000000)::text
               WHERE key = 'xact_seen'",
        )
        .await?;
    let snapshot = |pg: &Pg| {
        let mut service = feed_contract::service(pg.feed(), 1 << 20);
        async move {
            match feed_contract::pull(&mut service, "alice", "").await? {
                feed_contract::Pulled::Page(page) => Ok::<_, Error>(page.changes.len()),
                feed_contract::Pulled::Refused(status, e) => {
                    Err(format!("refused {status}: {e:?}").into())
                }
            }
        }
    };
    let hidden = snapshot(pg).await?;
    pg.store.migrate().await?;
    let after = snapshot(pg).await?;
    if (hidden, after) != (0, 2) {
        return Err(format!(
            "a feed restored elsewhere: {hidden} changes before migrate (the hazard: 0), \
             {after} after (expected 2)"
        )
        .into());
    }
    Ok(())
}

/// What the race showed.
#[derive(Debug)]
pub(super) struct Race {
    pub(super) writes: usize,
    pub(super) committed: usize,
    pub(super) feed: Followed,
    pub(super) missed_by_feed: usize,
    pub(super) missed_by_naive: usize,
    pub(super) elapsed: Duration,
}

impl std::fmt::Display for Race {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} writes by 16 writers on 2 instances, each holding its version open 0-39 ms, \
             {} committed in {:.1?}; the feed reader ({} pulls) saw {} once each, {} twice, {} out \
             of order, missed {}; the naive `seq > cursor` reader missed {}",
            self.writes,
            self.committed,
            self.elapsed,
            self.feed.pulls,
            self.feed.seen.len(),
            self.feed.duplicates(),
            self.feed.out_of_order,
            self.missed_by_feed,
            self.missed_by_naive
        )
    }
}

/// 16 writers on two server instances, each transaction holding its
/// version open for a while; a reader pulling all the time through the
/// feed, and a naive reader (`seq > cursor` on the table) beside it. The
/// feed reader must see every committed change once, in version order; the
/// naive one must miss some, or the race did not test anything.
pub(super) fn race(conn: &str) -> Result<Race, Error> {
    const WRITERS: usize = 16;
    const EACH: usize = 50;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let admin = PostgresIdempotencyStore::connect(conn, 1)?;
    runtime.block_on(async {
        admin
            .pool()
            .get()
            .await?
            .batch_execute("CREATE DATABASE race")
            .await?;
        Ok::<_, Error>(())
    })?;
    drop(admin);
    let race_conn = conn.replace("dbname=postgres", "dbname=race");
    let (events, _inbox) = mpsc::channel();
    let a = Instance::start("postgres", &race_conn, 0, &[], events.clone(), 0)?;
    let b = Instance::start("postgres", &race_conn, 0, &[], events, 1)?;
    let urls = [a.url(), b.url()];
    let started = Instant::now();
    let follower = Follower::start(urls[0].clone(), "race");
    let (stop_naive, naive_stopped) = mpsc::channel::<()>();
    let naive_conn = race_conn.clone();
    let naive = std::thread::spawn(move || naive_reader(&naive_conn, &naive_stopped));
    let committed: Vec<String> = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let url = urls[w % 2].clone();
                scope.spawn(move || -> Result<Vec<String>, Error> {
                    let agent = agent();
                    let mut done = Vec::new();
                    for k in 0..EACH {
                        let id = format!("w{w}-{k}");
                        let hold_ms = (w * 7_919 + k * 104_729) % 40;
                        let mut answer = agent
                            .post(format!("{url}/slow"))
                            .header("idempotency-key", &id)
                            .send(format!(r#"{{"id":"{id}","hold_ms":{hold_ms}}}"#))?;
                        if answer.status() == 201 {
                            done.push(id);
                        } else {
                            let body = answer.body_mut().read_to_string()?;
                            return Err(format!("{id}: {} {body}", answer.status()).into());
                        }
                    }
                    Ok(done)
                })
            })
            .collect();
        writers
            .into_iter()
            .map(|w| w.join().map_err(|_| Error::from("a writer panicked"))?)
            .collect::<Result<Vec<_>, Error>>()
            .map(|all| all.into_iter().flatten().collect())
    })?;
    let elapsed = started.elapsed();
    let feed = follower.finish(committed.len())?;
    let _ = stop_naive.send(());
    let naive_seen = naive
        .join()
        .map_err(|_| Error::from("the naive reader panicked"))??;
    let missed_by_feed = committed
        .iter()
        .filter(|id| !feed.seen.contains_key(*id))
        .count();
    let missed_by_naive = committed
        .iter()
        .filter(|id| !naive_seen.contains(*id))
        .count();
    drop((a, b));
    Ok(Race {
        writes: WRITERS * EACH,
        committed: committed.len(),
        feed,
        missed_by_feed,
        missed_by_naive,
        elapsed,
    })
}

/// The reader every hand-written sync starts with: the sequence value as
/// the version, `seq > cursor`, no horizon. Reads until told to stop, then
/// once more to the end.
fn naive_reader(conn: &str, stopped: &mpsc::Receiver<()>) -> Result<HashSet<String>, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = PostgresIdempotencyStore::connect(conn, 1)?;
        let client = store.pool().get().await?;
        let mut seen = HashSet::new();
        let mut cursor = 0_i64;
        let mut last_round = false;
        loop {
            let rows = client
                .query(
                    "SELECT id, seq FROM sync_feed WHERE scope = 'race' AND seq > $1 \
                     ORDER BY seq LIMIT 100",
                    &[&cursor],
                )
                .await?;
            for row in &rows {
                seen.insert(row.get::<_, String>(0));
                cursor = cursor.max(row.get(1));
            }
            if rows.is_empty() {
                if last_round {
                    return Ok(seen);
                }
                match stopped.recv_timeout(Duration::from_millis(2)) {
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => last_round = true,
                    Err(RecvTimeoutError::Timeout) => {}
                }
            }
        }
    })
}
