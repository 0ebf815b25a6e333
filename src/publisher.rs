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
//!
//! Reconnection is ours rather than lapin's auto-recovery: a lost connection drops every
//! in-flight confirm, and the outbox already knows exactly what to send again, so a fresh
//! connection with a rewound cursor is both simpler and easier to reason about.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::AmqpConfig;
use crate::confirmations::Confirmations;
use crate::metrics::Metrics;
use crate::store::{EventKey, Pending, Store, StoreError};

/// First wait after a failed connect or a refused message; doubles up to the configured cap.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// How long shutdown waits for confirms already requested before abandoning them (they stay
/// pending and are published again on the next start).
const SHUTDOWN_CONFIRM_WAIT: Duration = Duration::from_secs(5);
/// Closing politely must not hold up shutdown when the broker is gone.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often an idle publisher checks that its connection still stands, besides lapin's events.
const HEALTH_CHECK: Duration = Duration::from_secs(1);
/// AMQP short strings (routing keys) are at most 255 bytes.
const MAX_ROUTING_KEY: usize = 255;

/// What the rest of the relay may know about the broker connection.
#[derive(Debug, Default)]
pub struct BrokerStatus {
    connected: AtomicBool,
    last_error: std::sync::Mutex<Option<String>>,
}

impl BrokerStatus {
    /// True when the connection and the confirm channel are up.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
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
    /// The `message_id` of a returned message lapin attached to this confirm: not necessarily
    /// this event's (see [`Returns`]).
    returned_id: Option<String>,
    elapsed: Duration,
}

/// How many returned ids and recently acked events to remember per connection; far above one
/// window of publishes in flight.
const RETURNS_REMEMBERED: usize = 16_384;

/// `basic.return` frames, matched to events by `message_id`.
///
/// lapin hands a returned message to whichever confirm it resolves next, and an ack covering
/// several deliveries resolves them in no fixed order, so the confirm that carries a return is
/// not necessarily the returned message's own. An event therefore counts as returned when a
/// return with its id was seen on this connection, whichever confirm carried it; and an event
/// already marked published whose return is settled later is queued again.
#[derive(Debug, Default)]
struct Returns {
    /// Returned ids not yet matched to their own confirm.
    unmatched: HashSet<String>,
    /// Events recently marked published, to take back if their return shows up late.
    recent: std::collections::VecDeque<(String, EventKey)>,
}

impl Returns {
    fn returned(&mut self, id: String) {
        if self.unmatched.len() >= RETURNS_REMEMBERED {
            self.unmatched.clear(); // bounded; a forgotten id is at worst a late re-queue missed
        }
        self.unmatched.insert(id);
    }

