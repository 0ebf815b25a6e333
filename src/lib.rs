//! gate-relay: verifies 0Gate webhooks, dedupes them into a durable outbox and publishes them to
//! RabbitMQ with publisher confirms. `main.rs` is a thin entry point; everything lives here.

pub mod config;
pub mod event;
pub mod signature;
pub mod store;
