//! Guards dependent operations against a plain model: random sequences of
//! creates that keep their answer, items that need a create's id (by a
//! placeholder in target and payload), claims held by `Claim`s, answers
//! (with the id, without a body, or without the id), refusals, retries,
//! discards, purges, dropped claims and restarts (a new `Outbox` over the
//! same store, in-flight claims orphaned).
//!
//! After every step: every operation's status is the model's; no item is
//! ever claimed before its create is `Done`, and every claimed item carries
//! its create's real id and never the placeholder; a stored item is either
//! untouched (its need, the placeholder) or wholly filled (no need, the
//! real id), never half; an item whose create was discarded, answered
//! without a body or without the id becomes a dead letter without ever
//! being sent; an item whose create is a dead letter waits; and nothing
//! the model holds is missing from the store.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use sync_outbox::{
    Claim, MemoryOutboxStore, Need, Operation, OperationStatus, Outbox, OutboxConfig, OutboxStore,
    RetryPolicy, SendOutcome,
};

#[derive(Clone, Debug)]
enum Step {
    Create,
    Item {
        pick: usize,
    },
    Claim,
    /// Answer an in-flight operation: 0 with the id, 1 with no body, 2
    /// with a body that lacks the id.
    Ack {
        pick: usize,
        body: u8,
    },
    Refuse {
        pick: usize,
    },
    RetryFailed {
        pick: usize,
    },
    Discard {
        pick: usize,
    },
    DropClaims,
    Restart,
    Purge,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::Create),
        4 => any::<usize>().prop_map(|pick| Step::Item { pick }),
        4 => Just(Step::Claim),
        4 => (any::<usize>(), prop_oneof![6 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)])
            .prop_map(|(pick, body)| Step::Ack { pick, body }),
        1 => any::<usize>().prop_map(|pick| Step::Refuse { pick }),
        1 => any::<usize>().prop_map(|pick| Step::RetryFailed { pick }),
        1 => any::<usize>().prop_map(|pick| Step::Discard { pick }),
        1 => Just(Step::DropClaims),
        1 => Just(Step::Restart),
        1 => Just(Step::Purge),
    ]
}

#[derive(Clone, Debug)]
struct ModelOp {
    /// For an item: the create it needs and its placeholder.
    needs: Option<(String, String)>,
    status: OperationStatus,
    /// Whether it was ever claimed (an item: filled in, needing nothing
    /// more).
    sent: bool,
    /// For a create that is `Done`: whether its answer holds the id.
    answered_with_id: bool,
}

fn fail(message: String) -> TestCaseError {
    TestCaseError::fail(message)
}

fn pick(ids: &[String], n: usize) -> Option<String> {
    (!ids.is_empty()).then(|| ids[n % ids.len()].clone())
}

fn outbox(store: &Arc<MemoryOutboxStore>) -> Outbox {
    let config = OutboxConfig {
        retry: RetryPolicy {
            max_attempts: 1_000,
            ..RetryPolicy::default()
        },
        ..OutboxConfig::default()
    };
    Outbox::new(config, store.clone())
}

fn real_id(create: &str) -> String {
    format!("real-{create}")
}

