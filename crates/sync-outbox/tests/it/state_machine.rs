//! Guards the outbox against a plain reference model: random sequences of
//! enqueue / claim (unheld, and held by a `Claim`) / done / fail (retryable or
//! not, with retry-after) / recover / `retry_failed` / purge / a held claim
//! that finishes long after the in-flight timeout or is dropped unfinished /
//! a late result for a claim that timed out, checking after every step that no
//! operation is lost, attempts stay within the policy, a held claim is never
//! taken back, a late ack is kept and a late failure changes nothing, per-key
//! order holds, and no operation is claimed twice without a failure or
//! recovery in between.
//!
//! Sends that get no answer (`SendOutcome::Unanswered`, the request never
//! left or may have) give their attempt back, back off by their own count,
//! and start the resend window only when the request may have left; an
//! operation first sent longer than the window ago is failed by the claim
//! that finds it, never sent again under its key, and `correct` starts its
//! new key afresh.
//!
//! Each sequence runs under both ordering modes, with some operations
//! overriding the outbox's mode, and with `correct` (a new idempotency key
//! `{id}.{n}` once sent, the old one kept) and `discard` among the steps: a
//! `Failed` operation in `StopOnFailure` keeps its key's later operations
//! back until it is retried, corrected or discarded, and where every
//! operation stops the line, first sends per key stay in enqueue order even
//! through retries and corrections.
//!
//! Users sign in and out (`set_account`): only the signed-in user's
//! operations are claimed, every operation keeps the account it was made
//! under, and keys order sends per account.
//!
//! The queue limits run too: runs in `SkipFailed` mode cap the queued
//! operations at 10, runs in `StopOnFailure` mode the queued payload bytes
//! at 14. An enqueue past the cap must get `QueueFull` and change nothing,
//! one under it must succeed, and the live byte count must equal a scan.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use sync_outbox::{
    Correction, Delivery, MemoryOutboxStore, Operation, OperationStatus, OrderingMode, Outbox,
    OutboxConfig, OutboxError, OutboxStore, RetryPolicy, SendOutcome,
};

const TIMEOUT_MS: i64 = 5_000;
const RESEND_WINDOW_MS: i64 = 10_000;
const MAX_QUEUED: usize = 10;
const MAX_QUEUED_BYTES: u64 = 14;

/// Payload bytes of the stored operations not done, by a scan.
fn queued_bytes(store: &dyn OutboxStore) -> Result<u64, TestCaseError> {
    Ok(store
        .load_all()
        .map_err(|e| TestCaseError::fail(e.to_string()))?
        .iter()
        .filter(|op| op.status != OperationStatus::Done)
        .map(|op| op.payload.len() as u64)
        .sum())
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: std::time::Duration::from_millis(100),
        factor: 2.0,
        max_delay: std::time::Duration::from_secs(1),
        ..RetryPolicy::default()
    }
}

