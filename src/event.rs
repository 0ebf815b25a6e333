//! The 0Gate event envelope, parsed from a verified body.
//!
//! Owns: the few envelope fields the relay needs (`id`, `type`, `created_at`) and their validation.
//! Does not own: the body itself, which is kept byte-identical and forwarded untouched, nor `data`,
//! whose shape depends on the type (an open set: unknown types are never rejected). Pure.

use serde::Deserialize;

use crate::signature::Verified;

/// Event ids longer than this are not ids. 0Gate's are `evt_…` or UUIDs, well under it.
pub const MAX_ID_LEN: usize = 255;
/// Types are dotted names such as `rail.pay_out.settled`; this leaves ample room.
pub const MAX_TYPE_LEN: usize = 255;

/// The dedupe key as 0Gate sends it: non-empty, bounded, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId(String);

impl EventId {
    pub fn parse(raw: &str) -> Result<Self, EnvelopeError> {
        if raw.is_empty() || raw.len() > MAX_ID_LEN || raw.chars().any(char::is_control) {
            return Err(EnvelopeError::InvalidId);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the relay reads from an event; the rest of the body is the consumer's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub id: EventId,
    pub event_type: String,
    pub created_at: Option<i64>,
}

/// Why a verified body is not a usable event; always the sender's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the body is not a JSON object: {0}")]
    InvalidJson(String),
    #[error("the event has no id")]
    MissingId,
    #[error("the event id is empty, too long or has control characters")]
    InvalidId,
    #[error("the event has no type, or it is empty, too long or has control characters")]
    InvalidType,
}

/// Borrowing view: `data` and unknown fields are skipped without being copied.
#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "type", borrow)]
    event_type: Option<std::borrow::Cow<'a, str>>,
    created_at: Option<serde_json::Value>,
}

impl Envelope {
    pub fn parse(verified: &Verified) -> Result<Self, EnvelopeError> {
        Self::parse_bytes(verified.body())
    }

    fn parse_bytes(body: &[u8]) -> Result<Self, EnvelopeError> {
        let raw: Raw<'_> =
            serde_json::from_slice(body).map_err(|e| EnvelopeError::InvalidJson(e.to_string()))?;
        let id = EventId::parse(raw.id.as_deref().ok_or(EnvelopeError::MissingId)?)?;
        let event_type = raw.event_type.ok_or(EnvelopeError::InvalidType)?;
        if event_type.is_empty()
            || event_type.len() > MAX_TYPE_LEN
            || event_type.chars().any(char::is_control)
        {
            return Err(EnvelopeError::InvalidType);
        }
        // Lenient about shape: created_at is informational, a float or a string does not
        // make an authentic event worthless.
        let created_at = raw.created_at.and_then(|v| v.as_i64());
        Ok(Self {
            id,
            event_type: event_type.into_owned(),
            created_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_table() {
        let long_id = "x".repeat(MAX_ID_LEN + 1);
        let long_id_body = format!(r#"{{"id":"{long_id}","type":"a"}}"#);
        type Case<'a> = (
            &'a str,
            &'a str,
            Result<(&'a str, &'a str, Option<i64>), EnvelopeError>,
        );
        let cases: Vec<Case<'_>> = vec![
            (
                "full",
                r#"{"id":"evt_1","type":"gate_session.completed","created_at":1782475200,"data":{"x":1}}"#,
                Ok(("evt_1", "gate_session.completed", Some(1_782_475_200))),
            ),
            (
                "unknown type accepted",
                r#"{"id":"e","type":"brand.new"}"#,
                Ok(("e", "brand.new", None)),
            ),
            (
                "uuid id",
                r#"{"id":"6f1c2a8e-3b7d-4c1e-9f0a-1b2c3d4e5f60","type":"a"}"#,
                Ok(("6f1c2a8e-3b7d-4c1e-9f0a-1b2c3d4e5f60", "a", None)),
            ),
            (
                "escaped id",
                r#"{"id":"evt_\u0041","type":"a"}"#,
                Ok(("evt_A", "a", None)),
            ),
            (
                "float created_at tolerated",
                r#"{"id":"e","type":"a","created_at":1.5}"#,
                Ok(("e", "a", None)),
            ),
            (
                "missing id",
                r#"{"type":"a"}"#,
                Err(EnvelopeError::MissingId),
            ),
            (
                "empty id",
                r#"{"id":"","type":"a"}"#,
                Err(EnvelopeError::InvalidId),
            ),
            (
                "control char id",
                r#"{"id":"a\nb","type":"a"}"#,
                Err(EnvelopeError::InvalidId),
            ),
            (
                "long id",
                long_id_body.as_str(),
                Err(EnvelopeError::InvalidId),
            ),
            (
                "missing type",
                r#"{"id":"e"}"#,
                Err(EnvelopeError::InvalidType),
            ),
            (
                "empty type",
                r#"{"id":"e","type":""}"#,
                Err(EnvelopeError::InvalidType),
            ),
        ];
        for (name, body, expected) in cases {
            let got = Envelope::parse_bytes(body.as_bytes());
            let got = got
                .as_ref()
                .map(|e| (e.id.as_str(), e.event_type.as_str(), e.created_at));
            assert_eq!(got, expected.as_ref().map(|t| *t), "case {name}");
        }
    }

    #[test]
    fn non_objects_and_wrong_types_are_invalid_json() {
        for body in [
            "",
            "not json",
            "[]",
            "42",
            r#"{"id":5,"type":"a"}"#,
            r#"{"id":"e","type":"a""#,
        ] {
            assert!(
                matches!(
                    Envelope::parse_bytes(body.as_bytes()),
                    Err(EnvelopeError::InvalidJson(_))
                ),
                "body {body:?}"
            );
        }
    }
}
