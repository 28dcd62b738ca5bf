//! `synctl download show`: where a device's download stands, read without
//! changing anything (an SQLite read transaction, or one read of the state
//! file, which the app replaces atomically).

use std::io::Write;
use std::path::Path;

use sync_outbox::download::{ChangeOp, DownloadState};
use sync_store_file::FileDownloadState;
use sync_store_sqlite::SqliteOutboxStore;

use crate::cli::DownloadCommand;
use crate::outbox_cmd::is_sqlite;
use crate::output::{Failure, Table};

pub(crate) fn run(command: DownloadCommand, out: &mut dyn Write) -> Result<(), Failure> {
    match command {
        DownloadCommand::Show { path, json } => show(&path, json, out),
    }
}

fn read(path: &Path) -> Result<DownloadState, Failure> {
    if !path.is_file() {
        // A missing state file reads as "nothing pulled yet" to the app;
        // here it is more likely a wrong path.
        return Err(Failure::Failed(format!(
            "no download state at {}: expected an SQLite database or a download state file",
            path.display()
        )));
    }
    Ok(if is_sqlite(path) {
        SqliteOutboxStore::download_state_read_only(path)?
    } else {
        FileDownloadState::read_only(path)?
    })
}

fn show(path: &Path, json: bool, out: &mut dyn Write) -> Result<(), Failure> {
    let state = read(path)?;
    if json {
        serde_json::to_writer_pretty(&mut *out, &state).map_err(std::io::Error::from)?;
        writeln!(out)?;
        return Ok(());
    }
    let Some(cursor) = &state.cursor else {
        writeln!(out, "nothing pulled yet: the first pull starts a snapshot")?;
        return Ok(());
    };
    let fields = [
        ("cursor", cursor.clone()),
        (
            "covers below",
            format!(
                "{} (every change below this version is pulled)",
                state.covers_below
            ),
        ),
        ("last version", state.last_version.to_string()),
        (
            "snapshot",
            if state.in_snapshot {
                "in progress (more snapshot pages to pull)".into()
            } else {
                "complete".into()
            },
        ),
        ("held", state.held.len().to_string()),
        ("to verify", state.verify.join(", ")),
    ];
    for (name, value) in fields {
        writeln!(out, "{:<13} {value}", format!("{name}:"))?;
    }
    if state.held.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    let mut table = Table::new(&["WAITS FOR", "SCOPE", "ENTITY", "ID", "VERSION", "CHANGE"]);
    for held in &state.held {
        let change = &held.change;
        table.row(vec![
            held.ordering_key.clone(),
            change.scope.clone(),
            change.entity.clone(),
            change.id.clone(),
            change.version.to_string(),
            match change.op {
                ChangeOp::Upsert { .. } => "upsert".into(),
                ChangeOp::Delete => "delete".into(),
            },
        ]);
    }
    table.print(out)?;
    Ok(())
}
