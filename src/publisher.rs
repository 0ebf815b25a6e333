//! The publisher: moves outbox events to RabbitMQ with publisher confirms.
//!
//! Owns: one broker connection with one confirm-mode channel, the exchange declaration, a window
//! of publishes in flight, and reconnecting. Does not own: which events exist (`store`) or who
//! waits for them (`confirmations`). Knows only lapin and the store's API.
//!
//! Guarantees:
//! - Every message is persistent (`delivery_mode = 2`), `mandatory`, with `message_id` = event id
//!   and the raw body byte-identical.
//! - Only `Ack` without a returned message marks an event published. A nack, a returned
//!   (unroutable) message, a publish error or a confirm that does not come in time leave the
//!   event in the outbox; it is published again, with the same `message_id`, after a backoff.
//! - After a lost connection everything still in the outbox is published again, in order.
//! - Every await on the broker has a timeout; the relay serves webhooks while the broker is away.
//! - While the broker blocks the connection (a resource alarm, `connection.blocked`) the relay
//!   is not ready, the publisher's send and confirm timeouts pause and the connection is kept:
//!   the broker holds our publishes and confirms them once the alarm clears, and a new
//!   connection would be blocked again at its first publish.
//!
//! Reconnection is ours rather than lapin's auto-recovery: a lost connection drops every
//! in-flight confirm, and the outbox already knows exactly what to send again, so a fresh
//! connection with a rewound cursor is both simpler and easier to reason about.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ConnectionStatus,
    ExchangeKind,
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{AMQP_SHORT_STRING, AmqpConfig};
use crate::confirmations::Confirmations;
use crate::metrics::Metrics;
use crate::store::{EventKey, Pending, Store, StoreError};

mod retries;
use retries::{Retries, Verdict};

/// First wait after a failed connect or a refused message; doubles up to the configured cap.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// How long shutdown waits for confirms already requested before abandoning them (they stay
/// pending and are published again on the next start).
const SHUTDOWN_CONFIRM_WAIT: Duration = Duration::from_secs(5);
/// Closing politely must not hold up shutdown when the broker is gone.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Handing one message to lapin (its frames to the socket buffer) takes microseconds; a send
/// that blocks this long means the link stopped passing bytes (a blackholed broker), so the
/// connection is replaced. Time while the broker blocks the connection does not count.
const PUBLISH_SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an idle publisher checks that its connection still stands, besides lapin's events.
const HEALTH_CHECK: Duration = Duration::from_secs(1);
/// How often a send or confirm timeout, paused while the broker blocks the connection, looks
/// whether the block is over: small against the timeouts (seconds), cheap (a lock read).
const BLOCKED_CHECK: Duration = Duration::from_millis(100);
/// The header carrying the event's environment; returns are matched by it and the message_id.
const ENVIRONMENT_HEADER: &str = "gate-environment";

/// How long the broker may be away (not yet connected after start, reconnecting, or blocked by
/// an alarm) before confirmed mode stops waiting for confirms and answers 503 at once. Above a
/// reconnect after a blip (the first retry comes 100 ms after a loss; a connect takes
/// milliseconds) and well below 0Gate's 10 s.
pub const BROKER_DOWN_FAIL_FAST: Duration = Duration::from_secs(2);

/// What the rest of the relay may know about the broker connection.
#[derive(Debug)]
pub struct BrokerStatus {
    connected: AtomicBool,
    /// Since when the broker has been away; the relay's start counts as the first such instant.
    down_since: std::sync::Mutex<Option<Instant>>,
    last_error: std::sync::Mutex<Option<String>>,
}

impl Default for BrokerStatus {
    fn default() -> Self {
        Self {
            connected: AtomicBool::new(false),
            down_since: std::sync::Mutex::new(Some(Instant::now())),
            last_error: std::sync::Mutex::new(None),
        }
    }
}

impl BrokerStatus {
    /// True when the connection and the confirm channel are up.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// How long the broker has been away; `None` while connected.
    pub fn down_for(&self) -> Option<Duration> {
        self.down_since
            .lock()
            .expect("no panics while holding the lock")
            .map(|since| since.elapsed())
    }

