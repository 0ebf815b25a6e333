//! The admin API's JSON, defined once: the server (`admin`) builds these and the operator's
//! client (`admin_client`) parses them. Kept apart from the storage record
//! (`store::EventRecord`): the on-disk format can change without changing the API, and what the
//! API shows is chosen here, field by field (the forwarded `Gate-Signature` and the outbox's
//! internal sequences stay on disk).
//!
//! Pure: serde types only. The client reads with `#[serde(default)]` where an older relay may
//! leave a field out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A stored event as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventView {
    pub seq: u64,
    pub environment: String,
    pub event_id: String,
    pub event_type: String,
    pub endpoint: String,
    /// `pending`, `published`, `parked` or `dropped`.
    pub state: String,
    pub received_at_ms: u64,
    pub published_at_ms: Option<u64>,
    /// Deliveries of this id seen so far, the first included.
    pub deliveries: u64,
    /// Request ids of the latest deliveries, oldest first.
    #[serde(default)]
    pub request_ids: Vec<String>,
    pub body_sha256: String,
    pub size: u64,
    /// Why the publisher parked it (state `parked`, or `dropped` after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked_reason: Option<String>,
    /// When an operator dropped it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_at_ms: Option<u64>,
    /// Absent unless asked for (`body=true`); `Some(None)` (`null`) once the body was pruned.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub body: Option<Option<String>>,
}

/// Tells a field that is `null` (`Some(None)`) from one that is absent (`None`, via `default`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// `GET /events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventPage {
    /// Newest first.
    pub events: Vec<EventView>,
    /// Pass as `before` for the next page; `None` on the last one.
    pub next_before: Option<u64>,
}

/// `POST /events/{id}/replay` (`queued`) and `POST /events/{id}/drop` (`dropped`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acted {
    pub status: String,
    pub event_id: String,
}

/// Every non-2xx answer of the admin API: a short, stable code (`not_found`, `body_pruned`…);
/// details go to the relay's log. Extra fields are ignored when reading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// One environment's share of the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Depth {
    pub events: u64,
    pub bytes: u64,
}

/// `GET /outbox`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxView {
    /// Absent from relays older than per-environment bounds.
    #[serde(default)]
    pub by_environment: BTreeMap<String, Depth>,
    pub events: u64,
    pub bytes: u64,
    /// Absent from relays older than parking.
    #[serde(default)]
    pub parked: u64,
    pub oldest_age_seconds: u64,
    pub broker_connected: bool,
    /// The index in `amqp.urls` of the broker node connected to; absent while not connected
    /// (and from relays older than several nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_node: Option<usize>,
    pub last_publish_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(body: Option<Option<String>>) -> EventView {
        EventView {
            seq: 7,
            environment: "live".into(),
            event_id: "evt_1".into(),
            event_type: "payment.completed".into(),
            endpoint: "live".into(),
            state: "published".into(),
            received_at_ms: 1,
            published_at_ms: Some(2),
            deliveries: 1,
            request_ids: vec!["r1".into()],
            body_sha256: "00".into(),
            size: 2,
            parked_reason: None,
            dropped_at_ms: None,
            body,
        }
    }

    #[test]
    fn a_body_round_trips_as_absent_null_or_text() {
        for body in [None, Some(None), Some(Some("{}".to_owned()))] {
            let text = serde_json::to_string(&view(body.clone())).expect("serialise");
            assert_eq!(text.contains("\"body\""), body.is_some(), "{text}");
            let back: EventView = serde_json::from_str(&text).expect("parse");
            assert_eq!(back, view(body));
        }
    }
}
