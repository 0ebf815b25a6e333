//! The operator's HTTP clients: the admin API (`events show|list|replay`, `outbox`) and the
//! `send-test` sender, plus the pure functions that turn their answers into aligned text.
//!
//! Owns: building requests (percent-encoded paths and queries, the Bearer token, the signed test
//! event), bounding them (a deadline and a response size cap) and formatting. Does not own: reading
//! arguments, the environment or files, nor exit codes (`cli`); the admin API itself (`admin`).
//!
//! Guarantees: plain HTTP only (the admin listener is loopback by default); a token or webhook
//! secret is never printed (the `Authorization` header is marked sensitive); every value that came
//! over the wire has its control characters escaped before it reaches a terminal.
//!
//! This file is the HTTP side both share: URLs, the bounded exchange, errors and the admin API
//! client with its answer types. The `send-test` sender is in `send_test`, the text output in
//! `format`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::admin_api::ErrorBody;
use crate::config::Secret;
/// The relay's request id header, shown so a run can be found in the relay's logs.
use crate::routes::REQUEST_ID as REQUEST_ID_HEADER;

mod format;
mod send_test;
pub use format::{
    format_event, format_outbox, format_page, format_replayed, format_send_report, printable,
};
pub use send_test::{Outgoing, send_test};

/// An operator's action on one stored event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Queue it for publishing again.
    Replay,
    /// Give up on a parked event.
    Drop,
}

/// Where `gate-relay serve` listens for admin requests unless configured otherwise.
pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:9090";

/// 0Gate gives up on a delivery after about 10 s; a relay slower than that fails in production,
/// so `send-test` fails too. The admin API answers from local storage, far below this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The relay accepts bodies up to 16 MiB, and `events show --body` returns one as a JSON string,
/// where escaping can make it up to six times longer (`\u0000`); 1 MiB more covers the record.
const MAX_RESPONSE_BYTES: usize = 6 * 16 * 1024 * 1024 + 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The caller's fault: a URL or token this client cannot use.
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("no answer from {url} within {} s", REQUEST_TIMEOUT.as_secs())]
    Timeout { url: String },
    /// The server answered with a non-2xx status; `code` is the `error` of its JSON body.
    #[error("HTTP {status}: {code}")]
    Status { status: u16, code: String },
    #[error("unexpected answer from {url}: {reason}")]
    InvalidResponse { url: String, reason: String },
}

impl ClientError {
    /// True when the command line was wrong rather than the server or the network.
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::Usage(_))
    }
}

/// An `http://host[:port][/path][?query]` URL, checked once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl(Uri);

impl HttpUrl {
    pub fn parse(raw: &str) -> Result<Self, ClientError> {
        let uri: Uri = raw
            .parse()
            .map_err(|e| ClientError::Usage(format!("{raw:?} is not a URL: {e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(ClientError::Usage(format!(
                    "{raw:?}: https is not supported yet; use http:// (a local or tunnelled port)"
                )));
            }
            _ => {
                return Err(ClientError::Usage(format!(
                    "{raw:?} must start with http://"
                )));
            }
        }
        if uri.authority().is_none_or(|a| a.host().is_empty()) {
            return Err(ClientError::Usage(format!("{raw:?} has no host")));
        }
        Ok(Self(uri))
    }

    /// This URL as a base with `path_and_query` appended to its path; the base's query is dropped.
    fn join(&self, path_and_query: &str) -> Uri {
        let base = self.0.path().trim_end_matches('/');
        let authority = self.0.authority().map_or("", |a| a.as_str());
        format!("http://{authority}{base}{path_and_query}")
            .parse()
            .expect("a valid base URL and a percent-encoded path form a valid URL")
    }
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for a path segment or a
/// query value.
pub fn encode_component(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            write!(out, "%{byte:02X}").expect("writing to a String cannot fail");
        }
    }
    out
}

/// `?k=v&…` from the pairs whose value is present, or "" when none is.
fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode_component(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// What came back, read whole within the deadline and the size cap.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    body: Bytes,
    request_id: Option<String>,
    latency: Duration,
}

