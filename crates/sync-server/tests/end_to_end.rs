//! Exactly-once effects end to end, with real processes: the library's
//! engine sends 1,000 operations to server processes (this binary re-run as
//! a child) that apply each in the transactional form. Duplicates are
//! injected (the same operation sent to both instances at once, acks lost
//! so the client resends). A server is killed (`SIGKILL`) inside an effect's
//! transaction and restarted, and one is killed again, at whatever it is
//! doing, when 60% of the operations are done. At the end every operation's
//! effect is in the app's table exactly once and the client has every
//! operation `Done`. Among the operations go 100 all-or-nothing transfer
//! groups ([`groups`]), the first instance killed once inside a group's
//! transaction between its debit and its credit: every group ends with
//! both its ledger rows or neither, once, and no money made or lost.
//!
//! - SQLite: one server instance.
//! - PostgreSQL: a server this test starts itself (`initdb` and `pg_ctl` in a
//!   temp dir, on a free port, stopped at the end), two server instances on
//!   one database, one of them serving the batch format.
//!
//! Without PostgreSQL's server binaries the test fails and says how to
//! install them (`cargo xtask ci` installs them where it can): never a
//! silent skip. `SYNC_E2E_OPS` changes the number of operations.

#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a harness-less test reports on the console"
)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sync_engine::{
    Clock as _, NetworkProbe, NetworkProbeConfig, SendResult, SyncEngine, SyncEngineConfig,
    SyncObserver, SyncTransport, SystemClock,
};
use sync_outbox::{
    MemoryOutboxStore, Operation, OperationStatus, Outbox, OutboxConfig, OutboxStore, RetryPolicy,
};
use sync_transport_http::{HttpTransport, HttpTransportConfig};

type Error = Box<dyn std::error::Error + Send + Sync>;

// The store contract, here run on the live PostgreSQL.
#[path = "it/store_contract.rs"]
mod store_contract;
// The feed's contract and model, here run on the live PostgreSQL.
#[path = "it/feed_contract.rs"]
mod feed_contract;
// The feed end to end: a follower through kills, the race.
#[path = "end_to_end/feed.rs"]
mod feed;
// All-or-nothing groups among the operations, one killed mid-group.
#[path = "end_to_end/groups.rs"]
mod groups;

/// The op number whose transaction the first instance is killed in.
const KILL_AT: usize = 300;

fn main() {
    if let Ok(kind) = std::env::var("SYNC_SERVER_CHILD") {
        if let Err(e) = child::run(&kind) {
            eprintln!("child server: {e}");
            std::process::exit(1);
        }
        return;
    }
    let ops = std::env::var("SYNC_E2E_OPS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000);
    let mut failed = 0;
    for (name, scenario) in [
        (
            "sqlite",
            sqlite_scenario as fn(usize) -> Result<Report, Error>,
        ),
        ("postgres", postgres_scenario),
    ] {
        let started = Instant::now();
        match scenario(ops) {
            Ok(report) => println!(
                "test end_to_end::{name} ... ok ({:.1?}): {report}",
                started.elapsed()
            ),
            Err(e) => {
                println!("test end_to_end::{name} ... FAILED: {e}");
                failed += 1;
            }
        }
    }
    println!("{} passed, {failed} failed", 2 - failed);
    if failed > 0 {
        std::process::exit(1);
    }
}

/// What a scenario saw, for the closing line.
#[derive(Debug, Default)]
struct Report {
    operations: usize,
    instances: usize,
    duplicates_sent: usize,
    acks_dropped: usize,
    kills: usize,
    effects: i64,
    distinct_effects: i64,
    done: usize,
    followed: String,
    groups: usize,
    ledger: String,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} operations over {} instance(s), {} duplicate deliveries and {} dropped acks \
             injected, {} SIGKILLs (inside a note's transaction, inside a group's between its members, \
             mid-traffic); {} effects \
             applied ({} distinct), {} Done; {}; {}",
            self.operations,
            self.instances,
            self.duplicates_sent,
            self.acks_dropped,
            self.kills,
            self.effects,
            self.distinct_effects,
            self.done,
            self.followed,
            self.ledger
        )
    }
}

fn sqlite_scenario(ops: usize) -> Result<Report, Error> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("server.db");
    let db = db.to_str().ok_or("temp path is not UTF-8")?.to_owned();
    let (events, inbox) = mpsc::channel();
    let mut a = Instance::start("sqlite", &db, 0, &pauses(), events.clone(), 0)?;
    let urls = vec![a.url()];
    let follower = feed::Follower::start(a.url(), "e2e");
    let mut report = drive(ops, &urls, &mut [&mut a], events, &inbox)?;
    report.followed = follow_up(&follower.finish(ops)?, ops)?;
    a.stop();
    let (effects, changes, unmatched) = feed::sqlite_rows(Path::new(&db))?;
    feed::check_rows(effects, changes, unmatched)?;
    let (effects, distinct) = child::count_sqlite(Path::new(&db))?;
    report.effects = effects;
    report.distinct_effects = distinct;
    report.instances = 1;
    report.ledger = groups::sqlite_ledger(Path::new(&db))?.check(report.groups)?;
    check(&report, ops)?;
    Ok(report)
}

