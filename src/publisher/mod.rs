//! The publisher: moves outbox events to RabbitMQ with publisher confirms.
//!
//! Owns: one broker connection with one confirm-mode channel, the exchange declaration, a window
//! of publishes in flight, and reconnecting. Does not own: which events exist (`store`) or who
//! waits for them (`confirmations`). Knows only lapin and its view of the store
//! (`store::PublisherView`).
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

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::BasicPublishOptions;
use lapin::{Channel, Connection};
use tokio_util::sync::CancellationToken;

use crate::config::AmqpConfig;
use crate::confirmations::Confirmations;
use crate::metrics::Metrics;
use crate::store::{Pending, PublisherView, StoreError};

mod connect;
mod link;
mod message;
mod retries;
mod returns;
mod session;
mod settling;
mod status;

use link::{Link, unblocked_timeout};
use retries::{Retries, Verdict};
use session::Session;
pub use status::BrokerStatus;

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

/// How long the broker may be away (not yet connected after start, reconnecting, or blocked by
/// an alarm) before confirmed mode stops waiting for confirms and answers 503 at once. Above a
/// reconnect after a blip (the first retry comes 100 ms after a loss; a connect takes
/// milliseconds) and well below 0Gate's 10 s.
pub const BROKER_DOWN_FAIL_FAST: Duration = Duration::from_secs(2);

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

#[derive(Debug)]
pub struct Publisher {
    store: PublisherView,
    confirmations: Arc<Confirmations>,
    status: Arc<BrokerStatus>,
    metrics: Metrics,
    config: AmqpConfig,
}

impl Publisher {
    pub(crate) fn new(
        store: PublisherView,
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
        let nodes = self.config.urls.len();
        // A random first node, so that relays sharing a cluster spread over its nodes.
        let mut node = random_index(nodes);
        while !shutdown.is_cancelled() {
            let url = &self.config.urls[node];
            match connect::connect(&self.config, url).await {
                Ok((connection, channel)) => {
                    if connected_before {
                        self.metrics.amqp_reconnects.inc();
                    }
                    connected_before = true;
                    backoff = INITIAL_BACKOFF;
                    self.status.set(true, node, &self.metrics);
                    tracing::info!(url = %url.redacted(), node, "broker connected");
                    let outcome = self
                        .publish_until_failure(&connection, &channel, &shutdown, &mut retries)
                        .await;
                    self.status.set(false, node, &self.metrics);
                    let _ = tokio::time::timeout(
                        CLOSE_TIMEOUT,
                        connection.close(200, "shutdown".into()),
                    )
                    .await;
                    match outcome {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, node, "broker connection lost; reconnecting")
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, node, retry_in_ms = backoff.as_millis() as u64, "broker connect failed");
                    self.status.record_error(format!("connect failed: {e}"));
                }
            }
            // The next node after a failed connect or a lost connection (the same one when
            // there is only one), after the same capped backoff.
            node = (node + 1) % nodes;
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = shutdown.cancelled() => break,
            }
            backoff = (backoff * 2).min(self.config.reconnect_max_backoff);
        }
        tracing::info!("publisher stopped");
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
            // Step back to the oldest event whose backoff has ended, on every turn: a backoff
            // can end while this loop waits on something else (another event's confirm), with
            // the cursor already past the event; the retry wake below only covers backoffs
            // that end later. Only that range is read again; what is in flight or still
            // backing off is skipped. (A cursor still at `None` reads from the oldest anyway.)
            let before_fill = tokio::time::Instant::now();
            let due = retries.lowest_due(before_fill, |seq| session.in_flight.contains_key(&seq));
            if let Some(due) = due {
                session.rewind_to(due);
            }
            match self.fill_window(channel, &mut link, session, retries).await {
                Ok(()) => {}
                Err(PublishError::ShuttingDown) => {
                    self.drain(session, retries).await;
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
            // From before the fill: a backoff that ended during it was skipped there and must
            // still wake the loop.
            let next_wake = retries.next_wake(before_fill);
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
                () = retry_sleep => {} // the top of the loop steps back to it
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
                self.status
                    .set(false, self.status.last_node(), &self.metrics);
            }
            Some(lapin::Event::ConnectionUnblocked) => {
                tracing::info!("broker unblocked publishing");
                self.status
                    .set(true, self.status.last_node(), &self.metrics);
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
            session.rewind_to(lowest);
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
        let routing_key = message::routing_key(&self.config, &pending.record);
        let properties = message::properties(&pending.record);
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
        let sent = (pending.seq, pending.key, pending.record.event_id);
        self.spawn_confirm(session, link, confirm, sent, started);
        Ok(())
    }
}

/// A random index below `n` (n > 0), from the standard library's randomly seeded hasher: no
/// random-number crate for one draw at start.
fn random_index(n: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    let draw = std::hash::RandomState::new().build_hasher().finish();
    usize::try_from(draw % n as u64).unwrap_or(0)
}
