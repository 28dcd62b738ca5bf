//! [`Lab`]: separate hosts on one machine, as Linux network namespaces on a
//! bridge of their own, for the chaos harness.
//!
//! Each host is a namespace `{prefix}-{name}` with one veth interface on a
//! private subnet (`10.77.{net}.0/24`, a subnet the lab creates and removes;
//! nothing leaves the machine). The harness's own namespace joins the same
//! bridge as the gateway `.254`, so its fault proxies sit on every path
//! between hosts. Setting a host's link down cuts it off (a partition the
//! kernel enforces); setting it up heals it. Everything the lab made is
//! removed when it is dropped.
//!
//! Namespaces need root (`CAP_NET_ADMIN`) and `ip` (iproute2): without
//! them [`Lab::create`] fails with [`LabError::NeedsRoot`] or
//! [`LabError::Command`], naming what is missing; it never pretends.

use std::net::Ipv4Addr;
use std::process::Command;

/// Why a [`Lab`] could not be made or changed.
#[derive(Debug)]
pub enum LabError {
    /// Not running as root: network namespaces need `CAP_NET_ADMIN`.
    NeedsRoot,
    /// A setup command failed: what it was, and what it said.
    Command {
        /// The command line.
        command: String,
        /// Its standard error, or why it could not start.
        output: String,
    },
    /// A name the lab does not have.
    UnknownHost(String),
}

impl std::fmt::Display for LabError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NeedsRoot => write!(
                f,
                "the chaos lab needs root (CAP_NET_ADMIN) to make network namespaces and veth \
                 pairs; run it as root (CI does) or in a container with NET_ADMIN"
            ),
            Self::Command { command, output } => {
                write!(f, "`{command}` failed: {}", output.trim())
            }
            Self::UnknownHost(name) => write!(f, "the lab has no host {name:?}"),
        }
    }
}

impl std::error::Error for LabError {}

/// One host of a [`Lab`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// Its name in the lab (`"device-1"`).
    pub name: String,
    /// Its network namespace (`ip netns exec {netns} ...`).
    pub netns: String,
    /// Its address on the lab's subnet.
    pub addr: Ipv4Addr,
    /// Its end of the bridge, in the harness's namespace: setting this
    /// link down cuts the host off.
    link: String,
}

/// Hosts as network namespaces on a private bridge; removed on drop.
///
/// # Examples
///
/// ```no_run
/// use sync_chaos::Lab;
///
/// let lab = Lab::create("sync7", 7, &["server-1", "device-1"])?;
/// let server = lab.host("server-1")?;
/// // Run a process on the host, reachable from the harness at its address.
/// let child = lab.command("server-1", "sleep")?.arg("1").spawn();
/// lab.set_connected("device-1", false)?; // a partition
/// lab.set_connected("device-1", true)?; // healed
/// # let _ = (server, child);
/// # Ok::<_, sync_chaos::LabError>(())
/// ```
#[derive(Debug)]
pub struct Lab {
    bridge: String,
    gateway: Ipv4Addr,
    hosts: Vec<Host>,
}

