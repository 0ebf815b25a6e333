//! gate-relay: verifies 0Gate webhooks, dedupes them into a durable outbox and publishes them to
//! RabbitMQ with publisher confirms. `main.rs` is a thin entry point; everything lives here.
//!
//! Layers, each using only those above it in this list: pure (`config`, `signature`, `event`, `admin_api`) →
//! adapters (`store` = sled, `publisher` = RabbitMQ, `confirmations`, `metrics`, `telemetry`,
//! `tls`) → the use case (`ingest`) → transport (`server`, `routes`, `admin`) → wiring (`app`) →
//! entry (`admin_client`, the operator's HTTP clients; `cli`).

pub mod admin;
pub mod admin_api;
pub mod admin_client;
pub mod app;
pub mod cli;
pub mod config;
pub mod confirmations;
pub mod event;
pub mod failpoint;
pub mod ingest;
pub mod metrics;
pub mod publisher;
pub mod routes;
pub mod server;
pub mod signature;
pub mod store;
pub mod telemetry;
pub mod tls;
