//! Guards `synctl wal`: dump (table and JSON lines), verify (exit 1 naming
//! segment and offset on damage, 0 with a note on a torn tail), stats, the
//! lock message, and that none of them changes a byte.

use std::fs;
use std::path::{Path, PathBuf};

use sync_wal::{RecordType, SyncPolicy, Wal, WalConfig, WalRecord};

use crate::{TestResult, arg, files, synctl};

fn write_log(dir: &Path, n: u64) -> Result<Vec<PathBuf>, Box<dyn std::error::Error>> {
    let mut config = WalConfig::new(dir);
    config.sync = SyncPolicy::Never;
    config.segment_bytes = 512;
    // Appended frames: the tests cut and flip bytes at the file's end.
    config.preallocate_bytes = 0;
    let wal = Wal::open(config)?;
    for i in 0..n {
        wal.append(&WalRecord {
            id: format!("op_{i}"),
            kind: if i % 2 == 0 {
                RecordType::PutOperation
            } else {
                RecordType::Remove
            },
            ts_ms: 1_700_000_000_000 + i64::try_from(i)?,
            payload: format!(r#"{{"n":{i}}}"#).into_bytes(),
        })?;
    }
    let mut segments: Vec<PathBuf> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    segments.retain(|p| p.extension().is_some_and(|e| e == "wal"));
    segments.sort();
    Ok(segments)
}

#[test]
fn dump_prints_every_record_as_a_table_or_json_lines() -> TestResult {
    let dir = tempfile::tempdir()?;
    write_log(dir.path(), 30)?;
    let run = synctl(&["wal", "dump", arg(dir.path())])?;
    assert_eq!(run.code, Some(0), "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 31, "a header and 30 records");
    assert!(
        lines
            .first()
            .is_some_and(|h| h.contains("LSN") && h.contains("PAYLOAD"))
    );
    assert!(
        lines
            .get(1)
            .is_some_and(|l| l.contains("op_0") && l.contains(r#"{"n":0}"#))
    );
    assert!(lines.get(2).is_some_and(|l| l.contains("remove")));

    let run = synctl(&["wal", "dump", arg(dir.path()), "--from", "25", "--json"])?;
    assert_eq!(run.code, Some(0), "{run:?}");
    let records: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let lsns: Vec<u64> = records.iter().filter_map(|r| r["lsn"].as_u64()).collect();
    assert_eq!(lsns, [25, 26, 27, 28, 29]);
    let first = records.first().ok_or("no record")?;
    assert_eq!(first["id"], "op_25");
    assert_eq!(first["kind"], "remove");
    assert_eq!(first["payload"], r#"{"n":25}"#);
    assert_eq!(first["ts_ms"], 1_700_000_000_025_i64);
    Ok(())
}

#[test]
fn verify_passes_a_clean_log_and_names_the_first_damaged_frame() -> TestResult {
    let dir = tempfile::tempdir()?;
    let segments = write_log(dir.path(), 40)?;
    let run = synctl(&["wal", "verify", arg(dir.path())])?;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("ok: 40 records"), "{}", run.stdout);

    let second = segments.get(1).ok_or("the log did not roll")?;
    let mut bytes = fs::read(second)?;
    // A bit in the second frame's body.
    let first_frame_len = 4
        + 4
        + u64::from(u32::from_le_bytes(
            bytes.get(24..28).ok_or("short")?.try_into()?,
        ));
    let at = usize::try_from(24 + first_frame_len + 12)?;
    *bytes.get_mut(at).ok_or("short")? ^= 0x10;
    fs::write(second, &bytes)?;
    let before = files(dir.path())?;

    let run = synctl(&["wal", "verify", arg(dir.path())])?;
    assert_eq!(run.code, Some(1), "{run:?}");
    let name = second
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    assert!(run.stderr.contains(name), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("offset {}", 24 + first_frame_len)),
        "{}",
        run.stderr
    );
    // dump shows what precedes the damage, then fails the same way.
    let dump = synctl(&["wal", "dump", arg(dir.path())])?;
    assert_eq!(dump.code, Some(1));
    assert!(dump.stdout.contains("op_0"));
    assert_eq!(files(dir.path())?, before, "a read changed the log");
    Ok(())
}

#[test]
fn a_torn_tail_is_a_note_not_a_failure_and_is_left_in_place() -> TestResult {
    let dir = tempfile::tempdir()?;
    let segments = write_log(dir.path(), 10)?;
    let last = segments.last().ok_or("no segment")?;
    let len = fs::metadata(last)?.len();
    fs::OpenOptions::new()
        .write(true)
        .open(last)?
        .set_len(len - 2)?;
    let before = files(dir.path())?;

    let run = synctl(&["wal", "verify", arg(dir.path())])?;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("ok: 9 records"), "{}", run.stdout);
    assert!(run.stderr.contains("torn write"), "{}", run.stderr);
    assert_eq!(files(dir.path())?, before);
    Ok(())
}

#[test]
fn stats_reports_segments_records_and_kinds() -> TestResult {
    let dir = tempfile::tempdir()?;
    let segments = write_log(dir.path(), 21)?;
    let run = synctl(&["wal", "stats", arg(dir.path()), "--json"])?;
    assert_eq!(run.code, Some(0), "{run:?}");
    let stats: serde_json::Value = serde_json::from_str(&run.stdout)?;
    assert_eq!(stats["records"], 21);
    assert_eq!(stats["next_lsn"], 21);
    assert_eq!(
        stats["segments"].as_array().map(Vec::len),
        Some(segments.len())
    );
    assert_eq!(
        stats["records_by_kind"],
        serde_json::json!([["put_operation", 11], ["remove", 10]])
    );
    let text = synctl(&["wal", "stats", arg(dir.path())])?;
    assert!(text.stdout.contains("records:   21"), "{}", text.stdout);
    Ok(())
}

/// Opens the log `write_log` just closed. Other tests in this binary spawn
/// `synctl` at the same time: a child forked while `write_log`'s handle was
/// open holds a copy of its lock until it execs (`O_CLOEXEC` closes the
/// copy only then), so the lock can be busy for that instant after the
/// close. Retried briefly, only for `Locked`.
fn reopen(dir: &Path) -> Result<Wal, Box<dyn std::error::Error>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Wal::open(WalConfig::new(dir)) {
            Err(sync_wal::WalError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::yield_now();
            }
            other => return Ok(other?),
        }
    }
}

