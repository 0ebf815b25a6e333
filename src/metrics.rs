//! Prometheus metrics: one [`Metrics`] struct registered into an explicit registry.
//!
//! Owns: metric names, help texts, buckets. Does not own: when things are counted (callers do) or
//! serving them (`admin`). Guarantee: every label value comes from a closed set (outcome enums,
//! configured endpoint names, secret positions); never an event id, a path or error text.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
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
}

impl Metrics {
    pub fn new() -> Self {
        // Names carry the gate_relay_ prefix themselves so process metrics keep their standard
        // process_* names.
        let registry = Registry::new();
        let m = Self {
            requests: IntCounterVec::new(
                Opts::new(
                    "gate_relay_requests_total",
                    "Webhook requests answered, by endpoint and outcome.",
                ),
                &["endpoint", "outcome"],
            )
            .expect("valid metric"),
            request_duration: HistogramVec::new(
                HistogramOpts::new(
                    "gate_relay_request_duration_seconds",
                    "Time from request start to answer, by endpoint.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["endpoint"],
            )
            .expect("valid metric"),
            signature_skew: Histogram::with_opts(
                HistogramOpts::new(
                    "gate_relay_signature_skew_seconds",
                    "now - t of verified deliveries; drift here breaks verification later.",
                )
                .buckets(SKEW_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
            secret_matches: IntCounterVec::new(
                Opts::new(
                    "gate_relay_secret_matches_total",
                    "Verified deliveries by endpoint and position of the matching secret.",
                ),
                &["endpoint", "secret"],
            )
            .expect("valid metric"),
            outbox_events: IntGauge::new(
                "gate_relay_outbox_events",
                "Events stored and not yet confirmed by the broker.",
            )
            .expect("valid metric"),
            outbox_bytes: IntGauge::new(
                "gate_relay_outbox_bytes",
                "Body bytes of the events in the outbox.",
            )
            .expect("valid metric"),
            outbox_oldest_age: IntGauge::new(
                "gate_relay_outbox_oldest_age_seconds",
                "Age of the oldest event still in the outbox (0 when empty).",
            )
            .expect("valid metric"),
            publishes: IntCounterVec::new(
                Opts::new(
                    "gate_relay_publish_total",
                    "Publish attempts by result: ack, nack, returned, error, timeout.",
                ),
                &["result"],
            )
            .expect("valid metric"),
            publish_confirm: Histogram::with_opts(
                HistogramOpts::new(
                    "gate_relay_publish_confirm_seconds",
                    "Time from publish to broker confirm.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
            amqp_connected: IntGauge::new(
                "gate_relay_amqp_connected",
                "1 when the broker connection and confirm channel are up.",
            )
            .expect("valid metric"),
            amqp_reconnects: IntCounter::new(
                "gate_relay_amqp_reconnects_total",
                "Broker connections opened after the first.",
            )
            .expect("valid metric"),
            store_size: IntGauge::new(
                "gate_relay_store_size_bytes",
                "Bytes the sled store takes on disk.",
            )
            .expect("valid metric"),
            store_flush: Histogram::with_opts(
                HistogramOpts::new(
                    "gate_relay_store_flush_seconds",
                    "Duration of one group-commit round (sled flush plus fsync).",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
            events_stored: IntGauge::new(
                "gate_relay_events_stored",
                "Dedupe records held (pending and published).",
            )
            .expect("valid metric"),
            store_recreated: IntGauge::new(
                "gate_relay_store_recreated",
                "1 when this start found the store missing but its marker present: a store was lost.",
            )
            .expect("valid metric"),
            requests_in_flight: IntGauge::new(
                "gate_relay_requests_in_flight",
                "Deliveries being handled now (bounded by server.max_connections).",
            )
            .expect("valid metric"),
            events_parked: IntGauge::new(
                "gate_relay_events_parked",
                "Events the broker refused past the attempt bound, waiting for an operator.",
            )
            .expect("valid metric"),
            events_parked_total: IntCounter::new(
                "gate_relay_events_parked_total",
                "Events parked since start.",
)
            .expect("valid metric"),
            body_bytes_in_flight: IntGauge::new(
                "gate_relay_body_bytes_in_flight",
                "Body bytes reserved by requests being read or handled (bounded by server.max_body_bytes_in_flight).",
            )
            .expect("valid metric"),
            registry,
        };
        m.register_all();
        m
    }

    fn register_all(&self) {
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.requests.clone()),
            Box::new(self.request_duration.clone()),
            Box::new(self.signature_skew.clone()),
            Box::new(self.secret_matches.clone()),
            Box::new(self.outbox_events.clone()),
            Box::new(self.outbox_bytes.clone()),
            Box::new(self.outbox_oldest_age.clone()),
            Box::new(self.publishes.clone()),
            Box::new(self.publish_confirm.clone()),
            Box::new(self.amqp_connected.clone()),
            Box::new(self.amqp_reconnects.clone()),
            Box::new(self.store_size.clone()),
            Box::new(self.store_flush.clone()),
            Box::new(self.events_stored.clone()),
            Box::new(self.store_recreated.clone()),
            Box::new(self.requests_in_flight.clone()),
            Box::new(self.events_parked.clone()),
            Box::new(self.events_parked_total.clone()),
            Box::new(self.body_bytes_in_flight.clone()),
        ];
        for collector in collectors {
            self.registry
                .register(collector)
                .expect("each metric is registered once");
        }
        #[cfg(target_os = "linux")]
        self.registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("the process collector is registered once");
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

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
