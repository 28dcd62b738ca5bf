//! Guards `synctl outbox` on both store kinds: list, show and stats read
//! without changing a byte; retry, discard and purge-done change exactly
//! what they say; a locked or corrupt store gets a clear message and exit
//! code, and is left alone.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sync_outbox::{
    Operation, OperationStatus, Outbox, OutboxConfig, OutboxStore, RetryPolicy, SendOutcome,
};
use sync_store_file::{
    FileStoreError, JsonOutboxStore, JsonOutboxStoreConfig, WalOutboxStore, WalOutboxStoreConfig,
};
use sync_store_sqlite::{SqliteOutboxStore, SqliteOutboxStoreConfig};

use crate::{TestResult, arg, files, synctl, synctl_once};

/// A day ago, in ms since the epoch, for "old" operations.
fn days_ago(days: i64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
    now - days * 86_400_000
}

/// The ids of a store's four operations, made through an `Outbox`.
struct Fixture {
    pending: String,
    failed: String,
    old_done: String,
    new_done: String,
}

/// Fills `store`: one pending, one failed, one done 10 days ago, one done now.
fn fill(store: Arc<dyn OutboxStore>) -> Result<Fixture, Box<dyn std::error::Error>> {
    let outbox = Outbox::new(
        OutboxConfig {
            retry: RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            },
            ..OutboxConfig::default()
        },
        store,
    );
    let t_old = days_ago(10);
    let t_new = days_ago(0);
    let enqueue = |text: &str, at: i64| {
        outbox.enqueue(
            Operation::new(
                "message.send",
                "/api/messages",
                format!(r#"{{"text":"{text}"}}"#),
            ),
            at,
        )
    };
    let old_done = enqueue("old", t_old)?;
    outbox.claim(t_old, 1).map(sync_outbox::Claim::detach)?;
    outbox.mark_done(&old_done, t_old)?;
    let failed = enqueue("bad", t_old)?;
    outbox.claim(t_old, 1).map(sync_outbox::Claim::detach)?;
    outbox.record(
        &failed,
        SendOutcome::refused("HTTP 422 Unprocessable Entity"),
        t_old,
    )?;
    let new_done = enqueue("new", t_new)?;
    outbox.claim(t_new, 1).map(sync_outbox::Claim::detach)?;
    outbox.mark_done(&new_done, t_new)?;
    let pending = enqueue("waiting", t_new + 3_600_000)?;
    Ok(Fixture {
        pending,
        failed,
        old_done,
        new_done,
    })
}

fn json_store(dir: &Path) -> Result<(PathBuf, Fixture), Box<dyn std::error::Error>> {
    let path = dir.join("outbox.json");
    let store = Arc::new(JsonOutboxStore::open(JsonOutboxStoreConfig::new(
        path.clone(),
    ))?);
    Ok((path, fill(store)?))
}

fn wal_store(dir: &Path) -> Result<(PathBuf, Fixture), Box<dyn std::error::Error>> {
    let path = dir.join("outbox-wal");
    let store = Arc::new(WalOutboxStore::open(WalOutboxStoreConfig::new(&path))?);
    Ok((path, fill(store)?))
}

fn sqlite_store(dir: &Path) -> Result<(PathBuf, Fixture), Box<dyn std::error::Error>> {
    let path = dir.join("app.db");
    let store = Arc::new(SqliteOutboxStore::open(SqliteOutboxStoreConfig::new(
        &path,
    ))?);
    Ok((path, fill(store)?))
}

type MakeStore = fn(&Path) -> Result<(PathBuf, Fixture), Box<dyn std::error::Error>>;

const STORES: [(&str, MakeStore); 3] = [
    ("json", json_store),
    ("wal", wal_store),
    ("sqlite", sqlite_store),
];

