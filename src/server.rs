//! The HTTP listener: accepts connections and serves HTTP/1.1 and HTTP/2 with hyper.
//!
//! Owns: the connection bound (a semaphore permit per open connection, taken before `accept`, so
//! excess clients wait in the kernel backlog), the header-read timeout (hyper ignores it unless a
//! timer is set, so one is), and graceful shutdown: stop accepting, let open connections finish
//! within the grace period, then close what is left. With TLS, the handshake runs in the
//! connection's own task under the same timeout as the headers. Does not own: what a request
//! means (`routes`) or certificates (`tls`).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// 0Gate sends one delivery at a time per connection; a few streams leave room for a proxy.
const H2_MAX_STREAMS: u32 = 8;
/// An HTTP/2 peer that does not answer a ping within this is gone.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);

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
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        // Bounds what one HTTP/2 connection can hold: streams (each buffering up to
        // max_body_bytes) and how long a dead peer keeps its slot.
        .max_concurrent_streams(H2_MAX_STREAMS)
        .keep_alive_interval(Some(H2_KEEP_ALIVE))
        .keep_alive_timeout(H2_KEEP_ALIVE);
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
        // Set by the first request: until then the connection is on a deadline (see below).
        let first_request = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&first_request);
        let service = service_fn(move |req| {
            seen.store(true, Ordering::Relaxed);
            let response = handler(req);
            async move { Ok::<_, Infallible>(response.await) }
        });
        let (builder, watcher, tls) = (builder.clone(), graceful.watcher(), tls.clone());
        let first_request_timeout = limits.header_read_timeout;
        connections.spawn(async move {
            let serve = async {
                match tls {
                    None => {
                        let connection = builder.serve_connection(TokioIo::new(stream), service);
                        watcher.watch(connection.into_owned()).await
                    }
                    Some(acceptor) => {
                        let stream = match acceptor.accept(stream).await {
                            Ok(stream) => stream,
                            Err(e) => {
                                tracing::debug!(%peer, error = %e, "tls handshake failed");
                                return Ok(());
                            }
                        };
                        let connection = builder.serve_connection(TokioIo::new(stream), service);
                        watcher.watch(connection.into_owned()).await
                    }
                }
            };
            // hyper's header-read timeout starts only after the protocol is known, so a client
            // that sends nothing (or a few bytes, or only a TLS handshake) would hold its
            // connection slot forever. The TLS handshake and the first request's headers must
            // both arrive within the header-read timeout.
            let deadline = async {
                tokio::time::sleep(first_request_timeout).await;
                if first_request.load(Ordering::Relaxed) {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                served = serve => {
                    if let Err(e) = served {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
                () = deadline => tracing::debug!(%peer, "no request before the header-read timeout; closed"),
            }
            drop(permit);
        });
    }

    drop(listener);
    let open = connections.len();
    tracing::info!(open, "stopped accepting; draining connections");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("connections drained"),
        () = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!(open = connections.len(), "grace period over; closing open connections");
        }
    }
    connections.shutdown().await;
}