    /// The latest publish or connection failure, for `/outbox`; cleared by nothing, so an
    /// operator sees the last thing that went wrong even after recovery.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .expect("no panics while holding the lock")
            .clone()
    }

    fn record_error(&self, error: String) {
        *self
            .last_error
            .lock()
            .expect("no panics while holding the lock") = Some(error);
    }

    fn set(&self, connected: bool, metrics: &Metrics) {
        {
            let mut since = self
                .down_since
                .lock()
                .expect("no panics while holding the lock");
            match (connected, *since) {
                (true, _) => *since = None,
                // Only the transition starts the clock: failed reconnects do not reset it.
                (false, None) => *since = Some(Instant::now()),
                (false, Some(_)) => {}
            }
        }
        self.connected.store(connected, Ordering::SeqCst);
        metrics.amqp_connected.set(i64::from(connected));
    }
}

#[derive(Debug, thiserror::Error)]
enum PublishError {
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker did not answer within {0:?}")]
    Timeout(Duration),
    #[error("broker TLS: {0}")]
    Tls(String),
    #[error("the connection is no longer usable")]
    ConnectionLost,
    /// Shutdown came while a send waited on a connection the broker blocks.
    #[error("shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How one publish ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PublishResult {
    Ack,
    Nack,
    Returned,
    Error,
    Timeout,
}

impl PublishResult {
    fn label(self) -> &'static str {
        match self {
            Self::Ack => "ack",
            Self::Nack => "nack",
            Self::Returned => "returned",
            Self::Error => "error",
            Self::Timeout => "timeout",
        }
    }
}

struct Confirmed {
    seq: u64,
    key: EventKey,
    event_id: String,
    result: PublishResult,
    /// The key of a returned message lapin attached to this confirm: not necessarily this
    /// event's (see [`Returns`]).
    returned: Option<EventKey>,
    elapsed: Duration,
}

/// How many returned events and recently acked events to remember per connection; far above
/// one window of publishes in flight.
const RETURNS_REMEMBERED: usize = 16_384;

/// `basic.return` frames, matched to events by their full key: the `gate-environment` header
/// and the `message_id` (the dedupe key is both: one id may be returned in `test` and routed
/// in `live` in the same window).
///
/// lapin hands a returned message to whichever confirm it resolves next, and an ack covering
/// several deliveries resolves them in no fixed order, so the confirm that carries a return is
/// not necessarily the returned message's own. An event therefore counts as returned when a
/// return with its key was seen on this connection, whichever confirm carried it; and an event
/// already marked published whose return is settled later is queued again.
#[derive(Debug, Default)]
struct Returns {
    /// Returned events not yet matched to their own confirm.
    unmatched: HashSet<EventKey>,
    /// Events recently marked published, to take back if their return shows up late.
    recent: std::collections::VecDeque<(String, EventKey)>,
}

impl Returns {
    fn returned(&mut self, key: EventKey) {
        if self.unmatched.len() >= RETURNS_REMEMBERED {
            self.unmatched.clear(); // bounded; a forgotten key is at worst a late re-queue missed
        }
        self.unmatched.insert(key);
    }

    fn acked(&mut self, id: String, key: EventKey) {
        if self.recent.len() == RETURNS_REMEMBERED {
            self.recent.pop_front();
        }
        self.recent.push_back((id, key));
    }

    /// A late return whose requeue failed: matched again at the next settle.
    fn retry_late(&mut self, id: String, key: EventKey) {
        self.unmatched.insert(key.clone());
        self.recent.push_back((id, key));
    }

    /// Events marked published whose return has since been seen.
    fn take_late(&mut self) -> Vec<(String, EventKey)> {
        if self.unmatched.is_empty() {
            return Vec::new();
        }
        let (late, keep): (Vec<_>, Vec<_>) = self
            .recent
            .drain(..)
            .partition(|(_, key)| self.unmatched.contains(key));
        self.recent = keep.into();
        for (_, key) in &late {
            self.unmatched.remove(key);
        }
        late
    }
}

/// The key of a returned message, from the headers the publisher set on it.
fn returned_key(ret: &lapin::message::BasicReturnMessage) -> Option<EventKey> {
    let id = ret.properties.message_id().as_ref()?;
    let headers = ret.properties.headers().as_ref()?;
    let environment = match headers.inner().get(ENVIRONMENT_HEADER)? {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        _ => return None,
    };
    Some(EventKey::from_parts(&environment, id.as_str()))
}

