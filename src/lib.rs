//! gate-relay: verifies 0Gate webhooks, dedupes them into a durable outbox and publishes them to
//! RabbitMQ with publisher confirms. `main.rs` is a thin entry point; everything lives here.
//!
//! Layers, each using only those above it in this list: pure (`config`, `signature`, `event`, `admin_api`) →
//! adapters (`store` = sled, `publisher` = RabbitMQ, `confirmations`, `metrics`, `telemetry`,
//! `tls`) → the use case (`ingest`) → transport (`server`, `routes`, `admin`) → wiring (`app`) →
//! entry (`admin_client`, the operator's HTTP clients; `cli`).
//!
//! Modules nothing outside the crate uses (tests, fuzz targets, examples, the binary) are
//! `pub(crate)`: they are not part of the library's interface.

pub mod admin;
pub(crate) mod admin_api;
pub(crate) mod admin_client;
pub mod app;
pub mod cli;
pub mod config;
pub(crate) mod confirmations;
pub mod event;
pub mod failpoint;
pub(crate) mod ingest;
pub mod metrics;
pub mod publisher;
pub(crate) mod routes;
pub(crate) mod server;
pub mod signature;
pub mod store;
pub mod telemetry;
pub mod tls;
