//! The consumer side of gate-relay as a pattern to copy: decide what one delivery means, run the
//! side effect at most once per event, then settle the delivery with the broker.
//!
//! Owns: the decision for one delivery ([`Decision`]: fulfil, duplicate or reject), the set of
//! event ids already fulfilled, and the ack or nack. Does not own: the connection, the prefetch or
//! the side effect itself (the caller passes it in). Shared by `main.rs` and by
//! `tests/consumer_example.rs`, which includes this file with `#[path]`.
//!
//! Guarantees:
//! - A delivery is acked only after its side effect returned `Ok`, or when its event id was
//!   fulfilled before (gate-relay delivers at least once: retries, replays and republishes after a
//!   restart all reuse the event id as `message_id`).
//! - A delivery that can never succeed (no `message_id`, a `Gate-Signature` that does not verify,
//!   a body whose id is not the `message_id`) is nacked without requeue: the queue dead-letters it.
//! - A side effect that fails is nacked with requeue; the quorum queue's `x-delivery-limit`
//!   dead-letters a message that keeps failing instead of looping on it forever.

use std::collections::{HashSet, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use gate_relay::config::Secret;
use gate_relay::event::Envelope;
use gate_relay::signature;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::AMQPValue;

/// The relay checked freshness (`|now - t| <= tolerance`) when the webhook arrived. A consumer
/// may read the message hours later (a backlog, a replay from the dead-letter queue), so it checks
/// authenticity only; replays are what the dedupe on the event id is for.
const NO_FRESHNESS_CHECK: u32 = u32::MAX;

/// What one delivery means. Pure: computed from the message and what this worker has seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A new event: run the side effect, then ack.
    Fulfil { event_id: String },
    /// Already fulfilled: ack without doing anything again.
    Duplicate { event_id: String },
    /// Can never succeed, however often it is tried: nack without requeue (dead-letter it).
    Reject { reason: &'static str },
}

/// How a delivery ended once settled with the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// The side effect ran and the delivery was acked.
    Fulfilled(String),
    /// Acked without a side effect: this event was fulfilled before.
    Duplicate(String),
    /// Nacked without requeue: the queue dead-letters it.
    Rejected(&'static str),
    /// The side effect failed; nacked with requeue, to be delivered again.
    Retried(String),
}

/// What the side effect gets: the verified (when secrets are configured) event.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    pub id: &'a str,
    /// The AMQP `type` property: the 0Gate event type, e.g. `gate_session.completed`.
    pub event_type: &'a str,
    /// The raw body exactly as 0Gate sent it.
    pub body: &'a [u8],
}

/// Event ids already fulfilled, bounded: past `capacity` the oldest id is forgotten.
///
/// In memory, so it only catches redeliveries to this process. In production the dedupe is a
/// unique constraint on the event id in the same database transaction as the side effect (for
/// example `INSERT INTO processed_events (event_id) ...` next to the order update): it survives
/// restarts, is shared by every worker, and makes "side effect done" and "id recorded" one fact.
#[derive(Debug)]
pub struct SeenIds {
    capacity: usize,
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl SeenIds {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            set: HashSet::new(),
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    pub fn insert(&mut self, id: String) {
        if self.set.contains(&id) {
            return;
        }
        if self.order.len() == self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.set.remove(&oldest);
            }
        }
        self.set.insert(id.clone());
        self.order.push_back(id);
    }
}

/// Parses a comma-separated secret list (the relay's `secrets_env` format) from an environment
/// variable's value; an absent or empty value means "do not verify".
pub fn secrets_from(value: Option<String>) -> Vec<Secret> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| Secret::new(s.to_owned()))
        .collect()
}

#[derive(Debug)]
pub struct Worker {
    secrets: Vec<Secret>,
    seen: SeenIds,
}

impl Worker {
    /// `secrets` empty: trust the relay (it verified before publishing). Otherwise every message
    /// must carry a `Gate-Signature` header that verifies with one of them.
    pub fn new(secrets: Vec<Secret>, remember: usize) -> Self {
        Self {
            secrets,
            seen: SeenIds::new(remember),
        }
    }

