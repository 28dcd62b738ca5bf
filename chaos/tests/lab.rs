//! Guards the lab with real namespaces (as root; CI runs as root): a
//! process on a host is reachable from the harness at the host's address,
//! a host cut off is unreachable, and healed it is reachable again; the
//! lab leaves no namespace behind. A host reaches another through a
//! `FaultProxy` the harness runs on the gateway, and not while the proxy
//! blackholes the link. Without root, `Lab::create` must refuse
//! with `NeedsRoot`: the test says so and checks that, never a silent pass.

#![expect(clippy::print_stdout, reason = "a harness-less test reports on stdout")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Stdio;
use std::time::Duration;

use sync_chaos::{Lab, LabError};

type Error = Box<dyn std::error::Error>;

const PORT: u16 = 7070;

fn main() -> Result<(), Error> {
    if std::env::var("SYNC_CHAOS_ECHO").is_ok() {
        return echo();
    }
    if let Ok(target) = std::env::var("SYNC_CHAOS_CLIENT") {
        // The client: one round trip to `target`, its outcome on stdout.
        let outcome =
            round_trip(target.parse()?).map_or_else(|e| format!("failed {e}"), |()| "ok".into());
        println!("{outcome}");
        return Ok(());
    }
    match Lab::create("sctst", 231, &["a", "b"]) {
        Err(LabError::NeedsRoot) => {
            println!("test lab ... not root: Lab::create refused with NeedsRoot, as it must");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
        Ok(lab) => check(&lab)?,
    }
    let left = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()?;
    if String::from_utf8_lossy(&left.stdout).contains("sctst-") {
        return Err("the lab left namespaces behind".into());
    }
    println!(
        "test lab ... ok: reachable, cut off, healed, through a proxy and not through a blackholed one, removed"
    );
    Ok(())
}

fn check(lab: &Lab) -> Result<(), Error> {
    let host = lab.host("a")?.clone();
    let mut child = lab
        .command("a", std::env::current_exe()?)?
        .env("SYNC_CHAOS_ECHO", "1")
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut ready = String::new();
    BufReader::new(stdout).read_line(&mut ready)?;
    if ready.trim() != "listening" {
        return Err(format!("the echo on host a said {ready:?}").into());
    }
    let addr = SocketAddr::from((host.addr, PORT));
    let result = (|| -> Result<(), Error> {
        round_trip(addr).map_err(|e| format!("host a unreachable: {e}"))?;
        lab.set_connected("a", false)?;
        if round_trip(addr).is_ok() {
            return Err("a cut-off host answered".into());
        }
        lab.set_connected("a", true)?;
        // A healed link carries traffic once the port is forwarding and the
        // address resolves again: allowed a few seconds, as TCP would retry.
        let healed = std::time::Instant::now();
        while let Err(e) = round_trip(addr) {
            if healed.elapsed() > Duration::from_secs(5) {
                return Err(format!("host a unreachable 5 s after healing: {e}").into());
            }
        }
        through_a_proxy(lab, addr)
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Host b reaches host a's echo through a proxy on the gateway; not while
/// the proxy blackholes the link.
fn through_a_proxy(lab: &Lab, upstream: SocketAddr) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let listen = SocketAddr::from((lab.gateway(), PORT + 1));
    let proxy = runtime.block_on(sync_chaos::FaultProxy::start(listen, upstream, 9))?;
    let from_b = || -> Result<String, Error> {
        let out = lab
            .command("b", std::env::current_exe()?)?
            .env("SYNC_CHAOS_CLIENT", listen.to_string())
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let open = from_b()?;
    if open != "ok" {
        return Err(format!("host b through the proxy: {open}").into());
    }
    proxy.set(sync_chaos::Faults {
        blackhole: true,
        ..sync_chaos::Faults::default()
    });
    let cut = from_b()?;
    if !cut.starts_with("failed") {
        return Err(format!("host b got through a blackholed proxy: {cut}").into());
    }
    if proxy.counts().connections != 2 {
        return Err(format!("the proxy saw {:?}", proxy.counts()).into());
    }
    drop(proxy);
    drop(runtime);
    Ok(())
}

fn round_trip(addr: SocketAddr) -> Result<(), Error> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(700))?;
    stream.set_read_timeout(Some(Duration::from_millis(700)))?;
    stream.write_all(b"ping")?;
    let mut back = [0u8; 4];
    stream.read_exact(&mut back)?;
    if &back != b"ping" {
        return Err("wrong echo".into());
    }
    Ok(())
}

/// The child: echoes each connection's first 4 bytes, on every address of
/// its host.
fn echo() -> Result<(), Error> {
    let listener = TcpListener::bind(("0.0.0.0", PORT))?;
    println!("listening");
    std::io::stdout().flush()?;
    for stream in listener.incoming() {
        let mut stream = stream?;
        let mut buf = [0u8; 4];
        if stream.read_exact(&mut buf).is_ok() {
            let _ = stream.write_all(&buf);
        }
    }
    Ok(())
}
