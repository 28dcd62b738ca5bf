//! Guards exactly-once across a long offline spell, both halves together
//! on clocks the test moves (the server's `with_clock`, the device's
//! `ManualClock`), over real HTTP: an operation applied whose answer was
//! lost, resent after 3 days (past the 24 h response ttl), is answered
//! from the key's memory and applied once; one resent after 40 days (past
//! the 30-day key memory) is never resent: it becomes a dead letter saying
//! why, with no second effect. A second device's keys, sent or never sent,
//! are unaffected.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::SeqCst};

use axum::extract::State;
use axum::response::Response;
use axum::{Router, routing::post};
use http::StatusCode;
use sync_engine::{
    Clock, ManualClock, NetworkProbe, NetworkProbeConfig, ResultSink, SendResult, SyncTransport,
    SyncWorker, SyncWorkerConfig,
};
use sync_outbox::{
    Correction, MemoryOutboxStore, Operation, OperationStatus, Outbox, OutboxConfig, OutboxStore,
};
use sync_server::{
    Idempotency, IdempotencyConfig, IdempotencyLayer, IdempotencyStore, ServerError,
    SqliteIdempotencyStore, StoredResponse,
};
use sync_transport_http::{HttpTransport, HttpTransportConfig};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const DAY: i64 = 86_400_000;
const START: i64 = 1_800_000_000_000;

/// `POST /notes`: one effect row per applied request, in the key's
/// transaction.
async fn create(
    State(store): State<Arc<SqliteIdempotencyStore>>,
    idem: Idempotency,
    text: String,
) -> Result<Response, ServerError> {
    store
        .transaction(&idem, move |tx| {
            tx.execute("INSERT INTO effects (text) VALUES (?1)", [&text])?;
            Ok(StoredResponse::json(
                StatusCode::CREATED,
                &serde_json::json!({"id": tx.last_insert_rowid()}),
            ))
        })
        .await
}

/// How many times the server applied `text`.
async fn effects(store: &SqliteIdempotencyStore, text: &str) -> Result<i64, ServerError> {
    let text = text.to_owned();
    store
        .call(move |db| {
            db.query_row(
                "SELECT count(*) FROM effects WHERE text = ?1",
                [text],
                |r| r.get(0),
            )
        })
        .await
}

/// The HTTP transport, except that the answer to the next request is lost
/// after the server applied it (`no_answer`, as a cut connection is).
struct LosesNextAck {
    inner: HttpTransport,
    lose: AtomicBool,
}

impl SyncTransport for LosesNextAck {
    fn send(&self, op: &Operation) -> SendResult {
        let result = self.inner.send(op);
        if self.lose.swap(false, SeqCst) {
            return SendResult::no_answer("connection reset before the answer");
        }
        result
    }

    fn send_each(&self, ops: &[Operation], results: &mut ResultSink<'_>) {
        for (index, op) in ops.iter().enumerate() {
            results.report(index, self.send(op));
        }
    }
}

/// One device: its outbox, its worker, its transport (scoped by `device`).
struct Device {
    outbox: Arc<Outbox>,
    store: Arc<MemoryOutboxStore>,
    worker: SyncWorker,
    transport: Arc<LosesNextAck>,
}

impl Device {
    fn new(base_url: &str, device: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let store = Arc::new(MemoryOutboxStore::new());
        let outbox = Arc::new(Outbox::new(OutboxConfig::default(), store.clone()));
        let transport = Arc::new(LosesNextAck {
            inner: HttpTransport::new(HttpTransportConfig {
                base_url: base_url.to_owned(),
                headers: vec![("x-device".into(), device.into())],
                ..HttpTransportConfig::default()
            })?,
            lose: AtomicBool::new(false),
        });
        let probe = Arc::new(NetworkProbe::new(NetworkProbeConfig::default(), || true));
        let worker = SyncWorker::new(
            SyncWorkerConfig::default(),
            outbox.clone(),
            probe,
            transport.clone(),
        );
        Ok(Self {
            outbox,
            store,
            worker,
            transport,
        })
    }

    fn op(&self, id: &str) -> Result<Operation, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.store.get(id)?.ok_or("lost")?)
    }
}

