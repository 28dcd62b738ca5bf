//! [`FaultProxy`]: a TCP proxy that injects network faults between a client
//! and its upstream, changeable while it runs.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// How long a stalled pump (a partitioned link) waits before looking again.
const PARTITION_POLL: Duration = Duration::from_millis(10);
/// The most bytes forwarded in one piece.
const CHUNK: usize = 8 * 1024;

/// The faults a [`FaultProxy`] injects. Probabilities are per exchange (a
/// request and its answer: a kept-alive connection carries many), drawn
/// from the proxy's seeded generator when the request's first chunk
/// arrives; latency, bandwidth and partitions apply to every chunk
/// forwarded, as the faults are at that moment.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sync_chaos::Faults;
///
/// // A slow, lossy mobile link: 80 +- 40 ms, one connection in ten cut
/// // while the answer comes back.
/// let faults = Faults {
///     latency: Duration::from_millis(80),
///     jitter: Duration::from_millis(40),
///     reset_answer: 0.1,
///     ..Faults::default()
/// };
/// assert!(!faults.blackhole);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Added before each chunk is forwarded, in both directions.
    pub latency: Duration,
    /// Up to this much more, uniformly, per chunk.
    pub jitter: Duration,
    /// The chance a connection is reset (RST to both ends) after part of
    /// a request's first chunk reached the upstream: a request cut mid-way.
    pub reset_request: f64,
    /// The chance a connection is reset after part of an answer's first
    /// chunk reached the client: the request was served, its answer cut.
    pub reset_answer: f64,
    /// Each answer's first bytes wait this long: longer than the client's
    /// timeout, the request was served and the client never hears.
    pub hold_answer: Option<Duration>,
    /// At most this many bytes per second, per direction of a connection.
    pub bandwidth: Option<u64>,
    /// A partition: nothing is forwarded while it holds (new connections
    /// are accepted and then hear nothing, as behind a dead link); when it
    /// lifts, what was waiting flows on, as TCP's retransmissions would.
    pub blackhole: bool,
}

/// What a [`FaultProxy`] did, by kind: the harness's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Connections accepted.
    pub connections: u64,
    /// Connections reset mid-request.
    pub resets_mid_request: u64,
    /// Connections reset mid-answer.
    pub resets_mid_answer: u64,
    /// Answers held back.
    pub held_answers: u64,
    /// Connections that waited on a partition at least once.
    pub blackholed: u64,
    /// Bytes forwarded, both directions.
    pub bytes_forwarded: u64,
}

/// A fault-injecting TCP proxy (Toxiproxy's idea, in-process): listens on
/// an address of the harness's own, forwards each connection to
/// `upstream`, and injects [`Faults`] that can change while it runs.
/// Dropping it stops it and closes its connections.
///
/// # Examples
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
/// use sync_chaos::{FaultProxy, Faults};
///
/// let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let proxy = FaultProxy::start("127.0.0.1:0".parse()?, upstream.local_addr()?, 7).await?;
/// proxy.set(Faults { blackhole: true, ..Faults::default() }); // a partition
/// proxy.set(Faults::default()); // healed
/// assert_eq!(proxy.counts().connections, 0);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    faults: Mutex<Faults>,
    rng: Mutex<u64>,
    connections: AtomicU64,
    resets_mid_request: AtomicU64,
    resets_mid_answer: AtomicU64,
    held_answers: AtomicU64,
    blackholed: AtomicU64,
    bytes_forwarded: AtomicU64,
}