/// One request with the deadline and the size cap applied.
async fn exchange(request: Request<Full<Bytes>>) -> Result<Answer, ClientError> {
    let url = request.uri().to_string();
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let started = Instant::now();
    let work = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| ClientError::Unreachable {
                url: url.clone(),
                reason: error_chain(&e),
            })?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| ClientError::InvalidResponse {
                url: url.clone(),
                reason: format!("reading the body failed: {e}"),
            })?
            .to_bytes();
        Ok(Answer {
            status: parts.status,
            body,
            request_id: parts
                .headers
                .get(REQUEST_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            latency: started.elapsed(),
        })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, work)
        .await
        .map_err(|_| ClientError::Timeout { url: url.clone() })?
}

/// hyper's errors say "client error (Connect)"; the cause is further down the chain.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        write!(text, ": {cause}").expect("writing to a String cannot fail");
        source = cause.source();
    }
    text
}

// ---------------------------------------------------------------------------------------------
// The admin API.

pub use crate::admin_api::{Acted, EventPage, EventView, OutboxView};

/// An answer both as sent (for `--json`) and parsed.
#[derive(Debug, Clone)]
pub struct Reply<T> {
    pub raw: Bytes,
    pub value: T,
}

/// What `events list` filters on; `None` leaves the server's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// `pending` or `published`.
    pub state: Option<&'static str>,
    pub event_type: Option<String>,
    pub since_ms: Option<u64>,
    pub limit: Option<u32>,
    pub before: Option<u64>,
}

/// A client of one relay's admin API.
#[derive(Debug)]
pub struct AdminClient {
    base: HttpUrl,
    token: Option<Secret>,
}

impl AdminClient {
    pub fn new(base: HttpUrl, token: Option<Secret>) -> Self {
        Self { base, token }
    }

    pub async fn show(
        &self,
        id: &str,
        environment: Option<&str>,
        with_body: bool,
    ) -> Result<Reply<EventView>, ClientError> {
        let query = query(&[
            ("environment", environment.map(str::to_owned)),
            ("body", with_body.then(|| "true".to_owned())),
        ]);
        self.call(
            Method::GET,
            &format!("/events/{}{query}", encode_component(id)),
        )
        .await
    }

    pub async fn list(&self, filter: &ListFilter) -> Result<Reply<EventPage>, ClientError> {
        let query = query(&[
            ("state", filter.state.map(str::to_owned)),
            ("type", filter.event_type.clone()),
            ("since", filter.since_ms.map(|v| v.to_string())),
            ("limit", filter.limit.map(|v| v.to_string())),
            ("before", filter.before.map(|v| v.to_string())),
        ]);
        self.call(Method::GET, &format!("/events{query}")).await
    }

    /// `POST /events/{id}/replay` or `/drop`: an operator's action on one event; both answer
    /// with the same shape.
    pub async fn act(
        &self,
        action: Action,
        id: &str,
        environment: Option<&str>,
    ) -> Result<Reply<Acted>, ClientError> {
        let query = query(&[("environment", environment.map(str::to_owned))]);
        let action = match action {
            Action::Replay => "replay",
            Action::Drop => "drop",
        };
        let path = format!("/events/{}/{action}{query}", encode_component(id));
        self.call(Method::POST, &path).await
    }

    pub async fn outbox(&self) -> Result<Reply<OutboxView>, ClientError> {
        self.call(Method::GET, "/outbox").await
    }

    async fn call<T: for<'de> Deserialize<'de>>(
        &self,
        method: Method,
        path_and_query: &str,
    ) -> Result<Reply<T>, ClientError> {
        let uri = self.base.join(path_and_query);
        let url = uri.to_string();
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .expect("method, URI and a static header form a valid request");
        if let Some(token) = &self.token {
            let mut value =
                HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                    ClientError::Usage("the admin token has characters a header cannot hold".into())
                })?;
            value.set_sensitive(true);
            request.headers_mut().insert(header::AUTHORIZATION, value);
        }
        let answer = exchange(request).await?;
        if !answer.status.is_success() {
            return Err(ClientError::Status {
                status: answer.status.as_u16(),
                code: error_code(&answer.body),
            });
        }
        let value =
            serde_json::from_slice(&answer.body).map_err(|e| ClientError::InvalidResponse {
                url,
                reason: e.to_string(),
            })?;
        Ok(Reply {
            raw: answer.body,
            value,
        })
    }
}