#[test]
fn an_operation_resent_after_a_long_offline_spell_takes_effect_once() -> TestResult {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let server_clock = Arc::new(AtomicI64::new(START));
    let device_clock = ManualClock::new(START);
    // The two clocks move together; the server's memory and the client's
    // window are the defaults (30 and 28 days).
    let advance = |ms: i64| {
        server_clock.fetch_add(ms, SeqCst);
        device_clock.advance(ms);
    };
    let (store, base_url) = runtime.block_on(async {
        let store = Arc::new(SqliteIdempotencyStore::open(dir.path().join("server.db")).await?);
        store
            .call(|db| db.execute_batch("CREATE TABLE effects (id INTEGER PRIMARY KEY, text TEXT)"))
            .await?;
        let clock = Arc::clone(&server_clock);
        let config = IdempotencyConfig::default()
            .with_clock(move || clock.load(SeqCst))
            .with_scope(|parts| {
                parts
                    .headers
                    .get("x-device")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned()
            });
        let app = Router::new()
            .route("/notes", post(create))
            .layer(IdempotencyLayer::new(Arc::clone(&store), config))
            .with_state(Arc::clone(&store));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((store, base_url))
    })?;
    let effects = |text: &str| runtime.block_on(effects(&store, text));
    let purge = |now: i64| runtime.block_on(store.purge_expired(now));

    let a = Device::new(&base_url, "device-a")?;
    let b = Device::new(&base_url, "device-b")?;
    let now = || device_clock.now_ms();

    // Device B: one note delivered now, one that waits unsent for 40 days.
    let b_sent = b
        .outbox
        .enqueue(Operation::new("note", "/notes", "b-sent"), now())?;
    b.worker.tick(now())?;
    assert_eq!(b.op(&b_sent)?.status, OperationStatus::Done);
    let b_later = b
        .outbox
        .enqueue(Operation::new("note", "/notes", "b-later"), now())?;

    // 1. Applied, answer lost, 3 days offline, resent: answered from the
    //    key's memory (the response itself expired after 24 h), one effect.
    let three_days = a
        .outbox
        .enqueue(Operation::new("note", "/notes", "3-days"), now())?;
    a.transport.lose.store(true, SeqCst);
    a.worker.tick(now())?;
    let lost = a.op(&three_days)?;
    assert_eq!((lost.status, lost.attempt), (OperationStatus::Pending, 0));
    assert_eq!(effects("3-days")?, 1, "applied before the answer was lost");
    advance(3 * DAY);
    purge(now())?; // the server's periodic purge drops the stored response
    a.worker.tick(now())?;
    assert_eq!(a.op(&three_days)?.status, OperationStatus::Done);
    assert_eq!(
        effects("3-days")?,
        1,
        "resent after 3 days: still one effect"
    );

    // 2. Applied, answer lost, 40 days offline: past the resend window, it
    //    is not resent (the server forgot the key after 30 days).
    let forty_days = a
        .outbox
        .enqueue(Operation::new("note", "/notes", "40-days"), now())?;
    a.transport.lose.store(true, SeqCst);
    a.worker.tick(now())?;
    assert_eq!(effects("40-days")?, 1);
    advance(40 * DAY);
    purge(now())?;
    a.worker.tick(now())?;
    let dead = a.op(&forty_days)?;
    assert_eq!(dead.status, OperationStatus::Failed, "a dead letter");
    assert!(
        dead.last_error.contains("resend window"),
        "{}",
        dead.last_error
    );
    assert_eq!(effects("40-days")?, 1, "never applied twice");

    // The app decides. A correction sends it under a new key, as a new
    // request (applied once more); a discard drops it.
    let corrected = a
        .outbox
        .correct(&forty_days, Correction::default(), now())?;
    assert_eq!(corrected, format!("{forty_days}.1"));
    a.worker.tick(now())?;
    assert_eq!(effects("40-days")?, 2, "a correction is a new request");
    a.outbox.discard(&forty_days)?;

    // Device B is unaffected: its sent note stays Done, once; its note
    // never sent in 40 days is sent now, once, not a dead letter.
    b.worker.tick(now())?;
    assert_eq!(b.op(&b_sent)?.status, OperationStatus::Done);
    assert_eq!(b.op(&b_later)?.status, OperationStatus::Done);
    assert_eq!((effects("b-sent")?, effects("b-later")?), (1, 1));
    Ok(())
}
