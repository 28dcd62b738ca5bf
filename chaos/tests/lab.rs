//! Guards the lab with real namespaces (as root; CI runs as root): a
//! process on a host is reachable from the harness at the host's address,
//! a host cut off is unreachable, and healed it is reachable again; the
//! lab leaves no namespace behind. Without root, `Lab::create` must refuse
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
    println!("test lab ... ok: reachable, cut off, healed, removed");
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
        round_trip(addr).map_err(|e| format!("host a unreachable after healing: {e}"))?;
        Ok(())
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
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
