//! The webhook listener's routes: (method, path) → endpoint → `ingest`, and the ONE place where
//! outcomes become HTTP responses (`outcome` classifies errors into them).
//!
//! Owns: body limits (Content-Length checked before reading, enforced while reading), the
//! pre-body checks (`Gate-Signature` present, within its size cap, well formed and
//! fresh: a sender without a plausible header makes us buffer nothing), the shared budget of body
//! bytes in flight (reserved by Content-Length before reading, or chunk by chunk), the request
//! deadline, request ids, the per-request log line and request metrics. Does not own: what makes a
//! delivery valid (`ingest`). Response bodies are short, stable JSON codes; details go to the log.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use tokio::sync::Semaphore;

use crate::config::Endpoint;
use crate::ingest::{Accepted, Delivery, Ingest, Rejected};
use crate::metrics::Metrics;
use crate::signature;

mod budget;
mod outcome;
mod request_id;

use budget::{InFlight, Reserved};
pub use outcome::Outcome;
pub use request_id::REQUEST_ID;
use request_id::RequestIds;

#[derive(Debug)]
pub struct Routes {
    /// By path; swapped whole on reload (SIGHUP), so a request sees one consistent set.
    endpoints: ArcSwap<HashMap<String, Endpoint>>,
    ingest: Ingest,
    metrics: Metrics,
    max_body_bytes: usize,
    request_timeout: Duration,
    retry_after_secs: u64,
    request_ids: RequestIds,
    /// Deliveries being handled at once. HTTP/2 multiplexes several per connection, so the
    /// connection bound alone would not bound memory (each holds up to `max_body_bytes`).
    in_flight: Semaphore,
    /// Body bytes all deliveries together may hold: the count bound above times max_body_bytes
    /// would be far more memory than a pod has.
    body_budget: Semaphore,
}

/// Why reading a body stopped.
enum ReadError {
    TooLarge,
    OverBudget,
    Failed(String),
}

/// What the head of a request told, once it passed the pre-body checks.
struct Head {
    /// Content-Length, when sent: at most `max_body_bytes`.
    declared: Option<u64>,
    signature: Option<String>,
}

/// What a handled request produced, before it becomes a response.
struct Answer {
    outcome: Outcome,
    accepted: Option<Accepted>,
    detail: Option<String>,
    event: Option<(String, String)>,
}