fn postgres_scenario(ops: usize) -> Result<Report, Error> {
    let pg = postgres::Cluster::start()?;
    let conn = pg.connection_string();
    postgres::check_contract(&conn)?;
    let (events, inbox) = mpsc::channel();
    let mut a = Instance::start("postgres", &conn, 0, &pauses(), events.clone(), 0)?;
    let mut b = Instance::start("postgres", &conn, 0, &[], events.clone(), 1)?;
    let urls = vec![a.url(), b.url()];
    let follower = feed::Follower::start(a.url(), "e2e");
    let mut report = drive(ops, &urls, &mut [&mut a, &mut b], events, &inbox)?;
    report.followed = follow_up(&follower.finish(ops)?, ops)?;
    a.stop();
    b.stop();
    let (effects, changes, unmatched) = feed::postgres_rows(&conn)?;
    feed::check_rows(effects, changes, unmatched)?;
    let (effects, distinct) = postgres::count_effects(&conn)?;
    report.effects = effects;
    report.distinct_effects = distinct;
    report.instances = 2;
    report.ledger = groups::postgres_ledger(&conn)?.check(report.groups)?;
    check(&report, ops)?;
    let started = Instant::now();
    feed::check_contract(&conn, 32)?;
    println!(
        "  postgres feed contract and model (32 histories) ... ok ({:.1?})",
        started.elapsed()
    );
    let race = feed::race(&conn)?;
    println!("  postgres feed race: {race}");
    if race.missed_by_feed != 0
        || race.feed.duplicates() != 0
        || race.feed.out_of_order != 0
        || race.committed != race.writes
    {
        return Err(format!("the feed lost the race: {race}").into());
    }
    if race.missed_by_naive == 0 {
        return Err(
            format!("the naive reader missed nothing: the race tested nothing: {race}").into(),
        );
    }
    Ok(report)
}

/// A follower that pulled through the whole run (and the kills) must have
/// every operation's note once, and never a refused cursor.
fn follow_up(followed: &feed::Followed, ops: usize) -> Result<String, Error> {
    if followed.seen.len() != ops || followed.duplicates() != 0 || followed.out_of_order != 0 {
        return Err(format!(
            "the feed follower saw {} notes of {ops}, {} twice, {} out of order",
            followed.seen.len(),
            followed.duplicates(),
            followed.out_of_order
        )
        .into());
    }
    Ok(format!(
        "a feed follower kept its cursor through the kills ({} pulls, {} while the server was down) and got all {ops} notes once",
        followed.pulls, followed.unreachable
    ))
}

fn check(report: &Report, ops: usize) -> Result<(), Error> {
    let want = i64::try_from(ops)?;
    if report.effects != want
        || report.distinct_effects != want
        || report.done != ops + report.groups
    {
        return Err(format!("not exactly once: {report}").into());
    }
    if report.kills != 3 {
        return Err(format!("the kills did not happen: {report}").into());
    }
    Ok(())
}

/// What the parent waits for: no polling, no sleeps.
enum Event {
    /// Instance `n` is inside an effect's transaction (a note's or a
    /// group's, as named), waiting to be killed.
    KillPoint(usize, String),
    /// The engine recorded a result.
    Recorded,
}

/// Tells the parent of every recorded result.
struct Recorded(Mutex<Sender<Event>>);

impl SyncObserver for Recorded {
    fn on_result(&self, _op: &Operation, _result: &SendResult, _status: OperationStatus) {
        let _ = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(Event::Recorded);
    }
}

/// A server process: this binary with `SYNC_SERVER_CHILD`.
struct Instance {
    kind: String,
    db: String,
    port: u16,
    child: Option<Child>,
    events: Sender<Event>,
    index: usize,
    /// Where it stops inside a transaction to be killed, not yet reached:
    /// `("note", n)` (`SYNC_SERVER_PAUSE_AT`), `("group", g)`
    /// (`SYNC_SERVER_GROUP_PAUSE_AT`).
    pauses: Vec<(String, usize)>,
}

/// The kill points of the first instance: a note's transaction, a group's
/// between its two members.
fn pauses() -> Vec<(String, usize)> {
    vec![
        ("note".to_owned(), KILL_AT),
        ("group".to_owned(), groups::KILL_AT),
    ]
}