/// The `error` of a JSON error body, or a placeholder saying what the body was instead.
fn error_code(body: &[u8]) -> String {
    if let Ok(ErrorBody { error }) = serde_json::from_slice(body) {
        return printable(&error);
    }
    match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        Ok(_) => "(no error code)",
        Err(_) if body.is_empty() => "(empty body)",
        Err(_) => "(not JSON)",
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_percent_encoded() {
        let cases = [
            ("evt_1", "evt_1"),
            ("a-b.c~d", "a-b.c~d"),
            ("a/b", "a%2Fb"),
            ("a b?c#d&e=f", "a%20b%3Fc%23d%26e%3Df"),
            ("%", "%25"),
            ("é", "%C3%A9"),
            ("", ""),
        ];
        for (raw, want) in cases {
            assert_eq!(encode_component(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn urls_are_checked_and_joined() {
        let cases: [(&str, &str, Result<&str, &str>); 7] = [
            (
                "http://127.0.0.1:9090",
                "/outbox",
                Ok("http://127.0.0.1:9090/outbox"),
            ),
            (
                "http://127.0.0.1:9090/",
                "/outbox",
                Ok("http://127.0.0.1:9090/outbox"),
            ),
            (
                "http://host/relay/",
                "/events?limit=1",
                Ok("http://host/relay/events?limit=1"),
            ),
            ("http://host?x=1", "/outbox", Ok("http://host/outbox")),
            ("https://host", "/", Err("https is not supported")),
            ("ftp://host", "/", Err("must start with http://")),
            ("not a url", "/", Err("is not a URL")),
        ];
        for (raw, path, want) in cases {
            match (HttpUrl::parse(raw), want) {
                (Ok(url), Ok(want)) => assert_eq!(url.join(path).to_string(), want, "{raw}"),
                (Err(e), Err(want)) => {
                    assert!(e.is_usage(), "{raw}");
                    assert!(e.to_string().contains(want), "{raw}: {e}");
                }
                (got, want) => panic!("{raw}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn queries_hold_only_present_values() {
        let cases = [
            (vec![("a", None), ("b", None)], ""),
            (vec![("a", Some("1".to_owned())), ("b", None)], "?a=1"),
            (
                vec![("a", Some("x y".to_owned())), ("b", Some("2".to_owned()))],
                "?a=x%20y&b=2",
            ),
        ];
        for (pairs, want) in cases {
            assert_eq!(query(&pairs), want);
        }
    }

    #[test]
    fn error_codes_come_from_the_json_body() {
        let cases: [(&[u8], &str); 5] = [
            (br#"{"error":"not_found"}"#, "not_found"),
            (br#"{"error":"body_pruned","detail":"x"}"#, "body_pruned"),
            (br#"{"status":"x"}"#, "(no error code)"),
            (b"", "(empty body)"),
            (b"<html>", "(not JSON)"),
        ];
        for (body, want) in cases {
            assert_eq!(error_code(body), want);
        }
    }

    #[test]
    fn records_parse_with_and_without_a_body() {
        let base = r#""seq":7,"environment":"test","event_id":"evt_1","event_type":"t","endpoint":"test","state":"pending","received_at_ms":1,"published_at_ms":null,"deliveries":1,"request_ids":["r"],"body_sha256":"x","size":2"#;
        let cases = [
            (format!("{{{base}}}"), None),
            (format!(r#"{{{base},"body":null}}"#), Some(None)),
            (
                format!(r#"{{{base},"body":"{{}}"}}"#),
                Some(Some("{}".to_owned())),
            ),
            (format!(r#"{{{base},"future_field":1}}"#), None),
        ];
        for (json, want) in cases {
            let view: EventView = serde_json::from_str(&json).expect(&json);
            assert_eq!(view.body, want, "{json}");
        }
    }
}
