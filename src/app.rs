//! Wiring: builds the store, publisher, ingest, routes and listeners, owns their tasks, and
//! shuts them down in a fixed order.
//!
//! Shutdown order (each step logged): readiness false → stop accepting and drain open webhook
//! connections (grace period) → publisher settles or abandons in-flight confirms (bounded;
//! abandoned events stay pending) → final store flush → admin listener closes. Every task is
//! spawned here, cancelled through its own token and awaited.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::Admin;
use crate::config::Config;
use crate::confirmations::Confirmations;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::publisher::{BrokerStatus, Publisher};
use crate::routes::Routes;
use crate::server::{self, Limits, Refusals};
use crate::store::{AdminView, IngestView, PublisherView, Retention, Store, StoreError};
use crate::tls::{ServerTls, TlsError};

/// Retention is in days; a pass a minute keeps each pass small.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Admin requests are tiny and few; this bounds what a misbehaving scraper can hold open.
const ADMIN_MAX_CONNECTIONS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot install the SIGHUP handler (reload): {0}")]
    Signal(std::io::Error),
    #[error(
        "a store flush failed; events acknowledged since the last good flush may need 0Gate's retry (see the log)"
    )]
    FlushFailed,
}

/// The bound sockets, created before `start` so tests can bind port 0.
#[derive(Debug)]
pub struct Listeners {
    pub webhook: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    pub async fn bind(config: &Config) -> Result<Self, AppError> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| AppError::Bind { addr, source })
        };
        Ok(Self {
            webhook: bind(config.server.listen).await?,
            admin: bind(config.admin.listen).await?,
        })
    }
}

/// A started relay: its addresses, its shared state (for tests and the admin API) and its tasks.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub metrics: Metrics,
    pub broker: Arc<BrokerStatus>,
    pub store: Arc<Store>,
    routes: Arc<Routes>,
    tls: Option<Arc<ServerTls>>,
    draining: Arc<AtomicBool>,
    tasks: Vec<(&'static str, CancellationToken, JoinHandle<()>)>,
}

/// Builds everything and starts serving.
pub async fn start(config: Config, listeners: Listeners) -> Result<Running, AppError> {
    let addr = local_addr(&listeners.webhook, config.server.listen)?;
    let admin_addr = local_addr(&listeners.admin, config.admin.listen)?;
    let tls = config
        .server
        .tls
        .clone()
        .map(ServerTls::load)
        .transpose()?
        .map(Arc::new);
    let shared = Shared::open(&config).await?;
    let store = &shared.store;
    let routes = webhook_routes(&config, &shared);
    let admin = admin_api(&config, &shared);
    let publisher = Publisher::new(
        PublisherView::new(Arc::clone(store)),
        Arc::clone(&shared.confirmations),
        Arc::clone(&shared.broker),
        shared.metrics.clone(),
        config.amqp.clone(),
    );
    let webhook_limits = Limits {
        max_connections: config.server.max_connections,
        header_read_timeout: config.server.header_read_timeout,
        shutdown_grace: config.server.shutdown_grace,
        refusals: Refusals::new("webhook", shared.metrics.connections_refused.clone()),
    };
    let admin_limits = Limits {
        max_connections: ADMIN_MAX_CONNECTIONS,
        refusals: Refusals::new("admin", shared.metrics.connections_refused.clone()),
        ..webhook_limits.clone()
    };
    let retention = Retention {
        bodies: config.store.retain_bodies,
        events: config.store.retain_events,
    };
    let flush_histogram = shared.metrics.store_flush.clone();

    // Spawned in shutdown order: the webhook server stops first, the admin listener last.
    let mut tasks = Tasks::default();
    let acceptor = tls.as_ref().map(|t| t.acceptor());
    let webhook = Arc::clone(&routes);
    let handler = move |req| Arc::clone(&webhook).handle(req);
    tasks.spawn("webhook listener", |token| {
        server::serve(listeners.webhook, acceptor, handler, webhook_limits, token)
    });
    tasks.spawn("publisher", |token| publisher.run(token));
    tasks.spawn("store flusher", |token| {
        Arc::clone(store).run_flusher(token, flush_histogram)
    });
    tasks.spawn("pruner", |token| {
        Arc::clone(store).run_pruner(token, PRUNE_EVERY, retention)
    });
    let handler = move |req| Arc::clone(&admin).handle(req);
    tasks.spawn("admin listener", |token| {
        server::serve(listeners.admin, None, handler, admin_limits, token)
    });

    tracing::info!(%addr, %admin_addr, ack = ?config.delivery.ack, "listening");
    Ok(Running {
        addr,
        admin_addr,
        metrics: shared.metrics,
        broker: shared.broker,
        store: shared.store,
        routes,
        tls,
        draining: shared.draining,
        tasks: tasks.0,
    })
}

