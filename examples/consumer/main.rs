//! An example worker for the events gate-relay publishes: manual acks, a prefetch, dedupe by
//! `message_id`, optional re-verification of the forwarded `Gate-Signature`, and the ack only
//! after the side effect (here: printing a line). The decisions live in `worker.rs`, which the
//! integration test `tests/consumer_example.rs` exercises against the real broker.
//!
//! ```text
//! cargo run --example consumer -- [QUEUE] [AMQP_URL] [PREFETCH]
//! cargo run --example consumer -- fulfilment amqp://guest:guest@127.0.0.1:5672/%2f 32
//! GATE_CONSUMER_SECRETS=whsec_live_new...,whsec_live_old... cargo run --example consumer
//! ```
//!
//! The queue must exist (see `deploy/rabbitmq/definitions.json`). Stop with Ctrl-C: deliveries
//! not yet acked go back to the queue.

mod worker;

use anyhow::{Context, bail};
use futures_lite::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

use worker::{Event, Settled, Worker};

const DEFAULT_QUEUE: &str = "fulfilment";
const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Enough to hide the broker round trip behind the work of one message, small enough that one
/// slow worker does not hoard messages other workers could take.
const DEFAULT_PREFETCH: u16 = 32;
/// Event ids remembered in memory; far more than can be in flight or be redelivered soon.
const REMEMBER: usize = 100_000;
/// Comma-separated webhook secrets, as in the relay's `secrets_env`; unset: trust the relay.
const SECRETS_ENV: &str = "GATE_CONSUMER_SECRETS";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let queue = args.next().unwrap_or_else(|| DEFAULT_QUEUE.to_owned());
    let url = args.next().unwrap_or_else(|| DEFAULT_URL.to_owned());
    let prefetch = match args.next() {
        Some(p) => p.parse::<u16>().context("PREFETCH must be 1..=65535")?,
        None => DEFAULT_PREFETCH,
    };
    if prefetch == 0 {
        bail!("PREFETCH 0 means unlimited; give a bound");
    }
    let secrets = worker::secrets_from(std::env::var(SECRETS_ENV).ok());
    let verifying = !secrets.is_empty();
    let mut worker = Worker::new(secrets, REMEMBER);

    let connection = Connection::connect(
        &url,
        ConnectionProperties::default().with_connection_name("gate-relay-example-consumer".into()),
    )
    .await
    .context("connecting to RabbitMQ")?;
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "gate-relay-example-consumer".into(),
            // no_ack stays false: every delivery is acked or nacked explicitly.
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("consuming from {queue}"))?;
    println!("consuming {queue} (prefetch {prefetch}, verifying signatures: {verifying})");

    loop {
        let delivery = tokio::select! {
            next = consumer.next() => match next {
                Some(delivery) => delivery.context("consumer failed")?,
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        };
        match worker.process(&delivery, fulfil).await? {
            Settled::Fulfilled(id) => println!("acked {id}"),
            Settled::Duplicate(id) => println!("acked {id} (duplicate, nothing done)"),
            Settled::Rejected(reason) => println!("dead-lettered a message: {reason}"),
            Settled::Retried(id) => println!("requeued {id}"),
        }
    }
    let _ = channel.close(200, "bye".into()).await;
    let _ = connection.close(200, "bye".into()).await;
    Ok(())
}

/// The side effect. A real one updates the partner's order in the same transaction that records
/// the event id under a unique constraint, and is idempotent: "mark paid" twice is still paid.
fn fulfil(event: Event<'_>) -> Result<(), serde_json::Error> {
    let body: serde_json::Value = serde_json::from_slice(event.body)?;
    let data = &body["data"];
    println!(
        "fulfilled {} {} session={} status={} tx_refid={}",
        event.id,
        event.event_type,
        data["id"].as_str().unwrap_or("-"),
        data["status"].as_str().unwrap_or("-"),
        data["tx_refid"].as_str().unwrap_or("-"),
    );
    Ok(())
}
