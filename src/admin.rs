//! The admin listener: `/healthz`, `/readyz`, `/metrics`, and the inspection API (`/events`,
//! `/events/{id}`, `/events/{id}/replay`, `/events/{id}/drop` (parked events only), `/outbox`).
//!
//! Owns: what "ready" means (store open, broker connected with its confirm channel, outbox below
//! its bound, not draining), refreshing the gauges that are read rather than counted, and the
//! bearer token on the inspection API (health and metrics stay open for probes and scrapers).
//! Does not own: the metrics themselves (`metrics`) or the records (`store`). Bound to loopback by
//! default; it never shows a secret, and an event body only when asked with `?body=true`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;

use sha2::{Digest, Sha256};

use crate::admin_api::{Acted, Depth, ErrorBody, EventPage, EventView, OutboxView};
use crate::config::Secret;
use crate::event::EventId;
use crate::metrics::Metrics;
use crate::publisher::BrokerStatus;
use crate::store::{
    AdminView, DropOutcome, EventKey, EventRecord, EventState, ListFilter, Replay, StoreError,
};

/// Page size when a listing names none, and the most one page may hold.
const DEFAULT_LIST_LIMIT: usize = 50;
const MAX_LIST_LIMIT: usize = 1_000;

#[derive(Debug)]
pub struct Admin {
    pub store: AdminView,
    pub broker: Arc<BrokerStatus>,
    pub metrics: Metrics,
    pub draining: Arc<AtomicBool>,
    /// Environments of the configured endpoints; an id is looked up in one of them.
    pub environments: Vec<String>,
    pub token: Option<Secret>,
}

type Answer = Response<Full<Bytes>>;

/// An inspection request that ends early: a status and a stable error code.
#[derive(Debug)]
struct ApiError(StatusCode, &'static str);

fn fail(status: StatusCode, code: &'static str) -> ApiError {
    ApiError(status, code)
}

/// A 500 whose cause goes to the log: the response carries only the stable code.
fn internal<E: std::fmt::Display>(during: &'static str) -> impl FnOnce(E) -> ApiError {
    move |e| {
        tracing::error!(error = %e, during, "admin request failed");
        fail(StatusCode::INTERNAL_SERVER_ERROR, "internal")
    }
}

fn json(status: StatusCode, body: &impl serde::Serialize) -> Response<Full<Bytes>> {
    // Serialising these plain structs and `Value`s cannot fail (string keys, no custom impls).
    let text = serde_json::to_string(body).unwrap_or_else(|_| r#"{"error":"internal"}"#.into());
    reply(status, "application/json", text)
}

fn error(status: StatusCode, code: &str) -> Response<Full<Bytes>> {
    json(
        status,
        &ErrorBody {
            error: code.to_owned(),
        },
    )
}

/// What an operator's action did to one event (`queued`, `dropped`).
fn acted(status: StatusCode, done: &str, event_id: String) -> Response<Full<Bytes>> {
    json(
        status,
        &Acted {
            status: done.to_owned(),
            event_id,
        },
    )
}

/// `%XX` decoding for path segments and query values; `+` is a space only in queries.
fn percent_decode(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn query(req: &Request<Incoming>) -> Vec<(String, String)> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(k, true)?, percent_decode(v, true)?))
        })
        .collect()
}

fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Hashing both sides first makes the comparison's timing independent of the token's bytes.
fn token_matches(expected: &Secret, given: &str) -> bool {
    Sha256::digest(expected.expose().as_bytes()) == Sha256::digest(given.as_bytes())
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// What an inspection request asks for, from its method and path alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inspection<'a> {
    Outbox,
    List,
    /// `GET /events/{id}`; the id as it appears in the path, still percent-encoded.
    Show(&'a str),
    /// `POST /events/{id}/replay`; the id as in [`Inspection::Show`].
    Replay(&'a str),
    /// `POST /events/{id}/drop` (a parked event); the id as in [`Inspection::Show`].
    Drop(&'a str),
    MethodNotAllowed,
    NotFound,
}

/// Splits an inspection path. An id is exactly one non-empty segment, so a path with more
/// segments (`/events/x/replay/replay`) names nothing rather than a shorter id.
pub fn inspection<'a>(method: &Method, path: &'a str) -> Inspection<'a> {
    let one_segment = |id: &'a str| Some(id).filter(|id| !id.is_empty() && !id.contains('/'));
    let rest = path.strip_prefix("/events/").unwrap_or("");
    let replay = rest.strip_suffix("/replay").and_then(one_segment);
    let drop = rest.strip_suffix("/drop").and_then(one_segment);
    match (method, path) {
        (&Method::GET, "/outbox") => Inspection::Outbox,
        (&Method::GET, "/events") => Inspection::List,
        (_, "/outbox" | "/events") => Inspection::MethodNotAllowed,
        (&Method::POST, _) => match (replay, drop) {
            (Some(id), _) => Inspection::Replay(id),
            (None, Some(id)) => Inspection::Drop(id),
            (None, None) => Inspection::NotFound,
        },
        (&Method::GET, _) => one_segment(rest).map_or(Inspection::NotFound, Inspection::Show),
        _ => Inspection::NotFound,
    }
}

impl Admin {
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        let get = req.method() == Method::GET;
        match path.as_str() {
            "/healthz" | "/readyz" | "/metrics" if !get => {
                error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
            }
            "/healthz" => json(StatusCode::OK, &serde_json::json!({ "status": "ok" })),
            "/readyz" => self.readiness(),
            "/metrics" => {
                self.refresh_gauges();
                reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    self.metrics.render(),
                )
            }
            _ if path == "/outbox" || path == "/events" || path.starts_with("/events/") => {
                if !self.authorized(&req) {
                    return error(StatusCode::UNAUTHORIZED, "unauthorized");
                }
                self.inspect(&req, &path).await
            }
            _ => error(StatusCode::NOT_FOUND, "not_found"),
        }
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let Some(expected) = &self.token else {
            return true;
        };
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| token_matches(expected, given))
    }

    async fn inspect(&self, req: &Request<Incoming>, path: &str) -> Response<Full<Bytes>> {
        let query = query(req);
        let result = match inspection(req.method(), path) {
            Inspection::Outbox => Ok(self.outbox()),
            Inspection::List => self.list(&query),
            Inspection::Replay(raw_id) => self.replay(raw_id, &query).await,
            Inspection::Drop(raw_id) => self.drop_parked(raw_id, &query).await,
            Inspection::Show(raw_id) => self.show(raw_id, &query),
            Inspection::MethodNotAllowed => {
                Err(fail(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"))
            }
            Inspection::NotFound => Err(fail(StatusCode::NOT_FOUND, "not_found")),
        };
        result.unwrap_or_else(|ApiError(status, code)| error(status, code))
    }

    fn outbox(&self) -> Response<Full<Bytes>> {
        let depth = self.store.outbox_depth();
        let by_environment = self
            .environments
            .iter()
            .map(|env| {
                let d = self.store.outbox_depth_of(env);
                let depth = Depth {
                    events: d.events,
                    bytes: d.bytes,
                };
                (env.clone(), depth)
            })
            .collect();
        let view = OutboxView {
            by_environment,
            events: depth.events,
            bytes: depth.bytes,
            parked: self.store.parked_count(),
            oldest_age_seconds: self
                .store
                .oldest_pending_age()
                .map_or(0, |age| age.as_secs()),
            broker_connected: self.broker.is_connected(),
            broker_node: self.broker.node(),
            last_publish_error: self.broker.last_error(),
        };
        json(StatusCode::OK, &view)
    }

    /// The key for an id from the path, in the environment the query names (or the only one).
    fn key(&self, raw_id: &str, query: &[(String, String)]) -> Result<EventKey, ApiError> {
        let id = percent_decode(raw_id, false)
            .and_then(|id| EventId::parse(&id).ok())
            .ok_or_else(|| fail(StatusCode::BAD_REQUEST, "invalid_event_id"))?;
        let environment = match (param(query, "environment"), self.environments.as_slice()) {
            (Some(env), envs) if envs.iter().any(|e| e == env) => env.to_owned(),
            (Some(_), _) => return Err(fail(StatusCode::NOT_FOUND, "unknown_environment")),
            (None, [only]) => only.clone(),
            (None, _) => return Err(fail(StatusCode::BAD_REQUEST, "environment_required")),
        };
        Ok(EventKey::new(&environment, &id))
    }

    fn view(&self, record: &EventRecord, with_body: bool) -> Result<EventView, ApiError> {
        let body = if with_body {
            let body = self
                .store
                .body(record.seq, record.size)
                .map_err(internal("reading a body"))?;
            Some(body.map(|b| String::from_utf8_lossy(&b).into_owned()))
        } else {
            None
        };
        Ok(EventView {
            seq: record.seq,
            environment: record.environment.clone(),
            event_id: record.event_id.clone(),
            event_type: record.event_type.clone(),
            endpoint: record.endpoint.clone(),
            state: record.state.as_str().to_owned(),
            received_at_ms: record.received_at_ms,
            published_at_ms: record.published_at_ms,
            deliveries: record.deliveries,
            request_ids: record.request_ids.clone(),
            body_sha256: record.body_sha256.clone(),
            size: record.size,
            parked_reason: record.parked_reason.clone(),
            dropped_at_ms: record.dropped_at_ms,
            body,
        })
    }

    fn show(&self, raw_id: &str, query: &[(String, String)]) -> Result<Answer, ApiError> {
        let key = self.key(raw_id, query)?;
        let record = self
            .store
            .record(&key)
            .map_err(internal("reading a record"))?
            .ok_or_else(|| fail(StatusCode::NOT_FOUND, "not_found"))?;
        let with_body = param(query, "body") == Some("true");
        Ok(json(StatusCode::OK, &self.view(&record, with_body)?))
    }

    fn list(&self, query: &[(String, String)]) -> Result<Answer, ApiError> {
        let bad = |code: &'static str| fail(StatusCode::BAD_REQUEST, code);
        let state = match param(query, "state") {
            None => None,
            Some("pending") => Some(EventState::Pending),
            Some("published") => Some(EventState::Published),
            Some("parked") => Some(EventState::Parked),
            Some("dropped") => Some(EventState::Dropped),
            Some(_) => return Err(bad("invalid_state")),
        };
        let number = |name: &str| {
            param(query, name)
                .map(str::parse::<u64>)
                .transpose()
                .map_err(|_| bad("invalid_number"))
        };
        let filter = ListFilter {
            state,
            event_type: param(query, "type").map(str::to_owned),
            since_ms: number("since")?,
        };
        let limit = number("limit")?.map_or(DEFAULT_LIST_LIMIT, |n| {
            usize::try_from(n).unwrap_or(MAX_LIST_LIMIT)
        });
        let listing = self
            .store
            .list(&filter, number("before")?, limit.clamp(1, MAX_LIST_LIMIT))
            .map_err(internal("listing events"))?;
        let events = listing
            .events
            .iter()
            .map(|record| self.view(record, false))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(json(
            StatusCode::OK,
            &EventPage {
                events,
                next_before: listing.next_before,
            },
        ))
    }

    async fn replay(&self, raw_id: &str, query: &[(String, String)]) -> Result<Answer, ApiError> {
        let key = self.key(raw_id, query)?;
        if self.draining.load(Ordering::SeqCst) {
            return Err(fail(StatusCode::SERVICE_UNAVAILABLE, "draining"));
        }
        let outcome = self.store.replay(&key).await.map_err(|e| match e {
            StoreError::OutboxFull { .. } => fail(StatusCode::SERVICE_UNAVAILABLE, "outbox_full"),
            e => internal("replaying")(e),
        })?;
        let event_id = percent_decode(raw_id, false).unwrap_or_default();
        match outcome {
            Replay::Queued | Replay::AlreadyPending => {
                let already_pending = outcome == Replay::AlreadyPending;
                tracing::info!(event_id, already_pending, "replay queued");
                Ok(acted(StatusCode::ACCEPTED, "queued", event_id))
            }
            Replay::NotFound => Err(fail(StatusCode::NOT_FOUND, "not_found")),
            Replay::BodyPruned => Err(fail(StatusCode::GONE, "body_pruned")),
            Replay::Corrupt => {
                // The response says only `corrupt_record`; which record goes to the log.
                tracing::error!(event_id, "replay found the stored record unreadable");
                Err(fail(StatusCode::INTERNAL_SERVER_ERROR, "corrupt_record"))
            }
        }
    }

    /// An operator's decision not to deliver a parked event.
    async fn drop_parked(
        &self,
        raw_id: &str,
        query: &[(String, String)],
    ) -> Result<Answer, ApiError> {
        let key = self.key(raw_id, query)?;
        let outcome = self
            .store
            .drop_parked(&key)
            .await
            .map_err(internal("dropping"))?;
        let event_id = percent_decode(raw_id, false).unwrap_or_default();
        match outcome {
            DropOutcome::Dropped => {
                tracing::warn!(event_id, "parked event dropped by an operator");
                Ok(acted(StatusCode::OK, "dropped", event_id))
            }
            DropOutcome::NotParked => Err(fail(StatusCode::CONFLICT, "not_parked")),
            DropOutcome::NotFound => Err(fail(StatusCode::NOT_FOUND, "not_found")),
        }
    }

    fn readiness(&self) -> Response<Full<Bytes>> {
        let broker = self.broker.is_connected();
        // The bounds are per environment: ready while some environment can still take events,
        // so one environment's full outbox does not take the relay out of its load balancer.
        let outbox_below_bound = self
            .environments
            .iter()
            .any(|env| !self.store.outbox_full(env));
        let store_writable = self.store.is_writable();
        let draining = self.draining.load(Ordering::SeqCst);
        let ready = broker && outbox_below_bound && store_writable && !draining;
        let body = serde_json::json!({
            "ready": ready,
            "checks": {
                "store_writable": store_writable,
                "broker_connected": broker,
                "outbox_below_bound": outbox_below_bound,
                "draining": draining,
            },
            "broker_node": self.broker.node(),
        });
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        reply(status, "application/json", body.to_string())
    }

    fn refresh_gauges(&self) {
        let depth = self.store.outbox_depth();
        self.metrics
            .outbox_events
            .set(i64::try_from(depth.events).unwrap_or(i64::MAX));
        self.metrics
            .outbox_bytes
            .set(i64::try_from(depth.bytes).unwrap_or(i64::MAX));
        let oldest_age = self.store.oldest_pending_age().unwrap_or_default();
        self.metrics
            .outbox_oldest_age
            .set(i64::try_from(oldest_age.as_secs()).unwrap_or(i64::MAX));
        self.metrics
            .events_parked
            .set(i64::try_from(self.store.parked_count()).unwrap_or(i64::MAX));
        self.metrics
            .events_stored
            .set(i64::try_from(self.store.events_stored()).unwrap_or(i64::MAX));
        if let Ok(size) = self.store.size_on_disk() {
            self.metrics
                .store_size
                .set(i64::try_from(size).unwrap_or(i64::MAX));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspection_paths_name_one_event_id_segment_or_nothing() {
        let cases: &[(Method, &str, Inspection<'_>)] = &[
            (Method::GET, "/outbox", Inspection::Outbox),
            (Method::GET, "/events", Inspection::List),
            (Method::POST, "/events", Inspection::MethodNotAllowed),
            (Method::DELETE, "/outbox", Inspection::MethodNotAllowed),
            (Method::GET, "/events/x", Inspection::Show("x")),
            (Method::GET, "/events/a%2Fb", Inspection::Show("a%2Fb")),
            (Method::GET, "/events/", Inspection::NotFound),
            (Method::GET, "/events/x/", Inspection::NotFound),
            (Method::GET, "/events/x/replay", Inspection::NotFound),
            (Method::POST, "/events/x/replay", Inspection::Replay("x")),
            (Method::POST, "/events/replay", Inspection::NotFound),
            (Method::POST, "/events//replay", Inspection::NotFound),
            (
                Method::POST,
                "/events/x/replay/replay",
                Inspection::NotFound,
            ),
            (Method::POST, "/events/x/y/replay", Inspection::NotFound),
            (Method::POST, "/events/x", Inspection::NotFound),
            (Method::PUT, "/events/x/replay", Inspection::NotFound),
        ];
        for (method, path, expected) in cases {
            assert_eq!(inspection(method, path), *expected, "{method} {path}");
        }
    }
}
