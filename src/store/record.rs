//! What the store keeps about an event, and what it hands in and out: the record (JSON in tree
//! `events`), its state and key, a first sighting as ingest hands it over, and an outbox event
//! as the publisher reads it. Records are encoded and decoded here only.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::event::EventId;

/// Where an event is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventState {
    /// Stored; not yet confirmed by the broker.
    Pending,
    /// Confirmed by the broker (`Ack` without a returned message).
    Published,
    /// Refused by the broker past the attempt bound: out of the outbox, body kept, listed for
    /// an operator to replay or drop (see `park`). Never discarded silently.
    Parked,
    /// A parked event an operator chose not to deliver; its body is pruned like a published one.
    Dropped,
}

/// What the relay knows about an event besides its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub state: EventState,
    pub seq: u64,
    pub environment: String,
    pub event_id: String,
    pub event_type: String,
    pub endpoint: String,
    pub received_at_ms: u64,
    pub published_at_ms: Option<u64>,
    pub body_sha256: String,
    pub size: u64,
    /// The first delivery's request id (forwarded with the message).
    pub request_id: String,
    /// The `Gate-Signature` header as received, forwarded so consumers can verify again.
    pub signature: String,
    /// Deliveries of this id seen so far, the first included (retries and replays from 0Gate).
    #[serde(default = "one")]
    pub deliveries: u64,
    /// Request ids of the latest deliveries, oldest first, at most [`MAX_REQUEST_IDS`].
    #[serde(default)]
    pub request_ids: Vec<String>,
    /// The outbox sequence of the latest queueing when it is not `seq` (a replay queues the
    /// event under a new sequence; its body stays under `seq`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_seq: Option<u64>,
    /// Why the publisher parked it (state `parked`, or `dropped` after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked_reason: Option<String>,
    /// When an operator dropped it (state `dropped`); retention counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_at_ms: Option<u64>,
}

impl EventState {
    /// As stored and as the admin API shows it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Published => "published",
            Self::Parked => "parked",
            Self::Dropped => "dropped",
        }
    }

    /// Done with: the pruner may take its body, and later its record.
    pub(crate) fn is_settled(self) -> bool {
        matches!(self, Self::Published | Self::Dropped)
    }
}

impl EventRecord {
    /// The outbox sequence this event is (or was last) queued under.
    pub(crate) fn queued_seq(&self) -> u64 {
        self.queued_seq.unwrap_or(self.seq)
    }
}

pub(super) fn one() -> u64 {
    1
}

/// The dedupe key: environment and event id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventKey(pub(super) Vec<u8>);

impl EventKey {
    /// Environment names never contain `\0` (config validates them), so the split is unambiguous.
    /// The environment part of the key.
    pub(crate) fn environment(&self) -> &[u8] {
        self.0.split(|b| *b == 0).next().unwrap_or(&[])
    }

    pub fn new(environment: &str, id: &EventId) -> Self {
        Self::from_parts(environment, id.as_str())
    }

    /// The key of a message as the broker hands it back (its `gate-environment` header and
    /// `message_id`), unvalidated: only ever compared with keys made by [`EventKey::new`].
    pub(crate) fn from_parts(environment: &str, event_id: &str) -> Self {
        let mut key = Vec::with_capacity(environment.len() + 1 + event_id.len());
        key.extend_from_slice(environment.as_bytes());
        key.push(0);
        key.extend_from_slice(event_id.as_bytes());
        Self(key)
    }
}

/// A first sighting, as ingest hands it over.
#[derive(Debug)]
pub struct NewEvent<'a> {
    pub key: &'a EventKey,
    pub environment: &'a str,
    pub event_id: &'a EventId,
    pub event_type: &'a str,
    pub endpoint: &'a str,
    pub received_at_ms: u64,
    pub request_id: &'a str,
    pub signature: &'a str,
    pub body: &'a Bytes,
}

/// The result of [`Store::admit`], returned once it is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// First sight: recorded and queued for publishing.
    New,
    /// Seen before; its record as it stood.
    Seen(EventState),
}

/// One event waiting in the outbox.
#[derive(Debug, Clone)]
pub struct Pending {
    pub seq: u64,
    pub key: EventKey,
    pub record: EventRecord,
    pub body: Bytes,
}

/// What one outbox read found.
#[derive(Debug)]
pub struct PendingBatch {
    pub events: Vec<Pending>,
    /// The highest sequence looked at (loaded or skipped); where the next read continues.
    pub last_seq: Option<u64>,
    /// True when the read reached the end of the outbox.
    pub exhausted: bool,
}

pub(super) fn decode_record(bytes: &[u8]) -> Result<EventRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn encode_record(record: &EventRecord) -> Vec<u8> {
    serde_json::to_vec(record).expect("an EventRecord always serialises")
}
