//! A whole chaos run: the lab, PostgreSQL, two servers and the devices as
//! processes on their hosts, a fault schedule from a seed, the heal, the
//! drain, and the checker's verdict with the run's figures.
//!
//! The topology: every host is a network namespace ([`Lab`]); the harness's
//! namespace is the gateway, and every link goes through a [`FaultProxy`]
//! there: one per (device, server) pair, and one per server in front of the
//! database (PostgreSQL listens on the harness's loopback only). The
//! servers share nothing but the database: no balancer, each device lists
//! both (its own first) and fails over.
//!
//! The schedule: every 0.2–1.2 s the seeded generator picks one fault:
//! a device link's latency, jitter, resets mid-request or mid-answer,
//! answers held past the client's timeout, a bandwidth cap; a device cut off
//! at its link; a server cut off from the database, or its database link
//! resetting connections; a server cut off from every device; a device or a
//! server killed (`SIGKILL`) and restarted a little later, a restarted device with
//! its clock skewed by up to five minutes either way. Each fault heals by
//! itself after a few seconds. The schedule (which fault, where, for how
//! long) replays from the seed; what the processes do meanwhile depends on
//! timing, as on a real network.
//!
//! At the end every fault heals, devices stop editing and drain their
//! queues, then pull to the end of the feed and write their data; the
//! servers' tables are read, and [`check`] judges the recorded history.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::history::{EntityKey, Event, FinalState, Verdict, check, parse_history};
use crate::lab::Lab;
use crate::proxy::{FaultCounts, FaultProxy, Faults};
use sync_testkit::postgres::Cluster;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The port every server listens on, on its host.
const SERVER_PORT: u16 = 8080;
/// Entities per scope the devices edit.
const ENTITIES: usize = 5;
/// The two servers.
const SERVERS: usize = 2;

/// What to run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// How long the faults go on.
    pub seconds: u64,
    /// The fault schedule's seed.
    pub seed: u64,
    /// Device processes (half on SQLite, half on the WAL store).
    pub devices: usize,
    /// Run the deliberately broken server (the effect outside the key's
    /// transaction): the checker must fail the run.
    pub broken: bool,
    /// The run's directory: databases, history, logs. Kept on failure.
    pub dir: PathBuf,
    /// The `sync-chaos` binary, run as each device and server.
    pub exe: PathBuf,
}

/// Faults injected, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultTally {
    /// Scheduled faults by kind (partitions, cuts, kills, ...).
    pub scheduled: BTreeMap<&'static str, u64>,
    /// What the device links' proxies did.
    pub device_links: FaultCounts,
    /// What the database links' proxies did.
    pub database_links: FaultCounts,
}

/// What a run did and what the checker found.
#[derive(Clone, Debug)]
pub struct Report {
    /// The checker's verdict (operations, effects, problems).
    pub verdict: Verdict,
    /// Faults injected.
    pub faults: FaultTally,
    /// `PUT`s that reached a server.
    pub deliveries: usize,
    /// Of those, repeats of a key already delivered.
    pub duplicates: usize,
    /// From the heal until every device had drained and caught up.
    pub converged_in: Duration,
    /// Device lives (starts and restarts) with a skewed clock.
    pub skewed_lives: u64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = &self.verdict;
        writeln!(
            f,
            "operations: {} acknowledged, {} indeterminate (device killed inside the enqueue), {} effects on the server",
            v.acknowledged, v.indeterminate, v.effects
        )?;
        writeln!(
            f,
            "deliveries: {} PUTs reached a server, {} of them duplicates (absorbed: {})",
            self.deliveries,
            self.duplicates,
            if v.passed() { "all" } else { "see problems" }
        )?;
        writeln!(f, "pulled changes applied on devices: {}", v.pulled)?;
        let scheduled: Vec<String> = self
            .faults
            .scheduled
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        writeln!(f, "faults scheduled: {}", scheduled.join(", "))?;
        writeln!(f, "device lives with a skewed clock: {}", self.skewed_lives)?;
        let (d, db) = (&self.faults.device_links, &self.faults.database_links);
        writeln!(
            f,
            "device links: {} connections, {} reset mid-request, {} reset mid-answer, {} answers held past the timeout, {} blackholed",
            d.connections, d.resets_mid_request, d.resets_mid_answer, d.held_answers, d.blackholed
        )?;
        writeln!(
            f,
            "database links: {} connections, {} reset mid-request, {} reset mid-answer, {} blackholed",
            db.connections, db.resets_mid_request, db.resets_mid_answer, db.blackholed
        )?;
        writeln!(
            f,
            "converged {:.1} s after the faults healed",
            self.converged_in.as_secs_f64()
        )?;
        if v.passed() {
            write!(f, "checker: every promise held")
        } else {
            writeln!(
                f,
                "checker: {} broken promises, first ones:",
                v.problems.len()
            )?;
            for problem in v.problems.iter().take(20) {
                writeln!(f, "  {problem:?}")?;
            }
            Ok(())
        }
    }
}