#[test]
fn list_show_and_stats_read_both_store_kinds_without_changing_them() -> TestResult {
    for (kind, make) in STORES {
        let dir = tempfile::tempdir()?;
        let (path, ids) = make(dir.path())?;
        let before = files(dir.path())?;

        let list = synctl(&["outbox", "list", arg(&path)])?;
        assert_eq!(list.code, Some(0), "{kind}: {list:?}");
        let lines: Vec<&str> = list.stdout.lines().collect();
        assert_eq!(lines.len(), 5, "{kind}: header + 4\n{}", list.stdout);
        assert!(
            lines
                .first()
                .is_some_and(|h| h.starts_with("ID") && h.contains("STATUS"))
        );
        // Columns line up: STATUS starts at the same place on every line.
        let column = lines
            .first()
            .and_then(|h| h.find("STATUS"))
            .ok_or("no STATUS")?;
        for line in lines.iter().skip(1) {
            let status = line.get(column..).unwrap_or_default();
            assert!(
                ["pending", "failed", "done"]
                    .iter()
                    .any(|s| status.starts_with(s)),
                "{kind}: {line}"
            );
        }

        let failed = synctl(&["outbox", "list", arg(&path), "--status", "failed", "--json"])?;
        let ops: Vec<Operation> = serde_json::from_str(&failed.stdout)?;
        assert_eq!(ops.len(), 1, "{kind}");
        assert_eq!(
            ops.first().map(|op| op.id.as_str()),
            Some(ids.failed.as_str())
        );
        assert_eq!(
            ops.first().map(|op| op.last_error.as_str()),
            Some("HTTP 422 Unprocessable Entity")
        );

        let show = synctl(&["outbox", "show", arg(&path), &ids.pending])?;
        assert_eq!(show.code, Some(0), "{kind}: {show:?}");
        assert!(
            show.stdout.contains(r#"{"text":"waiting"}"#),
            "{}",
            show.stdout
        );
        assert!(show.stdout.contains("next try:     in "), "{}", show.stdout);
        let unknown = synctl(&["outbox", "show", arg(&path), "no-such-id"])?;
        assert_eq!(unknown.code, Some(3), "{kind}");
        assert!(unknown.stderr.contains("no-such-id"));

        let stats = synctl(&["outbox", "stats", arg(&path), "--json"])?;
        let stats: serde_json::Value = serde_json::from_str(&stats.stdout)?;
        assert_eq!(
            (
                &stats["pending"],
                &stats["done"],
                &stats["failed"],
                &stats["total"]
            ),
            (&1.into(), &2.into(), &1.into(), &4.into()),
            "{kind}"
        );
        assert_eq!(
            files(dir.path())?,
            before,
            "{kind}: a read changed the store"
        );
    }
    Ok(())
}

#[test]
fn retry_discard_and_purge_change_exactly_what_they_say() -> TestResult {
    for (kind, make) in STORES {
        let dir = tempfile::tempdir()?;
        let (path, ids) = make(dir.path())?;

        let retry = synctl(&["outbox", "retry", arg(&path), &ids.failed])?;
        assert_eq!(retry.code, Some(0), "{kind}: {retry:?}");
        let not_failed = synctl(&["outbox", "retry", arg(&path), &ids.pending])?;
        assert_eq!(
            not_failed.code,
            Some(3),
            "{kind}: only a failed op can be retried"
        );

        let purge = synctl(&["outbox", "purge-done", arg(&path), "--older-than", "7d"])?;
        assert_eq!(purge.code, Some(0), "{kind}: {purge:?}");
        assert!(purge.stdout.contains("removed 1 "), "{}", purge.stdout);

        let discard = synctl(&["outbox", "discard", arg(&path), &ids.pending])?;
        assert_eq!(discard.code, Some(0), "{kind}: {discard:?}");
        assert!(discard.stdout.contains("was pending"));
        assert_eq!(
            synctl(&["outbox", "discard", arg(&path), &ids.pending])?.code,
            Some(3)
        );

        let ops: Vec<Operation> =
            serde_json::from_str(&synctl(&["outbox", "list", arg(&path), "--json"])?.stdout)?;
        let state: Vec<(String, OperationStatus, u32)> = ops
            .into_iter()
            .map(|op| (op.id, op.status, op.attempt))
            .collect();
        assert_eq!(
            state,
            [
                (ids.failed.clone(), OperationStatus::Pending, 0),
                (ids.new_done.clone(), OperationStatus::Done, 1),
            ],
            "{kind}: the old done op ({}) is purged, the pending one discarded",
            ids.old_done
        );
    }
    Ok(())
}

#[test]
fn retry_all_or_by_kind_fixes_every_dead_letter_at_once() -> TestResult {
    for (kind, make) in STORES {
        let dir = tempfile::tempdir()?;
        let (path, ids) = make(dir.path())?;
        let failed_kind = {
            let list = synctl(&["outbox", "list", arg(&path), "--status", "failed", "--json"])?;
            let ops: Vec<Operation> = serde_json::from_str(&list.stdout)?;
            ops.first()
                .map(|op| op.kind.clone())
                .ok_or("no failed op")?
        };
        let none = synctl(&["outbox", "retry", arg(&path), "--kind", "no.such.kind"])?;
        assert_eq!(none.code, Some(0), "{kind}: {none:?}");
        assert!(
            none.stdout.contains("retried 0 failed operations"),
            "{}",
            none.stdout
        );
        let by_kind = synctl(&["outbox", "retry", arg(&path), "--kind", &failed_kind])?;
        assert!(by_kind.stdout.contains(&ids.failed), "{kind}: {by_kind:?}");
        assert_eq!(
            synctl(&["outbox", "retry", arg(&path), "--all"])?.stdout,
            "retried 0 failed operations\n",
            "{kind}: nothing left failed"
        );
        let neither = synctl(&["outbox", "retry", arg(&path)])?;
        assert_eq!(
            neither.code,
            Some(2),
            "{kind}: an id, --all or --kind is required"
        );
        let stats = synctl(&["outbox", "stats", arg(&path), "--json"])?;
        let stats: serde_json::Value = serde_json::from_str(&stats.stdout)?;
        assert_eq!(
            (&stats["failed"], &stats["pending"]),
            (&0.into(), &2.into()),
            "{kind}"
        );
    }
    Ok(())
}

/// Opens with a few retries while the store looks locked (see `synctl`).
fn retry_locked<T>(
    mut open: impl FnMut() -> Result<T, FileStoreError>,
) -> Result<T, FileStoreError> {
    for _ in 0..20 {
        match open() {
            Err(FileStoreError::Locked { .. }) => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
    open()
}

#[test]
fn a_store_held_by_an_application_is_read_but_not_changed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (json_path, json_ids) = json_store(dir.path())?;
    let (wal_path, wal_ids) = wal_store(dir.path())?;
    // Retried: a sibling test's child may hold a copy of the lock we just
    // released until its exec (see `synctl`).
    let _json_app =
        retry_locked(|| JsonOutboxStore::open(JsonOutboxStoreConfig::new(json_path.clone())))?;
    let _wal_app = retry_locked(|| WalOutboxStore::open(WalOutboxStoreConfig::new(&wal_path)))?;
    let before = files(dir.path())?;
    for (path, ids) in [(&json_path, &json_ids), (&wal_path, &wal_ids)] {
        // Reading works while the application runs...
        let list = synctl_once(&["outbox", "list", "--json", arg(path)])?;
        assert_eq!(list.code, Some(0), "{list:?}");
        let listed: Vec<serde_json::Value> = serde_json::from_str(&list.stdout)?;
        assert!(listed.iter().any(|op| op["id"] == ids.failed.as_str()));
        let stats = synctl_once(&["outbox", "stats", "--json", arg(path)])?;
        assert_eq!(stats.code, Some(0), "{stats:?}");
        // ... changing does not, and says why.
        let run = synctl_once(&["outbox", "retry", arg(path), &ids.failed])?;
        assert_eq!(run.code, Some(3), "{run:?}");
        assert!(
            run.stderr
                .contains(&format!("is in use by pid {} (", std::process::id())),
            "{}",
            run.stderr
        );
        assert!(
            run.stderr.contains("list, show and stats work"),
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains("Nothing was changed"), "{}", run.stderr);
    }
    assert_eq!(files(dir.path())?, before);
    Ok(())
}

#[test]
fn a_corrupt_store_exits_1_naming_the_file_and_is_left_untouched() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("outbox.json");
    fs::write(
        &path,
        "{\"format\": \"sync-outbox\",\n \"version\": 1,\n \"operations\": [ {\"id\": 5} ]}",
    )?;
    let before = fs::read(&path)?;
    for args in [
        vec!["outbox", "list", arg(&path)],
        vec!["outbox", "purge-done", arg(&path), "--older-than", "1d"],
    ] {
        let run = synctl(&args)?;
        assert_eq!(run.code, Some(1), "{args:?}: {run:?}");
        assert!(run.stderr.contains("outbox.json"), "{}", run.stderr);
        assert!(run.stderr.contains("line 3"), "{}", run.stderr);
    }
    assert_eq!(fs::read(&path)?, before);

    let (wal_path, _) = wal_store(dir.path())?;
    let snapshot = wal_path.join("snapshot");
    fs::write(&snapshot, b"SYNCSNAP but not really")?;
    let run = synctl(&["outbox", "stats", arg(&wal_path)])?;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("snapshot"), "{}", run.stderr);

    let missing = synctl(&["outbox", "list", arg(&dir.path().join("nothing-here"))])?;
    assert_eq!(missing.code, Some(3));
    assert!(
        missing.stderr.contains("no outbox store"),
        "{}",
        missing.stderr
    );
    Ok(())
}
