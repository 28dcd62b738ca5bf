//! `synctl wal dump | verify | stats`, on a [`WalInspector`]: read-only.

use std::io::Write;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use sync_wal::{LogTail, RecordType, VerifyReport, WalInspector, WalRecord};

use crate::cli::WalCommand;
use crate::output::{Failure, Table, preview};
use crate::units::{format_bytes, format_time_ms};

/// Logs at least this big get a progress bar while they are verified (when
/// standard error is a terminal).
const PROGRESS_BAR_MIN_BYTES: u64 = 16 << 20;

pub(crate) fn run(command: WalCommand, out: &mut dyn Write) -> Result<(), Failure> {
    match command {
        WalCommand::Dump { dir, from, json } => dump(&dir, from, json, out),
        WalCommand::Verify { dir } => verify(&dir, out),
        WalCommand::Stats { dir, json } => stats(&dir, json, out),
    }
}

fn open(dir: &Path) -> Result<WalInspector, Failure> {
    if !dir.is_dir() {
        return Err(Failure::Failed(format!(
            "{} is not a directory (a log is a directory of segments)",
            dir.display()
        )));
    }
    Ok(WalInspector::open(dir)?)
}

/// One record of `dump --json`; the field names are a stable interface.
#[derive(Serialize)]
struct RecordLine<'a> {
    lsn: u64,
    kind: String,
    kind_code: u16,
    ts_ms: i64,
    id: &'a str,
    /// The payload if it is UTF-8 ...
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a str>,
    /// ... else its bytes in hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_hex: Option<String>,
}

fn dump(dir: &Path, from: u64, json: bool, out: &mut dyn Write) -> Result<(), Failure> {
    let inspector = open(dir)?;
    // Streamed with fixed widths, not a `Table`: a log may not fit in memory.
    if !json {
        writeln!(
            out,
            "{:>10}  {:<14}  {:<24}  {:<28}  {:>8}  PAYLOAD",
            "LSN", "KIND", "TIME", "ID", "BYTES"
        )?;
    }
    let mut failure = None;
    for item in inspector.iter_from(from) {
        let (lsn, record) = match item {
            Ok(item) => item,
            Err(e) => {
                failure = Some(Failure::from(e));
                break;
            }
        };
        if json {
            serde_json::to_writer(&mut *out, &record_line(lsn, &record))
                .map_err(std::io::Error::from)?;
            writeln!(out)?;
        } else {
            writeln!(
                out,
                "{lsn:>10}  {:<14}  {:<24}  {:<28}  {:>8}  {}",
                kind_name(record.kind),
                format_time_ms(record.ts_ms),
                preview(&record.id, 28),
                record.payload.len(),
                preview(&String::from_utf8_lossy(&record.payload), 60),
            )?;
        }
    }
    note_tail(&inspector);
    failure.map_or(Ok(()), Err)
}

fn record_line(lsn: u64, record: &WalRecord) -> RecordLine<'_> {
    let text = std::str::from_utf8(&record.payload).ok();
    RecordLine {
        lsn,
        kind: kind_name(record.kind),
        kind_code: record.kind.code(),
        ts_ms: record.ts_ms,
        id: &record.id,
        payload: text,
        payload_hex: text.is_none().then(|| hex(&record.payload)),
    }
}

