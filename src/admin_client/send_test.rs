//! The `send-test` sender: a signed delivery shaped like 0Gate's, and what the relay said to it.
//!
//! Owns: the test event (or an operator's body, sent byte for byte), its signature and the
//! headers 0Gate sends beside it, and reading the relay's answer. Does not own: the request's
//! deadline and size cap (`exchange` in the `admin_client` module) nor its output (`format`).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, header};
use http_body_util::Full;
use serde::Deserialize;

use super::format::printable;
use super::{ClientError, HttpUrl, exchange};
use crate::config::Secret;
use crate::signature;

/// The informational headers 0Gate sends beside `Gate-Signature`.
const EVENT_ID_HEADER: &str = "x-0bit-event-id";
const EVENT_TYPE_HEADER: &str = "x-0bit-event-type";
const TIMESTAMP_HEADER: &str = "x-0bit-timestamp";

/// A body to send, with the id and type for the informational headers when it has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub body: Bytes,
}

impl Outgoing {
    /// An event shaped like the one 0Gate's test button sends; `random` makes the id unique,
    /// as 0Gate gives every test send a new id.
    pub fn test_event(event_type: &str, livemode: bool, created_at: i64, random: u64) -> Self {
        let id = format!("evt_test_{random:016x}");
        let body = serde_json::json!({
            "id": id,
            "type": event_type,
            "created_at": created_at,
            "data": { "object": "webhook_test", "livemode": livemode },
        });
        Self {
            event_id: Some(id),
            event_type: Some(event_type.to_owned()),
            body: Bytes::from(body.to_string()),
        }
    }

    /// A body given by the operator, sent byte for byte; id and type are read if it has them.
    pub fn from_body(body: Bytes) -> Self {
        #[derive(Deserialize)]
        struct Head {
            id: Option<String>,
            #[serde(rename = "type")]
            event_type: Option<String>,
        }
        let head = serde_json::from_slice::<Head>(&body).ok();
        Self {
            event_id: head.as_ref().and_then(|h| h.id.clone()),
            event_type: head.and_then(|h| h.event_type),
            body,
        }
    }
}

/// What one send-test delivery got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReport {
    pub event_id: Option<String>,
    pub status: u16,
    /// The relay's `status` (`accepted`, `duplicate`) or `error` (`invalid_signature`, …).
    pub outcome: String,
    pub request_id: Option<String>,
    pub latency: Duration,
}

impl SendReport {
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Signs `outgoing` at `now` and POSTs it to `url` with the headers 0Gate sends.
pub async fn send_test(
    url: &HttpUrl,
    secret: &Secret,
    outgoing: &Outgoing,
    now: i64,
) -> Result<SendReport, ClientError> {
    let signature = signature::sign(secret, now, &outgoing.body);
    let mut request = Request::post(url.0.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .header(signature::HEADER, signature)
        .header(TIMESTAMP_HEADER, now.to_string());
    for (name, value) in [
        (EVENT_ID_HEADER, &outgoing.event_id),
        (EVENT_TYPE_HEADER, &outgoing.event_type),
    ] {
        // A value a header cannot carry is left out: these headers are informational only.
        if let Some(value) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            request = request.header(name, value);
        }
    }
    let request = request
        .body(Full::new(outgoing.body.clone()))
        .expect("a checked URL and valid header values form a valid request");
    let answer = exchange(request).await?;
    Ok(SendReport {
        event_id: outgoing.event_id.clone(),
        status: answer.status.as_u16(),
        outcome: outcome(&answer.body),
        request_id: answer.request_id,
        latency: answer.latency,
    })
}

/// The relay answers `{"status":…}` on success and `{"error":…}` otherwise.
fn outcome(body: &[u8]) -> String {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return if body.is_empty() {
            "(empty body)".to_owned()
        } else {
            "(not JSON)".to_owned()
        };
    };
    ["status", "error"]
        .iter()
        .find_map(|k| value.get(*k).and_then(|v| v.as_str()))
        .map_or_else(|| "(no status or error)".to_owned(), printable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_outcomes_come_from_the_relays_answer() {
        let cases: [(&[u8], &str); 5] = [
            (br#"{"status":"accepted","event_id":"e"}"#, "accepted"),
            (br#"{"status":"duplicate","event_id":"e"}"#, "duplicate"),
            (br#"{"error":"invalid_signature"}"#, "invalid_signature"),
            (b"", "(empty body)"),
            (b"oops", "(not JSON)"),
        ];
        for (body, want) in cases {
            assert_eq!(outcome(body), want);
        }
    }

    #[test]
    fn test_events_look_like_0gates() {
        let cases = [
            ("webhook.test", false, 1, "evt_test_0000000000000001"),
            (
                "gate_session.completed",
                true,
                u64::MAX,
                "evt_test_ffffffffffffffff",
            ),
        ];
        for (event_type, livemode, random, id) in cases {
            let event = Outgoing::test_event(event_type, livemode, 1_782_475_200, random);
            let body: serde_json::Value = serde_json::from_slice(&event.body).expect("JSON");
            assert_eq!(
                body,
                serde_json::json!({
                    "id": id, "type": event_type, "created_at": 1_782_475_200,
                    "data": {"object": "webhook_test", "livemode": livemode},
                })
            );
            assert_eq!(event.event_id.as_deref(), Some(id));
            assert_eq!(event.event_type.as_deref(), Some(event_type));
        }
    }

    #[test]
    fn given_bodies_are_sent_as_is() {
        let cases: [(&[u8], Option<&str>, Option<&str>); 3] = [
            (
                br#"{"id":"evt_9","type":"kyc.required"}"#,
                Some("evt_9"),
                Some("kyc.required"),
            ),
            (b"not json", None, None),
            (br#"{"id":5}"#, None, None),
        ];
        for (body, id, event_type) in cases {
            let out = Outgoing::from_body(Bytes::copy_from_slice(body));
            assert_eq!(out.body.as_ref(), body);
            assert_eq!(out.event_id.as_deref(), id);
            assert_eq!(out.event_type.as_deref(), event_type);
        }
    }
}
