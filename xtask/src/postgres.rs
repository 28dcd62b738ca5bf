//! PostgreSQL for `sync-server`'s end-to-end test: the test starts its own
//! server with `initdb` and `pg_ctl`, so CI needs the server binaries. They
//! are installed from Debian's packages when missing and we are root;
//! otherwise `ci` stops with the one command to run. Never a silent skip.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, run};

/// Where `initdb` and `pg_ctl` are, as the test looks for them.
fn server_binaries() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    dirs.extend(
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default(),
    );
    dirs.into_iter()
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// Makes sure the server binaries are there, installing them if we can.
pub(crate) fn ensure_server_binaries() -> Result<(), Error> {
    if let Some(dir) = server_binaries() {
        println!("postgres: server binaries in {}", dir.display());
        return Ok(());
    }
    let install = "apt-get update && apt-get install -y --no-install-recommends postgresql";
    if !is_root() || !Path::new("/usr/bin/apt-get").exists() {
        return Err(format!(
            "sync-server's end-to-end test needs PostgreSQL's server binaries (initdb, pg_ctl); \
             install them, for example with `sudo sh -c '{install}'`, and run again"
        )
        .into());
    }
    println!("postgres: server binaries missing; installing Debian's postgresql");
    let mut update = Command::new("apt-get");
    update.arg("update");
    run(update)?;
    let mut apt = Command::new("apt-get");
    apt.args(["install", "-y", "--no-install-recommends", "postgresql"])
        .env("DEBIAN_FRONTEND", "noninteractive");
    run(apt)?;
    match server_binaries() {
        Some(dir) => {
            println!("postgres: installed in {}", dir.display());
            Ok(())
        }
        None => Err(format!(
            "installed postgresql, but initdb and pg_ctl are still missing ({install})"
        )
        .into()),
    }
}
