//! Prometheus metrics: one [`Metrics`] struct registered into an explicit registry.
//!
//! Owns: metric names, help texts, buckets. Does not own: when things are counted (callers do) or
//! serving them (`admin`). Guarantee: every label value comes from a closed set (outcome enums,
//! configured endpoint names, secret positions); never an event id, a path or error text.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Request latency buckets: group commit answers in about a millisecond, a confirm wait can take
/// up to `confirm_timeout` (5 s by default), 0Gate gives up at about 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Clock skew between 0Gate and us, in seconds, both signs; the default tolerance is 300 s.
const SKEW_BUCKETS: &[f64] = &[
    -300.0, -60.0, -10.0, -2.0, -0.5, 0.5, 2.0, 10.0, 60.0, 300.0,
];

#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub signature_skew: Histogram,
    pub secret_matches: IntCounterVec,
    pub outbox_events: IntGauge,
    pub outbox_bytes: IntGauge,
    pub outbox_oldest_age: IntGauge,
    pub publishes: IntCounterVec,
    pub publish_confirm: Histogram,
    pub amqp_connected: IntGauge,
    /// Per configured broker node (its index in `amqp.urls`): 1 while connected to it.
    pub amqp_node_connected: IntGaugeVec,
    pub amqp_reconnects: IntCounter,
    pub store_size: IntGauge,
    pub store_flush: Histogram,
    pub events_stored: IntGauge,
    /// 1 when this start created an empty store where one had existed (its marker survived).
    pub store_recreated: IntGauge,
    pub requests_in_flight: IntGauge,
    pub events_parked: IntGauge,
    pub events_parked_total: IntCounter,
    pub body_bytes_in_flight: IntGauge,
    /// Connections and HTTP/2 streams hyper or the edge ended before (or outside) a handler.
    pub connections_refused: IntCounterVec,
    /// Deliveries whose `X-0bit-Event-Id` header names another id than their signed body.
    pub event_id_header_mismatch: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        // Names carry the gate_relay_ prefix themselves so process metrics keep their standard
        // process_* names.
        let r = Registering(Registry::new());
        #[cfg(target_os = "linux")]
        r.0.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("the process collector is registered once");
        let http = Http::new(&r);
        let outbox = Outbox::new(&r);
        let amqp = Amqp::new(&r);
        let store = Store::new(&r);
        Self {
            requests: http.requests,
            request_duration: http.request_duration,
            signature_skew: http.signature_skew,
            secret_matches: http.secret_matches,
            requests_in_flight: http.requests_in_flight,
            body_bytes_in_flight: http.body_bytes_in_flight,
            connections_refused: http.connections_refused,
            event_id_header_mismatch: http.event_id_header_mismatch,
            outbox_events: outbox.events,
            outbox_bytes: outbox.bytes,
            outbox_oldest_age: outbox.oldest_age,
            events_parked: outbox.parked,
            events_parked_total: outbox.parked_total,
            publishes: amqp.publishes,
            publish_confirm: amqp.confirm,
            amqp_connected: amqp.connected,
            amqp_node_connected: amqp.node_connected,
            amqp_reconnects: amqp.reconnects,
            store_size: store.size,
            store_flush: store.flush,
            events_stored: store.events,
            store_recreated: store.recreated,
            registry: r.0,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("writing to a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// The webhook edge: requests, signatures, what deliveries hold while handled.
struct Http {
    requests: IntCounterVec,
    request_duration: HistogramVec,
    signature_skew: Histogram,
    secret_matches: IntCounterVec,
    requests_in_flight: IntGauge,
    body_bytes_in_flight: IntGauge,
    connections_refused: IntCounterVec,
    event_id_header_mismatch: IntCounterVec,
}

impl Http {
    fn new(r: &Registering) -> Self {
        Self {
            requests: r.counter_vec(
                "gate_relay_requests_total",
                "Webhook requests answered, by endpoint and outcome.",
                &["endpoint", "outcome"],
            ),
            request_duration: r.histogram_vec(
                "gate_relay_request_duration_seconds",
                "Time from request start to answer, by endpoint.",
                LATENCY_BUCKETS,
                &["endpoint"],
            ),
            signature_skew: r.histogram(
                "gate_relay_signature_skew_seconds",
                "now - t of verified deliveries; drift here breaks verification later.",
                SKEW_BUCKETS,
            ),
            secret_matches: r.counter_vec(
                "gate_relay_secret_matches_total",
                "Verified deliveries by endpoint and position of the matching secret.",
                &["endpoint", "secret"],
            ),
            requests_in_flight: r.gauge(
                "gate_relay_requests_in_flight",
                "Deliveries being handled now (bounded by server.max_connections).",
            ),
            body_bytes_in_flight: r.gauge(
                "gate_relay_body_bytes_in_flight",
                "Body bytes reserved by requests being read or handled (bounded by server.max_body_bytes_in_flight).",
            ),
            connections_refused: r.counter_vec(
                "gate_relay_connections_refused_total",
                "Connections and HTTP/2 streams refused or broken outside any handler (hyper's own 431 and 400, header-read timeouts, TLS and protocol errors), by listener and reason.",
                &["listener", "reason"],
            ),
            event_id_header_mismatch: r.counter_vec(
                "gate_relay_event_id_header_mismatch_total",
                "Verified deliveries whose X-0bit-Event-Id header differs from the signed envelope's id (the signed id is used; a balancer hashing on the header sends such events to the wrong replica), by endpoint.",
                &["endpoint"],
            ),
        }
    }
}

/// Events kept and not yet published, parked ones included.
struct Outbox {
    events: IntGauge,
    bytes: IntGauge,
    oldest_age: IntGauge,
    parked: IntGauge,
    parked_total: IntCounter,
}

impl Outbox {
    fn new(r: &Registering) -> Self {
        Self {
            events: r.gauge(
                "gate_relay_outbox_events",
                "Events stored and not yet confirmed by the broker.",
            ),
            bytes: r.gauge(
                "gate_relay_outbox_bytes",
                "Body bytes of the events in the outbox.",
            ),
            oldest_age: r.gauge(
                "gate_relay_outbox_oldest_age_seconds",
                "Age of the oldest event still in the outbox (0 when empty).",
            ),
            parked: r.gauge(
                "gate_relay_events_parked",
                "Events the broker refused past the attempt bound, waiting for an operator.",
            ),
            parked_total: r.counter(
                "gate_relay_events_parked_total",
                "Events parked since start.",
            ),
        }
    }
}

/// The broker connection and what it confirmed.
struct Amqp {
    publishes: IntCounterVec,
    confirm: Histogram,
    connected: IntGauge,
    node_connected: IntGaugeVec,
    reconnects: IntCounter,
}

impl Amqp {
    fn new(r: &Registering) -> Self {
        Self {
            publishes: r.counter_vec(
                "gate_relay_publish_total",
                "Publish attempts by result: ack, nack, returned, error, timeout.",
                &["result"],
            ),
            confirm: r.histogram(
                "gate_relay_publish_confirm_seconds",
                "Time from publish to broker confirm.",
                LATENCY_BUCKETS,
            ),
            connected: r.gauge(
                "gate_relay_amqp_connected",
                "1 when the broker connection and confirm channel are up.",
            ),
            node_connected: r.register(
                IntGaugeVec::new(
                    Opts::new(
                        "gate_relay_amqp_node_connected",
                        "1 for the broker node (its index in amqp.urls) the relay is connected to, 0 for a node it left.",
                    ),
                    &["node"],
                )
                .expect("valid metric"),
            ),
            reconnects: r.counter(
                "gate_relay_amqp_reconnects_total",
                "Broker connections opened after the first.",
            ),
        }
    }
}

/// The sled store on disk.
struct Store {
    size: IntGauge,
    flush: Histogram,
    events: IntGauge,
    recreated: IntGauge,
}

impl Store {
    fn new(r: &Registering) -> Self {
        Self {
            size: r.gauge(
                "gate_relay_store_size_bytes",
                "Bytes the sled store takes on disk.",
            ),
            flush: r.histogram(
                "gate_relay_store_flush_seconds",
                "Duration of one group-commit round (sled flush plus fsync).",
                LATENCY_BUCKETS,
            ),
            events: r.gauge(
                "gate_relay_events_stored",
                "Dedupe records held (pending and published).",
            ),
            recreated: r.gauge(
                "gate_relay_store_recreated",
                "1 when this start found the store missing but its marker present: a store was lost.",
            ),
        }
    }
}

/// Creates each metric and registers it in one step, so none can be created and forgotten.
struct Registering(Registry);

impl Registering {
    fn register<C: prometheus::core::Collector + Clone + 'static>(&self, metric: C) -> C {
        self.0
            .register(Box::new(metric.clone()))
            .expect("each metric is registered once");
        metric
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help).expect("valid metric"))
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(name, help).expect("valid metric"))
    }

    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.register(Histogram::with_opts(opts).expect("valid metric"))
    }

    fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
        labels: &[&str],
    ) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.register(HistogramVec::new(opts, labels).expect("valid metric"))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
