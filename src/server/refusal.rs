//! Connections (and HTTP/2 streams) refused before a handler saw a request, by why: hyper
//! answers a bad head itself (431, 400) or closes the connection (timeouts, protocol errors),
//! so the routes never count these; the connection's end is the one place that can.
//!
//! Owns: the closed set of reasons, the classification of a connection's error into one, and
//! the `gate_relay_connections_refused_total{listener, reason}` series. Does not own: what a
//! request that reached a handler means (`routes` counts those in `gate_relay_requests_total`).

use std::error::Error;

use prometheus::IntCounterVec;

/// Why a connection or stream ended before any handler ran: a closed set for the label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 431: a request head over the byte or header-count bound (hyper for HTTP/1, `server` for
    /// HTTP/2 up to h2's own hard cap).
    HeadTooLarge,
    /// 400 from hyper: a head it cannot parse (a transfer coding other than chunked, conflicting
    /// Content-Lengths, a bad method or URI).
    BadRequest,
    /// No complete request head within the header-read timeout (TLS handshake included).
    HeaderTimeout,
    /// The TLS handshake failed.
    TlsHandshake,
    /// The peer closed in the middle of a request.
    IncompleteMessage,
    /// A read or write failed (e.g. a reset by the peer).
    Io,
    /// Any other protocol error: HTTP/2 ones (a flood of reset streams gets GOAWAY
    /// ENHANCE_YOUR_CALM, bad frames), or bytes where hyper expected none.
    ProtocolError,
}

impl Refusal {
    pub const ALL: [Self; 7] = [
        Self::HeadTooLarge,
        Self::BadRequest,
        Self::HeaderTimeout,
        Self::TlsHandshake,
        Self::IncompleteMessage,
        Self::Io,
        Self::ProtocolError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::HeadTooLarge => "head_too_large",
            Self::BadRequest => "bad_request",
            Self::HeaderTimeout => "header_timeout",
            Self::TlsHandshake => "tls_handshake",
            Self::IncompleteMessage => "incomplete_message",
            Self::Io => "io",
            Self::ProtocolError => "protocol_error",
        }
    }

    /// What a connection's error says about the peer. hyper-util's auto connection boxes
    /// hyper's error as it is (or an `io::Error` from protocol detection).
    pub fn classify(error: &(dyn Error + 'static)) -> Self {
        let Some(e) = error.downcast_ref::<hyper::Error>() else {
            return if error.is::<std::io::Error>() {
                Self::Io
            } else {
                Self::ProtocolError
            };
        };
        if e.is_parse_too_large() {
            Self::HeadTooLarge
        } else if e.is_parse() {
            Self::BadRequest
        } else if e.is_timeout() {
            Self::HeaderTimeout
        } else if e.is_incomplete_message() {
            Self::IncompleteMessage
        } else if e.source().is_some_and(|s| s.is::<std::io::Error>()) {
            Self::Io
        } else {
            Self::ProtocolError
        }
    }
}

/// The refusal counter of one listener.
#[derive(Debug, Clone)]
pub struct Refusals {
    listener: &'static str,
    counter: IntCounterVec,
}

impl Refusals {
    /// Every reason starts at 0, so a rate over it exists before the first refusal.
    pub fn new(listener: &'static str, counter: IntCounterVec) -> Self {
        for reason in Refusal::ALL {
            counter.with_label_values(&[listener, reason.as_str()]);
        }
        Self { listener, counter }
    }

    pub fn count(&self, reason: Refusal) {
        self.counter
            .with_label_values(&[self.listener, reason.as_str()])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_error_or_an_unknown_error_has_its_reason() {
        let io = std::io::Error::other("reset");
        assert_eq!(Refusal::classify(&io), Refusal::Io);
        let other: Box<dyn Error + Send + Sync> = "odd".into();
        assert_eq!(Refusal::classify(other.as_ref()), Refusal::ProtocolError);
    }

    #[test]
    fn reasons_are_distinct_label_values() {
        let mut names: Vec<_> = Refusal::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Refusal::ALL.len());
    }
}