impl FaultProxy {
    /// Listens on `listen` (port 0 picks one) and forwards to `upstream`,
    /// with no faults until [`set`](Self::set). `seed` makes every random
    /// decision replayable. Must be called within a tokio runtime with I/O
    /// and time enabled.
    ///
    /// # Errors
    ///
    /// The listener's bind error.
    pub async fn start(listen: SocketAddr, upstream: SocketAddr, seed: u64) -> io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            faults: Mutex::new(Faults::default()),
            rng: Mutex::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            connections: AtomicU64::new(0),
            resets_mid_request: AtomicU64::new(0),
            resets_mid_answer: AtomicU64::new(0),
            held_answers: AtomicU64::new(0),
            blackholed: AtomicU64::new(0),
            bytes_forwarded: AtomicU64::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Self {
            addr,
            shared,
            accept,
        })
    }

    /// Where clients connect.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the faults, for new connections and every chunk from now.
    pub fn set(&self, faults: Faults) {
        *self.shared.lock_faults() = faults;
    }

    /// The faults in force.
    #[must_use]
    pub fn faults(&self) -> Faults {
        self.shared.lock_faults().clone()
    }

    /// What was injected so far.
    #[must_use]
    pub fn counts(&self) -> FaultCounts {
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        let s = &self.shared;
        FaultCounts {
            connections: load(&s.connections),
            resets_mid_request: load(&s.resets_mid_request),
            resets_mid_answer: load(&s.resets_mid_answer),
            held_answers: load(&s.held_answers),
            blackholed: load(&s.blackholed),
            bytes_forwarded: load(&s.bytes_forwarded),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // The accept task owns the connections' JoinSet: aborting it drops
        // the set, which aborts (and so closes) every connection.
        self.accept.abort();
    }
}

impl Shared {
    fn lock_faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next number of the seeded xorshift generator.
    fn next(&self) -> u64 {
        let mut x = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    /// `true` with probability `p`.
    fn chance(&self, p: f64) -> bool {
        #[expect(
            clippy::cast_precision_loss,
            reason = "a probability needs no more than 53 bits"
        )]
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        unit < p
    }

    /// `latency` plus up to `jitter`.
    fn delay(&self, faults: &Faults) -> Duration {
        let jitter_ns = u64::try_from(faults.jitter.as_nanos()).unwrap_or(u64::MAX);
        let extra = if jitter_ns == 0 {
            0
        } else {
            self.next() % jitter_ns
        };
        faults.latency + Duration::from_nanos(extra)
    }

    /// Waits while a partition holds; returns whether it had to.
    async fn wait_out_partition(&self) -> bool {
        let mut waited = false;
        while self.lock_faults().blackhole {
            waited = true;
            tokio::time::sleep(PARTITION_POLL).await;
        }
        waited
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((client, _)) = accepted {
                    connections.spawn(serve(client, Arc::clone(&shared)));
                }
            }
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Which way a pump forwards.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Request,
    Answer,
}

/// How a pump ended.
enum Ended {
    /// The reader reached its end; the writer was shut down.
    Closed,
    /// The connection is to be reset.
    Reset,
}

/// One request and its answer on a connection (a kept-alive connection
/// carries many): the faults are decided per exchange, when its request
/// starts, so a long-lived connection meets them as often as fresh ones.
#[derive(Default)]
struct Exchange {
    /// An answer chunk came since the last request chunk: the next request
    /// chunk starts a new exchange.
    answered: bool,
    /// Whether an exchange has started at all.
    started: bool,
    reset_answer: bool,
}

