//! `synctl`: looks inside the write-ahead logs and outbox stores of `sync`,
//! and repairs what an operator may repair (retry, discard, purge); shows
//! where a device's download stands.
//!
//! Read commands open stores read-only under a shared lock and change
//! nothing; write commands take the store's exclusive lock. Either fails
//! with a clear message while an application holds the store.

mod cli;
mod download_cmd;
mod outbox_cmd;
mod output;
mod units;
mod wal_cmd;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::output::Failure;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = match cli.command {
        Command::Wal(command) => wal_cmd::run(command, &mut out),
        Command::Outbox(command) => outbox_cmd::run(command, &mut out),
        Command::Download(command) => download_cmd::run(command, &mut out),
    };
    let _ = out.flush();
    match result {
        // The reader going away (`synctl ... | head`) is not an error.
        Ok(()) | Err(Failure::BrokenPipe) => ExitCode::SUCCESS,
        Err(failure) => {
            let _ = writeln!(std::io::stderr(), "synctl: {failure}");
            ExitCode::from(failure.exit_code())
        }
    }
}
