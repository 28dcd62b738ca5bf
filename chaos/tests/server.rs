//! Guards the chaos server on SQLite, through the library's own HTTP
//! transport: every operation sent (a quarter of them twice, as a lost
//! answer makes a device do) has its effect exactly once; a pull sees only
//! the scopes it names; and the checker, fed what happened, passes.

use std::collections::{BTreeMap, BTreeSet};

use sync_chaos::server::{self, SCOPES_HEADER, ServerDb};
use sync_chaos::{Event, FinalState, check};
use sync_engine::{PullResult, PullTransport, SyncTransport};
use sync_outbox::Operation;
use sync_protocol::PullRequest;
use sync_transport_http::{HttpMethod, HttpTransport, HttpTransportConfig};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn transport(
    base_url: &str,
    scopes: &str,
) -> Result<HttpTransport, Box<dyn std::error::Error + Send + Sync>> {
    Ok(HttpTransport::new(
        HttpTransportConfig {
            base_url: base_url.to_owned(),
            headers: vec![(SCOPES_HEADER.into(), scopes.into())],
            ..HttpTransportConfig::default()
        }
        .with_method("entity.put", HttpMethod::Put),
    )?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_apply_once_and_pulls_see_only_their_scopes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("server.db");
    let running = server::start("127.0.0.1:0".parse()?, ServerDb::Sqlite(path.clone())).await?;
    let base = format!("http://{}", running.addr());
    let history = tokio::task::spawn_blocking(
        move || -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
            let client = transport(&base, "s1")?;
            let mut history = Vec::new();
            for n in 0..40 {
                let scope = if n % 2 == 0 { "s1" } else { "s2" };
                let mut op = Operation::new(
                    "entity.put",
                    format!("/entities/{scope}/e{}", n % 7),
                    format!(r#"{{"value":"v{n}"}}"#),
                );
                op.id = format!("op{n}");
                history.push(Event::Acknowledged {
                    device: "d1".into(),
                    op: op.id.clone(),
                });
                let sends = if n % 4 == 0 { 2 } else { 1 };
                for _ in 0..sends {
                    let result = client.send(&op);
                    if !result.ok {
                        return Err(format!("{} failed: {}", op.id, result.error).into());
                    }
                }
            }
            // Pull everything s1 may see: a snapshot, in pages.
            let mut cursor = None;
            let mut seen = BTreeMap::new();
            loop {
                let request = PullRequest {
                    cursor: cursor.clone(),
                    limit: Some(5),
                    scopes: Vec::new(),
                };
                let PullResult::Page(page) = client.pull(&request) else {
                    return Err("the pull did not answer a page".into());
                };
                for change in &page.changes {
                    history.push(Event::Pulled {
                        device: "d1".into(),
                        scope: change.scope.clone(),
                    });
                    let value = match &change.op {
                        sync_protocol::ChangeOp::Upsert { state } => {
                            state["value"].as_str().unwrap_or_default().to_owned()
                        }
                        sync_protocol::ChangeOp::Delete => String::new(),
                    };
                    seen.insert((change.scope.clone(), change.id.clone()), value);
                }
                cursor = Some(page.cursor.clone());
                if !page.more {
                    break;
                }
            }
            Ok((history, seen))
        },
    )
    .await??;
    let (mut history, seen) = history;
    drop(running);
    let state = server::read_sqlite(&path)?;
    assert_eq!(
        state.effects.len(),
        40,
        "every operation once, duplicates absorbed"
    );
    history.extend(
        state
            .effects
            .iter()
            .map(|op| Event::Effect { op: op.clone() }),
    );
    let end = FinalState {
        server: state.entities.clone(),
        devices: BTreeMap::from([("d1".to_owned(), seen)]),
        entitled: BTreeMap::from([("d1".to_owned(), BTreeSet::from(["s1".to_owned()]))]),
    };
    let verdict = check(&history, &end);
    assert!(verdict.passed(), "{:?}", verdict.problems);
    assert_eq!((verdict.acknowledged, verdict.effects), (40, 40));
    assert!(verdict.pulled > 0);
    Ok(())
}