/// A seeded xorshift: the schedule's only source of choices.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64().checked_rem(n).unwrap_or(0)
    }

    /// A duration between `low` and `high` milliseconds.
    pub fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.below(high.saturating_sub(low) + 1))
    }

    /// A chance in `0.0..1.0`.
    pub fn chance(&mut self) -> f64 {
        #[expect(clippy::cast_precision_loss, reason = "a probability")]
        let f = self.below(1_000_000) as f64 / 1_000_000.0;
        f
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Server(usize),
    Device(usize),
}

/// One process of the run, alive or waiting to be restarted.
struct Proc {
    role: Role,
    host: String,
    child: Option<Child>,
}

/// A fault's end, due at a time.
#[derive(Debug)]
enum Heal {
    Link(String),
    DeviceProxy(usize),
    DatabaseProxy(usize),
    Start(usize),
}

/// The run in progress.
struct Run<'a> {
    config: &'a RunConfig,
    lab: Lab,
    runtime: tokio::runtime::Runtime,
    /// `device_proxies[d * SERVERS + s]`: device `d` to server `s`.
    device_proxies: Vec<FaultProxy>,
    database_proxies: Vec<FaultProxy>,
    procs: Vec<Proc>,
    rng: Rng,
    heals: Vec<(Instant, Heal)>,
    tally: BTreeMap<&'static str, u64>,
    skewed_lives: u64,
    control: PathBuf,
    logs: PathBuf,
}

fn name(role: Role) -> String {
    match role {
        Role::Server(s) => format!("server-{}", s + 1),
        Role::Device(d) => format!("device-{}", d + 1),
    }
}

/// The scopes device `d` edits and may see: everyone's, its team's, its own.
fn scopes(d: usize) -> Vec<String> {
    vec![
        "shared".to_owned(),
        format!("team-{}", d % 2),
        format!("own-{}", d + 1),
    ]
}