    fn acked(&mut self, id: String, key: EventKey) {
        if self.recent.len() == RETURNS_REMEMBERED {
            self.recent.pop_front();
        }
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
            .partition(|(id, _)| self.unmatched.contains(id));
        self.recent = keep.into();
        for (id, _) in &late {
            self.unmatched.remove(id);
        }
        late
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
                        .publish_until_failure(&connection, &channel, &shutdown)
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

    /// Returns `Ok` on shutdown, `Err` when the connection must be replaced.
    async fn publish_until_failure(
        &self,
        connection: &Connection,
        channel: &Channel,
        shutdown: &CancellationToken,
    ) -> Result<(), PublishError> {
        let mut in_flight: HashSet<u64> = HashSet::new();
        let mut returns = Returns::default();
        let mut confirms: JoinSet<Confirmed> = JoinSet::new();
        // Highest sequence handed to the broker in this pass; `None` starts from the oldest.
        let mut cursor: Option<u64> = None;
        // After a refused message, wait before sending it again, doubling while refusals last.
        let mut retry_at: Option<tokio::time::Instant> = None;
        let mut refusal_backoff = INITIAL_BACKOFF;
        // lapin reports a dead connection here (auto-recovery is off), even while we are idle.
        let mut events = connection.events_listener();
        let mut health = tokio::time::interval(HEALTH_CHECK);

        loop {
            self.fill_window(channel, &mut cursor, &mut in_flight, &mut confirms)
                .await?;
            let retry_sleep = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(done) = confirms.join_next() => {
                    let mut settled = vec![done.expect("confirm tasks do not panic")];
                    while let Some(more) = confirms.try_join_next() {
                        settled.push(more.expect("confirm tasks do not panic"));
                    }
                    let failures = self.settle(settled, &mut in_flight, &mut returns).await?;
                    if failures.refused && retry_at.is_none() {
                        retry_at = Some(tokio::time::Instant::now() + refusal_backoff);
                        refusal_backoff = (refusal_backoff * 2).min(self.config.reconnect_max_backoff);
                    } else if !failures.refused && failures.acked {
                        refusal_backoff = INITIAL_BACKOFF;
                    }
                    if failures.broken || !connection.status().connected() {
                        return Err(PublishError::ConnectionLost);
                    }
                }
                () = self.store.outbox_grew() => {}
                event = events.next() => match event {
                    Some(lapin::Event::Error(e)) => return Err(PublishError::Broker(e)),
                    Some(lapin::Event::ConnectionBlocked(reason)) => {
                        tracing::warn!(%reason, "broker blocked publishing (resource alarm)");
                        self.status.set(false, &self.metrics);
                    }
                    Some(lapin::Event::ConnectionUnblocked) => self.status.set(true, &self.metrics),
                    Some(_) => {}
                    None => return Err(PublishError::ConnectionLost),
                },
                _ = health.tick() => {
                    if !connection.status().connected() || !channel.status().connected() {
                        return Err(PublishError::ConnectionLost);
                    }
                }
                () = retry_sleep => {
                    retry_at = None;
                    cursor = None; // rewind: send what was refused again
                }
                () = shutdown.cancelled() => {
                    self.drain(confirms, &mut in_flight, &mut returns).await;
                    return Ok(());
                }
            }
        }
    }

