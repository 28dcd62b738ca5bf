//! Two users on one device through the threaded engine: each user's
//! operations go out only while that user is signed in, with that user's
//! credentials; the first user's queue waits, whole, until they return.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sync_engine::{
    Clock, NetworkProbe, NetworkProbeConfig, SendResult, SyncEngine, SyncEngineConfig,
    SyncTransport, SystemClock,
};
use sync_outbox::{MemoryOutboxStore, Operation, Outbox, OutboxConfig};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Sends with the credentials of the session: records (operation's
/// account, token used).
#[derive(Default)]
struct Session {
    token: Mutex<String>,
    sent: Mutex<Vec<(Option<String>, String)>>,
}

impl SyncTransport for Session {
    fn send(&self, op: &Operation) -> SendResult {
        let token = self
            .token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((op.account.clone(), token));
        SendResult::ok()
    }
}

fn sign_in(outbox: &Outbox, session: &Session, user: &str) {
    outbox.set_account(Some(user));
    *session.token.lock().unwrap_or_else(PoisonError::into_inner) = format!("token-of-{user}");
}

#[test]
fn each_users_operations_go_out_only_with_that_users_credentials() -> TestResult {
    let outbox = Arc::new(Outbox::new(
        OutboxConfig::default(),
        Arc::new(MemoryOutboxStore::new()),
    ));
    let session = Arc::new(Session::default());
    let online = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe_online = Arc::clone(&online);
    let probe = Arc::new(NetworkProbe::new(
        NetworkProbeConfig {
            cache_ttl: Duration::ZERO,
            ..NetworkProbeConfig::default()
        },
        move || probe_online.load(std::sync::atomic::Ordering::SeqCst),
    ));
    let now = SystemClock.now_ms();
    // Ann edits offline, then signs out; Ben signs in and edits.
    sign_in(&outbox, &session, "ann");
    let ann = outbox.enqueue(Operation::new("note.save", "/notes/1", "ann"), now)?;
    sign_in(&outbox, &session, "ben");
    let ben = outbox.enqueue(Operation::new("note.save", "/notes/1", "ben"), now)?;
    online.store(true, std::sync::atomic::Ordering::SeqCst);
    let engine = SyncEngine::started(
        SyncEngineConfig::default(),
        outbox.clone(),
        probe.clone(),
        session.clone(),
        SystemClock,
    )?;
    // The started engine may have sent Ben's edit before the drain began
    // (then the drain sends nothing): what counts is that it ends complete
    // with Ann's edit still queued.
    let drained = engine.drain(Duration::from_secs(10))?;
    assert!(drained.complete && drained.left == 1, "{drained:?}");
    assert!(matches!(
        outbox.wait(&ben, Duration::from_secs(10))?,
        Some(sync_outbox::Completion::Done(_))
    ));
    assert_eq!(outbox.completion(&ann)?, None, "Ann's edit waits for Ann");
    // Switch: stop the engine, sign Ann in, start again.
    engine.stop()?;
    sign_in(&outbox, &session, "ann");
    let engine = SyncEngine::started(
        SyncEngineConfig::default(),
        outbox.clone(),
        probe,
        session.clone(),
        SystemClock,
    )?;
    assert!(matches!(
        outbox.wait(&ann, Duration::from_secs(10))?,
        Some(sync_outbox::Completion::Done(_))
    ));
    engine.stop()?;
    let sent = session
        .sent
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert_eq!(sent.len(), 2);
    for (account, token) in &sent {
        let user = account
            .as_deref()
            .ok_or("an operation without its account")?;
        assert_eq!(token, &format!("token-of-{user}"), "{sent:?}");
    }
    Ok(())
}