impl Instance {
    fn start(
        kind: &str,
        db: &str,
        port: u16,
        pauses: &[(String, usize)],
        events: Sender<Event>,
        index: usize,
    ) -> Result<Self, Error> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .env("SYNC_SERVER_CHILD", kind)
            .env("SYNC_SERVER_DB", db)
            .env("SYNC_SERVER_PORT", port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (what, n) in pauses {
            let var = if what == "group" {
                "SYNC_SERVER_GROUP_PAUSE_AT"
            } else {
                "SYNC_SERVER_PAUSE_AT"
            };
            command.env(var, n.to_string());
        }
        let mut child = command.spawn()?;
        let stdout = child.stdout.take().ok_or("no child stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = lines
            .next()
            .ok_or("the child server exited before listening")??;
        let port = first
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("unexpected first line from the child: {first}"))?;
        let announce = events.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Some(what) = line.strip_prefix("in-transaction ") {
                    let _ = announce.send(Event::KillPoint(index, what.to_owned()));
                }
            }
        });
        Ok(Self {
            kind: kind.to_owned(),
            db: db.to_owned(),
            port,
            child: Some(child),
            events,
            index,
            pauses: pauses.to_vec(),
        })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILLs the process and starts a new one on the same port, with
    /// the kill points not reached yet (`reached`: the one it stopped at).
    fn kill_and_restart(&mut self, reached: Option<&str>) -> Result<(), Error> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        self.pauses
            .retain(|(what, _)| Some(what.as_str()) != reached);
        let restarted = Self::start(
            &self.kind,
            &self.db,
            self.port,
            &self.pauses,
            self.events.clone(),
            self.index,
        )?;
        *self = restarted;
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends `ops` operations through the engine, spread over `urls`, with
/// duplicates injected; kills and restarts the instance that pauses in a
/// transaction. Returns when every operation is `Done` (or fails after a
/// bound).
fn drive(
    ops: usize,
    urls: &[String],
    instances: &mut [&mut Instance],
    events: Sender<Event>,
    inbox: &Receiver<Event>,
) -> Result<Report, Error> {
    let store = Arc::new(MemoryOutboxStore::new());
    let outbox = Arc::new(Outbox::new(
        OutboxConfig {
            owner: "e2e".into(),
            retry: RetryPolicy {
                max_attempts: 10_000,
                base_delay: std::time::Duration::from_millis(20),
                factor: 2.0,
                max_delay: std::time::Duration::from_millis(500),
                ..RetryPolicy::default()
            },
            ..OutboxConfig::default()
        },
        store.clone(),
    ));
    let transport = Arc::new(Spread::new(urls)?);
    let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
    let engine = SyncEngine::new(
        SyncEngineConfig {
            worker_count: 4,
            batch_limit: 16,
            ..SyncEngineConfig::default()
        },
        outbox.clone(),
        probe,
        transport.clone(),
    );
    engine.set_observer(Arc::new(Recorded(Mutex::new(events))));
    let mut ids = Vec::with_capacity(ops);
    let mut n_groups = 0;
    for n in 0..ops {
        let op = Operation::new("note.create", "/notes", format!(r#"{{"n":{n}}}"#));
        ids.push(outbox.enqueue(op, SystemClock.now_ms())?);
        if n % groups::EVERY == 0 {
            // Numbered after the notes, so the faults fall on groups too.
            let group = groups::transfer(n_groups, ops + n_groups)?;
            ids.push(outbox.enqueue(group, SystemClock.now_ms())?);
            n_groups += 1;
        }
    }
    engine.start(SystemClock)?;
    let mut kills = 0;
    let mut killed_in_traffic = false;
    let deadline = Instant::now() + Duration::from_secs(240);
    let result = loop {
        // A recorded result or the deadline falls through to the check.
        let event = inbox.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        if let Ok(Event::KillPoint(n, what)) = event
            && let Some(instance) = instances.get_mut(n)
        {
            instance.kill_and_restart(Some(&what))?;
            kills += 1;
        }
        let stats = store.stats()?;
        // The second kill lands wherever the last instance is when 60% are
        // Done: requests in flight, transactions open or not.
        if !killed_in_traffic
            && stats.done >= ops * 6 / 10
            && let Some(instance) = instances.last_mut()
        {
            instance.kill_and_restart(None)?;
            kills += 1;
            killed_in_traffic = true;
        }
        if stats.done == ops + n_groups {
            break Ok(stats.done);
        }
        if stats.failed > 0 {
            break Err(format!(
                "{} operations failed for good: {stats:?}",
                stats.failed
            ));
        }
        if Instant::now() >= deadline {
            break Err(format!("not all Done in time: {stats:?}"));
        }
    };
    engine.stop()?;
    let done = result?;
    Ok(Report {
        operations: ops,
        duplicates_sent: transport.duplicates.load(SeqCst),
        acks_dropped: transport.acks_dropped.load(SeqCst),
        kills,
        done,
        groups: n_groups,
        ..Report::default()
    })
}

/// A client-side load balancer with faults: operation `n` goes to instance
/// `n % len` (the second instance, if any, in batch mode); every 10th (n %
/// 10 == 5) is also delivered to the other instance at the same time, and
/// the first ack of every 10th (n % 10 == 7) is dropped, so the engine sends
/// it again.
struct Spread {
    singles: Vec<HttpTransport>,
    batch: Option<HttpTransport>,
    duplicates: AtomicUsize,
    acks_dropped: AtomicUsize,
    dropped: Mutex<HashSet<String>>,
}

impl Spread {
    fn new(urls: &[String]) -> Result<Self, Error> {
        let config = |url: &str| HttpTransportConfig {
            base_url: url.to_owned(),
            timeout: Duration::from_secs(10),
            headers: vec![("Authorization".into(), "Bearer e2e".into())],
            ..HttpTransportConfig::default()
        };
        let singles = urls
            .iter()
            .map(|url| HttpTransport::new(config(url)))
            .collect::<Result<Vec<_>, _>>()?;
        let batch = match urls.get(1) {
            Some(url) => Some(HttpTransport::new(HttpTransportConfig {
                batch_target: Some("/sync/batch".into()),
                ..config(url)
            })?),
            None => None,
        };
        Ok(Self {
            singles,
            batch,
            duplicates: AtomicUsize::new(0),
            acks_dropped: AtomicUsize::new(0),
            dropped: Mutex::new(HashSet::new()),
        })
    }

    /// The operation's number: a note's, or a group's first member's.
    fn n(op: &Operation) -> usize {
        let payload = op
            .group_members()
            .ok()
            .and_then(|members| members.into_iter().next())
            .map_or_else(|| op.payload.clone(), |first| first.payload);
        serde_json::from_str::<serde_json::Value>(&payload)
            .ok()
            .and_then(|v| v["n"].as_u64())
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0)
    }

    fn home(&self, op: &Operation) -> usize {
        Self::n(op) % self.singles.len()
    }

    /// Runs `send`, with the duplicate of each tenth of `ops` delivered to
    /// the other instance at the same time (so the two race for the key).
    fn with_duplicates<T: Send>(&self, ops: &[Operation], send: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|scope| {
            for op in ops.iter().filter(|op| Self::n(op) % 10 == 5) {
                let other = (self.home(op) + 1) % self.singles.len();
                if let Some(transport) = self.singles.get(other) {
                    self.duplicates.fetch_add(1, SeqCst);
                    scope.spawn(move || drop(transport.send(op)));
                }
            }
            send()
        })
    }

    /// Drops the first ack of every tenth operation.
    fn maybe_drop_ack(&self, op: &Operation, result: SendResult) -> SendResult {
        if result.ok && Self::n(op) % 10 == 7 {
            let mut dropped = self.dropped.lock().unwrap_or_else(PoisonError::into_inner);
            if dropped.insert(op.id.clone()) {
                self.acks_dropped.fetch_add(1, SeqCst);
                return SendResult::retryable("ack lost on the way back (injected)");
            }
        }
        result
    }
}