fn verify(dir: &Path, out: &mut dyn Write) -> Result<(), Failure> {
    let inspector = open(dir)?;
    let total: u64 = inspector.segments().iter().map(|s| s.len).sum();
    let bar = if total >= PROGRESS_BAR_MIN_BYTES {
        let bar = ProgressBar::new(total);
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {binary_bytes}/{binary_total_bytes} {eta}")
        {
            bar.set_style(style);
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    let result = inspector.verify(|done, _| bar.set_position(done));
    bar.finish_and_clear();
    let report = result?;
    writeln!(
        out,
        "ok: {} records (lsn {}..{}) in {} segments, {}; every frame checked",
        report.records,
        report.first_lsn,
        report.next_lsn,
        report.segments,
        format_bytes(report.bytes)
    )?;
    note_tail(&inspector);
    Ok(())
}

/// `wal stats --json`; the field names are a stable interface.
#[derive(Serialize)]
struct StatsJson {
    segments: Vec<SegmentJson>,
    records: u64,
    bytes: u64,
    first_lsn: u64,
    next_lsn: u64,
    records_by_kind: Vec<(String, u64)>,
    torn_tail_bytes: u64,
    /// An application held the log: a live view of its complete records.
    live: bool,
}

#[derive(Serialize)]
struct SegmentJson {
    file: String,
    first_lsn: u64,
    bytes: u64,
}

fn stats(dir: &Path, json: bool, out: &mut dyn Write) -> Result<(), Failure> {
    let inspector = open(dir)?;
    let report: VerifyReport = inspector.verify(|_, _| {})?;
    let segments = inspector.segments().iter().map(|s| SegmentJson {
        file: s
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        first_lsn: s.first_lsn,
        bytes: s.len,
    });
    let torn_tail_bytes = match &report.tail {
        LogTail::Torn { len, .. } => *len,
        LogTail::Clean | LogTail::Corrupt { .. } => 0,
    };
    if json {
        let stats = StatsJson {
            segments: segments.collect(),
            records: report.records,
            bytes: report.bytes,
            first_lsn: report.first_lsn,
            next_lsn: report.next_lsn,
            records_by_kind: report
                .records_by_kind
                .iter()
                .map(|(kind, n)| (kind_name(*kind), *n))
                .collect(),
            torn_tail_bytes,
            live: inspector.is_live(),
        };
        serde_json::to_writer_pretty(&mut *out, &stats).map_err(std::io::Error::from)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "log:       {}", inspector.dir().display())?;
    writeln!(out, "records:   {}", report.records)?;
    writeln!(out, "lsn:       {}..{}", report.first_lsn, report.next_lsn)?;
    writeln!(
        out,
        "size:      {} in {} segments",
        format_bytes(report.bytes),
        report.segments
    )?;
    writeln!(
        out,
        "tail:      {}",
        if inspector.is_live() {
            "live (an application is writing; the view ends at its last complete record)".to_owned()
        } else if torn_tail_bytes == 0 {
            "clean".to_owned()
        } else {
            format!("torn, {torn_tail_bytes} bytes to cut on next open")
        }
    )?;
    writeln!(out)?;
    let mut kinds = Table::new(&["KIND", "RECORDS"]);
    for (kind, n) in &report.records_by_kind {
        kinds.row(vec![kind_name(*kind), n.to_string()]);
    }
    kinds.print(out)?;
    writeln!(out)?;
    let mut table = Table::new(&["SEGMENT", "FIRST LSN", "SIZE"]);
    for s in segments {
        table.row(vec![s.file, s.first_lsn.to_string(), format_bytes(s.bytes)]);
    }
    table.print(out)?;
    Ok(())
}

/// On stderr: a live view is one, and a torn tail is what a crash leaves,
/// not corruption.
fn note_tail(inspector: &WalInspector) {
    if inspector.is_live() {
        let _ = writeln!(
            std::io::stderr(),
            "note: {} is open in a running application; this is a live view of its \
             complete records as they were at the start of the command",
            inspector.dir().display()
        );
    }
    if let LogTail::Torn {
        segment,
        offset,
        len,
    } = inspector.tail()
    {
        let _ = writeln!(
            std::io::stderr(),
            "note: {} ends in a torn write at offset {offset} ({len} bytes), \
             left by a crash; the next open of the log cuts it",
            segment.display()
        );
    }
}

/// `put_operation`, `custom_7`: a record kind for people and scripts.
fn kind_name(kind: RecordType) -> String {
    match kind {
        RecordType::PutOperation => "put_operation".into(),
        RecordType::MarkInFlight => "mark_in_flight".into(),
        RecordType::MarkDone => "mark_done".into(),
        RecordType::MarkFailed => "mark_failed".into(),
        RecordType::MarkPending => "mark_pending".into(),
        RecordType::Remove => "remove".into(),
        RecordType::Checkpoint => "checkpoint".into(),
        RecordType::Custom(n) => format!("custom_{n}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(text, "{b:02x}");
    }
    text
}