#[test]
fn a_log_held_by_an_application_is_read_live_without_blocking_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    write_log(dir.path(), 3)?;
    let app = reopen(dir.path())?;
    app.append(&WalRecord {
        id: "op_3".into(),
        kind: RecordType::PutOperation,
        ts_ms: 3,
        payload: b"{}".to_vec(),
    })?;
    let run = synctl(&["wal", "verify", arg(dir.path())])?;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("ok: 4 records"), "{}", run.stdout);
    assert!(run.stderr.contains("live view"), "{}", run.stderr);
    let stats = synctl(&["wal", "stats", "--json", arg(dir.path())])?;
    let stats: serde_json::Value = serde_json::from_str(&stats.stdout)?;
    assert_eq!(
        (&stats["records"], &stats["live"]),
        (&4.into(), &true.into())
    );
    let dump = synctl(&["wal", "dump", "--json", arg(dir.path())])?;
    assert_eq!(dump.stdout.lines().count(), 4, "{}", dump.stdout);
    // The application was never blocked.
    app.append(&WalRecord::default())?;
    let missing = synctl(&["wal", "dump", "/nonexistent/log"])?;
    assert_eq!(missing.code, Some(3));
    assert!(
        missing.stderr.contains("not a directory"),
        "{}",
        missing.stderr
    );
    Ok(())
}

#[test]
fn a_big_log_verifies_with_its_progress_bar_kept_off_a_pipe() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = WalConfig::new(dir.path());
    config.sync = SyncPolicy::Never;
    config.segment_bytes = 4 << 20;
    let wal = Wal::open(config)?;
    let payload = vec![b'x'; 1 << 20];
    for i in 0..17 {
        wal.append(&WalRecord {
            id: format!("big_{i}"),
            kind: RecordType::Custom(1),
            ts_ms: 0,
            payload: payload.clone(),
        })?;
    }
    drop(wal);
    let run = synctl(&["wal", "verify", arg(dir.path())])?;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.starts_with("ok: 17 records"), "{}", run.stdout);
    assert!(
        run.stderr.is_empty(),
        "no bar is drawn on a pipe: {:?}",
        run.stderr
    );
    Ok(())
}
