//! What the benchmark examples share: the topology they publish into and a consumer that
//! drains it (each example uses what it needs, hence the `dead_code` allowance).
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_lite::StreamExt;
use lapin::options::{
    BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, ExchangeKind};

/// A durable topic exchange (as the relay declares it) and a durable queue bound to all of it.
pub async fn declare(channel: &Channel, exchange: &str, queue: &str) -> anyhow::Result<()> {
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Drains `queue` with an auto-ack consumer, as partners' workers would, so the broker's cost
/// is that of a queue that stays short.
pub async fn consume(
    channel: &Channel,
    queue: &str,
    tag: &str,
) -> anyhow::Result<Arc<AtomicUsize>> {
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let count = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&count);
    tokio::spawn(async move {
        while let Some(Ok(_delivery)) = consumer.next().await {
            counted.fetch_add(1, Ordering::Relaxed);
        }
    });
    Ok(count)
}
