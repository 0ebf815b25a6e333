//! The use case: one delivery from 0Gate, from raw bytes to a durable (or confirmed) event.
//!
//! 1. verify `Gate-Signature` over the raw body (`signature`), before any parsing;
//! 2. parse the envelope (`event`): id, type, created_at; the body stays byte-identical;
//! 3. admit it into the store: first sight is recorded and queued in one atomic write, a
//!    duplicate finds the existing record; either way we wait for the flush that covers it;
//! 4. in `confirmed` mode, wait (bounded) for the publisher to report the broker's confirm.
//!
//! Knows no HTTP: `routes` maps [`Accepted`] and [`Rejected`] to responses. Guarantee: `Ok`
//! is returned only when the promise of the configured ack mode holds for this event id.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::config::{AckMode, Endpoint};
use crate::confirmations::Confirmations;
use crate::event::{Envelope, EnvelopeError, EventId};
use crate::metrics::Metrics;
use crate::publisher::{BROKER_DOWN_FAIL_FAST, BrokerStatus};
use crate::signature::{self, SignatureError};
use crate::store::{Admission, EventKey, IngestView, NewEvent, StoreError, unix_ms};

/// One delivery as the transport hands it over.
#[derive(Debug)]
pub struct Delivery<'a> {
    pub endpoint: &'a Endpoint,
    pub signature: Option<&'a str>,
    pub body: Bytes,
    pub request_id: &'a str,
    pub received_at: SystemTime,
}

/// A delivery the relay now answers for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub event_id: EventId,
    pub event_type: String,
    /// True when this id was seen before (a retry or a replay from 0Gate).
    pub duplicate: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("the outbox is full")]
    OutboxFull,
    #[error("the broker is not connected; the event is stored and will be published")]
    BrokerUnavailable,
    #[error("the broker did not confirm in time; the event is stored and will be published")]
    ConfirmTimeout,
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for IngestError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::OutboxFull { .. } => Self::OutboxFull,
            other => Self::Store(other),
        }
    }
}

/// A delivery refused, with the envelope when the body got as far as parsing, so the caller can
/// log which event failed.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Rejected {
    pub error: IngestError,
    pub envelope: Option<Envelope>,
}

impl<E: Into<IngestError>> From<E> for Rejected {
    fn from(error: E) -> Self {
        Self {
            error: error.into(),
            envelope: None,
        }
    }
}

/// The use case's dependencies, built by the wiring (`app`).
#[derive(Debug, Clone)]
pub struct Ingest {
    pub(crate) store: IngestView,
    pub(crate) confirmations: Arc<Confirmations>,
    pub(crate) broker: Arc<BrokerStatus>,
    pub(crate) metrics: Metrics,
    pub(crate) ack: AckMode,
    /// How long confirmed mode waits for the broker's confirm.
    pub(crate) confirm_timeout: Duration,
}

/// How often a confirmed-mode wait looks at the broker while it is connected.
const RECHECK_WHILE_CONNECTED: Duration = Duration::from_millis(250);

fn unix_secs(t: SystemTime) -> i64 {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    i64::try_from(secs).unwrap_or(i64::MAX)
}

impl Ingest {
    /// Takes one delivery from raw bytes to the promise of the ack mode.
    pub async fn deliver(&self, delivery: Delivery<'_>) -> Result<Accepted, Rejected> {
        let endpoint = delivery.endpoint;
        let verified = signature::verify(
            &endpoint.secrets,
            delivery.signature,
            delivery.body,
            unix_secs(delivery.received_at),
            endpoint.tolerance_secs,
        )?;
        self.metrics
            .signature_skew
            .observe((unix_secs(delivery.received_at) - verified.timestamp()) as f64);
        self.metrics
            .secret_matches
            .with_label_values(&[endpoint.name.as_str(), &verified.secret_index().to_string()])
            .inc();

        let envelope = Envelope::parse(&verified)?;
        self.store_and_confirm(
            delivery.request_id,
            delivery.received_at,
            endpoint,
            &verified,
            &envelope,
        )
        .await
        .map_err(|error| Rejected {
            error,
            envelope: Some(envelope.clone()),
        })
        .map(|duplicate| Accepted {
            event_id: envelope.id.clone(),
            event_type: envelope.event_type.clone(),
            duplicate,
        })
    }

    /// Returns whether the event was a duplicate.
    async fn store_and_confirm(
        &self,
        request_id: &str,
        received_at: SystemTime,
        endpoint: &Endpoint,
        verified: &signature::Verified,
        envelope: &Envelope,
    ) -> Result<bool, IngestError> {
        let key = EventKey::new(&endpoint.environment, &envelope.id);
        // Registered before the event can reach the publisher, so its confirm cannot be missed.
        let mut watch = (self.ack == AckMode::Confirmed).then(|| self.confirmations.watch(&key));
        let admission = self
            .store
            .admit(NewEvent {
                key: &key,
                environment: &endpoint.environment,
                event_id: &envelope.id,
                event_type: &envelope.event_type,
                endpoint: &endpoint.name,
                received_at_ms: unix_ms(received_at),
                request_id,
                signature: verified.signature_header(),
                body: verified.body(),
            })
            .await?;
        crate::failpoint::hit(crate::failpoint::AFTER_FLUSH);
        let duplicate = admission != Admission::New;
        let Some(watch) = watch.as_mut() else {
            return Ok(duplicate); // durable mode: flushed is enough
        };
        // Published, or dropped by an operator's decision: nothing more will be confirmed.
        if matches!(admission, Admission::Seen(state) if state.is_settled()) {
            return Ok(true);
        }
        if watch.is_confirmed() {
            return Ok(duplicate);
        }
        let deadline = tokio::time::Instant::now() + self.confirm_timeout;
        loop {
            // Waiting while the broker is known to be away would only hold the connection: the
            // event is stored and will be published; 0Gate's retry will find it. "Not connected
            // yet" (just started, reconnecting after a blip) is not "known to be away".
            let down_for = self.broker.down_for();
            let grace_left = match down_for {
                Some(d) if d >= BROKER_DOWN_FAIL_FAST => {
                    return Err(IngestError::BrokerUnavailable);
                }
                Some(d) => Some(BROKER_DOWN_FAIL_FAST - d),
                None => None,
            };
            // While connected, look again now and then: a loss during the wait starts the clock.
            let check_again = tokio::time::sleep(grace_left.unwrap_or(RECHECK_WHILE_CONNECTED));
            tokio::select! {
                () = watch.confirmed() => return Ok(duplicate),
                () = tokio::time::sleep_until(deadline) => return Err(IngestError::ConfirmTimeout),
                () = check_again => {}
            }
        }
    }
}