    /// Decides what a message means. Pure: `now` (unix seconds) is passed in.
    pub fn decide(
        &self,
        message_id: Option<&str>,
        signature_header: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Decision {
        let Some(message_id) = message_id.filter(|id| !id.is_empty()) else {
            return Decision::Reject {
                reason: "missing_message_id",
            };
        };
        if !self.secrets.is_empty() {
            let verified = match signature::verify(
                &self.secrets,
                signature_header,
                Bytes::copy_from_slice(body),
                now,
                NO_FRESHNESS_CHECK,
            ) {
                Ok(verified) => verified,
                Err(signature::SignatureError::MissingHeader) => {
                    return Decision::Reject {
                        reason: "missing_signature",
                    };
                }
                Err(_) => {
                    return Decision::Reject {
                        reason: "invalid_signature",
                    };
                }
            };
            // message_id is not signed, the body is: dedupe on an id the body vouches for.
            match Envelope::parse(&verified) {
                Ok(envelope) if envelope.id.as_str() == message_id => {}
                Ok(_) => {
                    return Decision::Reject {
                        reason: "message_id_mismatch",
                    };
                }
                Err(_) => {
                    return Decision::Reject {
                        reason: "invalid_body",
                    };
                }
            }
        }
        if self.seen.contains(message_id) {
            Decision::Duplicate {
                event_id: message_id.to_owned(),
            }
        } else {
            Decision::Fulfil {
                event_id: message_id.to_owned(),
            }
        }
    }

    /// [`Worker::decide`] for a delivery as lapin hands it over, at the current time.
    pub fn handle(&self, delivery: &Delivery) -> Decision {
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.decide(
            message_id,
            string_header(delivery, signature::HEADER),
            &delivery.data,
            now,
        )
    }

    /// Decides, runs `side_effect` for a new event, then acks or nacks. An `Err` is the broker's
    /// (the channel or connection is gone): unacked deliveries return to the queue by themselves.
    pub async fn process<E: std::fmt::Display>(
        &mut self,
        delivery: &Delivery,
        side_effect: impl FnOnce(Event<'_>) -> Result<(), E>,
    ) -> Result<Settled, lapin::Error> {
        match self.handle(delivery) {
            Decision::Fulfil { event_id } => {
                let event = Event {
                    id: &event_id,
                    event_type: delivery
                        .properties
                        .kind()
                        .as_ref()
                        .map_or("", |t| t.as_str()),
                    body: &delivery.data,
                };
                match side_effect(event) {
                    Ok(()) => {
                        // Recorded before the ack: if the ack is lost the broker redelivers, and
                        // the redelivery is then recognised as a duplicate.
                        self.seen.insert(event_id.clone());
                        delivery.ack(BasicAckOptions::default()).await?;
                        Ok(Settled::Fulfilled(event_id))
                    }
                    Err(e) => {
                        eprintln!("side effect failed for {event_id}: {e}; requeueing");
                        delivery
                            .nack(BasicNackOptions {
                                requeue: true,
                                ..BasicNackOptions::default()
                            })
                            .await?;
                        Ok(Settled::Retried(event_id))
                    }
                }
            }
            Decision::Duplicate { event_id } => {
                delivery.ack(BasicAckOptions::default()).await?;
                Ok(Settled::Duplicate(event_id))
            }
            Decision::Reject { reason } => {
                delivery
                    .nack(BasicNackOptions {
                        requeue: false,
                        ..BasicNackOptions::default()
                    })
                    .await?;
                Ok(Settled::Rejected(reason))
            }
        }
    }
}

/// A string header; gate-relay writes them as AMQP long strings.
fn string_header<'a>(delivery: &'a Delivery, name: &str) -> Option<&'a str> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(value) => std::str::from_utf8(value.as_bytes()).ok(),
        _ => None,
    }
}
