//! The broker's ceiling on this machine: what a bare client reaches publishing what the relay
//! publishes (persistent, mandatory, publisher confirms, `--window` confirms in flight) to a
//! durable queue, with an auto-ack consumer draining it. The relay's throughput is read against
//! this figure, measured in the same conditions (`scripts/bench` runs both).
//!
//! ```text
//! cargo run --release --example ceiling -- [--messages N] [--body-bytes B] [--window W]
//! ```

use std::collections::VecDeque;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeleteOptions,
};
use lapin::{BasicProperties, Connection, ConnectionProperties};

mod common;

const BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (mut messages, mut body_bytes, mut window) = (20_000usize, 600usize, 256usize);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value: usize = it
            .next()
            .with_context(|| format!("{flag} needs a value"))?
            .parse()?;
        match flag.as_str() {
            "--messages" => messages = value,
            "--body-bytes" => body_bytes = value,
            "--window" => window = value.max(1),
            other => bail!("unknown flag {other}"),
        }
    }
    let run = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let (exchange, queue) = (
        format!("gate.ceiling.{run}"),
        format!("gate.ceiling.{run}.q"),
    );
    let connection = Connection::connect(BROKER, ConnectionProperties::default())
        .await
        .context("RabbitMQ at 127.0.0.1:5672")?;
    let channel = connection.create_channel().await?;
    common::declare(&channel, &exchange, &queue).await?;
    let consumer_channel = connection.create_channel().await?;
    common::consume(&consumer_channel, &queue, "ceiling").await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;

    let body = vec![b'x'; body_bytes];
    let mut in_flight = VecDeque::with_capacity(window);
    let (mut acked, mut refused) = (0usize, 0usize);
    let start = Instant::now();
    for i in 0..messages {
        if in_flight.len() == window {
            let confirm = in_flight.pop_front().expect("window is full");
            match confirm.await? {
                lapin::Confirmation::Ack(None) => acked += 1,
                _ => refused += 1,
            }
        }
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(format!("m{i}").into());
        let confirm = channel
            .basic_publish(
                exchange.as_str().into(),
                "live.gate_session.completed".into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &body,
                properties,
            )
            .await?;
        in_flight.push_back(confirm);
    }
    for confirm in in_flight {
        match confirm.await? {
            lapin::Confirmation::Ack(None) => acked += 1,
            _ => refused += 1,
        }
    }
    let elapsed = start.elapsed();
    println!(
        "broker ceiling: {acked} confirmed, {refused} refused in {:.2} s = {:.0} messages/s ({body_bytes} B, persistent, mandatory, window {window})",
        elapsed.as_secs_f64(),
        acked as f64 / elapsed.as_secs_f64()
    );
    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    channel
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await?;
    Ok(())
}
