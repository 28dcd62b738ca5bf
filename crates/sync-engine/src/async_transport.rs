//! [`AsyncSyncTransport`], the async twin of [`SyncTransport`], and the two
//! adapters between them.

use std::fmt;
use std::sync::Arc;

use sync_outbox::Operation;
use tokio::runtime::Handle;

use crate::async_outbox::run_blocking;
use crate::transport::{ResultSink, SendResult, SyncTransport};

/// Sends operations to the server from async code. Implemented by the
/// application (or [`AsyncHttpTransport`] in `sync-transport-http`), used by
/// [`AsyncSyncEngine`](crate::AsyncSyncEngine).
///
/// The same contract as [`SyncTransport`]: delivery is at least once, so the
/// server dedupes on the operation's `id`; `error` strings never carry
/// payloads or credentials. The futures are `Send`, and the trait is usable
/// as `Arc<dyn AsyncSyncTransport>`: implement it with
/// [`#[async_trait]`](macro@crate::async_trait), re-exported here.
///
/// A blocking [`SyncTransport`] is used where an async one is expected
/// through [`SpawnBlockingTransport`]; the reverse, with a runtime handle,
/// through [`BlockOnTransport`].
///
/// [`AsyncHttpTransport`]: https://docs.rs/sync-transport-http
///
/// # Examples
///
/// ```
/// use sync_engine::{AsyncSyncTransport, SendResult, async_trait};
/// use sync_outbox::Operation;
///
/// struct Upstream;
///
/// #[async_trait]
/// impl AsyncSyncTransport for Upstream {
///     async fn send(&self, op: &Operation) -> SendResult {
///         tokio::task::yield_now().await; // an HTTP call, say
///         if op.payload.is_empty() { SendResult::permanent("empty") } else { SendResult::ok() }
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// let transport: std::sync::Arc<dyn AsyncSyncTransport> = std::sync::Arc::new(Upstream);
/// let results = transport.send_batch(&[Operation::new("k", "/t", "{}"), Operation::new("k", "/t", "")]).await;
/// assert!(results[0].ok && !results[1].ok);
/// # });
/// # Ok::<_, std::io::Error>(())
/// ```
#[async_trait::async_trait]
pub trait AsyncSyncTransport: Send + Sync {
    /// Sends one operation and says how it went.
    async fn send(&self, op: &Operation) -> SendResult;

    /// Sends several operations; returns one result per operation, in order.
    /// The default awaits [`send`](Self::send) for each in turn; a transport
    /// with a batch endpoint can do better.
    async fn send_batch(&self, ops: &[Operation]) -> Vec<SendResult> {
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            results.push(self.send(op).await);
        }
        results
    }

    /// Sends several operations and reports each result to `results` as
    /// soon as it is known: what [`AsyncSyncEngine`](crate::AsyncSyncEngine)
    /// calls, as [`SyncTransport::send_each`] says. The default awaits
    /// [`send_batch`](Self::send_batch) and reports its results together
    /// (none if it returns a wrong number of them); a transport that sends
    /// one request per operation should report each as it arrives.
    async fn send_each(&self, ops: &[Operation], results: &mut ResultSink<'_>) {
        let all = self.send_batch(ops).await;
        if all.len() == ops.len() {
            results.report_all(all);
        } else {
            results.miscounted = Some(all.len());
        }
    }
}

/// A blocking [`SyncTransport`] as an [`AsyncSyncTransport`]: each call runs
/// on tokio's blocking pool (`spawn_blocking`), never on a runtime worker.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use sync_engine::{AsyncSyncTransport, SendResult, SpawnBlockingTransport, SyncTransport};
/// use sync_outbox::Operation;
///
/// struct Blocking;
/// impl SyncTransport for Blocking {
///     fn send(&self, _op: &Operation) -> SendResult {
///         std::thread::yield_now(); // a blocking HTTP client, say
///         SendResult::ok()
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// let transport = SpawnBlockingTransport::new(Arc::new(Blocking));
/// assert!(transport.send(&Operation::default()).await.ok);
/// # });
/// # Ok::<_, std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct SpawnBlockingTransport {
    inner: Arc<dyn SyncTransport>,
}

