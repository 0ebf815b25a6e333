//! The admin listener: `/healthz`, `/readyz` and `/metrics`.
//!
//! Owns: what "ready" means (store open, broker connected with its confirm channel, outbox below
//! its bound, not draining) and refreshing the gauges that are read rather than counted. Does not
//! own: the metrics themselves (`metrics`). Bound to loopback by default; it shows no secrets.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::metrics::Metrics;
use crate::publisher::BrokerStatus;
use crate::store::Store;

#[derive(Debug)]
pub struct Admin {
    pub store: Arc<Store>,
    pub broker: Arc<BrokerStatus>,
    pub metrics: Metrics,
    pub draining: Arc<AtomicBool>,
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

impl Admin {
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET {
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "application/json",
                r#"{"error":"method_not_allowed"}"#.to_owned(),
            );
        }
        match req.uri().path() {
            "/healthz" => reply(
                StatusCode::OK,
                "application/json",
                r#"{"status":"ok"}"#.to_owned(),
            ),
            "/readyz" => self.readiness(),
            "/metrics" => {
                self.refresh_gauges();
                reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    self.metrics.render(),
                )
            }
            _ => reply(
                StatusCode::NOT_FOUND,
                "application/json",
                r#"{"error":"not_found"}"#.to_owned(),
            ),
        }
    }

    fn readiness(&self) -> Response<Full<Bytes>> {
        let broker = self.broker.is_connected();
        let outbox_below_bound = !self.store.outbox_full();
        let draining = self.draining.load(Ordering::SeqCst);
        let ready = broker && outbox_below_bound && !draining;
        let body = serde_json::json!({
            "ready": ready,
            "checks": {
                "store_open": true,
                "broker_connected": broker,
                "outbox_below_bound": outbox_below_bound,
                "draining": draining,
            }
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
        if let Ok(size) = self.store.size_on_disk() {
            self.metrics
                .store_size
                .set(i64::try_from(size).unwrap_or(i64::MAX));
        }
    }
}