#[expect(
    clippy::too_many_lines,
    reason = "one match arm per step, beside the model"
)]
fn run(steps: &[Step]) -> Result<(), TestCaseError> {
    let store = Arc::new(MemoryOutboxStore::new());
    let mut outbox = outbox(&store);
    let mut model: BTreeMap<String, ModelOp> = BTreeMap::new();
    let mut claims: Vec<Claim> = Vec::new();
    let mut placeholders = 0usize;
    // Every step is far enough apart that any backoff has passed.
    let mut now = 0i64;
    let err = |e: sync_outbox::OutboxError| fail(e.to_string());

    for step in steps {
        now += 1_000_000;
        let with = |status: OperationStatus| -> Vec<String> {
            model
                .iter()
                .filter(|(_, op)| op.status == status)
                .map(|(id, _)| id.clone())
                .collect()
        };
        match step {
            Step::Create => {
                let op = Operation::new("note.create", "/notes", "{}").keeping_answer();
                let id = outbox.enqueue(op, now).map_err(err)?;
                model.insert(
                    id,
                    ModelOp {
                        needs: None,
                        status: OperationStatus::Pending,
                        sent: false,
                        answered_with_id: false,
                    },
                );
            }
            Step::Item { pick: n } => {
                let creates: Vec<String> = model
                    .iter()
                    .filter(|(_, op)| op.needs.is_none())
                    .map(|(id, _)| id.clone())
                    .collect();
                let Some(create) = pick(&creates, *n) else {
                    continue;
                };
                placeholders += 1;
                let placeholder = format!("tmp-{placeholders}");
                let op = Operation::new(
                    "item.add",
                    format!("/notes/{placeholder}/items"),
                    format!(r#"{{"note":"{placeholder}"}}"#),
                )
                .needing(Need::new(&create, "/id", &placeholder));
                let id = outbox.enqueue(op, now).map_err(err)?;
                model.insert(
                    id,
                    ModelOp {
                        needs: Some((create, placeholder)),
                        status: OperationStatus::Pending,
                        sent: false,
                        answered_with_id: false,
                    },
                );
            }
            Step::Claim => {
                let claim = outbox.claim(now, usize::MAX).map_err(err)?;
                // The model: every pending create, every pending item whose
                // create is done with the id; items whose create is gone or
                // done without the id fail; the others wait.
                let mut expected: Vec<String> = Vec::new();
                let snapshot = model.clone();
                for (id, op) in &mut model {
                    if op.status != OperationStatus::Pending {
                        continue;
                    }
                    match &op.needs {
                        _ if op.sent => expected.push(id.clone()),
                        None => expected.push(id.clone()),
                        Some((create, _)) => match snapshot.get(create) {
                            None => op.status = OperationStatus::Failed,
                            Some(c) if c.status == OperationStatus::Done => {
                                if c.answered_with_id {
                                    expected.push(id.clone());
                                } else {
                                    op.status = OperationStatus::Failed;
                                }
                            }
                            Some(_) => {}
                        },
                    }
                }
                let mut got: Vec<String> = claim.iter().map(|op| op.id.clone()).collect();
                got.sort();
                expected.sort();
                prop_assert_eq!(&got, &expected);
                for op in &claim {
                    let m = model.get_mut(&op.id).ok_or_else(|| fail(op.id.clone()))?;
                    m.status = OperationStatus::InFlight;
                    m.sent = true;
                    if let Some((create, placeholder)) = &m.needs {
                        let real = real_id(create);
                        prop_assert!(
                            op.needs.is_empty()
                                && op.target == format!("/notes/{real}/items")
                                && op.payload == format!(r#"{{"note":"{real}"}}"#)
                                && !op.payload.contains(placeholder.as_str()),
                            "claimed unfilled: {op:?}"
                        );
                    }
                }
                claims.push(claim);
            }
            Step::Ack { pick: n, body } => {
                let Some(id) = pick(&with(OperationStatus::InFlight), *n) else {
                    continue;
                };
                let with_id = format!(r#"{{"id":"{}"}}"#, real_id(&id));
                let outcome = match body {
                    0 => SendOutcome::AcknowledgedWith {
                        version: None,
                        answer: &with_id,
                    },
                    1 => SendOutcome::Acknowledged,
                    _ => SendOutcome::AcknowledgedWith {
                        version: None,
                        answer: "{}",
                    },
                };
                outbox.record(&id, outcome, now).map_err(err)?;
                let m = model.get_mut(&id).ok_or_else(|| fail(id.clone()))?;
                m.status = OperationStatus::Done;
                m.answered_with_id = *body == 0;
            }
            Step::Refuse { pick: n } => {
                let Some(id) = pick(&with(OperationStatus::InFlight), *n) else {
                    continue;
                };
                outbox
                    .record(&id, SendOutcome::refused("HTTP 422"), now)
                    .map_err(err)?;
                if let Some(m) = model.get_mut(&id) {
                    m.status = OperationStatus::Failed;
                }
            }
            Step::RetryFailed { pick: n } => {
                let Some(id) = pick(&with(OperationStatus::Failed), *n) else {
                    continue;
                };
                outbox.retry_failed(&id, now).map_err(err)?;
                if let Some(m) = model.get_mut(&id) {
                    m.status = OperationStatus::Pending;
                }
            }
            Step::Discard { pick: n } => {
                let ids: Vec<String> = model.keys().cloned().collect();
                let Some(id) = pick(&ids, *n) else { continue };
                outbox.discard(&id).map_err(err)?;
                model.remove(&id);
            }
            Step::DropClaims | Step::Restart => {
                claims.clear();
                if matches!(step, Step::Restart) {
                    // A new process: new indexes over the same store.
                    outbox = self::outbox(&store);
                }
                // Orphans go back to the queue at the next claim.
                for op in model.values_mut() {
                    if op.status == OperationStatus::InFlight {
                        op.status = OperationStatus::Pending;
                    }
                }
                outbox.recover(now).map_err(err)?;
            }
            Step::Purge => {
                let purged = outbox.purge_done(now + 1).map_err(err)?;
                let needed: Vec<String> = model
                    .values()
                    .filter(|op| !op.sent)
                    .filter_map(|op| op.needs.as_ref().map(|(c, _)| c.clone()))
                    .collect();
                let mut expected = 0;
                model.retain(|id, op| {
                    let gone = op.status == OperationStatus::Done && !needed.contains(id);
                    expected += usize::from(gone);
                    !gone
                });
                prop_assert_eq!(purged, expected);
            }
        }
        check(&store, &model)?;
    }
    Ok(())
}

/// The store against the model after a step.
fn check(
    store: &MemoryOutboxStore,
    model: &BTreeMap<String, ModelOp>,
) -> Result<(), TestCaseError> {
    let stored = store.load_all().map_err(|e| fail(e.to_string()))?;
    prop_assert_eq!(stored.len(), model.len(), "operations lost or left over");
    for op in &stored {
        let m = model
            .get(&op.id)
            .ok_or_else(|| fail(format!("{} not in the model", op.id)))?;
        prop_assert_eq!(op.status, m.status, "{}", op.id);
        if let Some((create, placeholder)) = &m.needs {
            let untouched = op.needs.len() == 1 && op.target.contains(placeholder.as_str());
            let filled = op.needs.is_empty()
                && op.target.contains(&real_id(create))
                && !op.payload.contains(placeholder.as_str());
            prop_assert!(untouched || filled, "half filled: {op:?}");
            if op.status == OperationStatus::Failed && !m.sent {
                prop_assert!(op.last_error.starts_with("not sent"), "{}", op.last_error);
                prop_assert!(!op.was_sent(), "a broken dependent was sent: {op:?}");
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn dependent_operations_match_the_model(steps in proptest::collection::vec(step(), 1..60)) {
        run(&steps)?;
    }
}