impl SyncTransport for Spread {
    fn send(&self, op: &Operation) -> SendResult {
        let result = self.with_duplicates(std::slice::from_ref(op), || {
            match self.singles.get(self.home(op)) {
                Some(transport) => transport.send(op),
                None => SendResult::retryable("no instance"),
            }
        });
        self.maybe_drop_ack(op, result)
    }

    fn send_batch(&self, ops: &[Operation]) -> Vec<SendResult> {
        let Some(batch) = &self.batch else {
            return ops.iter().map(|op| self.send(op)).collect();
        };
        // The second instance's share goes as one batch request.
        let (to_batch, alone): (Vec<usize>, Vec<usize>) =
            (0..ops.len()).partition(|&i| ops.get(i).is_some_and(|op| self.home(op) == 1));
        let batched: Vec<Operation> = to_batch
            .iter()
            .filter_map(|&i| ops.get(i).cloned())
            .collect();
        let answers = self.with_duplicates(&batched, || batch.send_batch(&batched));
        let mut results: Vec<Option<SendResult>> = vec![None; ops.len()];
        for (&i, result) in to_batch.iter().zip(answers) {
            if let (Some(slot), Some(op)) = (results.get_mut(i), ops.get(i)) {
                *slot = Some(self.maybe_drop_ack(op, result));
            }
        }
        for i in alone {
            if let (Some(slot), Some(op)) = (results.get_mut(i), ops.get(i)) {
                *slot = Some(self.send(op));
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| SendResult::retryable("no result")))
            .collect()
    }
}

