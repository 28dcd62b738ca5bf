//! Guards the fault proxy with real sockets on 127.0.0.1: bytes pass
//! through untouched without faults; a request reset mid-way reaches the
//! upstream only in part and the client gets an error; an answer reset
//! mid-way reaches the client only in part; a held answer outlasts the
//! client's timeout and still arrives later; a partition makes a
//! connection hear nothing until it lifts, then the bytes flow; and one
//! seed makes the same decisions twice; a kept-alive connection meets the
//! faults at every exchange.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sync_chaos::{FaultProxy, Faults};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// An echo server; `received` counts the bytes it read, over all
/// connections.
async fn echo() -> std::io::Result<(SocketAddr, Arc<AtomicUsize>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let received = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            counter.fetch_add(n, Ordering::SeqCst);
                            if stream.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    Ok((addr, received))
}

/// Sends `data` and reads until `data.len()` bytes came back, the
/// connection ended, or it failed: the bytes read, and whether it failed.
async fn round_trip(stream: &mut TcpStream, data: &[u8]) -> (Vec<u8>, bool) {
    if stream.write_all(data).await.is_err() {
        return (Vec::new(), true);
    }
    let mut back = Vec::new();
    let mut buf = vec![0u8; 4096];
    while back.len() < data.len() {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return (back, true),
            Ok(n) => back.extend_from_slice(&buf[..n]),
        }
    }
    (back, false)
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| u8::try_from(i % 251).unwrap_or(0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_faults_bytes_pass_untouched() -> TestResult {
    let (upstream, received) = echo().await?;
    let proxy = FaultProxy::start("127.0.0.1:0".parse()?, upstream, 1).await?;
    let sent = data(100_000);
    let mut client = TcpStream::connect(proxy.addr()).await?;
    let (back, failed) = round_trip(&mut client, &sent).await;
    assert!(!failed);
    assert_eq!(back, sent);
    assert_eq!(received.load(Ordering::SeqCst), sent.len());
    let counts = proxy.counts();
    assert_eq!((counts.connections, counts.bytes_forwarded), (1, 200_000));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_reset_mid_way_reaches_the_upstream_in_part() -> TestResult {
    let (upstream, received) = echo().await?;
    let proxy = FaultProxy::start("127.0.0.1:0".parse()?, upstream, 2).await?;
    proxy.set(Faults {
        reset_request: 1.0,
        ..Faults::default()
    });
    let sent = data(6_000);
    let mut client = TcpStream::connect(proxy.addr()).await?;
    let (back, failed) = round_trip(&mut client, &sent).await;
    assert!(failed, "the client must see the connection die");
    assert!(back.len() < sent.len());
    // The upstream got part of the request, never all of it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got = received.load(Ordering::SeqCst);
    assert!(
        got > 0 && got < sent.len(),
        "upstream read {got} of {}",
        sent.len()
    );
    assert_eq!(proxy.counts().resets_mid_request, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_reset_mid_way_reaches_the_client_in_part() -> TestResult {
    let (upstream, received) = echo().await?;
    let proxy = FaultProxy::start("127.0.0.1:0".parse()?, upstream, 3).await?;
    proxy.set(Faults {
        reset_answer: 1.0,
        ..Faults::default()
    });
    let sent = data(6_000);
    let mut client = TcpStream::connect(proxy.addr()).await?;
    let (back, failed) = round_trip(&mut client, &sent).await;
    assert!(failed);
    assert!(
        back.len() < sent.len(),
        "got {} of {}",
        back.len(),
        sent.len()
    );
    // The request itself went through: the upstream served it.
    assert!(received.load(Ordering::SeqCst) > 0);
    assert_eq!(proxy.counts().resets_mid_answer, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_answer_outlasts_the_client_timeout_then_arrives() -> TestResult {
    let (upstream, _) = echo().await?;
    let proxy = FaultProxy::start("127.0.0.1:0".parse()?, upstream, 4).await?;
    proxy.set(Faults {
        hold_answer: Some(Duration::from_millis(1_500)),
        ..Faults::default()
    });
    let sent = data(100);
    let mut client = TcpStream::connect(proxy.addr()).await?;
    client.write_all(&sent).await?;
    let mut buf = vec![0u8; 100];
    let early = tokio::time::timeout(Duration::from_millis(200), client.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "the answer must not come within the client's timeout"
    );
    let late = tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut buf)).await;
    assert!(
        matches!(late, Ok(Ok(_))),
        "the held answer arrives later: {late:?}"
    );
    assert_eq!(buf, sent);
    assert_eq!(proxy.counts().held_answers, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_silences_a_link_until_it_lifts() -> TestResult {
    let (upstream, received) = echo().await?;
    let proxy = FaultProxy::start("127.0.0.1:0".parse()?, upstream, 5).await?;
    proxy.set(Faults {
        blackhole: true,
        ..Faults::default()
    });
    let sent = data(1_000);
    let mut client = TcpStream::connect(proxy.addr()).await?;
    client.write_all(&sent).await?;
    let mut buf = vec![0u8; 1_000];
    let silent = tokio::time::timeout(Duration::from_millis(300), client.read(&mut buf)).await;
    assert!(silent.is_err(), "nothing may come through a partition");
    assert_eq!(received.load(Ordering::SeqCst), 0, "nor reach the upstream");
    proxy.set(Faults::default());
    let healed = tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut buf)).await;
    assert!(matches!(healed, Ok(Ok(_))), "{healed:?}");
    assert_eq!(buf, sent);
    assert_eq!(
        proxy.counts().blackholed,
        0,
        "counted when the connection ends"
    );
    drop(client);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(proxy.counts().blackholed, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_seed_makes_the_same_decisions() -> TestResult {
    let (upstream, _) = echo().await?;
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        let proxy = FaultProxy::start("127.0.0.1:0".parse()?, upstream, 42).await?;
        proxy.set(Faults {
            reset_answer: 0.5,
            ..Faults::default()
        });
        let mut failed = Vec::new();
        for _ in 0..16 {
            let mut client = TcpStream::connect(proxy.addr()).await?;
            failed.push(round_trip(&mut client, &data(2_000)).await.1);
        }
        assert!(
            failed.contains(&true) && failed.contains(&false),
            "{failed:?}"
        );
        outcomes.push(failed);
    }
    assert_eq!(outcomes[0], outcomes[1]);
    Ok(())
}

/// A kept-alive connection meets the faults at each exchange, not only at
/// its first: an HTTP client's pooled connection would otherwise carry
/// every later request untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_apply_to_each_exchange_of_a_kept_alive_connection() -> TestResult {
    let (upstream, _) = echo().await?;
    let proxy = FaultProxy::start("127.0.0.1:0".parse()?, upstream, 3).await?;
    let mut client = TcpStream::connect(proxy.addr()).await?;
    let (back, failed) = round_trip(&mut client, &data(500)).await;
    assert!(!failed && back == data(500));
    proxy.set(Faults {
        reset_answer: 1.0,
        ..Faults::default()
    });
    let (back, failed) = round_trip(&mut client, &data(500)).await;
    assert!(
        failed,
        "the second exchange got {} bytes back whole",
        back.len()
    );
    assert!(back.len() < 500);
    let counts = proxy.counts();
    assert_eq!((counts.connections, counts.resets_mid_answer), (1, 1));
    Ok(())
}