/// Runs the whole thing: see the module's docs.
///
/// # Errors
///
/// The lab (not root: [`LabError::NeedsRoot`](crate::LabError::NeedsRoot)),
/// PostgreSQL, a process that died on its own, a device that did not drain
/// or catch up in time. A run whose checker finds problems is `Ok`, with
/// them in the report.
pub fn run(config: &RunConfig) -> Result<Report, Error> {
    std::fs::create_dir_all(&config.dir)?;
    // PostgreSQL runs as its own user when we are root: it must reach its
    // directory below ours.
    std::fs::set_permissions(&config.dir, std::fs::Permissions::from_mode(0o755))?;
    let mut names: Vec<String> = (0..SERVERS).map(|s| name(Role::Server(s))).collect();
    names.extend((0..config.devices).map(|d| name(Role::Device(d))));
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let lab = Lab::create("chaos", 78, &refs)?;
    let cluster = Cluster::start_in(&config.dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let gateway = lab.gateway();
    let mut rng = Rng::new(config.seed);
    let mut database_proxies = Vec::new();
    for _ in 0..SERVERS {
        let upstream = SocketAddr::from((Ipv4Addr::LOCALHOST, cluster.port()));
        database_proxies.push(runtime.block_on(FaultProxy::start(
            SocketAddr::from((gateway, 0)),
            upstream,
            rng.next_u64(),
        ))?);
    }
    let mut device_proxies = Vec::new();
    for _ in 0..config.devices {
        for s in 0..SERVERS {
            let upstream = SocketAddr::from((lab.host(&name(Role::Server(s)))?.addr, SERVER_PORT));
            device_proxies.push(runtime.block_on(FaultProxy::start(
                SocketAddr::from((gateway, 0)),
                upstream,
                rng.next_u64(),
            ))?);
        }
    }
    let control = config.dir.join("control");
    let logs = config.dir.join("logs");
    std::fs::create_dir_all(&control)?;
    std::fs::create_dir_all(&logs)?;
    let mut procs: Vec<Proc> = (0..SERVERS)
        .map(Role::Server)
        .chain((0..config.devices).map(Role::Device))
        .map(|role| Proc {
            role,
            host: name(role),
            child: None,
        })
        .collect();
    procs.sort_by_key(|p| p.host.clone());
    let mut run = Run {
        config,
        lab,
        runtime,
        device_proxies,
        database_proxies,
        procs,
        rng,
        heals: Vec::new(),
        tally: BTreeMap::new(),
        skewed_lives: 0,
        control,
        logs,
    };
    let result = run.go(&cluster);
    run.stop_all();
    result
}

impl Run<'_> {
    fn go(&mut self, cluster: &Cluster) -> Result<Report, Error> {
        for i in 0..self.procs.len() {
            self.start(i)?;
        }
        let end = Instant::now() + Duration::from_secs(self.config.seconds);
        while Instant::now() < end {
            self.heal_due(false)?;
            self.check_alive(false)?;
            std::thread::sleep(self.rng.millis(200, 1_200));
            self.inject()?;
        }
        // Heal everything, restart what is down.
        self.heal_due(true)?;
        for proxy in self.device_proxies.iter().chain(&self.database_proxies) {
            proxy.set(Faults::default());
        }
        for host in self.lab.hosts().to_vec() {
            self.lab.set_connected(&host.name, true)?;
        }
        for i in 0..self.procs.len() {
            if self.procs[i].child.is_none() {
                self.start(i)?;
            }
        }
        let healed = Instant::now();
        // The devices are told to drain once both servers listen again (a
        // server restarted by the heal first reaches its database).
        self.wait_for_servers(Duration::from_secs(60))?;
        std::fs::write(self.control.join("drain"), b"")?;
        self.wait_for("drained", Duration::from_secs(300))?;
        std::fs::write(self.control.join("final"), b"")?;
        self.wait_for("data", Duration::from_secs(120))?;
        let converged_in = healed.elapsed();
        self.stop_all();

        let conn = cluster.connection_string();
        let state = self.runtime.block_on(crate::server::read_postgres(&conn))?;
        let mut history = parse_history(&std::fs::read_to_string(self.config.dir.join("history"))?);
        history.extend(state.effects.into_iter().map(|op| Event::Effect { op }));
        let mut end_state = FinalState {
            server: state.entities,
            ..FinalState::default()
        };
        for d in 0..self.config.devices {
            let device = name(Role::Device(d));
            let data = read_data(&self.control.join(format!("{device}.data")))?;
            end_state.devices.insert(device.clone(), data);
            end_state
                .entitled
                .insert(device, scopes(d).into_iter().collect::<BTreeSet<_>>());
        }
        let verdict = check(&history, &end_state);
        let (deliveries, duplicates) = self.deliveries();
        let sum = |proxies: &[FaultProxy]| {
            proxies.iter().fold(FaultCounts::default(), |mut all, p| {
                let c = p.counts();
                all.connections += c.connections;
                all.resets_mid_request += c.resets_mid_request;
                all.resets_mid_answer += c.resets_mid_answer;
                all.held_answers += c.held_answers;
                all.blackholed += c.blackholed;
                all.bytes_forwarded += c.bytes_forwarded;
                all
            })
        };
        Ok(Report {
            verdict,
            faults: FaultTally {
                scheduled: self.tally.clone(),
                device_links: sum(&self.device_proxies),
                database_links: sum(&self.database_proxies),
            },
            deliveries,
            duplicates,
            converged_in,
            skewed_lives: self.skewed_lives,
        })
    }

    /// Every server's deliveries file: PUTs in all, and repeats of a key.
    fn deliveries(&self) -> (usize, usize) {
        let mut all = 0;
        let mut keys = BTreeSet::new();
        for s in 0..SERVERS {
            let path = self.config.dir.join(format!("deliveries-{}", s + 1));
            let text = std::fs::read_to_string(path).unwrap_or_default();
            for line in text.lines().filter(|l| !l.is_empty()) {
                all += 1;
                keys.insert(line.to_owned());
            }
        }
        (all, all - keys.len())
    }

    /// Starts process `i` (a server, or a device with a fresh clock).
    fn start(&mut self, i: usize) -> Result<(), Error> {
        let role = self.procs[i].role;
        let host = self.procs[i].host.clone();
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{host}.log")))?;
        let mut command = self.lab.command(&host, &self.config.exe)?;
        match role {
            Role::Server(s) => {
                let db = self.database_proxies[s].addr();
                let addr = self.lab.host(&host)?.addr;
                command
                    .arg("server")
                    .args(["--listen", &format!("{addr}:{SERVER_PORT}")])
                    .args([
                        "--postgres",
                        &Cluster::connection_string_at(&db.ip().to_string(), db.port()),
                    ])
                    .arg("--deliveries")
                    .arg(self.config.dir.join(format!("deliveries-{}", s + 1)));
                if self.config.broken {
                    command.arg("--broken");
                }
            }
            Role::Device(d) => {
                // Its own server first (d % 2), the other after.
                let servers: Vec<String> = (0..SERVERS)
                    .map(|k| (d + k) % SERVERS)
                    .map(|s| format!("http://{}", self.device_proxies[d * SERVERS + s].addr()))
                    .collect();
                let skew_ms: i64 = if self.rng.below(2) == 0 {
                    0
                } else {
                    self.skewed_lives += 1;
                    i64::try_from(self.rng.below(600_001)).unwrap_or(0) - 300_000
                };
                let store = if d % 2 == 0 { "sqlite" } else { "wal" };
                command
                    .arg("device")
                    .args(["--name", &host, "--store", store])
                    .arg("--db")
                    .arg(self.config.dir.join(format!("{host}.db")))
                    .args(["--servers", &servers.join(",")])
                    .args(["--scopes", &scopes(d).join(",")])
                    .args(["--entities", &ENTITIES.to_string()])
                    .arg("--history")
                    .arg(self.config.dir.join("history"))
                    .args(["--seed", &self.rng.next_u64().to_string()])
                    .args(["--skew-ms", &skew_ms.to_string()])
                    .arg("--control")
                    .arg(&self.control);
            }
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.procs[i].child = Some(child);
        Ok(())
    }

    /// A process that exited by itself is a failure: the library or the
    /// harness broke (killed ones are taken out of `procs` first). At the
    /// end (`finishing`), a device exits, successfully, after writing its
    /// data.
    fn check_alive(&mut self, finishing: bool) -> Result<(), Error> {
        for proc in &mut self.procs {
            let Some(child) = &mut proc.child else {
                continue;
            };
            if let Some(status) = child.try_wait()? {
                if finishing && status.success() && matches!(proc.role, Role::Device(_)) {
                    continue;
                }
                return Err(format!(
                    "{} exited by itself ({status}); its log: {}",
                    proc.host,
                    self.logs.join(format!("{}.log", proc.host)).display()
                )
                .into());
            }
        }
        Ok(())
    }

    fn kill(&mut self, i: usize) -> Result<bool, Error> {
        let Some(mut child) = self.procs[i].child.take() else {
            return Ok(false);
        };
        child.kill()?;
        child.wait()?;
        Ok(true)
    }

    fn stop_all(&mut self) {
        for i in 0..self.procs.len() {
            let _ = self.kill(i);
        }
    }

    fn heal_due(&mut self, all: bool) -> Result<(), Error> {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.heals)
            .into_iter()
            .partition(|(at, _)| all || *at <= now);
        self.heals = later;
        for (_, heal) in due {
            match heal {
                Heal::Link(host) => self.lab.set_connected(&host, true)?,
                Heal::DeviceProxy(p) => self.device_proxies[p].set(Faults::default()),
                Heal::DatabaseProxy(s) => self.database_proxies[s].set(Faults::default()),
                Heal::Start(i) => {
                    if self.procs[i].child.is_none() {
                        self.start(i)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn count(&mut self, kind: &'static str) {
        *self.tally.entry(kind).or_default() += 1;
    }

    fn later(&mut self, low: u64, high: u64, heal: Heal) {
        let at = Instant::now() + self.rng.millis(low, high);
        self.heals.push((at, heal));
    }

    fn proc_index(&self, role: Role) -> usize {
        self.procs
            .iter()
            .position(|p| p.role == role)
            .unwrap_or_default()
    }

    /// One fault, chosen by the seed.
    fn inject(&mut self) -> Result<(), Error> {
        let devices = u64::try_from(self.config.devices).unwrap_or(1);
        let d = usize::try_from(self.rng.below(devices)).unwrap_or(0);
        let s = usize::try_from(self.rng.below(SERVERS as u64)).unwrap_or(0);
        match self.rng.below(100) {
            0..=24 => {
                let p = d * SERVERS + s;
                let faults = self.bad_link();
                self.device_proxies[p].set(faults);
                self.count("bad device link");
                self.later(1_000, 8_000, Heal::DeviceProxy(p));
            }
            25..=34 => {
                let host = name(Role::Device(d));
                if !self
                    .heals
                    .iter()
                    .any(|(_, h)| matches!(h, Heal::Link(x) if *x == host))
                {
                    self.lab.set_connected(&host, false)?;
                    self.count("device cut off");
                    self.later(1_000, 6_000, Heal::Link(host));
                }
            }
            35..=44 => {
                self.database_proxies[s].set(Faults {
                    blackhole: true,
                    ..Faults::default()
                });
                self.count("server cut off from the database");
                self.later(1_000, 5_000, Heal::DatabaseProxy(s));
            }
            45..=51 => {
                let faults = Faults {
                    reset_request: 0.05 + self.rng.chance() * 0.25,
                    reset_answer: 0.05 + self.rng.chance() * 0.25,
                    latency: self.rng.millis(0, 20),
                    ..Faults::default()
                };
                self.database_proxies[s].set(faults);
                self.count("database link resetting");
                self.later(2_000, 6_000, Heal::DatabaseProxy(s));
            }
            52..=59 => {
                for dev in 0..self.config.devices {
                    let p = dev * SERVERS + s;
                    self.device_proxies[p].set(Faults {
                        blackhole: true,
                        ..Faults::default()
                    });
                    self.later(1_000, 5_000, Heal::DeviceProxy(p));
                }
                self.count("server cut off from the devices");
            }
            60..=74 => {
                let i = self.proc_index(Role::Device(d));
                if self.kill(i)? {
                    self.count("device SIGKILLed");
                    self.later(200, 2_000, Heal::Start(i));
                }
            }
            75..=82 => {
                let i = self.proc_index(Role::Server(s));
                if self.kill(i)? {
                    self.count("server SIGKILLed");
                    self.later(200, 2_000, Heal::Start(i));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A bad mobile link: some latency and jitter, and now and then resets,
    /// held answers (past the devices' 3 s timeout) or a bandwidth cap.
    fn bad_link(&mut self) -> Faults {
        let rng = &mut self.rng;
        Faults {
            latency: rng.millis(0, 150),
            jitter: rng.millis(0, 100),
            reset_request: if rng.below(2) == 0 {
                rng.chance() * 0.4
            } else {
                0.0
            },
            reset_answer: if rng.below(2) == 0 {
                rng.chance() * 0.4
            } else {
                0.0
            },
            hold_answer: (rng.below(5) == 0).then(|| Duration::from_secs(4)),
            bandwidth: (rng.below(5) == 0).then(|| 2_000 + rng.below(30_000)),
            blackhole: false,
        }
    }

    /// Waits until every server accepts connections.
    fn wait_for_servers(&mut self, within: Duration) -> Result<(), Error> {
        let started = Instant::now();
        for s in 0..SERVERS {
            let addr = SocketAddr::from((self.lab.host(&name(Role::Server(s)))?.addr, SERVER_PORT));
            while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err() {
                self.check_alive(false)?;
                if started.elapsed() > within {
                    return Err(format!(
                        "{} not listening {within:?} after the heal",
                        name(Role::Server(s))
                    )
                    .into());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// Waits until every device wrote `{device}.{what}` in the control
    /// directory, watching that no process dies meanwhile.
    fn wait_for(&mut self, what: &str, within: Duration) -> Result<(), Error> {
        let started = Instant::now();
        loop {
            let missing: Vec<String> = (0..self.config.devices)
                .map(|d| name(Role::Device(d)))
                .filter(|device| !self.control.join(format!("{device}.{what}")).exists())
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            self.check_alive(what == "data")?;
            if started.elapsed() > within {
                return Err(format!(
                    "{} not {what} after {within:?} (logs in {})",
                    missing.join(", "),
                    self.logs.display()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A device's data file: `scope\tid\tvalue` lines.
fn read_data(path: &Path) -> Result<BTreeMap<EntityKey, String>, Error> {
    let text = std::fs::read_to_string(path)?;
    let mut data = BTreeMap::new();
    for line in text.lines() {
        let mut fields = line.splitn(3, '\t');
        let (Some(scope), Some(id), Some(value)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(format!(
                "{}: a line that is not scope, id, value: {line:?}",
                path.display()
            )
            .into());
        };
        data.insert((scope.to_owned(), id.to_owned()), value.to_owned());
    }
    Ok(data)
}
