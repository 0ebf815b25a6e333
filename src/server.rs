//! The HTTP listener: accepts connections and serves HTTP/1.1 and HTTP/2 with hyper.
//!
//! Owns: the connection bound (a semaphore permit per open connection, taken before `accept`, so
//! excess clients wait in the kernel backlog), the bounds on request heads (bytes and count, both
//! protocols), the header-read timeout (hyper ignores it unless a timer is set, so one is), the
//! idle timeout, and graceful shutdown: stop accepting, let open connections finish within the
//! grace period, then close what is left. With TLS, the handshake runs in the connection's own
//! task under the same timeout as the headers. Counts every connection or stream refused before
//! a handler ran (`refusal`): hyper answers those itself, so the routes never see them. Does not
//! own: what a request means (`routes`) or certificates (`tls`).
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
use http::{Request, Response, StatusCode, Version};
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

mod refusal;

use refusal::Refusal;
pub use refusal::Refusals;

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

/// h2's own cap on a request's header list (name + value + 32 bytes per field, RFC 9113 6.5.2):
/// twice ours, so a list between the two reaches the service wrapper, which refuses and counts
/// it like hyper's HTTP/1 431. Past this h2 answers 431 itself, uncounted, and reads no further.
const H2_MAX_HEADER_LIST: u32 = 2 * MAX_HEAD_BYTES as u32;

/// A stream's receive window: body bytes a peer may send before we read them. A body at the
/// 1 MiB cap (0Gate's are under 1 KiB) then takes 16 round trips: 1.6 s over a 100 ms path,
/// inside 0Gate's 10 s; a delivery refused before its body is read (signature, budget) leaves
/// at most this buffered. hyper's default is 1 MiB.
const H2_STREAM_WINDOW: u32 = 64 * 1024;
/// All streams of one connection together: what HTTP/2 buffers outside the body budget is at
/// most this per connection (README, "Limits"). Two full stream windows, so a proxy's second
/// delivery is not stalled behind the first.
const H2_CONNECTION_WINDOW: u32 = 128 * 1024;
/// Streams the peer resets before we accepted them: a proxy cancelling every stream it has open
/// (the cap, 8) is normal; more is the rapid-reset attack (CVE-2023-44487), answered with
/// GOAWAY ENHANCE_YOUR_CALM. h2's default is 20.
const H2_MAX_PENDING_ACCEPT_RESETS: usize = 2 * H2_MAX_STREAMS as usize;
/// Streams we reset for the peer's errors (a head over the cap, a stream over the cap): a peer
/// that keeps earning resets is not 0Gate or its proxy. hyper's default is 1,024.
const H2_MAX_LOCAL_ERROR_RESETS: usize = 64;

/// Plain TCP or TLS, so both are served by one code path.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Requests open on one connection, and a wake-up whenever that changes.
#[derive(Default)]
struct OpenRequests {
    count: AtomicUsize,
    /// Set by the first request: a connection closed idle before it never sent a whole head.
    served: std::sync::atomic::AtomicBool,
    changed: Notify,
}

impl OpenRequests {
    fn open(self: &Arc<Self>) -> OpenRequest {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.served.store(true, Ordering::SeqCst);
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
    /// Where refused connections and streams are counted, under this listener's name.
    pub refusals: Refusals,
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
    let shared = Arc::new(Shared {
        builder: builder(&limits),
        timeout: limits.header_read_timeout,
        draining: CancellationToken::new(),
        refusals: limits.refusals.clone(),
    });
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
        let open = Arc::new(OpenRequests::default());
        let service = service(handler.clone(), Arc::clone(&open), shared.refusals.clone());
        let (shared, tls) = (Arc::clone(&shared), tls.clone());
        connections.spawn(async move {
            serve_connection(&shared, stream, tls, service, &open, peer).await;
            drop(permit);
        });
    }

    drop(listener);
    drain(connections, &shared.draining, limits.shutdown_grace).await;
}

/// What every connection of one listener shares.
struct Shared {
    builder: auto::Builder<TokioExecutor>,
    timeout: Duration,
    draining: CancellationToken,
    refusals: Refusals,
}

/// The handler, with each request counted open while it runs, and HTTP/2 heads held to the
/// same bounds hyper holds HTTP/1 heads to (h2 itself has no header-count bound).
fn service<H, F>(
    handler: H,
    open: Arc<OpenRequests>,
    refusals: Refusals,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send,
> + Send
+ 'static
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    service_fn(move |req: Request<Incoming>| {
        let request = open.open();
        let response = if head_too_large(&req) {
            refusals.count(Refusal::HeadTooLarge);
            None
        } else {
            Some(handler(req))
        };
        async move {
            let response = match response {
                Some(response) => response.await,
                // As hyper answers an HTTP/1 head over its bounds: 431, no body.
                None => {
                    let mut response = Response::new(Full::new(Bytes::new()));
                    *response.status_mut() = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
                    response
                }
            };
            drop(request);
            Ok::<_, Infallible>(response)
        }
    })
}