    /// Publishes outbox events after `cursor` until the window is full or the outbox exhausted.
    async fn fill_window(
        &self,
        channel: &Channel,
        cursor: &mut Option<u64>,
        in_flight: &mut HashSet<u64>,
        confirms: &mut JoinSet<Confirmed>,
    ) -> Result<(), PublishError> {
        // An event that committed behind the cursor (out-of-order commits) pulls it back.
        if let Some(lowest) = self.store.take_lowest_admitted() {
            if cursor.is_some_and(|c| lowest <= c) {
                *cursor = lowest.checked_sub(1);
            }
        }
        while in_flight.len() < self.config.max_in_flight {
            let room = self.config.max_in_flight - in_flight.len();
            let batch = self
                .store
                .pending_after(*cursor, room, |seq| in_flight.contains(&seq))?;
            *cursor = batch.last_seq;
            for pending in batch.events {
                in_flight.insert(pending.seq);
                self.publish(channel, pending, confirms).await?;
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
        pending: Pending,
        confirms: &mut JoinSet<Confirmed>,
    ) -> Result<(), PublishError> {
        let record = &pending.record;
        let mut routing_key = self.config.routing_key.render(
            &record.environment,
            &record.event_type,
            &record.endpoint,
        );
        if routing_key.len() > MAX_ROUTING_KEY {
            let mut end = MAX_ROUTING_KEY;
            while !routing_key.is_char_boundary(end) {
                end -= 1;
            }
            routing_key.truncate(end);
        }
        let mut headers = FieldTable::default();
        headers.insert(
            "gate-environment".into(),
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
            "Gate-Signature".into(),
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
        let confirm = tokio::time::timeout(
            self.config.connect_timeout,
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
        )
        .await
        .map_err(|_| PublishError::Timeout(self.config.connect_timeout))??;
        crate::failpoint::hit(crate::failpoint::AFTER_PUBLISH);
        let confirm_timeout = self.config.publish_confirm_timeout;
        let (seq, key, event_id) = (pending.seq, pending.key, pending.record.event_id);
        confirms.spawn(async move {
            let returned_id = |ret: &lapin::message::BasicReturnMessage| {
                ret.properties
                    .message_id()
                    .as_ref()
                    .map(|id| id.as_str().to_owned())
            };
            let (result, returned_id) = match tokio::time::timeout(confirm_timeout, confirm).await {
                // The broker acked this delivery; a return attached here may be another's.
                Ok(Ok(Confirmation::Ack(ret))) => {
                    (PublishResult::Ack, ret.as_ref().and_then(returned_id))
                }
                Ok(Ok(Confirmation::Nack(ret))) => {
                    (PublishResult::Nack, ret.as_ref().and_then(returned_id))
                }
                Ok(Ok(Confirmation::NotRequested)) => (PublishResult::Nack, None),
                Ok(Err(_)) => (PublishResult::Error, None),
                Err(_) => (PublishResult::Timeout, None),
            };
            Confirmed {
                seq,
                key,
                event_id,
                result,
                returned_id,
                elapsed: started.elapsed(),
            }
        });
        Ok(())
    }

    /// Records a batch of confirm outcomes; returns what kind of failures it held.
    async fn settle(
        &self,
        mut settled: Vec<Confirmed>,
        in_flight: &mut HashSet<u64>,
        returns: &mut Returns,
    ) -> Result<Failures, PublishError> {
        let mut failures = Failures::default();
        let mut acked = Vec::new();
        for c in &mut settled {
            if let Some(id) = c.returned_id.take() {
                returns.returned(id);
            }
        }
        for c in settled {
            in_flight.remove(&c.seq);
            let result = if c.result == PublishResult::Ack && returns.unmatched.remove(&c.event_id)
            {
                PublishResult::Returned
            } else {
                c.result
            };
            self.metrics
                .publishes
                .with_label_values(&[result.label()])
                .inc();
            match result {
                PublishResult::Ack => {
                    self.metrics
                        .publish_confirm
                        .observe(c.elapsed.as_secs_f64());
                    returns.acked(c.event_id, c.key.clone());
                    acked.push((c.seq, c.key));
                }
                failed => {
                    // A refusal (nack, returned) is retried after a backoff on this connection;
                    // an unknown outcome (error, timeout) replaces the connection.
                    let refused = matches!(failed, PublishResult::Nack | PublishResult::Returned);
                    tracing::warn!(
                        event_id = c.event_id,
                        result = failed.label(),
                        refused,
                        "event not confirmed; will publish again"
                    );
                    self.status.record_error(format!(
                        "{} for event {}",
                        failed.label(),
                        c.event_id
                    ));
                    if refused {
                        failures.refused = true;
                    } else {
                        failures.broken = true;
                    }
                }
            }
        }
        failures.acked = !acked.is_empty();
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
        for (event_id, key) in returns.take_late() {
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
            self.store.replay(&key).await?;
            failures.refused = true;
        }
        Ok(failures)
    }

    /// On shutdown: wait (bounded) for confirms already requested.
    async fn drain(
        &self,
        mut confirms: JoinSet<Confirmed>,
        in_flight: &mut HashSet<u64>,
        returns: &mut Returns,
    ) {
        let waiting = confirms.len();
        let deadline = tokio::time::sleep(SHUTDOWN_CONFIRM_WAIT);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = confirms.join_next() => match next {
                    Some(done) => {
                        let done = vec![done.expect("confirm tasks do not panic")];
                        let _ = self.settle(done, in_flight, returns).await;
                    }
                    None => break,
                },
                () = &mut deadline => {
                    tracing::warn!(abandoned = confirms.len(), "confirms abandoned at shutdown; they stay pending");
                    break;
                }
            }
        }
        tracing::info!(waiting, "publisher drained");
    }
}

#[derive(Debug, Default)]
struct Failures {
    /// A nack or a returned message: the broker works but refused; retry after a backoff.
    refused: bool,
    /// An error or a timeout: the outcome is unknown and the channel suspect; reconnect.
    broken: bool,
    acked: bool,
}