impl SpawnBlockingTransport {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn SyncTransport>) -> Self {
        Self { inner }
    }
}

impl fmt::Debug for SpawnBlockingTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpawnBlockingTransport")
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl AsyncSyncTransport for SpawnBlockingTransport {
    async fn send(&self, op: &Operation) -> SendResult {
        let inner = Arc::clone(&self.inner);
        let op = op.clone();
        run_blocking(move || inner.send(&op)).await
    }

    async fn send_batch(&self, ops: &[Operation]) -> Vec<SendResult> {
        let inner = Arc::clone(&self.inner);
        let ops = ops.to_vec();
        run_blocking(move || inner.send_batch(&ops)).await
    }

    /// The inner `send_each` on the blocking pool; its reports reach
    /// `results` as they come.
    async fn send_each(&self, ops: &[Operation], results: &mut ResultSink<'_>) {
        let inner = Arc::clone(&self.inner);
        let ops = ops.to_vec();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let sending = run_blocking(move || {
            let mut forward = |batch: Vec<(usize, SendResult)>| {
                let _ = tx.send(batch);
            };
            let mut sink = ResultSink::new(&mut forward);
            inner.send_each(&ops, &mut sink);
            sink.miscounted
        });
        tokio::pin!(sending);
        let mut miscounted = None;
        let mut sent = false;
        // Forward reports until the blocking send is over and every report
        // it made has been read (the channel closes when its sender drops).
        loop {
            tokio::select! {
                batch = rx.recv() => match batch {
                    Some(batch) => results.report_many(batch),
                    None => break,
                },
                returned = &mut sending, if !sent => {
                    sent = true;
                    miscounted = returned;
                }
            }
        }
        if !sent {
            miscounted = sending.await;
        }
        results.miscounted = miscounted;
    }
}

/// An [`AsyncSyncTransport`] as a blocking [`SyncTransport`], for the
/// threaded [`SyncEngine`](crate::SyncEngine): each call blocks its thread on
/// `handle` until the future finishes.
///
/// # Panics
///
/// A call from inside a runtime (an async task) panics, as
/// `Handle::block_on` does there: use it from the threaded engine's own
/// threads, or give async code the async transport itself.
///
/// With a `current_thread` runtime's handle, a future that needs I/O or a
/// timer only makes progress while some thread runs that runtime's
/// `Runtime::block_on` (the app's `main`, usually); otherwise the call never
/// returns. A multi-thread runtime has no such condition.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use sync_engine::{AsyncSyncTransport, BlockOnTransport, SendResult, SyncTransport, async_trait};
/// use sync_outbox::Operation;
///
/// struct Upstream;
/// #[async_trait]
/// impl AsyncSyncTransport for Upstream {
///     async fn send(&self, _op: &Operation) -> SendResult {
///         tokio::task::yield_now().await;
///         SendResult::ok()
///     }
/// }
///
/// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// let transport = BlockOnTransport::new(Arc::new(Upstream), runtime.handle().clone());
/// assert!(transport.send(&Operation::default()).ok); // from a plain thread
/// # Ok::<_, std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct BlockOnTransport {
    inner: Arc<dyn AsyncSyncTransport>,
    handle: Handle,
}

impl BlockOnTransport {
    /// Wraps `inner`, running its futures on `handle`.
    pub fn new(inner: Arc<dyn AsyncSyncTransport>, handle: Handle) -> Self {
        Self { inner, handle }
    }
}

impl fmt::Debug for BlockOnTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockOnTransport").finish_non_exhaustive()
    }
}

impl SyncTransport for BlockOnTransport {
    fn send(&self, op: &Operation) -> SendResult {
        self.handle.block_on(self.inner.send(op))
    }

    fn send_batch(&self, ops: &[Operation]) -> Vec<SendResult> {
        self.handle.block_on(self.inner.send_batch(ops))
    }

    fn send_each(&self, ops: &[Operation], results: &mut ResultSink<'_>) {
        self.handle.block_on(self.inner.send_each(ops, results));
    }
}
