//! Every way a webhook request can end, and the ONE classifier from an error to an outcome and
//! from an outcome to its status: a new error variant fails to compile until it is classified
//! here, rather than falling into a catch-all.

use http::StatusCode;

use crate::event::EnvelopeError;
use crate::ingest::IngestError;
use crate::signature::SignatureError;
use crate::store::StoreError;

/// Every way a request can end, as a closed set for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Duplicate,
    InvalidSignature,
    StaleTimestamp,
    MalformedHeader,
    MissingHeader,
    SignatureTooLarge,
    InvalidBody,
    TooLarge,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    Unavailable,
    Internal,
}

impl Outcome {
    /// Every outcome, so a test can walk them all (a new variant must be added here too).
    #[cfg(test)]
    pub const ALL: [Self; 14] = [
        Self::Accepted,
        Self::Duplicate,
        Self::InvalidSignature,
        Self::StaleTimestamp,
        Self::MalformedHeader,
        Self::MissingHeader,
        Self::SignatureTooLarge,
        Self::InvalidBody,
        Self::TooLarge,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::RequestTimeout,
        Self::Unavailable,
        Self::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Duplicate => "duplicate",
            Self::InvalidSignature => "invalid_signature",
            Self::StaleTimestamp => "stale_timestamp",
            Self::MalformedHeader => "malformed_header",
            Self::MissingHeader => "missing_header",
            Self::SignatureTooLarge => "signature_too_large",
            Self::InvalidBody => "invalid_body",
            Self::TooLarge => "too_large",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::RequestTimeout => "request_timeout",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// 4xx: resending the same request will not help; 503 (with Retry-After): the event may be
    /// kept, a retry later works; 500: a bug or a broken disk.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Accepted | Self::Duplicate => StatusCode::OK,
            Self::MalformedHeader | Self::MissingHeader | Self::InvalidBody => {
                StatusCode::BAD_REQUEST
            }
            Self::SignatureTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::InvalidSignature | Self::StaleTimestamp => StatusCode::UNAUTHORIZED,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<&SignatureError> for Outcome {
    fn from(error: &SignatureError) -> Self {
        match error {
            SignatureError::MissingHeader => Self::MissingHeader,
            SignatureError::TooLarge { .. } => Self::SignatureTooLarge,
            SignatureError::Malformed(_) => Self::MalformedHeader,
            SignatureError::StaleTimestamp { .. } => Self::StaleTimestamp,
            SignatureError::Mismatch => Self::InvalidSignature,
        }
    }
}

impl From<&IngestError> for Outcome {
    fn from(error: &IngestError) -> Self {
        match error {
            IngestError::Signature(e) => e.into(),
            IngestError::Envelope(
                EnvelopeError::InvalidJson(_)
                | EnvelopeError::MissingId
                | EnvelopeError::InvalidId
                | EnvelopeError::InvalidType,
            ) => Self::InvalidBody,
            IngestError::OutboxFull
            | IngestError::BrokerUnavailable
            | IngestError::ConfirmTimeout
            | IngestError::Store(StoreError::Closed | StoreError::OutboxFull { .. }) => {
                Self::Unavailable
            }
            IngestError::Store(
                StoreError::Storage(_) | StoreError::Io(_) | StoreError::Corrupt(_),
            ) => Self::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ingest_error_has_its_outcome_and_status() {
        let full = || StoreError::OutboxFull {
            events: 1,
            bytes: 1,
        };
        let cases: Vec<(IngestError, Outcome, u16)> = vec![
            (
                SignatureError::MissingHeader.into(),
                Outcome::MissingHeader,
                400,
            ),
            (
                SignatureError::TooLarge { len: 4096 }.into(),
                Outcome::SignatureTooLarge,
                431,
            ),
            (
                SignatureError::Malformed("t").into(),
                Outcome::MalformedHeader,
                400,
            ),
            (
                SignatureError::StaleTimestamp { skew_secs: 900 }.into(),
                Outcome::StaleTimestamp,
                401,
            ),
            (
                SignatureError::Mismatch.into(),
                Outcome::InvalidSignature,
                401,
            ),
            (
                EnvelopeError::InvalidJson("x".into()).into(),
                Outcome::InvalidBody,
                400,
            ),
            (EnvelopeError::MissingId.into(), Outcome::InvalidBody, 400),
            (EnvelopeError::InvalidId.into(), Outcome::InvalidBody, 400),
            (EnvelopeError::InvalidType.into(), Outcome::InvalidBody, 400),
            (full().into(), Outcome::Unavailable, 503),
            (IngestError::Store(full()), Outcome::Unavailable, 503),
            (IngestError::BrokerUnavailable, Outcome::Unavailable, 503),
            (IngestError::ConfirmTimeout, Outcome::Unavailable, 503),
            (StoreError::Closed.into(), Outcome::Unavailable, 503),
            (
                StoreError::Corrupt("x".into()).into(),
                Outcome::Internal,
                500,
            ),
            (
                StoreError::Io(std::io::Error::other("disk")).into(),
                Outcome::Internal,
                500,
            ),
        ];
        for (error, outcome, status) in cases {
            let got = Outcome::from(&error);
            assert_eq!((got, got.status().as_u16()), (outcome, status), "{error}");
        }
    }

    #[test]
    fn only_accepted_and_duplicate_are_2xx() {
        for outcome in Outcome::ALL {
            let success = matches!(outcome, Outcome::Accepted | Outcome::Duplicate);
            assert_eq!(
                outcome.status().is_success(),
                success,
                "{}",
                outcome.as_str()
            );
        }
    }
}