#[derive(Clone, Debug)]
enum Step {
    Enqueue {
        key: Option<u8>,
        /// The operation's own ordering mode, overriding the outbox's.
        ordering: Option<OrderingMode>,
    },
    Claim {
        limit: usize,
    },
    Done {
        pick: usize,
    },
    Fail {
        pick: usize,
        retryable: bool,
        retry_after: Option<i64>,
    },
    /// No answer: the request never left (`NotSent`) or may have.
    Unanswered {
        pick: usize,
        left: bool,
    },
    Recover,
    /// A sender claims with `Outbox::claim` and holds the `Claim`.
    ClaimHeld {
        limit: usize,
    },
    /// A holder records a result for everything it still holds, then drops
    /// its `Claim` (often long after the in-flight timeout).
    FinishHolder {
        pick: usize,
        ok: bool,
    },
    /// A holder drops its `Claim` without recording anything.
    DropHolder {
        pick: usize,
    },
    /// A result arrives for an operation that is no longer `InFlight`.
    LateResult {
        pick: usize,
        ok: bool,
    },
    RetryFailed {
        pick: usize,
    },
    /// `Outbox::correct` on any operation (refused unless `Failed` or never
    /// sent).
    Correct {
        pick: usize,
    },
    /// `Outbox::discard` on any operation.
    Discard {
        pick: usize,
    },
    Purge,
    Advance {
        ms: i64,
    },
    /// `Outbox::set_account`: another user signs in (or none).
    SignIn {
        user: Option<u8>,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (prop::option::of(0u8..3), prop::option::weighted(0.2, ordering_mode()))
            .prop_map(|(key, ordering)| Step::Enqueue { key, ordering }),
        3 => (0usize..4).prop_map(|limit| Step::Claim { limit }),
        1 => prop::option::of(0u8..2).prop_map(|user| Step::SignIn { user }),
        2 => any::<usize>().prop_map(|pick| Step::Done { pick }),
        2 => (any::<usize>(), any::<bool>(), prop::option::of(0i64..3_000))
            .prop_map(|(pick, retryable, retry_after)| Step::Fail { pick, retryable, retry_after }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, left)| Step::Unanswered { pick, left }),
        1 => Just(Step::Recover),
        2 => (1usize..4).prop_map(|limit| Step::ClaimHeld { limit }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, ok)| Step::FinishHolder { pick, ok }),
        1 => any::<usize>().prop_map(|pick| Step::DropHolder { pick }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(pick, ok)| Step::LateResult { pick, ok }),
        1 => any::<usize>().prop_map(|pick| Step::RetryFailed { pick }),
        1 => any::<usize>().prop_map(|pick| Step::Correct { pick }),
        1 => any::<usize>().prop_map(|pick| Step::Discard { pick }),
        1 => Just(Step::Purge),
        3 => (0i64..3_000).prop_map(|ms| Step::Advance { ms }),
    ]
}

fn ordering_mode() -> impl Strategy<Value = OrderingMode> {
    prop_oneof![
        Just(OrderingMode::SkipFailed),
        Just(OrderingMode::StopOnFailure)
    ]
}

/// What the model knows of one operation.
#[derive(Clone, Debug)]
struct ModelOp {
    seq: u64,
    /// Its ordering key, made per account: `k + 10 * (account + 1)`.
    key: Option<u8>,
    /// The user signed in when it was enqueued.
    account: Option<u8>,
    status: OperationStatus,
    attempt: u32,
    due: i64,
    claimed_at: i64,
    /// The model token of the live `Claim` holding it, if any.
    holder: Option<u64>,
    /// Left unrecorded by a dropped `Claim`: requeued at the next pass.
    orphan: bool,
    /// Its ordering mode, its own or the outbox's.
    mode: OrderingMode,
    /// How many times a correction gave it a new idempotency key.
    new_keys: usize,
    /// When its current key may first have reached the server.
    first_sent: Option<i64>,
    /// Sends in a row without an answer.
    unanswered: u32,
}

impl ModelOp {
    /// Whether it holds back later operations of its key.
    fn blocks(&self) -> bool {
        !self.status.is_terminal()
            || self.status == OperationStatus::Failed && self.mode == OrderingMode::StopOnFailure
    }
}

#[derive(Debug, Default)]
struct Model {
    ops: BTreeMap<String, ModelOp>,
    next_seq: u64,
    /// The signed-in user: only their operations are claimed.
    account: Option<u8>,
}