/// The server a child process runs.
mod child {
    use std::io::Write;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use axum::Router;
    use axum::extract::State;
    use axum::response::{IntoResponse, Response};
    use axum::routing::post;
    use http::StatusCode;
    use sync_server::{
        BatchService, FeedChange, GroupRequest, Idempotency, IdempotencyConfig, IdempotencyLayer,
        Member, PgEffect, PostgresIdempotencyStore, PullConfig, PullService, ServerError,
        SqliteIdempotencyStore, StoredResponse,
    };

    use super::Error;

    #[derive(Clone)]
    enum Db {
        Sqlite(Arc<SqliteIdempotencyStore>),
        Postgres(Arc<PostgresIdempotencyStore>),
    }

    #[derive(Clone)]
    struct AppState {
        db: Db,
        pause_at: Option<u64>,
        /// The group to stop in, between its debit and its credit.
        group_pause_at: Option<u64>,
    }

    pub(super) fn run(kind: &str) -> Result<(), Error> {
        let db = std::env::var("SYNC_SERVER_DB")?;
        let port: u16 = std::env::var("SYNC_SERVER_PORT")?.parse()?;
        let pause_at = std::env::var("SYNC_SERVER_PAUSE_AT")
            .ok()
            .and_then(|n| n.parse().ok());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let group_pause_at = std::env::var("SYNC_SERVER_GROUP_PAUSE_AT")
            .ok()
            .and_then(|n| n.parse().ok());
        let state = |db| AppState {
            db,
            pause_at,
            group_pause_at,
        };
        runtime.block_on(serve(kind, &db, port, state))
    }

    async fn serve(
        kind: &str,
        db: &str,
        port: u16,
        state: impl FnOnce(Db) -> AppState,
    ) -> Result<(), Error> {
        // The lease is short so the test need not wait long for the
        // killed request's key to be taken over.
        let config = IdempotencyConfig::default().with_lease(Duration::from_secs(2));
        // Every caller may read both test scopes.
        let feed = PullConfig::new(|_| vec!["e2e".to_owned(), "race".to_owned()]);
        let (db, layer, pull) = if kind == "sqlite" {
            let store = Arc::new(SqliteIdempotencyStore::open(db).await?);
            store
                .call(|c| {
                    c.execute_batch(&format!(
                        "CREATE TABLE IF NOT EXISTS effects (op_key TEXT NOT NULL, n INTEGER); {}",
                        super::groups::SCHEMA
                    ))
                })
                .await?;
            let layer = IdempotencyLayer::new(Arc::clone(&store), config);
            let pull: Router =
                Router::new().route_service("/sync/pull", PullService::new(store.clone(), feed));
            (Db::Sqlite(store), layer, pull)
        } else {
            let store = Arc::new(PostgresIdempotencyStore::connect(db, 8)?);
            store.migrate().await?;
            let client = store.pool().get().await?;
            // No unique constraint: dedupe must come from the keys.
            client
                .batch_execute(&format!(
                    "SELECT pg_advisory_lock(1);
                         CREATE TABLE IF NOT EXISTS effects (op_key TEXT NOT NULL, n BIGINT);
                         {}
                         SELECT pg_advisory_unlock(1);",
                    super::groups::SCHEMA
                ))
                .await?;
            let layer = IdempotencyLayer::new(Arc::clone(&store), config);
            let pull: Router =
                Router::new().route_service("/sync/pull", PullService::new(store.clone(), feed));
            (Db::Postgres(store), layer, pull)
        };
        let api: Router = Router::new()
            .route("/notes", post(create))
            .route("/slow", post(hold))
            .route("/sync/group", post(group))
            .layer(layer)
            .with_state(state(db));
        let app: Router = Router::new()
            .route_service("/sync/batch", BatchService::new(api.clone()))
            .merge(api)
            .merge(pull);
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(([127, 0, 0, 1], port).into())?;
        let listener = socket.listen(128)?;
        let port = listener.local_addr()?.port();
        println!("listening {port}");
        std::io::stdout().flush()?;
        axum::serve(listener, app).await?;
        Ok(())
    }

