//! The HTTP listener: accepts connections and serves HTTP/1.1 and HTTP/2 with hyper.
//!
//! Owns: the connection bound (a semaphore permit per open connection, taken before `accept`, so
//! excess clients wait in the kernel backlog), the bounds on request heads (bytes and count, both
//! protocols), the header-read timeout (hyper ignores it unless a timer is set, so one is), the
//! idle timeout, and graceful shutdown: stop accepting, let open connections finish within the
//! grace period, then close what is left. With TLS, the handshake runs in the connection's own
//! task under the same timeout as the headers. Does not own: what a request means (`routes`) or
//! certificates (`tls`).
//!
//! Guarantee: a connection with no request open for `header_read_timeout` is closed, whatever
//! the protocol and whether or not the peer answers pings (hyper closes idle HTTP/1.1
//! connections itself; for HTTP/2 and for protocol detection it has no idle timeout, so the
//! service counts open requests and the connection task shuts the connection down).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// 0Gate sends one delivery at a time per connection; a few streams leave room for a proxy.
const H2_MAX_STREAMS: u32 = 8;
/// An HTTP/2 peer that does not answer a ping within this is gone.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);
/// A request head (request line or pseudo-headers plus every header): 0Gate sends well under
/// 2 KiB, a proxy adds a few forwarding headers; 16 KiB is the common proxy default (nginx,
/// Envoy's 60 KiB aside) and caps what an unauthenticated client makes us buffer per head.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Headers per HTTP/1.1 request: 0Gate sends about ten, proxies add a handful. hyper's default
/// is 100; fewer also means less work spent on a request that is then refused.
const MAX_HEADERS: usize = 64;

/// Plain TCP or TLS, so both are served by one code path.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Requests open on one connection, and a wake-up whenever that changes.
#[derive(Default)]
struct OpenRequests {
    count: AtomicUsize,
    changed: Notify,
}

impl OpenRequests {
    fn open(self: &Arc<Self>) -> OpenRequest {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
        OpenRequest(Arc::clone(self))
    }

    /// Returns once the connection has had no request open for `limit` in one stretch.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the count is read, so a change in between is not missed.
            changed.as_mut().enable();
            if self.count.load(Ordering::SeqCst) == 0 {
                if tokio::time::timeout(limit, changed).await.is_err() {
                    return;
                }
            } else {
                changed.await;
            }
        }
    }
}

/// One open request; dropped when its handler finishes or is cancelled.
struct OpenRequest(Arc<OpenRequests>);

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

/// What the listener is allowed to hold open.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub shutdown_grace: Duration,
}

/// Serves `listener` with `handler` until `shutdown` is cancelled, then drains within the grace
/// period. Used for both the webhook and the admin listener.
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handler: H,
    limits: Limits,
    shutdown: CancellationToken,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let builder = Arc::new(builder(&limits));
    let draining = CancellationToken::new();
    let mut connections = JoinSet::new();

    loop {
        // Reap finished connections so the set stays as small as what is open.
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit.expect("the semaphore is never closed"),
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let open = Arc::new(OpenRequests::default());
        let counted = Arc::clone(&open);
        let service = service_fn(move |req| {
            let request = counted.open();
            let response = handler(req);
            async move {
                let response = response.await;
                drop(request);
                Ok::<_, Infallible>(response)
            }
        });
        let (builder, tls, draining) = (Arc::clone(&builder), tls.clone(), draining.clone());
        let timeout = limits.header_read_timeout;
        connections.spawn(async move {
            serve_connection(
                &builder, stream, tls, service, &open, timeout, &draining, peer,
            )
            .await;
            drop(permit);
        });
    }

    drop(listener);
    drain(connections, draining, limits.shutdown_grace).await;
}

/// Both protocols, bounded: head size and count, HTTP/1 header-read timeout, HTTP/2 streams,
/// header list and keep-alive.
fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    builder
        .http2()
        .timer(TokioTimer::new())
        // Bounds what one HTTP/2 connection can hold: streams (each buffering up to
        // max_body_bytes), header bytes, and how long a dead peer keeps its slot.
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(u32::try_from(MAX_HEAD_BYTES).expect("16 KiB fits in u32"))
        .keep_alive_interval(Some(H2_KEEP_ALIVE))
        .keep_alive_timeout(H2_KEEP_ALIVE);
    builder
}

/// One accepted connection, TLS handshake included, until it ends, idles out or is drained.
#[expect(
    clippy::too_many_arguments,
    reason = "the per-connection parts of one accept, named at the one call site above"
)]
async fn serve_connection<S>(
    builder: &auto::Builder<TokioExecutor>,
    stream: tokio::net::TcpStream,
    tls: Option<TlsAcceptor>,
    service: S,
    open: &OpenRequests,
    timeout: Duration,
    draining: &CancellationToken,
    peer: std::net::SocketAddr,
) where
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<Full<Bytes>>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let io: Box<dyn Io> = match tls {
        None => Box::new(stream),
        // A handshake that does not finish in time holds no slot past the timeout.
        Some(acceptor) => match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => Box::new(stream),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "tls handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "tls handshake not done before the header-read timeout; closed");
                return;
            }
        },
    };
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    // Idle (no request open) for the timeout: ask the connection to close (HTTP/2
    // GOAWAY; cancels protocol detection, which waits for 24 bytes with no timeout of
    // its own). Draining: the same, for every connection. A peer that then still does
    // not let go within the timeout is dropped.
    let mut closing = false;
    let mut drop_at: Option<tokio::time::Instant> = None;
    loop {
        let hard_close = async {
            match drop_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                break;
            }
            () = open.idle_for(timeout), if !closing => {
                tracing::debug!(%peer, "idle past the header-read timeout; closing");
                connection.as_mut().graceful_shutdown();
                closing = true;
                drop_at = Some(tokio::time::Instant::now() + timeout);
            }
            // The listener's grace period bounds how long this one may take.
            () = draining.cancelled(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            () = hard_close => {
                tracing::debug!(%peer, "did not close after being asked; dropped");
                break;
            }
        }
    }
}

/// After the listener closed: asks every connection to finish, waits up to the grace period,
/// then closes what is still open.
async fn drain(mut connections: JoinSet<()>, draining: CancellationToken, grace: Duration) {
    let open = connections.len();
    tracing::info!(open, "stopped accepting; draining connections");
    draining.cancel();
    let drained = async { while connections.join_next().await.is_some() {} };
    tokio::select! {
        () = drained => tracing::info!("connections drained"),
        () = tokio::time::sleep(grace) => {
            tracing::warn!(open = connections.len(), "grace period over; closing open connections");
        }
    }
    connections.shutdown().await;
}