/// What a publish watches while it waits to be sent: the connection's blocked state and its
/// events (errors, blocked, unblocked), and shutdown.
struct Link<'a> {
    status: ConnectionStatus,
    events: std::pin::Pin<Box<dyn futures_lite::Stream<Item = lapin::Event> + Send>>,
    shutdown: &'a CancellationToken,
}

/// Awaits `future` for at most `limit` of time during which `link` was not blocked by the
/// broker; `None` when that ran out. A blocked broker holds publishes and confirms without any
/// fault of the link or the event, so that time does not count.
async fn unblocked_timeout<F: std::future::Future>(
    limit: Duration,
    link: &ConnectionStatus,
    future: F,
) -> Option<F::Output> {
    tokio::pin!(future);
    let mut left = limit;
    loop {
        let slice = left.min(BLOCKED_CHECK);
        match tokio::time::timeout(slice, &mut future).await {
            Ok(output) => return Some(output),
            Err(_) if link.blocked() => {}
            Err(_) => {
                left = left.saturating_sub(slice);
                if left.is_zero() {
                    return None;
                }
            }
        }
    }
}

#[derive(Debug)]
pub struct Publisher {
    store: Arc<Store>,
    confirmations: Arc<Confirmations>,
    status: Arc<BrokerStatus>,
    metrics: Metrics,
    config: AmqpConfig,
}

impl Publisher {
    pub fn new(
        store: Arc<Store>,
        confirmations: Arc<Confirmations>,
        status: Arc<BrokerStatus>,
        metrics: Metrics,
        config: AmqpConfig,
    ) -> Self {
        Self {
            store,
            confirmations,
            status,
            metrics,
            config,
        }
    }

