//! Integration tests of `synctl`: the real binary, run against logs and
//! stores made by the libraries in each test.

mod download;
#[cfg(feature = "sqlcipher")]
mod encrypted;
mod encrypted_files;
mod outbox;
mod wal;

use std::path::Path;
use std::process::{Command, Output};

pub(crate) type TestResult = Result<(), Box<dyn std::error::Error>>;

/// What one run of `synctl` did.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs `synctl` with `args` and waits for it.
/// Runs `synctl`; a run refused as "locked" is tried again, a few times.
///
/// Why: the tests of this binary run in parallel threads, and a child process
/// started by one holds a copy of every open file descriptor of this process
/// (another test's store lock among them) from its fork until its exec, so a
/// lock just released can look held for a moment. Use [`synctl_once`] where
/// the lock is expected.
pub(crate) fn synctl(args: &[&str]) -> Result<Run, std::io::Error> {
    let mut run = synctl_once(args)?;
    for _ in 0..20 {
        if !(run.code == Some(3) && run.stderr.contains(" is in use by ")) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        run = synctl_once(args)?;
    }
    Ok(run)
}

/// Runs `synctl` once.
pub(crate) fn synctl_once(args: &[&str]) -> Result<Run, std::io::Error> {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_synctl"))
        .args(args)
        .output()?;
    Ok(Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

pub(crate) fn arg(path: &Path) -> &str {
    path.to_str().unwrap_or_default()
}

/// Every file under `dir` with its bytes, to prove a read changed nothing.
pub(crate) fn files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, std::io::Error> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((path.display().to_string(), std::fs::read(&path)?));
            }
        }
    }
    out.sort();
    Ok(out)
}

#[test]
fn every_command_has_help_and_bad_usage_exits_2() -> TestResult {
    for command in [
        &["--help"][..],
        &["wal", "dump", "--help"],
        &["wal", "verify", "--help"],
        &["wal", "stats", "--help"],
        &["outbox", "list", "--help"],
        &["outbox", "show", "--help"],
        &["outbox", "stats", "--help"],
        &["outbox", "retry", "--help"],
        &["outbox", "discard", "--help"],
        &["outbox", "purge-done", "--help"],
        &["download", "show", "--help"],
    ] {
        let run = synctl(command)?;
        assert_eq!(run.code, Some(0), "{command:?}: {run:?}");
        assert!(run.stdout.contains("Usage: synctl"), "{command:?}");
        assert!(run.stdout.contains("Exit codes"), "{command:?}");
    }
    for bad in [
        &["wal"][..],
        &["outbox", "list"],
        &["outbox", "purge-done", "x.json", "--older-than", "7 days"],
        &["outbox", "list", "x.json", "--status", "lost"],
    ] {
        assert_eq!(synctl(bad)?.code, Some(2), "{bad:?}");
    }
    Ok(())
}
