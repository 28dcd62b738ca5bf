//! `sync-chaos`: the chaos harness's one binary (issue 28,
//! `docs/RELIABILITY.md`).
//!
//! - `sync-chaos run [--seconds N] [--seed S] [--devices N] [--broken]
//!   [--dir D] [--keep]`: a whole run; prints the figures and the checker's
//!   verdict; on a failure keeps the run's directory and prints the command
//!   that replays the seed. `cargo xtask chaos` calls this.
//! - `sync-chaos server ...` and `sync-chaos device ...`: what `run` starts
//!   on each host.

#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool"
)]

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use sync_chaos::device::{Device, DeviceConfig, StoreKind};
use sync_chaos::run::{Rng, RunConfig};
use sync_chaos::server::{self, Options, ServerDb};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = args
        .split_first()
        .map_or(("", &[][..]), |(c, r)| (c.as_str(), r));
    let flags = match Flags::parse(rest) {
        Ok(flags) => flags,
        Err(e) => {
            eprintln!("sync-chaos: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match command {
        "run" => run(&flags),
        "server" => serve(&flags),
        "device" => device(&flags),
        _ => {
            eprintln!(
                "usage: sync-chaos run [--seconds N] [--seed S] [--devices N] [--broken] \
                 [--dir D] [--keep]"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sync-chaos {command}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--name value` pairs and bare `--switch`es.
struct Flags(HashMap<String, Option<String>>);

impl Flags {
    fn parse(args: &[String]) -> Result<Self, Error> {
        let mut flags = HashMap::new();
        let mut args = args.iter().peekable();
        while let Some(arg) = args.next() {
            let name = arg
                .strip_prefix("--")
                .ok_or_else(|| format!("expected a --flag, got {arg:?}"))?;
            let value = args.next_if(|next| !next.starts_with("--")).cloned();
            flags.insert(name.to_owned(), value);
        }
        Ok(Self(flags))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Option::as_deref)
    }

    fn need(&self, name: &str) -> Result<&str, Error> {
        self.get(name)
            .ok_or_else(|| format!("--{name} is needed").into())
    }

    fn number<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, Error> {
        self.get(name).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| format!("--{name} {v:?} is not a number").into())
        })
    }

    fn switch(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

fn run(flags: &Flags) -> Result<ExitCode, Error> {
    let seconds = flags.number("seconds", 60)?;
    let seed = match flags.get("seed") {
        Some(_) => flags.number("seed", 0)?,
        None => {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos()
                .try_into()
                .unwrap_or(1_u64)
                % 1_000_000_007
        }
    };
    let devices = flags.number("devices", 6)?;
    let broken = flags.switch("broken");
    let dir = flags.get("dir").map_or_else(
        || std::env::temp_dir().join(format!("sync-chaos-{seed}")),
        PathBuf::from,
    );
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let config = RunConfig {
        seconds,
        seed,
        devices,
        broken,
        dir: dir.clone(),
        exe: std::env::current_exe()?,
    };
    let replay = format!(
        "cargo xtask chaos --seconds {seconds} --seed {seed} --devices {devices}{}",
        if broken { " --broken" } else { "" }
    );
    println!(
        "chaos: {devices} devices, 2 servers, PostgreSQL, {seconds} s of faults, seed {seed}{}",
        if broken { ", the BROKEN server" } else { "" }
    );
    match sync_chaos::run::run(&config) {
        Ok(report) => {
            println!("{report}");
            if report.verdict.passed() {
                if !flags.switch("keep") {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                Ok(ExitCode::SUCCESS)
            } else {
                println!("chaos: FAILED; the run is kept in {}", dir.display());
                println!("chaos: replay the seed with: {replay}");
                Ok(ExitCode::FAILURE)
            }
        }
        Err(e) => {
            println!("chaos: the run could not finish: {e}");
            println!("chaos: the run is kept in {}", dir.display());
            println!("chaos: replay the seed with: {replay}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// A server on its host, until killed. Its database may be unreachable
/// when it starts (a cut link): it tries again until it is not.
fn serve(flags: &Flags) -> Result<ExitCode, Error> {
    let listen: SocketAddr = flags.need("listen")?.parse()?;
    let conn = flags.need("postgres")?.to_owned();
    let options = Options {
        deliveries: flags.get("deliveries").map(PathBuf::from),
        broken: flags.switch("broken"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let _server = loop {
            let start =
                server::start_with(listen, ServerDb::Postgres(conn.clone()), options.clone());
            match tokio::time::timeout(Duration::from_secs(10), start).await {
                Ok(Ok(server)) => break server,
                Ok(Err(e)) => eprintln!("server: not started yet: {e}"),
                Err(_) => eprintln!("server: not started yet: timed out"),
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        eprintln!("server: listening on {listen}");
        std::future::pending::<()>().await;
    });
    Ok(ExitCode::SUCCESS)
}

/// A device on its host: edits at random until the harness says drain,
/// drains, waits for the word to pull to the end, then writes its data and
/// exits.
fn device(flags: &Flags) -> Result<ExitCode, Error> {
    let name = flags.need("name")?.to_owned();
    let control = PathBuf::from(flags.need("control")?);
    let store = match flags.need("store")? {
        "sqlite" => StoreKind::Sqlite,
        "wal" => StoreKind::Wal,
        other => return Err(format!("--store {other:?}: sqlite or wal").into()),
    };
    let scopes: Vec<String> = flags
        .need("scopes")?
        .split(',')
        .map(str::to_owned)
        .collect();
    let entities = flags.number("entities", 5)?;
    let mut device = Device::open(DeviceConfig {
        name: name.clone(),
        db: PathBuf::from(flags.need("db")?),
        store,
        servers: flags
            .need("servers")?
            .split(',')
            .map(str::to_owned)
            .collect(),
        scopes: scopes.clone(),
        entities,
        history: PathBuf::from(flags.need("history")?),
        skew_ms: flags.number("skew-ms", 0)?,
    })?;
    let mut rng = Rng::new(flags.number("seed", 1)?);
    let pid = std::process::id();
    let mut n = 0_u64;
    while !control.join("drain").exists() {
        let scope = &scopes[usize::try_from(rng.below(scopes.len() as u64)).unwrap_or(0)];
        let k = usize::try_from(rng.below(entities as u64)).unwrap_or(0);
        device.edit(scope, k, &format!("{name}-{pid}-{n}"))?;
        n += 1;
        std::thread::sleep(rng.millis(20, 150));
    }
    let started = std::time::Instant::now();
    eprintln!(
        "{name}: {n} edits in this life; draining {} unsent",
        device.unsent()?
    );
    device.drain(Duration::from_secs(240))?;
    eprintln!("{name}: drained in {:?}", started.elapsed());
    std::fs::write(control.join(format!("{name}.drained")), b"")?;
    while !control.join("final").exists() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = std::time::Instant::now();
    device.catch_up(Duration::from_secs(90))?;
    eprintln!("{name}: caught up in {:?}", started.elapsed());
    write_data(&device, &control, &name)?;
    device.stop()?;
    Ok(ExitCode::SUCCESS)
}

/// `scope\tid\tvalue` lines, written whole (temp file, rename).
fn write_data(device: &Device, control: &Path, name: &str) -> Result<(), Error> {
    let mut text = Vec::new();
    for ((scope, id), value) in device.data()? {
        writeln!(text, "{scope}\t{id}\t{value}")?;
    }
    let temp = control.join(format!("{name}.data.tmp"));
    std::fs::write(&temp, text)?;
    std::fs::rename(temp, control.join(format!("{name}.data")))?;
    Ok(())
}