impl Routes {
    #[expect(
        clippy::too_many_arguments,
        reason = "each is one configured bound, named at the one call site in app.rs"
    )]
    pub fn new(
        endpoints: &[Endpoint],
        ingest: Ingest,
        metrics: Metrics,
        max_body_bytes: usize,
        request_timeout: Duration,
        retry_after_secs: u64,
        max_in_flight: usize,
        max_body_bytes_in_flight: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            endpoints: ArcSwap::from_pointee(by_path(endpoints)),
            ingest,
            metrics,
            max_body_bytes,
            request_timeout,
            retry_after_secs,
            request_ids: RequestIds::new(),
            in_flight: Semaphore::new(max_in_flight),
            body_budget: Semaphore::new(max_body_bytes_in_flight.min(Semaphore::MAX_PERMITS)),
        })
    }

    /// Replaces the endpoints (paths, secrets, tolerances); requests in flight keep the old set.
    pub fn replace_endpoints(&self, endpoints: &[Endpoint]) {
        self.endpoints.store(Arc::new(by_path(endpoints)));
    }

    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let request_id = self.request_ids.take(req.headers());
        let endpoints = self.endpoints.load_full();
        let endpoint = endpoints.get(req.uri().path());
        let endpoint_label = endpoint.map_or("unknown", |e| e.name.as_str());
        let header_id = req.headers().get(EVENT_ID_HEADER).cloned();
        let answer = match endpoint {
            None => self.simple(Outcome::NotFound),
            Some(_) if req.method() != Method::POST => self.simple(Outcome::MethodNotAllowed),
            Some(endpoint) => match self.in_flight.try_acquire() {
                Ok(permit) => {
                    let _slot = InFlight::new(permit, &self.metrics.requests_in_flight);
                    self.deliver(endpoint, req, &request_id).await
                }
                Err(_) => Answer {
                    detail: Some("too many deliveries in flight".to_owned()),
                    ..self.simple(Outcome::Unavailable)
                },
            },
        };
        let response = self.respond(&answer, &request_id);
        self.compare_event_id_header(header_id.as_ref(), &answer, endpoint_label, &request_id);
        let latency = started.elapsed();
        self.metrics
            .requests
            .with_label_values(&[endpoint_label, answer.outcome.as_str()])
            .inc();
        self.metrics
            .request_duration
            .with_label_values(&[endpoint_label])
            .observe(latency.as_secs_f64());
        let (event_id, event_type) = answer
            .event
            .as_ref()
            .map_or(("", ""), |(i, t)| (i.as_str(), t.as_str()));
        tracing::info!(
            request_id,
            endpoint = endpoint_label,
            outcome = answer.outcome.as_str(),
            status = response.status().as_u16(),
            event_id,
            event_type,
            latency_ms = latency.as_secs_f64() * 1000.0,
            detail = answer.detail.as_deref().unwrap_or(""),
            "request"
        );
        response
    }

    /// Counts and logs a delivery whose `X-0bit-Event-Id` names another id than its signed
    /// envelope. The signed id is the one used (the header is not signed); the count matters
    /// because balancers hash on the header to send every delivery of an id to one replica.
    /// Only deliveries whose envelope was parsed (verified) are compared; a missing header is
    /// not a mismatch.
    fn compare_event_id_header(
        &self,
        header: Option<&http::HeaderValue>,
        answer: &Answer,
        endpoint: &str,
        request_id: &str,
    ) {
        let (Some(header), Some((event_id, _))) = (header, answer.event.as_ref()) else {
            return;
        };
        if header.as_bytes() == event_id.as_bytes() {
            return;
        }
        self.metrics
            .event_id_header_mismatch
            .with_label_values(&[endpoint])
            .inc();
        // Bounded in the log: the header is unauthenticated and may be anything.
        let shown = String::from_utf8_lossy(header.as_bytes());
        let shown: String = shown.chars().take(MAX_LOGGED_HEADER_CHARS).collect();
        tracing::warn!(
            request_id,
            endpoint,
            event_id = event_id.as_str(),
            header_event_id = shown,
            "X-0bit-Event-Id differs from the signed event id; the signed id is used"
        );
    }

    fn simple(&self, outcome: Outcome) -> Answer {
        Answer {
            outcome,
            accepted: None,
            detail: None,
            event: None,
        }
    }

    async fn deliver(
        &self,
        endpoint: &Endpoint,
        req: Request<Incoming>,
        request_id: &str,
    ) -> Answer {
        let received_at = SystemTime::now();
        let head = match self.check_head(req.headers(), endpoint, received_at) {
            Ok(head) => head,
            Err(answer) => return answer,
        };
        let mut reserved = Reserved::new(&self.body_budget, &self.metrics.body_bytes_in_flight);
        if head.declared.is_some_and(|n| !reserved.grow(n as usize)) {
            return self.over_budget();
        }
        let (_, body) = req.into_parts();
        // The deadline splits by whose fault it is: a slow body is the client's (408); slow
        // storage or a slow broker is ours (503, retry later).
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        let read =
            tokio::time::timeout_at(deadline, self.read_body(body, head.declared, &mut reserved));
        let body = match read.await {
            Err(_) => {
                return Answer {
                    detail: Some("the body did not arrive before the request deadline".to_owned()),
                    ..self.simple(Outcome::RequestTimeout)
                };
            }
            Ok(Ok(body)) => body,
            Ok(Err(ReadError::TooLarge)) => return self.simple(Outcome::TooLarge),
            Ok(Err(ReadError::OverBudget)) => return self.over_budget(),
            Ok(Err(ReadError::Failed(e))) => {
                return Answer {
                    detail: Some(format!("reading the body failed: {e}")),
                    ..self.simple(Outcome::InvalidBody)
                };
            }
        };
        let delivery = Delivery {
            endpoint,
            signature: head.signature.as_deref(),
            body,
            request_id,
            received_at,
        };
        match tokio::time::timeout_at(deadline, self.ingest.deliver(delivery)).await {
            Ok(delivered) => self.answer(delivered),
            Err(_) => Answer {
                detail: Some(
                    "storing or confirming did not finish before the request deadline".to_owned(),
                ),
                ..self.simple(Outcome::Unavailable)
            },
        }
    }

    /// Everything about the request that needs no body, before reading a byte of it (and before
    /// `Expect: 100-continue` is answered, which hyper does when the body is polled): the
    /// declared length and a plausible `Gate-Signature`. Framing is hyper's: it refuses a
    /// transfer coding other than chunked and conflicting lengths (400), and drops
    /// Content-Length whenever Transfer-Encoding is present (h1 role.rs; h2 refuses
    /// Transfer-Encoding outright), so a handler never sees both.
    #[expect(
        clippy::result_large_err,
        reason = "once per request, moved straight into the response; boxing buys nothing"
    )]
    fn check_head(
        &self,
        headers: &http::HeaderMap,
        endpoint: &Endpoint,
        received_at: SystemTime,
    ) -> Result<Head, Answer> {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(n) = declared.filter(|&n| n > self.max_body_bytes as u64) {
            return Err(Answer {
                detail: Some(format!("content-length {n} over {}", self.max_body_bytes)),
                ..self.simple(Outcome::TooLarge)
            });
        }
        // A header that is not visible ASCII cannot carry a valid signature.
        let signature = match headers.get(signature::HEADER).map(HeaderValue::to_str) {
            None => None,
            Some(Ok(value)) => Some(value.to_owned()),
            Some(Err(_)) => {
                return Err(Answer {
                    detail: Some("Gate-Signature is not visible ASCII".to_owned()),
                    ..self.simple(Outcome::MalformedHeader)
                });
            }
        };
        signature::precheck(
            signature.as_deref(),
            unix_secs(received_at),
            endpoint.tolerance_secs,
        )
        .map_err(|e| Answer {
            detail: Some(e.to_string()),
            ..self.simple(Outcome::from(&e))
        })?;
        Ok(Head {
            declared,
            signature,
        })
    }

    fn answer(&self, delivered: Result<Accepted, Rejected>) -> Answer {
        match delivered {
            Ok(accepted) => Answer {
                outcome: if accepted.duplicate {
                    Outcome::Duplicate
                } else {
                    Outcome::Accepted
                },
                event: Some((accepted.event_id.to_string(), accepted.event_type.clone())),
                accepted: Some(accepted),
                ..self.simple(Outcome::Accepted)
            },
            Err(Rejected { error, envelope }) => Answer {
                outcome: Outcome::from(&error),
                detail: Some(error.to_string()),
                event: envelope.map(|e| (e.id.to_string(), e.event_type)),
                ..self.simple(Outcome::Internal)
            },
        }
    }

    fn over_budget(&self) -> Answer {
        Answer {
            detail: Some("body bytes in flight over server.max_body_bytes_in_flight".to_owned()),
            ..self.simple(Outcome::Unavailable)
        }
    }

    /// Reads the body within max_body_bytes, reserving from the shared budget whatever the
    /// Content-Length reservation does not already cover (all of it, for a chunked body).
    async fn read_body(
        &self,
        body: Incoming,
        declared: Option<u64>,
        reserved: &mut Reserved<'_>,
    ) -> Result<Bytes, ReadError> {
        let mut body = Limited::new(body, self.max_body_bytes);
        // declared is at most max_body_bytes (checked) and already reserved.
        let mut buf = BytesMut::with_capacity(declared.map_or(0, |n| n as usize));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                if e.is::<LengthLimitError>() {
                    ReadError::TooLarge
                } else {
                    ReadError::Failed(e.to_string())
                }
            })?;
            if let Ok(data) = frame.into_data() {
                let needed = (buf.len() + data.len()).saturating_sub(reserved.bytes);
                if needed > 0 && !reserved.grow(needed) {
                    return Err(ReadError::OverBudget);
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf.freeze())
    }

    /// The one mapping from outcome to status and body.
    fn respond(&self, answer: &Answer, request_id: &str) -> Response<Full<Bytes>> {
        let (status, body) = match (answer.outcome, &answer.accepted) {
            (Outcome::Accepted | Outcome::Duplicate, Some(accepted)) => (
                StatusCode::OK,
                serde_json::json!({
                    "status": if accepted.duplicate { "duplicate" } else { "accepted" },
                    "event_id": accepted.event_id.as_str(),
                }),
            ),
            (outcome, _) => (
                outcome.status(),
                serde_json::json!({ "error": outcome.as_str() }),
            ),
        };
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Ok(id) = HeaderValue::from_str(request_id) {
            headers.insert(REQUEST_ID, id);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(self.retry_after_secs),
            );
        }
        if status == StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        response
    }
}

/// 0Gate's informational copy of the event id; balancers hash on it (deploy/nginx).
const EVENT_ID_HEADER: &str = "x-0bit-event-id";

/// Enough of an unauthenticated header to recognise it in a log line.
const MAX_LOGGED_HEADER_CHARS: usize = 128;

fn unix_secs(at: SystemTime) -> i64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn by_path(endpoints: &[Endpoint]) -> HashMap<String, Endpoint> {
    endpoints
        .iter()
        .map(|e| (e.path.clone(), e.clone()))
        .collect()
}
