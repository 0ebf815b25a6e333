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

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::config::Secret;
use crate::signature;

/// Where `gate-relay serve` listens for admin requests unless configured otherwise.
pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:9090";

/// 0Gate gives up on a delivery after about 10 s; a relay slower than that fails in production,
/// so `send-test` fails too. The admin API answers from local storage, far below this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The relay accepts bodies up to 16 MiB, and `events show --body` returns one as a JSON string,
/// where escaping can make it up to six times longer (`\u0000`); 1 MiB more covers the record.
const MAX_RESPONSE_BYTES: usize = 6 * 16 * 1024 * 1024 + 1024 * 1024;

/// The informational headers 0Gate sends beside `Gate-Signature`.
const EVENT_ID_HEADER: &str = "x-0bit-event-id";
const EVENT_TYPE_HEADER: &str = "x-0bit-event-type";
const TIMESTAMP_HEADER: &str = "x-0bit-timestamp";
/// The relay's request id header (`routes::REQUEST_ID`), shown so a run can be found in its logs.
const REQUEST_ID_HEADER: &str = "x-request-id";

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

/// A stored event as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EventView {
    pub seq: u64,
    pub environment: String,
    pub event_id: String,
    pub event_type: String,
    pub endpoint: String,
    /// `pending` or `published`.
    pub state: String,
    pub received_at_ms: u64,
    pub published_at_ms: Option<u64>,
    pub deliveries: u64,
    #[serde(default)]
    pub request_ids: Vec<String>,
    pub body_sha256: String,
    pub size: u64,
    /// Absent unless asked for; `Some(None)` when the body has been pruned.
    #[serde(default, deserialize_with = "present")]
    pub body: Option<Option<String>>,
}

