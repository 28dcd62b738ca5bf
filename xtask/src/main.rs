//! `cargo xtask`: every chore of the workspace as one small binary, so CI and a
//! developer run exactly the same commands.
//!
//! - `ci`: tidy, fmt check, clippy (all features) with `-D warnings`, the
//!   facade's feature subsets, all tests, each library's docs alone with
//!   default, no and all features (warnings denied), benches compiled, and
//!   every publishable crate packaged and built alone (`cargo package`).
//! - `bench [criterion args]`: runs the criterion benches and rewrites the
//!   results table in `docs/benchmarks.md`.
//! - `chaos [--seconds N] [--seed S] [--devices N] [--broken] [--keep]`:
//!   the chaos harness (`chaos/`, `docs/RELIABILITY.md`): devices and two
//!   servers as processes on network namespaces, PostgreSQL, faults from a
//!   seed, and the checker. Needs root (namespaces) and PostgreSQL's server
//!   binaries; `ci` runs 60 seconds of it.
//! - `crash [--rounds N]`: the long crash test.
//! - `docsrs`: the docs as docs.rs builds them (nightly, `--cfg docsrs`).
//! - `fuzz [--seconds N] [--target NAME]`: libFuzzer on every fuzz target.
//! - `soak [--ops N] [--seconds S] [--sync always|never]`: the soak test
//!   (`crates/sync/tests/soak.rs`), long, in release mode.
//! - `ci` also makes sure PostgreSQL's server binaries are there for
//!   `sync-server`'s end-to-end test: it installs Debian's `postgresql`
//!   when they are missing and it runs as root, and otherwise stops with the
//!   command to run.
//! - `tidy`: the house rules a machine can check (also run by `cargo test`).

#![expect(clippy::print_stdout, reason = "a command-line tool reports on stdout")]

mod bench;
mod fuzz;
mod postgres;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

type Error = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("bench") => bench::run(args.get(1..).unwrap_or_default()),
        Some("chaos") => chaos(args.get(1..).unwrap_or_default()),
        Some("crash") => crash(args.get(1..).unwrap_or_default()),
        Some("docsrs") => docsrs(),
        Some("fuzz") => fuzz::run_fuzz(args.get(1..).unwrap_or_default()),
        Some("soak") => soak(args.get(1..).unwrap_or_default()),
        Some("tidy") => tidy::check(&root()).map(|()| println!("tidy: ok")),
        _ => {
            println!(
                "usage: cargo xtask <ci | bench [criterion args] | chaos [--seconds N] [--seed S] | \
                 crash [--rounds N] | docsrs | \
                 fuzz [--seconds N] [--target NAME] | soak [--ops N] [--seconds S] | tidy>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: the parent of this crate's manifest directory.
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// A `cargo` command at the workspace root, using the cargo that runs us.
pub(crate) fn cargo(args: &[&str]) -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.args(args).current_dir(root());
    command
}

/// Every file below `roots`, not descending into directories named in `skip`.
pub(crate) fn walk(roots: Vec<PathBuf>, skip: &[&str]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = roots;
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for path in entries.filter_map(Result::ok).map(|e| e.path()) {
            if !path.is_dir() {
                files.push(path);
            } else if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_none_or(|n| !skip.contains(&n))
            {
                stack.push(path);
            }
        }
    }
    files.sort();
    files
}

pub(crate) fn run(mut command: Command) -> Result<(), Error> {
    println!("$ {command:?}");
    let status = command.status()?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed: {status}").into())
    }
}

