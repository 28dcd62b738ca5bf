//! The download rule: what a page applies, holds and releases, and which
//! pages are refused.

use std::collections::HashSet;

use sync_protocol::{Change, ChangeOp, PullResponse};

use super::{DownloadState, default_ordering_key, plan_page, plan_release, unreflected_keys};
use crate::error::OutboxError;
use crate::operation::{Operation, OperationStatus};

fn change(id: &str, version: i64, text: Option<&str>) -> Change {
    Change {
        scope: "u".into(),
        entity: "note".into(),
        id: id.into(),
        version,
        op: match text {
            Some(t) => ChangeOp::Upsert {
                state: serde_json::json!({ "text": t }),
            },
            None => ChangeOp::Delete,
        },
    }
}

fn page(changes: Vec<Change>, cursor: &str, covers_below: i64) -> PullResponse {
    PullResponse {
        changes,
        cursor: cursor.into(),
        more: false,
        covers_below,
        snapshot: false,
    }
}

/// A page that outlives the plan borrowing it.
fn leak(page: PullResponse) -> &'static PullResponse {
    Box::leak(Box::new(page))
}

fn op(key: &str, status: OperationStatus, server_version: Option<i64>) -> Operation {
    Operation {
        ordering_key: Some(key.into()),
        status,
        server_version,
        ..Operation::default()
    }
}

fn keys(ops: &[Operation]) -> impl Fn(i64) -> Result<HashSet<String>, OutboxError> + '_ {
    move |covers| Ok(unreflected_keys(ops, covers))
}

#[expect(
    clippy::unnecessary_wraps,
    reason = "the shape plan_page takes: an app may say None"
)]
fn key_of(c: &Change) -> Option<String> {
    Some(default_ordering_key(c))
}