    async fn create(
        State(state): State<AppState>,
        idem: Idempotency,
        body: String,
    ) -> Result<Response, ServerError> {
        let n = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["n"].as_u64())
            .unwrap_or(u64::MAX);
        let key = idem.key().to_owned();
        let pause = state.pause_at == Some(n);
        let response = StoredResponse::json(StatusCode::CREATED, &serde_json::json!({ "n": n }));
        // The note's change, in the effect's transaction: both commit, or
        // (killed before the commit) neither.
        let change = FeedChange::upsert("e2e", "note", &key, &serde_json::json!({ "n": n }));
        match state.db {
            Db::Sqlite(store) => {
                store
                    .transaction(&idem, move |tx| {
                        tx.execute(
                            "INSERT INTO effects (op_key, n) VALUES (?1, ?2)",
                            sync_server::rusqlite::params![key, i64::try_from(n).unwrap_or(-1)],
                        )?;
                        SqliteIdempotencyStore::record(tx, &change)?;
                        if pause {
                            announce_and_wait("note");
                        }
                        Ok(response)
                    })
                    .await
            }
            Db::Postgres(store) => {
                let effect = store.transaction(&idem).await?;
                let n_db = i64::try_from(n).unwrap_or(-1);
                effect
                    .client()
                    .execute(
                        "INSERT INTO effects (op_key, n) VALUES ($1, $2)",
                        &[&key, &n_db],
                    )
                    .await
                    .map_err(|source| ServerError::Postgres {
                        op: "insert the effect",
                        source,
                    })?;
                effect.record(&change).await?;
                if pause {
                    tokio::task::spawn_blocking(|| announce_and_wait("note"))
                        .await
                        .map_err(ServerError::Blocking)?;
                }
                effect.commit(response).await
            }
        }
    }

    /// What `/slow` is asked to do.
    #[derive(serde::Deserialize)]
    struct Hold {
        id: String,
        hold_ms: u64,
    }

    /// `POST /slow`: records the item `id`'s change in the `race` scope,
    /// then holds the transaction (and its version) open for `hold_ms`
    /// before committing: the concurrency test's writer.
    async fn hold(
        State(state): State<AppState>,
        idem: Idempotency,
        body: String,
    ) -> Result<Response, ServerError> {
        let (Db::Postgres(store), Ok(hold)) = (state.db, serde_json::from_str::<Hold>(&body))
        else {
            return Ok(StatusCode::BAD_REQUEST.into_response());
        };
        let effect: PgEffect = store.transaction(&idem).await?;
        let change = FeedChange::upsert("race", "item", &hold.id, &serde_json::json!({}));
        effect.record(&change).await?;
        tokio::time::sleep(Duration::from_millis(hold.hold_ms)).await;
        effect
            .commit(StoredResponse::new(StatusCode::CREATED))
            .await
    }

    /// `POST /sync/group`: a transfer's members, each moving its cents and
    /// writing a ledger row, in the key's transaction, all or nothing. The
    /// group `group_pause_at` stops between its debit and its credit.
    async fn group(
        State(state): State<AppState>,
        idem: Idempotency,
        body: String,
    ) -> Result<Response, ServerError> {
        let Ok(group) = serde_json::from_str::<GroupRequest>(&body) else {
            return Ok(StatusCode::BAD_REQUEST.into_response());
        };
        let key = idem.key().to_owned();
        let pause_at = state.group_pause_at;
        match state.db {
            Db::Sqlite(store) => {
                store
                    .transaction(&idem, move |tx| {
                        let mut first = true;
                        SqliteIdempotencyStore::apply_group(tx, &group, |tx, op| {
                            let (account, delta, g) = super::groups::member(op);
                            tx.execute(
                                "UPDATE accounts SET balance = balance + ?1 WHERE name = ?2",
                                sync_server::rusqlite::params![delta, account],
                            )?;
                            tx.execute(
                            "INSERT INTO ledger (group_key, account, delta) VALUES (?1, ?2, ?3)",
                            sync_server::rusqlite::params![key, account, delta],
                        )?;
                            if std::mem::take(&mut first) && pause_at == Some(g) {
                                announce_and_wait("group");
                            }
                            Ok(Member::Applied(serde_json::Value::Null))
                        })
                    })
                    .await
            }
            Db::Postgres(store) => {
                let effect = store.transaction(&idem).await?;
                let pg = |op| move |source| ServerError::Postgres { op, source };
                for (i, op) in group.operations.iter().enumerate() {
                    let (account, delta, g) = super::groups::member(op);
                    effect
                        .client()
                        .execute(
                            "UPDATE accounts SET balance = balance + $1 WHERE name = $2",
                            &[&delta, &account],
                        )
                        .await
                        .map_err(pg("move the cents"))?;
                    effect
                        .client()
                        .execute(
                            "INSERT INTO ledger (group_key, account, delta) VALUES ($1, $2, $3)",
                            &[&key, &account, &delta],
                        )
                        .await
                        .map_err(pg("write the ledger"))?;
                    if i == 0 && pause_at == Some(g) {
                        tokio::task::spawn_blocking(|| announce_and_wait("group"))
                            .await
                            .map_err(ServerError::Blocking)?;
                    }
                }
                let results = vec![serde_json::Value::Null; group.operations.len()];
                effect.commit(sync_server::group_applied(results)).await
            }
        }
    }

    /// Tells the parent the effect (`what`'s) is written but not
    /// committed, then waits to be killed (the parent's SIGKILL ends the
    /// process).
    fn announce_and_wait(what: &str) {
        println!("in-transaction {what}");
        let _ = std::io::stdout().flush();
        loop {
            std::thread::park();
        }
    }

    /// `(rows, distinct op keys)` of the SQLite effects table.
    pub(super) fn count_sqlite(path: &Path) -> Result<(i64, i64), Error> {
        let conn = sync_server::rusqlite::Connection::open(path)?;
        Ok(conn.query_row(
            "SELECT count(*), count(DISTINCT op_key) FROM effects",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }
}

/// PostgreSQL: a server of the test's own (`sync_testkit`), and what is checked on it.
mod postgres {
    pub(super) use sync_testkit::postgres::Cluster;

    use super::Error;

    /// The store contract (one claim among concurrent duplicates, fencing,
    /// replay, release, takeover, expiry) on the live server.
    pub(super) fn check_contract(conn: &str) -> Result<(), Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let store = sync_server::PostgresIdempotencyStore::connect(conn, 8)?;
            store.migrate().await?;
            let store = std::sync::Arc::new(store);
            super::store_contract::check(store.clone(), "contract").await?;
            check_effects(&store).await?;
            check_foreign_table(conn).await?;
            check_upgrade_from_v1(conn).await
        })
    }

    /// A version 1 key table is upgraded by `migrate`: its completed key is
    /// remembered (not run again) after its response expired, and forgotten
    /// 30 days from its start.
    async fn check_upgrade_from_v1(conn: &str) -> Result<(), Error> {
        use sync_server::{Begin, Fingerprint, IdempotencyStore};
        let admin = sync_server::PostgresIdempotencyStore::connect(conn, 1)?;
        admin
            .pool()
            .get()
            .await?
            .batch_execute("CREATE DATABASE v1_app")
            .await?;
        let v1 = sync_server::PostgresIdempotencyStore::connect(
            &conn.replace("dbname=postgres", "dbname=v1_app"),
            2,
        )?;
        let day = 86_400_000_i64;
        let print = Fingerprint::of("POST", "/notes", b"hi");
        let client = v1.pool().get().await?;
        // The version 1 schema as the first release wrote it.
        client
            .batch_execute(
                "CREATE TABLE sync_idempotency_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 INSERT INTO sync_idempotency_meta VALUES ('schema_version', '1');
                 CREATE TABLE sync_idempotency (
                   scope TEXT NOT NULL, key TEXT NOT NULL, fingerprint BYTEA NOT NULL,
                   state BIGINT NOT NULL, token TEXT, lease_until_ms BIGINT,
                   status BIGINT, headers TEXT, body BYTEA, expires_at_ms BIGINT,
                   created_at_ms BIGINT NOT NULL,
                   PRIMARY KEY (scope, key));
                 CREATE INDEX sync_idempotency_expiry ON sync_idempotency (expires_at_ms) WHERE state = 1;
                 CREATE INDEX sync_idempotency_lease ON sync_idempotency (lease_until_ms) WHERE state = 0;",
            )
            .await?;
        client
            .execute(
                "INSERT INTO sync_idempotency (scope, key, fingerprint, state, status, headers, \
                 body, expires_at_ms, created_at_ms) VALUES ('', 'old', $1, 1, 201, '[]', 'hi', $2, 0)",
                &[&print.as_bytes().as_slice(), &day],
            )
            .await?;
        drop(client);
        v1.migrate().await?;
        v1.migrate().await?; // a second instance finds it done
        let remembered = v1.begin("", "old", print, 3 * day, 1_000).await?;
        if remembered != (Begin::Remembered { status: 201 }) {
            return Err(format!("a v1 key after its response: {remembered:?}").into());
        }
        if !matches!(
            v1.begin("", "old", print, 30 * day, 1_000).await?,
            Begin::Started(_)
        ) {
            return Err("a v1 key past 30 days was not forgotten".into());
        }
        Ok(())
    }

    /// The transactional form on the live server: a dropped effect, a
    /// retryable answer and a commit cancelled mid-await leave nothing; a
    /// committed one is stored with its effect; the pool is healthy after
    /// all of it.
    async fn check_effects(store: &sync_server::PostgresIdempotencyStore) -> Result<(), Error> {
        use sync_server::{
            Begin, Fingerprint, Idempotency, IdempotencyStore, KeyExpiry, StoredResponse,
        };
        let client = store.pool().get().await?;
        client
            .batch_execute("CREATE TABLE contract_effects (n BIGINT)")
            .await?;
        drop(client);
        let print = Fingerprint::of("POST", "/effects", b"x");
        let Begin::Started(claim) = store.begin("fx", "k", print, 0, 60_000).await? else {
            return Err("a new key must start".into());
        };
        let idem = Idempotency::from_claim(claim, KeyExpiry::after(0, 3_600_000, 3_600_000));
        drop(insert(store, &idem, 1).await?);
        let busy = insert(store, &idem, 2)
            .await?
            .commit(StoredResponse::new(http::StatusCode::SERVICE_UNAVAILABLE))
            .await?;
        if busy.status() != 503 || idem.is_committed() {
            return Err("a 503 was stored".into());
        }
        // A commit whose future is dropped mid-await (a client gone, a
        // timeout layer): polled exactly once (its first statement under
        // way; a zero timeout polled it again until the timer fired, and a
        // fast database then let it finish), then dropped. Its
        // connection must not go back to the pool mid-transaction, where the
        // next user's COMMIT would commit the orphaned effect.
        let effect = insert(store, &idem, 4).await?;
        let mut commit = Box::pin(effect.commit(StoredResponse::new(http::StatusCode::CREATED)));
        let first_poll =
            std::future::poll_fn(|cx| std::task::Poll::Ready(commit.as_mut().poll(cx))).await;
        drop(commit);
        if first_poll.is_ready() || idem.is_committed() {
            return Err("a commit finished in one poll: nothing was cancelled mid-await".into());
        }
        insert(store, &idem, 3)
            .await?
            .commit(StoredResponse::new(http::StatusCode::CREATED))
            .await?;
        if !idem.is_committed() {
            return Err("the commit was not marked".into());
        }
        if !matches!(store.begin("fx", "k", print, 1, 60_000).await?, Begin::Replay(r) if r.status == 201)
        {
            return Err("the committed answer is not replayed".into());
        }
        // Twice the pool's size in a row: no connection was left broken or
        // mid-transaction.
        for n in 0..16 {
            let Begin::Started(claim) = store
                .begin("fx", &format!("after{n}"), print, 0, 60_000)
                .await?
            else {
                return Err("a new key must start".into());
            };
            store.release(&claim).await?;
        }
        // Checked after those: a connection left mid-transaction would
        // have had its orphaned effect committed by one of them.
        let rows: Vec<i64> = store
            .pool()
            .get()
            .await?
            .query("SELECT n FROM contract_effects", &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if rows != [3] {
            return Err(format!("effects after drop, 503 and commit: {rows:?}").into());
        }
        Ok(())
    }

    /// A database whose `sync_idempotency` table is someone else's (no
    /// version) is refused with `UnknownSchema`, and nothing is added to it.
    async fn check_foreign_table(conn: &str) -> Result<(), Error> {
        let admin = sync_server::PostgresIdempotencyStore::connect(conn, 1)?;
        admin
            .pool()
            .get()
            .await?
            .batch_execute("CREATE DATABASE foreign_app")
            .await?;
        let foreign_conn = conn.replace("dbname=postgres", "dbname=foreign_app");
        let foreign = sync_server::PostgresIdempotencyStore::connect(&foreign_conn, 1)?;
        let client = foreign.pool().get().await?;
        client
            .batch_execute("CREATE TABLE sync_idempotency (id BIGINT PRIMARY KEY)")
            .await?;
        drop(client);
        match foreign.migrate().await {
            Err(sync_server::ServerError::UnknownSchema { found, .. }) if found == "none" => {}
            other => return Err(format!("a foreign key table was not refused: {other:?}").into()),
        }
        let meta: bool = foreign
            .pool()
            .get()
            .await?
            .query_one(
                "SELECT to_regclass('sync_idempotency_meta') IS NOT NULL",
                &[],
            )
            .await?
            .get(0);
        if meta {
            return Err("migrate wrote to a database it refused".into());
        }
        Ok(())
    }

    /// A transaction of `idem` holding the effect row `n`, uncommitted.
    async fn insert(
        store: &sync_server::PostgresIdempotencyStore,
        idem: &sync_server::Idempotency,
        n: i64,
    ) -> Result<sync_server::PgEffect, Error> {
        let effect = store.transaction(idem).await?;
        effect
            .client()
            .execute("INSERT INTO contract_effects VALUES ($1)", &[&n])
            .await?;
        Ok(effect)
    }

    /// `(rows, distinct op keys)` of the effects table.
    pub(super) fn count_effects(conn: &str) -> Result<(i64, i64), Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let (client, connection) = tokio_postgres_connect(conn).await?;
            let task = tokio::spawn(connection);
            let row = client
                .query_one("SELECT count(*), count(DISTINCT op_key) FROM effects", &[])
                .await?;
            drop(client);
            let _ = task.await;
            Ok((row.get(0), row.get(1)))
        })
    }

    async fn tokio_postgres_connect(
        conn: &str,
    ) -> Result<
        (
            sync_server::tokio_postgres::Client,
            sync_server::tokio_postgres::Connection<
                sync_server::tokio_postgres::Socket,
                sync_server::tokio_postgres::tls::NoTlsStream,
            >,
        ),
        Error,
    > {
        Ok(sync_server::tokio_postgres::connect(conn, sync_server::tokio_postgres::NoTls).await?)
    }
}