    /// Connects, publishes until the connection fails, reconnects with capped exponential
    /// backoff; returns after `shutdown`, once in-flight confirms are settled or abandoned.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = INITIAL_BACKOFF;
        let mut connected_before = false;
        let mut retries = Retries::new(
            self.config.park_after_attempts,
            self.config.reconnect_max_backoff,
        );
        while !shutdown.is_cancelled() {
            match self.connect().await {
                Ok((connection, channel)) => {
                    if connected_before {
                        self.metrics.amqp_reconnects.inc();
                    }
                    connected_before = true;
                    backoff = INITIAL_BACKOFF;
                    self.status.set(true, &self.metrics);
                    tracing::info!(url = %self.config.url.redacted(), "broker connected");
                    let outcome = self
                        .publish_until_failure(&connection, &channel, &shutdown, &mut retries)
                        .await;
                    self.status.set(false, &self.metrics);
                    let _ = tokio::time::timeout(
                        CLOSE_TIMEOUT,
                        connection.close(200, "shutdown".into()),
                    )
                    .await;
                    match outcome {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "broker connection lost; reconnecting")
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "broker connect failed");
                    self.status.record_error(format!("connect failed: {e}"));
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = shutdown.cancelled() => break,
            }
            backoff = (backoff * 2).min(self.config.reconnect_max_backoff);
        }
        tracing::info!("publisher stopped");
    }

    async fn connect(&self) -> Result<(Connection, Channel), PublishError> {
        let timeout = self.config.connect_timeout;
        let setup = async {
            let properties =
                ConnectionProperties::default().with_connection_name("gate-relay".into());
            let connection = if self.config.url.expose().starts_with("amqps://") {
                let tls = self.tls_config()?;
                Connection::connect_with_config(
                    self.config.url.expose(),
                    properties,
                    tls,
                    lapin::runtime::default_runtime()?,
                )
                .await?
            } else {
                Connection::connect(self.config.url.expose(), properties).await?
            };
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            channel
                .exchange_declare(
                    self.config.exchange.as_str().into(),
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            if let Some(queue) = &self.config.declare_queue {
                let options = lapin::options::QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                };
                channel
                    .queue_declare(queue.as_str().into(), options, FieldTable::default())
                    .await?;
                channel
                    .queue_bind(
                        queue.as_str().into(),
                        self.config.exchange.as_str().into(),
                        "#".into(),
                        lapin::options::QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
            }
            Ok::<_, PublishError>((connection, channel))
        };
        tokio::time::timeout(timeout, setup)
            .await
            .map_err(|_| PublishError::Timeout(timeout))?
    }

    /// For `amqps://`: extra CA certificates (added to the platform's roots) and an optional
    /// client certificate. Read at every connect, so renewed files are picked up.
    fn tls_config(&self) -> Result<lapin::tcp::OwnedTLSConfig, PublishError> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| {
                PublishError::Tls(format!("cannot read {}: {}", path.display(), e.kind()))
            })
        };
        let cert_chain =
            match &self.config.ca_path {
                Some(path) => Some(String::from_utf8(read(path)?).map_err(|_| {
                    PublishError::Tls(format!("{} is not PEM text", path.display()))
                })?),
                None => None,
            };
        let identity = match (&self.config.client_cert_path, &self.config.client_key_path) {
            (Some(cert), Some(key)) => Some(lapin::tcp::OwnedIdentity::PKCS8 {
                pem: read(cert)?,
                key: read(key)?,
            }),
            _ => None,
        };
        Ok(lapin::tcp::OwnedTLSConfig {
            identity,
            cert_chain,
        })
    }

    /// Returns `Ok` on shutdown, `Err` when the connection must be replaced. Events in flight
    /// when it fails become suspects in `retries`.
    async fn publish_until_failure(
        &self,
        connection: &Connection,
        channel: &Channel,
        shutdown: &CancellationToken,
        retries: &mut Retries,
    ) -> Result<(), PublishError> {
        let mut session = Session::default();
        let outcome = self
            .session_loop(connection, channel, shutdown, retries, &mut session)
            .await;
        if let Err(e) = &outcome {
            // The broker closed the connection (or lapin saw it fail) with this event alone on
            // it: the event's fault. A timeout (a link that stopped passing bytes) or a blocked
            // connection says nothing about the event.
            let broker_closed = matches!(e, PublishError::Broker(_) | PublishError::ConnectionLost);
            let now = tokio::time::Instant::now();
            for (seq, (key, event_id)) in std::mem::take(&mut session.in_flight) {
                let counts = broker_closed && session.counts_against(seq);
                if let Verdict::Park { failures } = retries.unknown(seq, counts, now) {
                    let reason =
                        format!("connection lost {failures} times with it alone in flight");
                    self.park(seq, &key, &event_id, &reason, retries);
                }
            }
        }
        outcome
    }

    async fn session_loop(
        &self,
        connection: &Connection,
        channel: &Channel,
        shutdown: &CancellationToken,
        retries: &mut Retries,
        session: &mut Session,
    ) -> Result<(), PublishError> {
        // lapin reports a dead connection here (auto-recovery is off), even while we are idle.
        let mut link = Link {
            status: connection.status().clone(),
            events: Box::pin(connection.events_listener()),
            shutdown,
        };
        let mut health = tokio::time::interval(HEALTH_CHECK);
        loop {
            match self.fill_window(channel, &mut link, session, retries).await {
                Ok(()) => {}
                Err(PublishError::ShuttingDown) => {
                    self.drain(session, retries).await;
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
            let next_wake = retries.next_wake(tokio::time::Instant::now());
            let retry_sleep = async {
                match next_wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(done) = session.confirms.join_next() => {
                    let mut settled = vec![done.expect("confirm tasks do not panic")];
                    while let Some(more) = session.confirms.try_join_next() {
                        settled.push(more.expect("confirm tasks do not panic"));
                    }
                    let broken = self.settle(settled, session, retries).await?;
                    if broken || !connection.status().connected() {
                        return Err(PublishError::ConnectionLost);
                    }
                }
                () = self.store.outbox_grew() => {}
                event = link.events.next() => self.on_event(event, session)?,
                _ = health.tick() => {
                    if !connection.status().connected() || !channel.status().connected() {
                        return Err(PublishError::ConnectionLost);
                    }
                }
                () = retry_sleep => {
                    // Step back to the oldest event whose backoff ended; only that range is
                    // read again, and what is in flight or still waiting is skipped.
                    // (A cursor still at `None` reads from the oldest anyway.)
                    let due = retries.lowest_due(tokio::time::Instant::now());
                    if let (Some(due), Some(cursor)) = (due, session.cursor) {
                        if due <= cursor {
                            session.cursor = due.checked_sub(1);
                        }
                    }
                }
                () = shutdown.cancelled() => {
                    self.drain(session, retries).await;
                    return Ok(());
                }
            }
        }
    }

    /// Handles one connection event; `Err` when the connection must be replaced.
    fn on_event(
        &self,
        event: Option<lapin::Event>,
        session: &mut Session,
    ) -> Result<(), PublishError> {
        match event {
            Some(lapin::Event::Error(e)) => return Err(PublishError::Broker(e)),
            Some(lapin::Event::ConnectionBlocked(reason)) => {
                tracing::warn!(%reason, "broker blocked publishing (resource alarm)");
                session.blocked = true;
                self.status.set(false, &self.metrics);
            }
            Some(lapin::Event::ConnectionUnblocked) => {
                tracing::info!("broker unblocked publishing");
                self.status.set(true, &self.metrics);
            }
            Some(_) => {}
            None => return Err(PublishError::ConnectionLost),
        }
        Ok(())
    }

    /// Publishes outbox events after the cursor until the window is full or the outbox
    /// exhausted. While a suspect exists, it goes out alone and nothing else does.
    async fn fill_window(
        &self,
        channel: &Channel,
        link: &mut Link<'_>,
        session: &mut Session,
        retries: &mut Retries,
    ) -> Result<(), PublishError> {
        // An event that committed behind the cursor (out-of-order commits) pulls it back.
        if let Some(lowest) = self.store.take_lowest_admitted() {
            if session.cursor.is_some_and(|c| lowest <= c) {
                session.cursor = lowest.checked_sub(1);
            }
        }
        while let Some(suspect) = retries.next_suspect() {
            if !session.in_flight.is_empty() {
                return Ok(()); // isolating: wait for what is in flight
            }
            let batch = self
                .store
                .pending_after(suspect.checked_sub(1), 1, |_| false)?;
            match batch.events.into_iter().next() {
                Some(pending) if pending.seq == suspect => {
                    let owner = (pending.key.clone(), pending.record.event_id.clone());
                    session.in_flight.insert(pending.seq, owner);
                    session.isolated = Some(pending.seq);
                    return self.publish(channel, link, session, pending).await;
                }
                // Gone from the outbox meanwhile (replayed, or confirmed before the loss).
                _ => retries.forget(suspect),
            }
        }
        let now = tokio::time::Instant::now();
        while session.in_flight.len() < self.config.max_in_flight {
            let room = self.config.max_in_flight - session.in_flight.len();
            let batch = self.store.pending_after(session.cursor, room, |seq| {
                session.in_flight.contains_key(&seq) || retries.holds(seq, now)
            })?;
            session.cursor = batch.last_seq;
            for pending in batch.events {
                let owner = (pending.key.clone(), pending.record.event_id.clone());
                session.in_flight.insert(pending.seq, owner);
                self.publish(channel, link, session, pending).await?;
            }
            if batch.exhausted {
                break;
            }
        }
        Ok(())
    }

    async fn publish(
        &self,
        channel: &Channel,
        link: &mut Link<'_>,
        session: &mut Session,
        pending: Pending,
    ) -> Result<(), PublishError> {
        let record = &pending.record;
        let mut routing_key = self.config.routing_key.render(
            &record.environment,
            &record.event_type,
            &record.endpoint,
        );
        if routing_key.len() > AMQP_SHORT_STRING {
            let mut end = AMQP_SHORT_STRING;
            while !routing_key.is_char_boundary(end) {
                end -= 1;
            }
            routing_key.truncate(end);
        }
        let mut headers = FieldTable::default();
        headers.insert(
            ENVIRONMENT_HEADER.into(),
            AMQPValue::LongString(record.environment.as_str().into()),
        );
        headers.insert(
            "gate-endpoint".into(),
            AMQPValue::LongString(record.endpoint.as_str().into()),
        );
        headers.insert(
            "gate-received-at-ms".into(),
            AMQPValue::LongLongInt(i64::try_from(record.received_at_ms).unwrap_or(i64::MAX)),
        );
        headers.insert(
            "gate-request-id".into(),
            AMQPValue::LongString(record.request_id.as_str().into()),
        );
        headers.insert(
            crate::signature::HEADER.into(),
            AMQPValue::LongString(record.signature.as_str().into()),
        );
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(record.event_id.as_str().into())
            .with_type(record.event_type.as_str().into())
            .with_content_type("application/json".into())
            .with_app_id("gate-relay".into())
            .with_timestamp(record.received_at_ms / 1000)
            .with_headers(headers);
        let started = Instant::now();
        let send = unblocked_timeout(
            PUBLISH_SEND_TIMEOUT,
            &link.status,
            channel.basic_publish(
                self.config.exchange.as_str().into(),
                routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &pending.body,
                properties,
            ),
        );
        tokio::pin!(send);
        let confirm = loop {
            tokio::select! {
                sent = &mut send => {
                    break sent.ok_or(PublishError::Timeout(PUBLISH_SEND_TIMEOUT))??;
                }
                // A blocked broker stops reading, so this send waits; its block must still be
                // seen (the relay is not ready meanwhile), and so must a connection error.
                event = link.events.next() => self.on_event(event, session)?,
                // The wait is unbounded while blocked; shutdown must not be.
                () = link.shutdown.cancelled() => return Err(PublishError::ShuttingDown),
            }
        };
        crate::failpoint::hit(crate::failpoint::AFTER_PUBLISH);
        let confirm_timeout = self.config.publish_confirm_timeout;
        let (seq, key, event_id) = (pending.seq, pending.key, pending.record.event_id);
        let status = link.status.clone();
        session.confirms.spawn(async move {
            let outcome = unblocked_timeout(confirm_timeout, &status, confirm).await;
            let (result, returned) = match outcome {
                // The broker acked this delivery; a return attached here may be another's.
                Some(Ok(Confirmation::Ack(ret))) => {
                    (PublishResult::Ack, ret.as_ref().and_then(returned_key))
                }
                Some(Ok(Confirmation::Nack(ret))) => {
                    (PublishResult::Nack, ret.as_ref().and_then(returned_key))
                }
                Some(Ok(Confirmation::NotRequested)) => (PublishResult::Nack, None),
                Some(Err(_)) => (PublishResult::Error, None),
                None => (PublishResult::Timeout, None),
            };
            Confirmed {
                seq,
                key,
                event_id,
                result,
                returned,
                elapsed: started.elapsed(),
            }
        });
        Ok(())
    }

    /// Records a batch of confirm outcomes; returns whether the connection is suspect (an
    /// error or a timeout: the outcome is unknown, so it is replaced).
    async fn settle(
        &self,
        mut settled: Vec<Confirmed>,
        session: &mut Session,
        retries: &mut Retries,
    ) -> Result<bool, PublishError> {
        let now = tokio::time::Instant::now();
        let mut broken = false;
        let mut acked = Vec::new();
        for c in &mut settled {
            if let Some(key) = c.returned.take() {
                session.returns.returned(key);
            }
        }
        for c in settled {
            session.in_flight.remove(&c.seq);
            let result =
                if c.result == PublishResult::Ack && session.returns.unmatched.remove(&c.key) {
                    PublishResult::Returned
                } else {
                    c.result
                };
            self.metrics
                .publishes
                .with_label_values(&[result.label()])
                .inc();
            if result == PublishResult::Ack {
                self.metrics
                    .publish_confirm
                    .observe(c.elapsed.as_secs_f64());
                retries.forget(c.seq);
                session.returns.acked(c.event_id, c.key.clone());
                acked.push((c.seq, c.key));
                continue;
            }
            // A refusal (nack, returned) backs off this event alone; an unknown outcome
            // (error, timeout) replaces the connection and makes the event a suspect.
            let refused = matches!(result, PublishResult::Nack | PublishResult::Returned);
            tracing::warn!(
                event_id = c.event_id,
                result = result.label(),
                refused,
                "event not confirmed; will publish again"
            );
            self.status
                .record_error(format!("{} for event {}", result.label(), c.event_id));
            let verdict = if refused {
                retries.refused(c.seq, now)
            } else {
                broken = true;
                // A publish error on a suspect sent alone is its own; a timeout is not.
                let counts = result == PublishResult::Error && session.counts_against(c.seq);
                retries.unknown(c.seq, counts, now)
            };
            if session.isolated == Some(c.seq) {
                session.isolated = None;
            }
            if let Verdict::Park { failures } = verdict {
                let reason = format!("{} {failures} times", result.label());
                if !self.park(c.seq, &c.key, &c.event_id, &reason, retries) {
                    // Still pending: read it again from here.
                    if session.cursor.is_some_and(|cursor| c.seq <= cursor) {
                        session.cursor = c.seq.checked_sub(1);
                    }
                }
            }
        }
        crate::failpoint::hit(crate::failpoint::AFTER_CONFIRM);
        let marked = self.store.mark_published(&acked);
        // The broker has them whatever the store said, so their waiters may be told.
        for (_, key) in &acked {
            self.confirmations.confirmed(key);
        }
        if let Err(e) = marked {
            // They stay pending; replacing the connection rewinds the cursor so they are sent
            // again (duplicates with the same message_id) and marked then.
            tracing::error!(error = %e, "marking events published failed; publishing them again");
            return Err(e.into());
        }
        for (event_id, key) in session.returns.take_late() {
            tracing::warn!(
                event_id,
                "event returned after it was marked published; queued again"
            );
            self.metrics
                .publishes
                .with_label_values(&[PublishResult::Returned.label()])
                .inc();
            self.status
                .record_error(format!("returned for event {event_id}"));
            if let Err(e) = self.store.requeue(&key).await {
                // Marked published but never delivered: keep it to try again at the next
                // settle rather than forget it.
                tracing::error!(event_id, error = %e, "queueing a returned event again failed");
                session.returns.retry_late(event_id, key);
                broken = true;
            }
        }
        Ok(broken)
    }

    /// Takes an event the broker keeps refusing out of the outbox, so it holds up nothing.
    /// False when parking failed: the event stays pending (and in `retries`, at its bound, so
    /// its next failure parks it again).
    fn park(
        &self,
        seq: u64,
        key: &EventKey,
        event_id: &str,
        reason: &str,
        retries: &mut Retries,
    ) -> bool {
        match self.store.park(seq, key, reason) {
            Ok(parked) => {
                retries.forget(seq);
                if parked {
                    self.metrics.events_parked_total.inc();
                    tracing::error!(
                        event_id,
                        reason,
                        "event parked: the broker keeps refusing it; replay or drop it through the admin API"
                    );
                }
                true
            }
            Err(e) => {
                tracing::error!(event_id, error = %e, "parking an event failed");
                false
            }
        }
    }

    /// On shutdown: wait (bounded) for confirms already requested.
    async fn drain(&self, session: &mut Session, retries: &mut Retries) {
        let waiting = session.confirms.len();
        let deadline = tokio::time::sleep(SHUTDOWN_CONFIRM_WAIT);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = session.confirms.join_next() => match next {
                    Some(done) => {
                        let done = vec![done.expect("confirm tasks do not panic")];
                        let _ = self.settle(done, session, retries).await;
                    }
                    None => break,
                },
                () = &mut deadline => {
                    tracing::warn!(abandoned = session.confirms.len(), "confirms abandoned at shutdown; they stay pending");
                    break;
                }
            }
        }
        tracing::info!(waiting, "publisher drained");
    }
}

/// What one connection holds: publishes in flight, their confirms, returns seen, the cursor.
#[derive(Default)]
struct Session {
    /// Outbox sequence → key and event id of every publish awaiting its confirm.
    in_flight: HashMap<u64, (EventKey, String)>,
    confirms: JoinSet<Confirmed>,
    returns: Returns,
    /// Highest sequence handed to the broker in this pass; `None` starts from the oldest.
    cursor: Option<u64>,
    /// The suspect sent alone, while its outcome is awaited.
    isolated: Option<u64>,
    /// The broker blocked this connection (a resource alarm) at some point: failures on it
    /// say nothing about any event.
    blocked: bool,
}

impl Session {
    /// Whether a failure of `seq` is its own: it was the suspect deliberately sent alone, on a
    /// connection the broker never blocked.
    fn counts_against(&self, seq: u64) -> bool {
        self.isolated == Some(seq) && !self.blocked
    }
}