fn ids<'a>(changes: &'a [std::borrow::Cow<'_, Change>]) -> Vec<&'a str> {
    changes.iter().map(|c| c.id.as_str()).collect()
}

#[test]
fn a_first_page_resets_keeping_the_entities_with_local_edits() -> Result<(), OutboxError> {
    let ops = [op("note/2", OperationStatus::Pending, None)];
    let plan = plan_page(
        &DownloadState::default(),
        leak(page(
            vec![change("1", 5, Some("a")), change("2", 6, Some("b"))],
            "c1",
            7,
        )),
        keys(&ops),
        key_of,
    )?;
    assert_eq!(plan.reset, Some(HashSet::from(["note/2".to_owned()])));
    assert_eq!(ids(&plan.apply), ["1"], "note 2 has a pending edit: held");
    assert_eq!(plan.next.held.len(), 1);
    assert_eq!(plan.next.cursor.as_deref(), Some("c1"));
    assert_eq!((plan.next.covers_below, plan.next.last_version), (7, 6));
    Ok(())
}

#[test]
fn a_done_edit_holds_until_its_version_is_covered_then_releases() -> Result<(), OutboxError> {
    let state = DownloadState {
        cursor: Some("c1".into()),
        covers_below: 10,
        last_version: 9,
        ..DownloadState::default()
    };
    // The edit is Done at version 12; this page covers below 12: not yet.
    let ops = [op("note/1", OperationStatus::Done, Some(12))];
    let plan = plan_page(
        &state,
        leak(page(vec![change("1", 11, Some("theirs"))], "c2", 12)),
        keys(&ops),
        key_of,
    )?;
    assert!(plan.apply.is_empty());
    assert_eq!(plan.next.held.len(), 1);
    // Nothing else changes: no release yet.
    assert_eq!(plan_release(&plan.next, &unreflected_keys(&ops, 12)), None);
    // The next page covers 12 and brings the merged state: applied; the
    // held one it supersedes is dropped, never shown over the own edit.
    let plan = plan_page(
        &plan.next,
        leak(page(vec![change("1", 12, Some("merged"))], "c3", 13)),
        keys(&ops),
        key_of,
    )?;
    assert_eq!(plan.released, 0);
    let versions: Vec<i64> = plan.apply.iter().map(|c| c.version).collect();
    assert_eq!(versions, [12], "only the newest is applied");
    assert!(plan.next.held.is_empty());
    Ok(())
}

#[test]
fn a_dead_letter_holds_its_entity_only_and_a_discard_releases_it() -> Result<(), OutboxError> {
    let state = DownloadState {
        cursor: Some("c1".into()),
        covers_below: 10,
        last_version: 9,
        ..DownloadState::default()
    };
    let dead = [op("note/1", OperationStatus::Failed, None)];
    let plan = plan_page(
        &state,
        leak(page(
            vec![change("1", 10, Some("x")), change("2", 11, Some("y"))],
            "c2",
            12,
        )),
        keys(&dead),
        key_of,
    )?;
    assert_eq!(ids(&plan.apply), ["2"], "the other note is not frozen");
    assert_eq!(plan.next.held.len(), 1);
    // Discarded: no operation left, the held change goes.
    let released = plan_release(&plan.next, &unreflected_keys(&[], 12))
        .ok_or("released")
        .map_err(|e| OutboxError::BadPage {
            problem: e.to_owned(),
        })?;
    assert_eq!(ids(&released.apply), ["1"]);
    assert!(released.next.held.is_empty());
    assert_eq!(
        released.next.cursor, plan.next.cursor,
        "a release moves no cursor"
    );
    Ok(())
}

#[test]
fn a_done_answer_without_a_version_and_an_unkeyed_op_hold_nothing() -> Result<(), OutboxError> {
    let ops = [
        op("note/1", OperationStatus::Done, None),
        Operation {
            status: OperationStatus::Pending,
            ..Operation::default()
        },
    ];
    let plan = plan_page(
        &DownloadState::default(),
        leak(page(vec![change("1", 3, None)], "c1", 4)),
        keys(&ops),
        key_of,
    )?;
    assert_eq!(ids(&plan.apply), ["1"]);
    Ok(())
}

#[test]
fn a_newer_change_replaces_the_held_one() -> Result<(), OutboxError> {
    let ops = [op("note/1", OperationStatus::Pending, None)];
    let first = plan_page(
        &DownloadState::default(),
        leak(page(vec![change("1", 3, Some("a"))], "c1", 4)),
        keys(&ops),
        key_of,
    )?;
    let second = plan_page(
        &first.next,
        leak(page(vec![change("1", 5, None)], "c2", 6)),
        keys(&ops),
        key_of,
    )?;
    assert_eq!(second.next.held.len(), 1);
    assert_eq!(second.next.held[0].change.op, ChangeOp::Delete);
    Ok(())
}

#[test]
fn pages_that_do_not_follow_are_refused_whole() {
    let state = DownloadState {
        cursor: Some("c1".into()),
        covers_below: 10,
        last_version: 9,
        ..DownloadState::default()
    };
    let refused = |p: PullResponse| {
        matches!(
            plan_page(&state, &p, keys(&[]), key_of),
            Err(OutboxError::BadPage { .. })
        )
    };
    assert!(
        refused(page(
            vec![change("1", 11, None), change("2", 10, None)],
            "c2",
            12
        )),
        "out of order"
    );
    assert!(
        refused(page(vec![change("1", 8, None)], "c2", 12)),
        "below the last version"
    );
    assert!(refused(page(vec![], "c2", 9)), "covers_below went back");
    assert!(refused(page(vec![], "", 12)), "no cursor");
    assert!(
        !refused(page(vec![change("1", 9, None)], "c2", 12)),
        "the same version again is fine"
    );
}

#[test]
fn a_kept_entity_the_snapshot_never_brings_is_forgotten_once_settled() -> Result<(), OutboxError> {
    // Snapshot of two pages; the device has a pending edit of note 9, which
    // the server deleted while it was away: the snapshot never mentions it.
    let pending = [op("note/9", OperationStatus::Pending, None)];
    let mut first = page(vec![change("1", 5, Some("a"))], "c1", 10);
    first.more = true;
    first.snapshot = true;
    let plan = plan_page(&DownloadState::default(), &first, keys(&pending), key_of)?;
    assert_eq!(plan.reset, Some(HashSet::from(["note/9".to_owned()])));
    assert!(plan.forget.is_empty());
    assert!(plan.next.in_snapshot);
    assert_eq!(plan.next.verify, ["note/9"]);
    // The edit is answered (Done at 11) while the snapshot is still going:
    // nothing is forgotten before the snapshot ends.
    let done = [op("note/9", OperationStatus::Done, Some(11))];
    assert_eq!(plan_release(&plan.next, &unreflected_keys(&done, 10)), None);
    let mut last = page(vec![change("2", 6, Some("b"))], "c2", 12);
    last.snapshot = true;
    let plan = plan_page(&plan.next, &last, keys(&done), key_of)?;
    assert!(!plan.next.in_snapshot);
    assert_eq!(
        plan.forget,
        ["note/9"],
        "reflected, and the server has none"
    );
    assert!(plan.next.verify.is_empty());
    Ok(())
}

#[test]
fn a_kept_entity_the_snapshot_brings_is_not_forgotten() -> Result<(), OutboxError> {
    let pending = [op("note/1", OperationStatus::Pending, None)];
    let mut snapshot = page(vec![change("1", 5, Some("theirs"))], "c1", 10);
    snapshot.snapshot = true;
    let plan = plan_page(&DownloadState::default(), &snapshot, keys(&pending), key_of)?;
    assert!(plan.next.verify.is_empty(), "the server has note 1");
    assert_eq!(plan.next.held.len(), 1);
    let done = [op("note/1", OperationStatus::Done, Some(9))];
    let release = plan_release(&plan.next, &unreflected_keys(&done, 10));
    let release = release.ok_or(OutboxError::BadPage {
        problem: "nothing released".into(),
    })?;
    assert!(release.forget.is_empty());
    assert_eq!(ids(&release.apply), ["1"]);
    Ok(())
}

/// Counts pages finished; fails the finish when told to.
#[derive(Default)]
struct Finishing {
    finished: usize,
    fail_finish: bool,
    upserts: usize,
}

type AppError = Box<dyn std::error::Error + Send + Sync>;

impl super::ApplyChanges for Finishing {
    fn upsert(&mut self, _: &Change, _: &serde_json::Value) -> Result<(), AppError> {
        self.upserts += 1;
        Ok(())
    }
    fn delete(&mut self, _: &Change) -> Result<(), AppError> {
        Ok(())
    }
    fn reset(&mut self, _: &HashSet<String>) -> Result<(), AppError> {
        Ok(())
    }
    fn forget(&mut self, _: &str) -> Result<(), AppError> {
        Ok(())
    }
    fn finish_page(&mut self) -> Result<(), AppError> {
        if self.fail_finish {
            return Err("the disk said no".into());
        }
        self.finished += 1;
        Ok(())
    }
}

#[test]
fn a_page_is_finished_once_and_its_cursor_waits_for_the_finish() -> Result<(), OutboxError> {
    use super::{AppDownload, DownloadTarget, MemoryDownloadState};
    let outbox = std::sync::Arc::new(crate::Outbox::new(
        crate::OutboxConfig::default(),
        std::sync::Arc::new(crate::MemoryOutboxStore::new()),
    ));
    let target = AppDownload::new(
        outbox,
        Finishing::default(),
        std::sync::Arc::new(MemoryDownloadState::default()),
    );
    target.commit_page(&page(
        vec![change("1", 1, Some("a")), change("2", 2, Some("b"))],
        "c1",
        3,
    ))?;
    {
        let app = target.app();
        assert_eq!((app.upserts, app.finished), (2, 1));
    }
    target.app().fail_finish = true;
    let refused = target.commit_page(&page(vec![change("3", 3, Some("c"))], "c2", 4));
    assert!(
        matches!(refused, Err(OutboxError::Apply { .. })),
        "{refused:?}"
    );
    assert_eq!(
        target.state()?.cursor.as_deref(),
        Some("c1"),
        "not finished: the page is pulled again"
    );
    Ok(())
}