fn ci() -> Result<(), Error> {
    let started = std::time::Instant::now();
    tidy::check(&root())?;
    run(cargo(&["fmt", "--all", "--", "--check"]))?;
    run(cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The facade with no layer, and with each layer alone, must build too.
    for features in [
        "",
        "wal",
        "protocol",
        "outbox",
        "store",
        "sqlite",
        "engine",
        "http",
        "tokio",
        "http-async",
        "metrics",
        "server",
        "server-postgres",
    ] {
        run(cargo(&[
            "check",
            "--quiet",
            "--package",
            "sync",
            "--no-default-features",
            "--features",
            features,
        ]))?;
    }
    postgres::ensure_server_binaries()?;
    run(cargo(&["test", "--workspace"]))?;
    // The encrypted SQLite store (SQLCipher, OpenSSL compiled in): the
    // store's tests again on that build, the encryption tests with them,
    // and synctl's `--key-file`.
    run(cargo(&[
        "test",
        "--package",
        "sync-store-sqlite",
        "--package",
        "sync-cli",
        "--features",
        "sync-store-sqlite/sqlcipher,sync-cli/sqlcipher",
    ]))?;
    // The whole system under faults, briefly: a fresh seed each run (it is
    // printed, with the command that replays it, on a failure).
    chaos(&["--seconds".to_owned(), "60".to_owned()])?;
    docs()?;
    // Only the bench package: `--workspace` would also build every crate's
    // unit and integration tests in release mode (they are `bench = true` by
    // default), which doubled the cold CI time for nothing.
    run(cargo(&["bench", "--package", "sync-benches", "--no-run"]))?;
    package()?;
    println!("xtask ci: all steps passed in {:.0?}", started.elapsed());
    Ok(())
}

/// Packages every publishable crate as `cargo publish` would, and builds
/// each package alone (workspace dependencies taken from the packages just
/// made, not from paths): metadata, readme, license and dependency versions
/// are checked before any release.
fn package() -> Result<(), Error> {
    forget_packaged_sources()?;
    let mut command = cargo(&["package", "--workspace", "--allow-dirty", "--quiet"]);
    for unpublished in [
        "sync-benches",
        "sync-chaos",
        "sync-examples",
        "sync-fuzz",
        "sync-testkit",
        "xtask",
    ] {
        command.args(["--exclude", unpublished]);
    }
    run(command)
}

/// Makes the next `cargo package` verify the code as it is now. Cargo
/// unpacks each packaged crate into a local registry
/// (`$CARGO_HOME/registry/src/-<hash>/<crate>-<version>`) once per name and
/// version, and builds it in `target/debug` as a registry crate, with the
/// tarball's old timestamps: after a change to a lower crate (same version,
/// new code) the next verification built its dependents against the old
/// source and failed with "unresolved import" for everything added since.
/// So: the unpacked sources of this workspace's crates under local
/// registries (directory names starting with `-`; crates.io's start with
/// its host) are removed, and so is every build of them from such a source
/// (found by its `.d` file naming the local registry), so both are made
/// again. Path builds (the tests') are left alone.
fn forget_packaged_sources() -> Result<(), Error> {
    let ours = |name: &str, separator: &str| {
        LIBRARY_CRATES
            .iter()
            .chain(&["sync-cli"])
            .find_map(|krate| {
                let krate = if separator == "_" {
                    krate.replace('-', "_")
                } else {
                    (*krate).to_owned()
                };
                name.strip_prefix(krate.as_str())
                    .and_then(|rest| rest.strip_prefix('-'))
                    .filter(|rest| rest.starts_with(|c: char| c.is_ascii_alphanumeric()))
                    .map(|rest| (krate.replace('_', "-"), rest.to_owned()))
            })
    };
    let home = std::env::var_os("CARGO_HOME").map_or_else(
        || std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")),
        |h| Some(PathBuf::from(h)),
    );
    if let Some(Ok(registries)) = home.map(|h| std::fs::read_dir(h.join("registry").join("src"))) {
        for registry in registries.flatten() {
            if !registry.file_name().to_string_lossy().starts_with('-') {
                continue;
            }
            for unpacked in std::fs::read_dir(registry.path())?.flatten() {
                let name = unpacked.file_name().to_string_lossy().into_owned();
                if ours(&name, "-")
                    .is_some_and(|(_, v)| v.starts_with(|c: char| c.is_ascii_digit()))
                {
                    std::fs::remove_dir_all(unpacked.path())?;
                }
            }
        }
    }
    let debug = root().join("target").join("debug");
    let Ok(deps) = std::fs::read_dir(debug.join("deps")) else {
        return Ok(());
    };
    for dep in deps.flatten() {
        let name = dep.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".d") else {
            continue;
        };
        let Some((krate, hash)) = ours(stem, "_") else {
            continue;
        };
        if std::fs::read_to_string(dep.path()).is_ok_and(|d| d.contains("registry/src/-")) {
            let fingerprint = debug.join(".fingerprint").join(format!("{krate}-{hash}"));
            if fingerprint.exists() {
                std::fs::remove_dir_all(fingerprint)?;
            }
            std::fs::remove_file(dep.path())?;
        }
    }
    Ok(())
}

