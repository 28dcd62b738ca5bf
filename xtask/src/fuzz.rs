//! `cargo xtask fuzz [--seconds N] [--target NAME]`: coverage-guided fuzzing
//! of the targets in `fuzz/` with libFuzzer, on the stable toolchain.
//!
//! The binaries in `fuzz/libfuzzer` are built with the coverage flags
//! `cargo fuzz` would pass (sanitizer coverage via `-Cpasses=sancov-module`,
//! no address sanitizer, which needs nightly) and `--target <host>`, so build
//! scripts and proc macros are not instrumented. Each target runs on a
//! working copy of its committed corpus in `target/fuzz/corpus/<target>`;
//! a crash lands in `target/fuzz/artifacts/<target>/` and fails the command.

use std::path::Path;
use std::process::Command;

use crate::{Error, root, run};

/// Every target in `fuzz/src/lib.rs`, each a binary of `fuzz/libfuzzer`.
const TARGETS: [&str; 6] = [
    "wal_frames",
    "wal_log",
    "snapshot",
    "json_store",
    "sealed_json_store",
    "sealed_wal_store",
];

/// Flags that make rustc emit the coverage instrumentation libFuzzer reads.
const COVERAGE_FLAGS: &str = "-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    --cfg fuzzing -Cdebug-assertions -Coverflow-checks";

pub(crate) fn run_fuzz(args: &[String]) -> Result<(), Error> {
    let mut seconds = 60u64;
    let mut only: Option<String> = None;
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        match (flag.as_str(), rest.next()) {
            ("--seconds", Some(n)) => seconds = n.parse()?,
            ("--target", Some(t)) if TARGETS.contains(&t.as_str()) => only = Some(t.clone()),
            _ => {
                return Err(format!(
                    "usage: cargo xtask fuzz [--seconds N] [--target {}]",
                    TARGETS.join("|")
                )
                .into());
            }
        }
    }
    let root = root();
    let host = host_triple()?;
    let target_dir = root.join("target/fuzz");
    let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    build
        .args(["build", "--release", "--target", &host, "--target-dir"])
        .arg(&target_dir)
        .current_dir(root.join("fuzz/libfuzzer"))
        .env("RUSTFLAGS", COVERAGE_FLAGS);
    run(build)?;

    let mut failures = Vec::new();
    for target in TARGETS
        .iter()
        .filter(|t| only.as_deref().is_none_or(|o| o == **t))
    {
        let corpus = target_dir.join("corpus").join(target);
        let artifacts = target_dir.join("artifacts").join(target);
        std::fs::create_dir_all(&corpus)?;
        std::fs::create_dir_all(&artifacts)?;
        copy_dir(&root.join("fuzz/corpus").join(target), &corpus)?;
        let mut fuzz = Command::new(target_dir.join(&host).join("release").join(target));
        fuzz.arg(format!("-max_total_time={seconds}"))
            .arg("-print_final_stats=1")
            .arg("-max_len=8192")
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg(&corpus);
        println!("\n== {target}: {seconds} s ==");
        if let Err(e) = run(fuzz) {
            failures.push(format!(
                "{target}: {e}\n  the input is in {}; copy it to fuzz/regressions/{target}/ \
                 so `cargo test -p sync-fuzz` keeps it fixed",
                artifacts.display()
            ));
        }
    }
    if failures.is_empty() {
        println!("\nxtask fuzz: no target failed");
        Ok(())
    } else {
        Err(failures.join("\n").into())
    }
}

fn host_triple() -> Result<String, Error> {
    let output = Command::new("rustc").arg("-vV").output()?;
    String::from_utf8(output.stdout)?
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .ok_or_else(|| "rustc -vV printed no host".into())
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), Error> {
    for entry in std::fs::read_dir(from)? {
        let path = entry?.path();
        if let Some(name) = path.file_name() {
            std::fs::copy(&path, to.join(name))?;
        }
    }
    Ok(())
}