impl Lab {
    /// Makes a bridge `{prefix}-br` with the harness's namespace on it as
    /// `10.77.{net}.254`, and for each name a namespace with a veth on the
    /// bridge, addressed `10.77.{net}.{i + 1}`, loopback up, its default
    /// route through the gateway. `prefix` keeps interface names short
    /// (at most 6 characters: Linux allows 15) and apart from other labs.
    ///
    /// # Errors
    ///
    /// [`LabError::NeedsRoot`] when not root; [`LabError::Command`] when a
    /// setup command fails (what was made so far is removed).
    pub fn create(prefix: &str, net: u8, names: &[&str]) -> Result<Self, LabError> {
        if !is_root() {
            return Err(LabError::NeedsRoot);
        }
        let gateway = Ipv4Addr::new(10, 77, net, 254);
        let mut lab = Self {
            bridge: format!("{prefix}-br"),
            gateway,
            hosts: Vec::new(),
        };
        // Leftovers of a lab that was killed before its drop ran.
        lab.remove_leftovers(names.len(), prefix);
        run(&["ip", "link", "add", &lab.bridge, "type", "bridge"])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{gateway}/24"),
            "dev",
            &lab.bridge,
        ])?;
        run(&["ip", "link", "set", &lab.bridge, "up"])?;
        for (i, name) in names.iter().enumerate() {
            let index = u8::try_from(i + 1).map_err(|_| LabError::Command {
                command: "add a host".into(),
                output: "a lab holds at most 253 hosts".into(),
            })?;
            let host = Host {
                name: (*name).to_owned(),
                netns: format!("{prefix}-{name}"),
                addr: Ipv4Addr::new(10, 77, net, index),
                link: format!("{prefix}-v{index}"),
            };
            // Listed first, so a failure part-way is removed on drop too.
            lab.hosts.push(host.clone());
            lab.add(&host)?;
        }
        Ok(lab)
    }

    fn add(&self, host: &Host) -> Result<(), LabError> {
        let inner = format!("{}-i", host.link);
        run(&["ip", "netns", "add", &host.netns])?;
        run(&[
            "ip", "link", "add", &host.link, "type", "veth", "peer", "name", &inner,
        ])?;
        run(&["ip", "link", "set", &inner, "netns", &host.netns])?;
        run(&["ip", "link", "set", &host.link, "master", &self.bridge])?;
        run(&["ip", "link", "set", &host.link, "up"])?;
        let exec = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", &host.netns];
            all.extend_from_slice(args);
            run(&all)
        };
        exec(&["ip", "link", "set", "lo", "up"])?;
        exec(&["ip", "link", "set", &inner, "name", "eth0"])?;
        exec(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", host.addr),
            "dev",
            "eth0",
        ])?;
        exec(&["ip", "link", "set", "eth0", "up"])?;
        exec(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &self.gateway.to_string(),
        ])?;
        Ok(())
    }

    /// The harness's own address on the lab's subnet (where its proxies
    /// listen for the hosts).
    #[must_use]
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The hosts, in creation order.
    #[must_use]
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The host called `name`.
    ///
    /// # Errors
    ///
    /// [`LabError::UnknownHost`].
    pub fn host(&self, name: &str) -> Result<&Host, LabError> {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .ok_or_else(|| LabError::UnknownHost(name.to_owned()))
    }

    /// A command that runs `program` on host `name` (in its namespace).
    ///
    /// # Errors
    ///
    /// [`LabError::UnknownHost`].
    pub fn command(
        &self,
        name: &str,
        program: impl AsRef<std::ffi::OsStr>,
    ) -> Result<Command, LabError> {
        let host = self.host(name)?;
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &host.netns]).arg(program);
        Ok(command)
    }

    /// Connects (`true`) or cuts off (`false`) host `name`: its link to the
    /// bridge goes up or down, so nothing reaches it or leaves it.
    ///
    /// # Errors
    ///
    /// [`LabError::UnknownHost`]; [`LabError::Command`].
    pub fn set_connected(&self, name: &str, connected: bool) -> Result<(), LabError> {
        let host = self.host(name)?;
        let state = if connected { "up" } else { "down" };
        run(&["ip", "link", "set", &host.link, state])?;
        if connected {
            // Packets sent while the link was down left the host's address
            // unresolved (ARP failed): forget that, so the next packet asks
            // again at once instead of after the kernel's retransmit time.
            let _ = quiet(&[
                "ip",
                "neigh",
                "flush",
                "dev",
                &self.bridge,
                "to",
                &host.addr.to_string(),
            ]);
        }
        Ok(())
    }

    /// Removes interfaces and namespaces a killed lab of this prefix left.
    fn remove_leftovers(&self, hosts: usize, prefix: &str) {
        let _ = quiet(&["ip", "link", "del", &self.bridge]);
        for i in 1..=hosts.max(1) + 8 {
            let _ = quiet(&["ip", "link", "del", &format!("{prefix}-v{i}")]);
        }
        if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let name = line.split_whitespace().next().unwrap_or_default();
                if name.starts_with(&format!("{prefix}-")) {
                    let _ = quiet(&["ip", "netns", "del", name]);
                }
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for host in &self.hosts {
            // Deleting the namespace deletes its veth end, and with it the
            // pair.
            let _ = quiet(&["ip", "netns", "del", &host.netns]);
            let _ = quiet(&["ip", "link", "del", &host.link]);
        }
        let _ = quiet(&["ip", "link", "del", &self.bridge]);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// Runs `args`; an error names the command and what it printed.
fn run(args: &[&str]) -> Result<(), LabError> {
    let command = args.join(" ");
    let (program, rest) = args.split_first().ok_or_else(|| LabError::Command {
        command: command.clone(),
        output: "empty command".into(),
    })?;
    let output = Command::new(program)
        .args(rest)
        .output()
        .map_err(|e| LabError::Command {
            command: command.clone(),
            output: e.to_string(),
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(LabError::Command {
            command,
            output: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

/// Runs `args` for cleanup: errors (nothing to remove) are expected.
fn quiet(args: &[&str]) -> Result<(), LabError> {
    run(args)
}
