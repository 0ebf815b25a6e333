//! The AMQP message for one stored event: routing key, properties and headers. Pure, so what a
//! consumer receives is unit-tested here without a broker.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};

use crate::config::{AMQP_SHORT_STRING, AmqpConfig};
use crate::store::EventRecord;

/// The header carrying the event's environment; returns are matched by it and the message_id.
pub(super) const ENVIRONMENT_HEADER: &str = "gate-environment";

/// The rendered routing key, cut (at a character boundary) to what AMQP can carry.
pub(super) fn routing_key(config: &AmqpConfig, record: &EventRecord) -> String {
    let key = config
        .routing_key
        .render(&record.environment, &record.event_type, &record.endpoint);
    fit_short_string(key)
}

fn fit_short_string(mut key: String) -> String {
    if key.len() > AMQP_SHORT_STRING {
        let mut end = AMQP_SHORT_STRING;
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        key.truncate(end);
    }
    key
}

/// Persistent, `message_id` = event id (consumers dedupe on it), the forwarded headers.
pub(super) fn properties(record: &EventRecord) -> BasicProperties {
    let mut headers = FieldTable::default();
    let text = |s: &str| AMQPValue::LongString(s.into());
    headers.insert(ENVIRONMENT_HEADER.into(), text(&record.environment));
    headers.insert("gate-endpoint".into(), text(&record.endpoint));
    headers.insert(
        "gate-received-at-ms".into(),
        AMQPValue::LongLongInt(i64::try_from(record.received_at_ms).unwrap_or(i64::MAX)),
    );
    headers.insert("gate-request-id".into(), text(&record.request_id));
    headers.insert(crate::signature::HEADER.into(), text(&record.signature));
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id(record.event_id.as_str().into())
        .with_type(record.event_type.as_str().into())
        .with_content_type("application/json".into())
        .with_app_id("gate-relay".into())
        .with_timestamp(record.received_at_ms / 1000)
        .with_headers(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EventState;

    #[test]
    fn a_long_routing_key_is_cut_at_a_character_boundary() {
        let key = fit_short_string(format!("{}é", "a".repeat(AMQP_SHORT_STRING - 1)));
        assert_eq!(key, "a".repeat(AMQP_SHORT_STRING - 1));
        assert_eq!(fit_short_string("live.payment".into()), "live.payment");
    }

    #[test]
    fn a_message_is_persistent_and_carries_its_id_and_headers() {
        let record = EventRecord {
            state: EventState::Pending,
            seq: 1,
            environment: "live".into(),
            event_id: "evt_1".into(),
            event_type: "payment.completed".into(),
            endpoint: "main".into(),
            received_at_ms: 1_782_475_200_123,
            published_at_ms: None,
            body_sha256: String::new(),
            size: 2,
            request_id: "req_1".into(),
            signature: "t=1,v1=ab".into(),
            deliveries: 1,
            request_ids: Vec::new(),
            queued_seq: None,
            parked_reason: None,
            dropped_at_ms: None,
        };
        let p = properties(&record);
        assert_eq!(p.delivery_mode(), &Some(2));
        assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some("evt_1"));
        assert_eq!(p.timestamp(), &Some(1_782_475_200));
        let headers = p.headers().as_ref().expect("headers").inner();
        let text = |name: &str| match headers.get(name) {
            Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(text(ENVIRONMENT_HEADER), "live");
        assert_eq!(text("gate-endpoint"), "main");
        assert_eq!(text("gate-request-id"), "req_1");
        assert_eq!(text(crate::signature::HEADER), "t=1,v1=ab");
    }
}