async fn serve(client: TcpStream, shared: Arc<Shared>) {
    shared.connections.fetch_add(1, Ordering::Relaxed);
    let mut stalled = shared.wait_out_partition().await;
    let Ok(upstream) = TcpStream::connect(shared.upstream).await else {
        reset(&client);
        return;
    };
    // The proxy forwards each chunk as it comes: Nagle's algorithm would
    // hold a small chunk for the peer's delayed ACK (40 ms on Linux), a
    // latency that is the proxy's, not a fault it was asked for.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let exchange = Mutex::new(Exchange::default());
    let request = pump(
        &shared,
        &exchange,
        client_read,
        upstream_write,
        Direction::Request,
    );
    let answer = pump(
        &shared,
        &exchange,
        upstream_read,
        client_write,
        Direction::Answer,
    );
    tokio::pin!(request, answer);
    // The first pump to ask for a reset ends the connection (dropping every
    // half, with linger 0: RST both ways); otherwise both run to their end.
    let (mut request_done, mut answer_done) = (false, false);
    while !(request_done && answer_done) {
        tokio::select! {
            ended = &mut request, if !request_done => {
                request_done = true;
                stalled |= ended.1;
                if matches!(ended.0, Ended::Reset) {
                    shared.resets_mid_request.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
            ended = &mut answer, if !answer_done => {
                answer_done = true;
                stalled |= ended.1;
                if matches!(ended.0, Ended::Reset) {
                    shared.resets_mid_answer.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
    if stalled {
        shared.blackholed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Makes `stream` close with RST when dropped.
#[expect(
    deprecated,
    reason = "tokio deprecates SO_LINGER because a positive linger blocks the dropping thread; \
              a zero linger never blocks: the close sends RST at once"
)]
fn reset(stream: &TcpStream) {
    let _ = stream.set_linger(Some(Duration::ZERO));
}

/// What a chunk meets, decided under the exchange's lock.
struct ChunkFate {
    reset: bool,
    hold: bool,
}

impl Exchange {
    /// Called for each chunk: starts an exchange at a request chunk after
    /// an answer (drawing both of its reset decisions, in that order, so a
    /// seed replays), and says what this chunk meets.
    fn fate(&mut self, shared: &Shared, faults: &Faults, direction: Direction) -> ChunkFate {
        match direction {
            Direction::Request => {
                if self.started && !self.answered {
                    return ChunkFate {
                        reset: false,
                        hold: false,
                    };
                }
                self.started = true;
                self.answered = false;
                let reset = shared.chance(faults.reset_request);
                self.reset_answer = shared.chance(faults.reset_answer);
                ChunkFate { reset, hold: false }
            }
            Direction::Answer => {
                if self.answered {
                    return ChunkFate {
                        reset: false,
                        hold: false,
                    };
                }
                self.answered = true;
                ChunkFate {
                    reset: std::mem::take(&mut self.reset_answer),
                    hold: faults.hold_answer.is_some(),
                }
            }
        }
    }
}

/// Forwards `from` to `to`, injecting the faults. Returns how it ended and
/// whether it waited on a partition.
async fn pump(
    shared: &Shared,
    exchange: &Mutex<Exchange>,
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    direction: Direction,
) -> (Ended, bool) {
    let mut buf = vec![0u8; CHUNK];
    let mut stalled = false;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return (Ended::Closed, stalled);
            }
            Ok(n) => n,
        };
        stalled |= shared.wait_out_partition().await;
        let faults = shared.lock_faults().clone();
        let fate = exchange
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .fate(shared, &faults, direction);
        let delay = shared.delay(&faults);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let chunk = buf.get(..n).unwrap_or_default();
        if fate.reset {
            // Part of the chunk gets through, then the connection dies:
            // closing both sockets with linger 0 sends RST both ways.
            reset(from.as_ref());
            reset(to.as_ref());
            let part = chunk.get(..n / 2).unwrap_or_default();
            if to.write_all(part).await.is_ok() {
                let _ = to.flush().await;
                shared.count_bytes(part.len());
            }
            return (Ended::Reset, stalled);
        }
        if fate.hold
            && let Some(hold) = faults.hold_answer
        {
            shared.held_answers.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(hold).await;
        }
        if let Some(rate) = faults.bandwidth.filter(|rate| *rate > 0) {
            let nanos = (n as u64).saturating_mul(1_000_000_000) / rate;
            tokio::time::sleep(Duration::from_nanos(nanos)).await;
        }
        if to.write_all(chunk).await.is_err() {
            return (Ended::Closed, stalled);
        }
        shared.count_bytes(n);
    }
}

impl Shared {
    fn count_bytes(&self, n: usize) {
        self.bytes_forwarded
            .fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}