/// The library crates docs.rs documents, each on its own.
const LIBRARY_CRATES: [&str; 9] = [
    "sync-wal",
    "sync-protocol",
    "sync-outbox",
    "sync-store-file",
    "sync-store-sqlite",
    "sync-engine",
    "sync-transport-http",
    "sync-server",
    "sync",
];

/// Builds every library crate's docs alone, as docs.rs does (no feature
/// unification with the rest of the workspace), with its default features,
/// with none and with all, warnings denied: a link to an item that a feature
/// turns off fails here, not on publication.
fn docs() -> Result<(), Error> {
    for package in LIBRARY_CRATES {
        for features in [None, Some("--no-default-features"), Some("--all-features")] {
            let mut doc = cargo(&["doc", "--quiet", "--no-deps", "--package", package]);
            doc.args(features);
            doc.env("RUSTDOCFLAGS", "-D warnings");
            run(doc)?;
        }
    }
    Ok(())
}

/// The docs exactly as docs.rs builds them: nightly, all features, `--cfg
/// docsrs` (which marks feature-gated items). Needs a nightly toolchain, so
/// it is not part of `ci`.
fn docsrs() -> Result<(), Error> {
    for package in LIBRARY_CRATES {
        let mut doc = Command::new("cargo");
        doc.args(["+nightly", "doc", "--quiet", "--no-deps", "--all-features"])
            .args(["--package", package])
            .current_dir(root())
            .env("RUSTDOCFLAGS", "--cfg docsrs -D warnings");
        run(doc)?;
    }
    Ok(())
}

/// `sync-chaos run` with `args`, built as the tests are (debug).
fn chaos(args: &[String]) -> Result<(), Error> {
    postgres::ensure_server_binaries()?;
    let mut command = cargo(&["run", "--quiet", "--package", "sync-chaos", "--", "run"]);
    command.args(args);
    run(command)
}

fn crash(args: &[String]) -> Result<(), Error> {
    let rounds = match args {
        [] => "1000".to_owned(),
        [flag, n] if flag == "--rounds" => n.clone(),
        _ => return Err("usage: cargo xtask crash [--rounds N]".into()),
    };
    let mut command = cargo(&["test", "--release", "--workspace", "--test", "crash"]);
    command.env("SYNC_CRASH_ROUNDS", rounds);
    run(command)
}

fn soak(args: &[String]) -> Result<(), Error> {
    let mut command = cargo(&["test", "--release", "--package", "sync", "--test", "soak"]);
    command
        .env("SYNC_SOAK_OPS", "100000")
        .env("SYNC_SOAK_SECONDS", "60");
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let variable = match flag.as_str() {
            "--ops" => "SYNC_SOAK_OPS",
            "--seconds" => "SYNC_SOAK_SECONDS",
            "--sync" => "SYNC_SOAK_SYNC",
            "--seed" => "SYNC_SOAK_SEED",
            _ => {
                return Err("usage: cargo xtask soak [--ops N] [--seconds S] \
                            [--sync always|never] [--seed N]"
                    .into());
            }
        };
        let value = rest.next().ok_or("a flag without its value")?;
        command.env(variable, value);
    }
    // The harness-less test prints its report; show it.
    command.arg("--").arg("--nocapture");
    run(command)
}