/// Tells a field that is `null` (`Some(None)`) from one that is absent (`None`, via `default`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EventPage {
    /// Newest first.
    pub events: Vec<EventView>,
    /// Pass as `before` for the next page; `None` on the last one.
    pub next_before: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Replayed {
    pub status: String,
    pub event_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OutboxView {
    pub events: u64,
    pub bytes: u64,
    pub oldest_age_seconds: u64,
    pub broker_connected: bool,
    pub last_publish_error: Option<String>,
}

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

    pub async fn replay(
        &self,
        id: &str,
        environment: Option<&str>,
    ) -> Result<Reply<Replayed>, ClientError> {
        let query = query(&[("environment", environment.map(str::to_owned))]);
        self.call(
            Method::POST,
            &format!("/events/{}/replay{query}", encode_component(id)),
        )
        .await
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
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => v
            .get("error")
            .and_then(|e| e.as_str())
            .map_or_else(|| "(no error code)".to_owned(), printable),
        Err(_) if body.is_empty() => "(empty body)".to_owned(),
        Err(_) => "(not JSON)".to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// send-test.

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

// ---------------------------------------------------------------------------------------------
// Formatting, pure.

/// Escapes control characters (ANSI escapes included) so a hostile value cannot drive the
/// terminal; everything else is shown as is.
pub fn printable(raw: &str) -> String {
    if !raw.chars().any(char::is_control) {
        return raw.to_owned();
    }
    raw.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Like [`printable`], but keeps line breaks and tabs: for a body shown on its own lines.
fn printable_text(raw: &str) -> String {
    raw.split('\n')
        .map(|line| {
            line.split('\t')
                .map(printable)
                .collect::<Vec<_>>()
                .join("\t")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Left-aligned columns two spaces apart, no trailing spaces; cells are escaped here. An empty
/// `header` leaves the header row out (for key-value listings).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    let rows: Vec<Vec<String>> = (!header.is_empty())
        .then_some(header)
        .into_iter()
        .chain(
            rows.iter()
                .map(|r| r.iter().map(|c| printable(c)).collect()),
        )
        .collect();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            write!(line, "{cell:<width$}  ").expect("writing to a String cannot fail");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Unix milliseconds as RFC 3339 UTC, e.g. `2026-06-26T12:00:00.123Z`.
pub fn utc_millis(ms: u64) -> String {
    let (secs, millis) = (ms / 1000, ms % 1000);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`,
/// restricted to dates from 1970 on, which is all a unix timestamp in `u64` can be).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of each 400-year era.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

fn or_dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".to_owned())
}

/// `events show`: one field a line, then the body when it was asked for.
pub fn format_event(event: &EventView) -> String {
    let fields = [
        ("event_id", event.event_id.clone()),
        ("environment", event.environment.clone()),
        ("type", event.event_type.clone()),
        ("state", event.state.clone()),
        ("seq", event.seq.to_string()),
        ("endpoint", event.endpoint.clone()),
        ("received", utc_millis(event.received_at_ms)),
        ("published", or_dash(event.published_at_ms.map(utc_millis))),
        ("deliveries", event.deliveries.to_string()),
        (
            "request_ids",
            if event.request_ids.is_empty() {
                "-".to_owned()
            } else {
                event.request_ids.join(", ")
            },
        ),
        ("body_sha256", event.body_sha256.clone()),
        ("size", format!("{} bytes", event.size)),
    ];
    let rows: Vec<Vec<String>> = fields
        .into_iter()
        .map(|(k, v)| vec![k.to_owned(), v])
        .collect();
    let mut out = table(&[], &rows);
    match &event.body {
        None => {}
        Some(None) => out.push_str("body         (pruned after publishing)\n"),
        Some(Some(text)) => {
            out.push_str("body\n");
            out.push_str(&printable_text(text));
            if !text.ends_with('\n') {
                out.push('\n');
            }
        }
    }
    out
}

/// `events list`: newest first, then how to get the next page.
pub fn format_page(page: &EventPage) -> String {
    if page.events.is_empty() {
        return "no events\n".to_owned();
    }
    let rows: Vec<Vec<String>> = page
        .events
        .iter()
        .map(|e| {
            vec![
                e.seq.to_string(),
                utc_millis(e.received_at_ms),
                e.environment.clone(),
                e.state.clone(),
                e.event_type.clone(),
                e.event_id.clone(),
                e.deliveries.to_string(),
                e.size.to_string(),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "SEQ",
            "RECEIVED (UTC)",
            "ENV",
            "STATE",
            "TYPE",
            "EVENT ID",
            "DELIVERIES",
            "BYTES",
        ],
        &rows,
    );
    if let Some(before) = page.next_before {
        writeln!(out, "more: --before {before}").expect("writing to a String cannot fail");
    }
    out
}

/// `events replay`.
pub fn format_replayed(replayed: &Replayed) -> String {
    format!(
        "{} {}\n",
        printable(&replayed.status),
        printable(&replayed.event_id)
    )
}

/// `outbox`.
pub fn format_outbox(outbox: &OutboxView) -> String {
    let rows = vec![
        vec!["events".to_owned(), outbox.events.to_string()],
        vec!["bytes".to_owned(), outbox.bytes.to_string()],
        vec![
            "oldest_age".to_owned(),
            format!("{} s", outbox.oldest_age_seconds),
        ],
        vec![
            "broker".to_owned(),
            if outbox.broker_connected {
                "connected"
            } else {
                "disconnected"
            }
            .to_owned(),
        ],
        vec![
            "last_publish_error".to_owned(),
            or_dash(outbox.last_publish_error.clone()),
        ],
    ];
    table(&[], &rows)
}

/// `send-test`.
pub fn format_send_report(report: &SendReport) -> String {
    let status = StatusCode::from_u16(report.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .map_or_else(
            || report.status.to_string(),
            |reason| format!("{} {reason}", report.status),
        );
    let rows = vec![
        vec!["event_id".to_owned(), or_dash(report.event_id.clone())],
        vec!["status".to_owned(), status],
        vec!["outcome".to_owned(), report.outcome.clone()],
        vec![
            "latency".to_owned(),
            format!("{} ms", report.latency.as_millis()),
        ],
        vec!["request_id".to_owned(), or_dash(report.request_id.clone())],
    ];
    table(&[], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> EventView {
        EventView {
            seq: 7,
            environment: "test".into(),
            event_id: "evt_1".into(),
            event_type: "gate_session.completed".into(),
            endpoint: "test".into(),
            state: "published".into(),
            received_at_ms: 1_782_475_200_123,
            published_at_ms: Some(1_782_475_200_456),
            deliveries: 2,
            request_ids: vec!["req_a".into(), "req_b".into()],
            body_sha256: "ab".repeat(32),
            size: 42,
            body: None,
        }
    }

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
    fn utc_timestamps() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_782_475_200_123, "2026-06-26T12:00:00.123Z"),
            (4_107_542_399_999, "2100-02-28T23:59:59.999Z"),
            (4_107_542_400_000, "2100-03-01T00:00:00.000Z"),
        ];
        for (ms, want) in cases {
            assert_eq!(utc_millis(ms), want, "{ms}");
        }
    }

    #[test]
    fn control_characters_are_escaped() {
        let cases = [
            ("plain.type", "plain.type"),
            ("\u{1b}[31mred", "\\u{1b}[31mred"),
            ("a\nb", "a\\nb"),
            ("ünïcode", "ünïcode"),
        ];
        for (raw, want) in cases {
            assert_eq!(printable(raw), want, "{raw:?}");
        }
        assert_eq!(printable_text("a\n\tb\u{7}"), "a\n\tb\\u{7}");
    }

    #[test]
    fn tables_align_columns_without_trailing_spaces() {
        type Case<'a> = (&'a [&'a str], Vec<Vec<String>>, &'a str);
        let cases: [Case<'_>; 4] = [
            (
                &["A", "LONG HEADER"],
                vec![vec!["wide cell".into(), "x".into()]],
                "A          LONG HEADER\nwide cell  x\n",
            ),
            (&["ONLY"], vec![], "ONLY\n"),
            (
                &["K", "V"],
                vec![
                    vec!["é".into(), "1".into()],
                    vec!["\u{1b}".into(), "2".into()],
                ],
                "K       V\né       1\n\\u{1b}  2\n",
            ),
            (
                &[],
                vec![
                    vec!["key".into(), "1".into()],
                    vec!["longer_key".into(), "2".into()],
                ],
                "key         1\nlonger_key  2\n",
            ),
        ];
        for (header, rows, want) in cases {
            assert_eq!(table(header, &rows), want);
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

    #[test]
    fn event_display() {
        let mut pruned = event();
        pruned.body = Some(None);
        let mut with_body = event();
        with_body.body = Some(Some("{\"id\":\"evt_1\"}".into()));
        let mut pending = event();
        pending.state = "pending".into();
        pending.published_at_ms = None;
        pending.request_ids.clear();
        let cases = [
            (
                event(),
                vec![
                    "event_id     evt_1\n",
                    "published    2026-06-26T12:00:00.456Z\n",
                    "request_ids  req_a, req_b\n",
                    "size         42 bytes\n",
                ],
                "size         42 bytes\n",
            ),
            (
                pruned,
                vec!["size         42 bytes\n"],
                "size         42 bytes\nbody         (pruned after publishing)\n",
            ),
            (
                with_body,
                vec!["size         42 bytes\n"],
                "size         42 bytes\nbody\n{\"id\":\"evt_1\"}\n",
            ),
            (
                pending,
                vec![
                    "state        pending\n",
                    "published    -\n",
                    "request_ids  -\n",
                ],
                "size         42 bytes\n",
            ),
        ];
        for (view, wants, ending) in cases {
            let text = format_event(&view);
            for want in wants {
                assert!(text.contains(want), "{want:?} not in:\n{text}");
            }
            assert!(text.ends_with(ending), "not ending {ending:?}:\n{text}");
            assert!(!text.starts_with('\n'), "{text}");
        }
    }

    #[test]
    fn page_display() {
        let cases = [
            (
                EventPage {
                    events: vec![],
                    next_before: None,
                },
                "no events\n",
            ),
            (
                EventPage {
                    events: vec![event()],
                    next_before: Some(7),
                },
                "SEQ  RECEIVED (UTC)            ENV   STATE      TYPE                    EVENT ID  DELIVERIES  BYTES\n\
                     7    2026-06-26T12:00:00.123Z  test  published  gate_session.completed  evt_1     2           42\n\
                     more: --before 7\n",
            ),
        ];
        for (page, want) in cases {
            assert_eq!(format_page(&page), want);
        }
    }

    #[test]
    fn outbox_replay_and_send_display() {
        let outbox = OutboxView {
            events: 3,
            bytes: 120,
            oldest_age_seconds: 9,
            broker_connected: false,
            last_publish_error: Some("connection refused".into()),
        };
        let report = SendReport {
            event_id: Some("evt_test_1".into()),
            status: 401,
            outcome: "invalid_signature".into(),
            request_id: None,
            latency: Duration::from_millis(12),
        };
        let cases = [
            (
                format_outbox(&outbox),
                "events              3\nbytes               120\noldest_age          9 s\nbroker              disconnected\nlast_publish_error  connection refused\n",
            ),
            (
                format_replayed(&Replayed {
                    status: "queued".into(),
                    event_id: "evt_1".into(),
                }),
                "queued evt_1\n",
            ),
            (
                format_send_report(&report),
                "event_id    evt_test_1\nstatus      401 Unauthorized\noutcome     invalid_signature\nlatency     12 ms\nrequest_id  -\n",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
        assert!(!report.succeeded());
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