impl Model {
    fn ids_with(&self, status: OperationStatus) -> Vec<String> {
        self.ops
            .iter()
            .filter(|(_, op)| op.status == status)
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn expire(&mut self, now: i64) {
        for op in self.ops.values_mut() {
            let abandoned = op.orphan || (op.holder.is_none() && op.claimed_at + TIMEOUT_MS <= now);
            if op.status == OperationStatus::InFlight && abandoned {
                op.orphan = false;
                op.first_sent.get_or_insert(op.claimed_at);
                op.status = if op.attempt >= 3 {
                    OperationStatus::Failed
                } else {
                    OperationStatus::Pending
                };
                op.due = now;
            }
        }
    }

    fn is_head(&self, id: &str, op: &ModelOp) -> bool {
        let Some(key) = op.key else { return true };
        self.ops
            .iter()
            .filter(|(_, o)| o.key == Some(key) && o.blocks())
            .min_by_key(|(_, o)| o.seq)
            .is_none_or(|(head, _)| head == id)
    }

    fn claim(&mut self, now: i64, limit: usize, holder: Option<u64>) -> Vec<String> {
        self.expire(now);
        let mut due: Vec<(i64, u64, String)> = self
            .ops
            .iter()
            .filter(|(id, op)| {
                op.status == OperationStatus::Pending
                    && op.due <= now
                    && op.account == self.account
                    && self.is_head(id, op)
            })
            .map(|(id, op)| (op.due, op.seq, id.clone()))
            .collect();
        due.sort();
        // In order: those past the resend window fail, up to the last claim.
        let mut claimed: Vec<String> = Vec::new();
        for (_, _, id) in due {
            if claimed.len() >= limit {
                break;
            }
            let Some(op) = self.ops.get_mut(&id) else {
                continue;
            };
            if op
                .first_sent
                .is_some_and(|first| now - first > RESEND_WINDOW_MS)
            {
                op.status = OperationStatus::Failed;
            } else {
                claimed.push(id);
            }
        }
        for id in &claimed {
            if let Some(op) = self.ops.get_mut(id) {
                op.status = OperationStatus::InFlight;
                op.attempt += 1;
                op.claimed_at = now;
                op.holder = holder;
            }
        }
        claimed
    }
}

impl Model {
    /// `InFlight` operations no live `Claim` holds (claimed unheld, or orphans).
    fn unheld_in_flight(&self) -> Vec<String> {
        self.ops
            .iter()
            .filter(|(_, op)| op.status == OperationStatus::InFlight && op.holder.is_none())
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// The model of `mark_failed` on an `InFlight` operation.
fn model_fail(op: &mut ModelOp, retryable: bool, retry_after: Option<i64>, now: i64) {
    op.orphan = false;
    op.first_sent.get_or_insert(op.claimed_at);
    op.unanswered = 0;
    if retryable && op.attempt < 3 {
        op.status = OperationStatus::Pending;
        let backoff = (100i64 << (op.attempt - 1)).min(1_000);
        op.due = now + backoff.max(retry_after.unwrap_or(0).min(1_000));
    } else {
        op.status = OperationStatus::Failed;
    }
}

/// The model of an unanswered send of an `InFlight` operation.
fn model_unanswered(op: &mut ModelOp, left: bool, now: i64) {
    op.orphan = false;
    op.status = OperationStatus::Pending;
    op.attempt -= 1;
    op.unanswered += 1;
    if left {
        op.first_sent.get_or_insert(op.claimed_at);
    }
    op.due = now + (100i64 << (op.unanswered - 1).min(20)).min(1_000);
}

/// The model of an acknowledgement.
fn model_done(op: &mut ModelOp) {
    if op.status == OperationStatus::InFlight {
        op.first_sent.get_or_insert(op.claimed_at);
    }
    op.status = OperationStatus::Done;
}

/// Notes the first-send order per key of newly claimed operations.
fn record_sends(model: &Model, claimed: &[String], sent_order: &mut BTreeMap<u8, Vec<u64>>) {
    for id in claimed {
        if let Some(op) = model.ops.get(id)
            && let Some(key) = op.key
        {
            sent_order.entry(key).or_default().push(op.seq);
        }
    }
}

/// No claim hands out an operation first sent longer than the resend
/// window ago: the server may have forgotten its key.
fn never_past_the_window(claimed: &[Operation], now: i64) -> Result<(), TestCaseError> {
    for op in claimed {
        prop_assert!(
            op.first_sent_at_ms
                .is_none_or(|first| now - first <= RESEND_WINDOW_MS),
            "{} sent again {} ms after its first send",
            op.id,
            now - op.first_sent_at_ms.unwrap_or(now)
        );
    }
    Ok(())
}

fn pick(ids: &[String], n: usize) -> Option<String> {
    if ids.is_empty() {
        None
    } else {
        ids.get(n % ids.len()).cloned()
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "one match arm per step, side by side with the model"
)]
fn run(steps: &[Step], mode: OrderingMode) -> Result<(), TestCaseError> {
    let store = Arc::new(MemoryOutboxStore::new());
    let config = OutboxConfig {
        owner: "model".into(),
        retry: policy(),
        inflight_timeout: std::time::Duration::from_millis(TIMEOUT_MS.unsigned_abs()),
        ordering: mode,
        resend_window: std::time::Duration::from_millis(RESEND_WINDOW_MS.unsigned_abs()),
        max_queued: (mode == OrderingMode::SkipFailed).then_some(MAX_QUEUED),
        max_queued_bytes: (mode == OrderingMode::StopOnFailure).then_some(MAX_QUEUED_BYTES),
        ..OutboxConfig::default()
    };
    let limits = (config.max_queued, config.max_queued_bytes);
    let outbox = Outbox::new(config, store.clone());
    let mut model = Model::default();
    let mut now = 0i64;
    let mut sent_order: BTreeMap<u8, Vec<u64>> = BTreeMap::new();
    let mut holders: Vec<(u64, sync_outbox::Claim)> = Vec::new();
    let mut next_holder = 0u64;

    for step in steps {
        match step {
            Step::Enqueue { key, ordering } => {
                let op = Operation {
                    ordering_key: key.map(|k| format!("k{k}")),
                    ordering: *ordering,
                    ..Operation::new("k", "/t", "{}")
                };
                let queued = model
                    .ops
                    .values()
                    .filter(|o| o.status != OperationStatus::Done)
                    .count();
                let bytes = queued_bytes(&*store)?;
                let full = limits.0.is_some_and(|max| queued + 1 > max)
                    || limits.1.is_some_and(|max| bytes + 2 > max);
                let id = match outbox.enqueue(op, now) {
                    Err(OutboxError::QueueFull { .. }) if full => continue,
                    Ok(id) if !full => id,
                    other => {
                        return Err(TestCaseError::fail(format!(
                            "{queued} queued, limits {limits:?}: enqueue gave {other:?}"
                        )));
                    }
                };
                let seq = model.next_seq;
                model.next_seq += 1;
                model.ops.insert(
                    id,
                    ModelOp {
                        seq,
                        key: key.map(|k| k + 10 * model.account.map_or(0, |a| a + 1)),
                        account: model.account,
                        status: OperationStatus::Pending,
                        attempt: 0,
                        due: now,
                        claimed_at: 0,
                        holder: None,
                        orphan: false,
                        mode: ordering.unwrap_or(mode),
                        new_keys: 0,
                        first_sent: None,
                        unanswered: 0,
                    },
                );
            }
            Step::Claim { limit } => {
                let got = outbox
                    .claim(now, *limit)
                    .map(sync_outbox::Claim::detach)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                never_past_the_window(&got, now)?;
                let got: Vec<String> = got.into_iter().map(|op| op.id).collect();
                let want = model.claim(now, *limit, None);
                prop_assert_eq!(&got, &want, "claim at {}", now);
                record_sends(&model, &got, &mut sent_order);
            }
            Step::ClaimHeld { limit } => {
                let claim = outbox
                    .claim(now, *limit)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                never_past_the_window(claim.ops(), now)?;
                let got: Vec<String> = claim.ops().iter().map(|op| op.id.clone()).collect();
                let want = model.claim(now, *limit, Some(next_holder));
                prop_assert_eq!(&got, &want, "held claim at {}", now);
                record_sends(&model, &got, &mut sent_order);
                holders.push((next_holder, claim));
                next_holder += 1;
            }
            Step::FinishHolder { pick: n, ok } => {
                if !holders.is_empty() {
                    let (token, claim) = holders.remove(n % holders.len());
                    for op in claim.ops() {
                        let still_held = model.ops.get(&op.id).is_some_and(|m| {
                            m.holder == Some(token) && m.status == OperationStatus::InFlight
                        });
                        prop_assert!(
                            still_held
                                || model
                                    .ops
                                    .get(&op.id)
                                    .is_none_or(|m| m.holder != Some(token)),
                            "a held claim of {} was taken back",
                            op.id
                        );
                        if !still_held {
                            continue;
                        }
                        let model_op = model
                            .ops
                            .get_mut(&op.id)
                            .ok_or_else(|| TestCaseError::fail("lost"))?;
                        model_op.holder = None;
                        if *ok {
                            outbox
                                .mark_done(&op.id, now)
                                .map_err(|e| TestCaseError::fail(e.to_string()))?;
                            model_done(model_op);
                        } else {
                            let got = outbox
                                .record(&op.id, SendOutcome::retry_later("503", None), now)
                                .map_err(|e| TestCaseError::fail(e.to_string()))?;
                            model_fail(model_op, true, None, now);
                            prop_assert_eq!(got, model_op.status);
                        }
                    }
                    drop(claim);
                }
            }
            Step::DropHolder { pick: n } => {
                if !holders.is_empty() {
                    let (token, claim) = holders.remove(n % holders.len());
                    drop(claim);
                    for op in model.ops.values_mut() {
                        if op.holder == Some(token) {
                            op.holder = None;
                            op.orphan = op.status == OperationStatus::InFlight;
                        }
                    }
                }
            }
            Step::LateResult { pick: n, ok } => {
                let late: Vec<String> = model
                    .ops
                    .iter()
                    .filter(|(_, op)| {
                        (op.attempt > 0 || op.first_sent.is_some())
                            && op.status != OperationStatus::InFlight
                    })
                    .map(|(id, _)| id.clone())
                    .collect();
                if let Some(id) = pick(&late, *n)
                    && let Some(model_op) = model.ops.get_mut(&id)
                {
                    if *ok {
                        outbox
                            .mark_done(&id, now)
                            .map_err(|e| TestCaseError::fail(e.to_string()))?;
                        model_done(model_op);
                    } else {
                        let got = outbox
                            .record(&id, SendOutcome::refused("late"), now)
                            .map_err(|e| TestCaseError::fail(e.to_string()))?;
                        prop_assert_eq!(got, model_op.status, "a late failure changes nothing");
                    }
                }
            }
            Step::Done { pick: n } => {
                if let Some(id) = pick(&model.unheld_in_flight(), *n) {
                    outbox
                        .mark_done(&id, now)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    if let Some(op) = model.ops.get_mut(&id) {
                        model_done(op);
                    }
                }
            }
            Step::Unanswered { pick: n, left } => {
                if let Some(id) = pick(&model.unheld_in_flight(), *n) {
                    let delivery = if *left {
                        Delivery::Unknown
                    } else {
                        Delivery::NotSent
                    };
                    let outcome = SendOutcome::Unanswered {
                        error: "connection refused",
                        delivery,
                        retry_after_ms: None,
                    };
                    let got = outbox
                        .record_results([(id.as_str(), outcome)], now)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let got = got
                        .into_iter()
                        .next()
                        .ok_or_else(|| TestCaseError::fail("no result"))?
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    if let Some(op) = model.ops.get_mut(&id) {
                        model_unanswered(op, *left, now);
                        prop_assert_eq!(got, op.status);
                    }
                }
            }
            Step::Fail {
                pick: n,
                retryable,
                retry_after,
            } => {
                if let Some(id) = pick(&model.unheld_in_flight(), *n) {
                    let got = outbox
                        .record(
                            &id,
                            SendOutcome::Failed {
                                error: "boom",
                                retryable: *retryable,
                                retry_after_ms: *retry_after,
                            },
                            now,
                        )
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    if let Some(op) = model.ops.get_mut(&id) {
                        model_fail(op, *retryable, *retry_after, now);
                        prop_assert_eq!(got, op.status);
                    }
                }
            }
            Step::Recover => {
                outbox
                    .recover(now)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                model.expire(now);
            }
            Step::RetryFailed { pick: n } => {
                if let Some(id) = pick(&model.ids_with(OperationStatus::Failed), *n) {
                    outbox
                        .retry_failed(&id, now)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    if let Some(op) = model.ops.get_mut(&id) {
                        op.status = OperationStatus::Pending;
                        op.attempt = 0;
                        op.unanswered = 0;
                        op.due = now;
                    }
                }
            }
            Step::Correct { pick: n } => {
                let ids: Vec<String> = model.ops.keys().cloned().collect();
                if let Some(id) = pick(&ids, *n)
                    && let Some(op) = model.ops.get_mut(&id)
                {
                    let got = outbox.correct(&id, Correction::payload(r#"{"v":2}"#), now);
                    let never_sent = op.status == OperationStatus::Pending
                        && op.attempt == 0
                        && op.first_sent.is_none();
                    let allowed = op.status == OperationStatus::Failed || never_sent;
                    if op.status == OperationStatus::Failed {
                        // Failed means sent at least once: a new key, whose
                        // resend window has not started.
                        op.new_keys += 1;
                        op.status = OperationStatus::Pending;
                        op.attempt = 0;
                        op.first_sent = None;
                        op.unanswered = 0;
                        op.due = now;
                    }
                    match got {
                        Ok(key) => {
                            prop_assert!(allowed, "corrected {} ({:?})", id, op.status);
                            let want_key = match op.new_keys {
                                0 => id.clone(),
                                n => format!("{id}.{n}"),
                            };
                            prop_assert_eq!(key, want_key);
                        }
                        Err(OutboxError::InvalidTransition { .. }) => {
                            prop_assert!(!allowed, "correct refused for {}", id);
                        }
                        Err(e) => return Err(TestCaseError::fail(e.to_string())),
                    }
                }
            }
            Step::Discard { pick: n } => {
                let ids: Vec<String> = model.ops.keys().cloned().collect();
                if let Some(id) = pick(&ids, *n) {
                    outbox
                        .discard(&id)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    model.ops.remove(&id);
                }
            }
            Step::Purge => {
                let purged = outbox
                    .purge_done(now + 1)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let before = model.ops.len();
                model.ops.retain(|_, op| op.status != OperationStatus::Done);
                prop_assert_eq!(purged, before - model.ops.len());
            }
            Step::Advance { ms } => now += ms,
            Step::SignIn { user } => {
                outbox.set_account(user.map(|u| format!("u{u}")).as_deref());
                model.account = *user;
            }
        }
        // After every step the store is the model: nothing lost, nothing extra.
        let stored = store
            .load_all()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(stored.len(), model.ops.len());
        prop_assert_eq!(
            outbox
                .stats()
                .map_err(|e| TestCaseError::fail(e.to_string()))?
                .queued_bytes,
            queued_bytes(&*store)?
        );
        for op in stored {
            let want = model
                .ops
                .get(&op.id)
                .ok_or_else(|| TestCaseError::fail(format!("invented {}", op.id)))?;
            prop_assert_eq!(op.status, want.status, "status of {}", op.id);
            prop_assert_eq!(
                op.account.clone(),
                want.account.map(|a| format!("u{a}")),
                "account of {}",
                op.id
            );
            prop_assert_eq!(op.attempt, want.attempt, "attempt of {}", op.id);
            prop_assert_eq!(
                op.first_sent_at_ms,
                want.first_sent,
                "first send of {}",
                op.id
            );
            prop_assert_eq!(
                op.unanswered_sends,
                want.unanswered,
                "unanswered sends of {}",
                op.id
            );

            prop_assert!(op.attempt <= 3, "attempt {} beyond the policy", op.attempt);
            if op.status == OperationStatus::Pending {
                prop_assert_eq!(op.next_retry_at_ms, want.due, "due time of {}", op.id);
            }
            let want_key = match want.new_keys {
                0 => op.id.clone(),
                n => format!("{}.{n}", op.id),
            };
            prop_assert_eq!(op.idempotency_key(), want_key.as_str(), "key of {}", op.id);
            prop_assert_eq!(
                op.replaced_keys.len(),
                want.new_keys,
                "old keys of {}",
                op.id
            );
        }
    }
    // Per-key order: within a key, first sends happen in enqueue order.
    for (key, seqs) in sent_order {
        let mut firsts = Vec::new();
        for seq in seqs {
            if !firsts.contains(&seq) {
                firsts.push(seq);
            }
        }
        let mut sorted = firsts.clone();
        sorted.sort_unstable();
        // Under SkipFailed, retry_failed and correct may resend an old op
        // after newer ones; without them, or where every operation stops the
        // line, the order of first sends is the enqueue order.
        let requeues = steps
            .iter()
            .any(|s| matches!(s, Step::RetryFailed { .. } | Step::Correct { .. }));
        let all_stop = mode == OrderingMode::StopOnFailure
            && steps.iter().all(|s| {
                !matches!(
                    s,
                    Step::Enqueue {
                        ordering: Some(OrderingMode::SkipFailed),
                        ..
                    }
                )
            });
        if !requeues || all_stop {
            prop_assert_eq!(firsts, sorted, "key k{} sent out of order", key);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn outbox_matches_the_model(
        steps in proptest::collection::vec(step(), 1..80),
        mode in ordering_mode(),
    ) {
        run(&steps, mode)?;
    }
}