/// What the parts of a running relay share.
struct Shared {
    store: Arc<Store>,
    metrics: Metrics,
    broker: Arc<BrokerStatus>,
    confirmations: Arc<Confirmations>,
    draining: Arc<AtomicBool>,
}

impl Shared {
    /// Opens the store (on a blocking thread: opening repairs the outbox and fsyncs) and the state
    /// built around it.
    async fn open(config: &Config) -> Result<Self, AppError> {
        let store_config = config.store.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&store_config))
            .await
            .map_err(|_| StoreError::Closed)??;
        let metrics = Metrics::new();
        metrics.store_recreated.set(i64::from(store.recreated()));
        Ok(Self {
            store: Arc::new(store),
            metrics,
            broker: Arc::new(BrokerStatus::default()),
            confirmations: Arc::new(Confirmations::default()),
            draining: Arc::new(AtomicBool::new(false)),
        })
    }
}

fn webhook_routes(config: &Config, shared: &Shared) -> Arc<Routes> {
    let ingest = Ingest {
        store: IngestView::new(Arc::clone(&shared.store)),
        confirmations: Arc::clone(&shared.confirmations),
        broker: Arc::clone(&shared.broker),
        metrics: shared.metrics.clone(),
        ack: config.delivery.ack,
        confirm_timeout: config.delivery.confirm_timeout,
    };
    Routes::new(
        &config.endpoints,
        ingest,
        shared.metrics.clone(),
        config.server.max_body_bytes,
        config.server.request_timeout,
        config.delivery.retry_after_secs,
        // One delivery per allowed connection: memory stays within max_connections bodies
        // however HTTP/2 multiplexes them.
        config.server.max_connections,
        config.server.max_body_bytes_in_flight,
    )
}

fn admin_api(config: &Config, shared: &Shared) -> Arc<Admin> {
    Arc::new(Admin {
        store: AdminView::new(Arc::clone(&shared.store)),
        broker: Arc::clone(&shared.broker),
        metrics: shared.metrics.clone(),
        draining: Arc::clone(&shared.draining),
        environments: config
            .endpoints
            .iter()
            .map(|e| e.environment.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect(),
        token: config.admin.token.clone(),
    })
}

/// The relay's background tasks, each with the token that stops it, in shutdown order.
#[derive(Default)]
struct Tasks(Vec<(&'static str, CancellationToken, JoinHandle<()>)>);

impl Tasks {
    fn spawn<F>(&mut self, name: &'static str, task: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let token = CancellationToken::new();
        let handle = tokio::spawn(task(token.clone()));
        self.0.push((name, token, handle));
    }
}

fn local_addr(listener: &TcpListener, configured: SocketAddr) -> Result<SocketAddr, AppError> {
    listener.local_addr().map_err(|source| AppError::Bind {
        addr: configured,
        source,
    })
}

impl Running {
    /// Applies what can change without a restart: endpoints and their secrets, and the TLS
    /// certificate. A certificate that fails to load keeps the old one (and says why).
    pub fn reload(&self, config: &Config) {
        self.routes.replace_endpoints(&config.endpoints);
        tracing::info!(
            endpoints = config.endpoints.len(),
            "endpoints and secrets reloaded"
        );
        if let Some(tls) = &self.tls {
            // ServerTls::reload logs its own outcome.
            let _ = tls.reload();
        }
    }

    /// Stops everything in order; returns when the store has been flushed. `Err` when a flush
    /// failed, at shutdown or before: the exit code must not say all is well.
    pub async fn shutdown(self) -> Result<(), AppError> {
        self.draining.store(true, Ordering::SeqCst);
        tracing::info!("shutting down");
        for (name, token, task) in self.tasks {
            token.cancel();
            if let Err(e) = task.await {
                tracing::error!(task = name, error = %e, "task failed during shutdown");
            }
            tracing::info!(task = name, "stopped");
        }
        if self.store.flush_failed() {
            return Err(AppError::FlushFailed);
        }
        Ok(())
    }
}

/// Binds, starts, serves until `signal` resolves, then shuts down in order. On SIGHUP, `reload`
/// reads the configuration again; a configuration that does not validate changes nothing.
pub async fn run(
    config: Config,
    reload: impl Fn() -> Result<Config, String>,
    signal: impl Future<Output = ()>,
) -> Result<(), AppError> {
    // Installed first: failing here leaves nothing started to shut down.
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(AppError::Signal)?;
    let listeners = Listeners::bind(&config).await?;
    let running = start(config, listeners).await?;
    tokio::pin!(signal);
    loop {
        tokio::select! {
            () = &mut signal => break,
            _ = hangups.recv() => match reload() {
                Ok(config) => running.reload(&config),
                Err(problems) => tracing::warn!(%problems, "reload refused; keeping the running configuration"),
            },
        }
    }
    running.shutdown().await
}