/// An HTTP/2 head over MAX_HEADERS fields or MAX_HEAD_BYTES (counted as h2 counts a header
/// list). HTTP/1 heads never get here over either: hyper refuses them first.
fn head_too_large(req: &Request<Incoming>) -> bool {
    if req.version() != Version::HTTP_2 {
        return false;
    }
    // As h2 counts a header list: every field, pseudo-headers included, is its name and value
    // plus 32 bytes (RFC 9113 §6.5.2). Leaving `:path` out let a 30 KiB path through.
    let field = |name: &str, value: usize| name.len() + value + 32;
    let uri = req.uri();
    let pseudo = field(":method", req.method().as_str().len())
        + field(":scheme", uri.scheme_str().map_or(0, str::len))
        + field(
            ":authority",
            uri.authority().map_or(0, |a| a.as_str().len()),
        )
        + field(
            ":path",
            uri.path_and_query().map_or(0, |p| p.as_str().len()),
        );
    let headers = req.headers();
    let bytes: usize = pseudo
        + headers
            .iter()
            .map(|(name, value)| field(name.as_str(), value.len()))
            .sum::<usize>();
    headers.len() > MAX_HEADERS || bytes > MAX_HEAD_BYTES
}

/// Both protocols, bounded: head size and count, HTTP/1 header-read timeout, HTTP/2 streams,
/// flow-control windows, header list, resets and keep-alive.
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
        // Bounds what one HTTP/2 connection can hold: streams, body bytes not yet read, header
        // bytes, resets, and how long a dead peer keeps its slot.
        .max_concurrent_streams(H2_MAX_STREAMS)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_header_list_size(H2_MAX_HEADER_LIST)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS)
        .keep_alive_interval(Some(H2_KEEP_ALIVE))
        .keep_alive_timeout(H2_KEEP_ALIVE);
    builder
}

/// One accepted connection, TLS handshake included, until it ends, idles out or is drained.
/// A connection that ends before any handler ran is counted under its refusal reason, once.
async fn serve_connection<S>(
    shared: &Shared,
    stream: tokio::net::TcpStream,
    tls: Option<TlsAcceptor>,
    service: S,
    open: &OpenRequests,
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
    let timeout = shared.timeout;
    let Some(io) = handshake(shared, stream, tls, peer).await else {
        return;
    };
    let connection = shared.builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    // Idle (no request open) for the timeout: ask the connection to close (HTTP/2
    // GOAWAY; cancels protocol detection, which waits for 24 bytes with no timeout of
    // its own). Draining: the same, for every connection. A peer that then still does
    // not let go within the timeout is dropped.
    let mut closing = false;
    let mut drop_at: Option<tokio::time::Instant> = None;
    let mut refused: Option<Refusal> = None;
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
                    let reason = Refusal::classify(e.as_ref());
                    // hyper's header-read timer also runs while a kept-alive HTTP/1 connection
                    // waits for its next request, racing the idle timer above: after a request,
                    // its timeout is an idle connection expiring, not a refusal.
                    let idle_expiry =
                        reason == Refusal::HeaderTimeout && open.served.load(Ordering::SeqCst);
                    if !idle_expiry {
                        refused = refused.or(Some(reason));
                    }
                }
                break;
            }
            () = open.idle_for(timeout), if !closing => {
                tracing::debug!(%peer, "idle past the header-read timeout; closing");
                // Never a whole head in time: the same refusal as hyper's own header-read
                // timeout, whichever of the two fires first.
                if !open.served.load(Ordering::SeqCst) {
                    refused = Some(Refusal::HeaderTimeout);
                }
                connection.as_mut().graceful_shutdown();
                closing = true;
                drop_at = Some(tokio::time::Instant::now() + timeout);
            }
            // The listener's grace period bounds how long this one may take.
            () = shared.draining.cancelled(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            () = hard_close => {
                tracing::debug!(%peer, "did not close after being asked; dropped");
                break;
            }
        }
    }
    if let Some(reason) = refused {
        shared.refusals.count(reason);
    }
}

/// Plain TCP as it is; TLS once its handshake finished within the header-read timeout (a
/// handshake that does not holds no slot past it). A failed one is counted and ends here.
async fn handshake(
    shared: &Shared,
    stream: tokio::net::TcpStream,
    tls: Option<TlsAcceptor>,
    peer: std::net::SocketAddr,
) -> Option<Box<dyn Io>> {
    let Some(acceptor) = tls else {
        return Some(Box::new(stream));
    };
    match tokio::time::timeout(shared.timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(Box::new(stream)),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "tls handshake failed");
            shared.refusals.count(Refusal::TlsHandshake);
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "tls handshake not done before the header-read timeout; closed");
            shared.refusals.count(Refusal::HeaderTimeout);
            None
        }
    }
}

/// After the listener closed: asks every connection to finish, waits up to the grace period,
/// then closes what is still open.
async fn drain(mut connections: JoinSet<()>, draining: &CancellationToken, grace: Duration) {
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
