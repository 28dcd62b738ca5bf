//! A PostgreSQL server of the test's own: `initdb` and `pg_ctl` in a
//! directory of the test's, listening on loopback only. As root it runs as
//! the `postgres` user (PostgreSQL refuses root). `cargo xtask ci` installs
//! the server binaries when they are missing; without them this says what
//! to install (never a silent skip).

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A running PostgreSQL cluster; stopped (immediately) when dropped.
#[derive(Debug)]
pub struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    run_as: Option<String>,
    /// The directory [`start`](Self::start) made, removed on drop.
    dir: Option<tempfile::TempDir>,
}

impl Cluster {
    /// Makes a cluster in a temporary directory of its own and starts it.
    ///
    /// # Errors
    ///
    /// As [`start_in`](Self::start_in).
    pub fn start() -> Result<Self, Error> {
        let dir = tempfile::tempdir()?;
        // PostgreSQL runs as its own user when we are root: it must reach
        // its directory below this one.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        let mut cluster = Self::start_in(dir.path())?;
        cluster.dir = Some(dir);
        Ok(cluster)
    }

    /// Makes a cluster in `dir/pg` and starts it on a free loopback port.
    ///
    /// # Errors
    ///
    /// No server binaries; `initdb` or `pg_ctl` failing (with what they
    /// said); root without a `postgres` user.
    pub fn start_in(dir: &Path) -> Result<Self, Error> {
        let bin = find_bin()?;
        let home = dir.join("pg");
        std::fs::create_dir_all(&home)?;
        let run_as = if std::fs::metadata("/proc/self")?.uid() == 0 {
            let uid = user_id("postgres")
                .ok_or("running as root, and there is no `postgres` user to run PostgreSQL as")?;
            std::os::unix::fs::chown(&home, Some(uid), None)?;
            Some("postgres".to_owned())
        } else {
            None
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let cluster = Self {
            bin,
            data: home.join("data"),
            port,
            run_as,
            dir: None,
        };
        let data = cluster.data.display().to_string();
        cluster.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=100",
            home.display()
        );
        let log = home.join("postgres.log").display().to_string();
        cluster.run(
            "pg_ctl",
            &["-D", &data, "-o", &options, "-l", &log, "-w", "start"],
        )?;
        Ok(cluster)
    }

    /// Its port on 127.0.0.1.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection string to it, on loopback.
    #[must_use]
    pub fn connection_string(&self) -> String {
        Self::connection_string_at("127.0.0.1", self.port)
    }

    /// A connection string to it at `host:port` (a proxy's in front of it).
    #[must_use]
    pub fn connection_string_at(host: &str, port: u16) -> String {
        format!("host={host} port={port} user=postgres dbname=postgres connect_timeout=3")
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<(), Error> {
        let exe = self.bin.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let output = command.args(args).output()?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} failed: {}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
            .into())
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data.display().to_string();
        let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "stop"]);
    }
}

/// Where the server binaries are: Debian's versioned dirs (newest first),
/// then `PATH`.
fn find_bin() -> Result<PathBuf, Error> {
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    debian.sort();
    debian.reverse();
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    debian
        .into_iter()
        .chain(on_path)
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
        .ok_or_else(|| {
            "PostgreSQL's server binaries (initdb, pg_ctl) were not found; install them with \
             `apt-get install -y postgresql` (cargo xtask ci does this when it runs as root)"
                .into()
        })
}

fn user_id(name: &str) -> Option<u32> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next() == Some(name))
            .then(|| fields.nth(1).and_then(|uid| uid.parse().ok()))
            .flatten()
    })
}
