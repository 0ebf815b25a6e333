//! The consumer example's pattern (`examples/consumer/worker.rs`) against the real RabbitMQ:
//! duplicates are acked without a second side effect, a bad signature is dead-lettered, a failed
//! side effect is retried. Each test owns a unique exchange, queue and dead-letter queue.

mod support;
#[path = "../examples/consumer/worker.rs"]
mod worker;

use std::cell::Cell;
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind};
use support::{SECRET, WAIT, event_body, now, sign, unique};
use worker::{Decision, Settled, Worker};

const ROUTING_KEY: &str = "live.gate_session.completed";

/// An exchange, a work queue that dead-letters to its own dead-letter queue, and a channel.
struct Topology {
    exchange: String,
    dead_letter_exchange: String,
    queue: String,
    dead_letter_queue: String,
    channel: Channel,
    _connection: Connection,
}

impl Topology {
    async fn declare(name: &str) -> Self {
        let connection = support::broker().await;
        let channel = connection.create_channel().await.expect("channel");
        let exchange = unique(&format!("gate.test.{name}"));
        let dead_letter_exchange = unique(&format!("gate.test.{name}.dlx"));
        let queue = unique(&format!("gate.test.{name}.q"));
        let dead_letter_queue = unique(&format!("gate.test.{name}.dlq"));
        for (name, kind) in [
            (&exchange, ExchangeKind::Topic),
            (&dead_letter_exchange, ExchangeKind::Direct),
        ] {
            channel
                .exchange_declare(
                    name.as_str().into(),
                    kind,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .expect("declare exchange");
        }
        let mut args = FieldTable::default();
        // Leftovers of a crashed test run disappear after a minute unused.
        args.insert("x-expires".into(), AMQPValue::LongInt(60_000));
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(dead_letter_exchange.as_str().into()),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString("dead".into()),
        );
        declare_queue(&channel, &queue, args).await;
        let mut args = FieldTable::default();
        args.insert("x-expires".into(), AMQPValue::LongInt(60_000));
        declare_queue(&channel, &dead_letter_queue, args).await;
        for (queue, source, key) in [
            (&queue, &exchange, "live.#"),
            (&dead_letter_queue, &dead_letter_exchange, "dead"),
        ] {
            channel
                .queue_bind(
                    queue.as_str().into(),
                    source.as_str().into(),
                    key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("bind queue");
        }
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        Self {
            exchange,
            dead_letter_exchange,
            queue,
            dead_letter_queue,
            channel,
            _connection: connection,
        }
    }

    /// Publishes like gate-relay does (persistent, message_id, type, Gate-Signature header) and
    /// waits for the broker's confirm.
    async fn publish(&self, event_id: &str, body: &str, signature: &str) {
        let mut headers = FieldTable::default();
        headers.insert(
            "Gate-Signature".into(),
            AMQPValue::LongString(signature.into()),
        );
        headers.insert(
            "gate-environment".into(),
            AMQPValue::LongString("live".into()),
        );
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(event_id.into())
            .with_type("gate_session.completed".into())
            .with_content_type("application/json".into())
            .with_headers(headers);
        let confirm = self
            .channel
            .basic_publish(
                self.exchange.as_str().into(),
                ROUTING_KEY.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body.as_bytes(),
                properties,
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert_eq!(confirm, Confirmation::Ack(None), "the broker took it");
    }

    /// Runs the worker on a fresh channel until `want` deliveries are settled, then closes the
    /// channel: anything left unacked would go back to the queue and show in its count.
    async fn consume(
        &self,
        worker: &mut Worker,
        want: usize,
        mut side_effect: impl FnMut(worker::Event<'_>) -> Result<(), String>,
    ) -> Vec<Settled> {
        let channel = self
            ._connection
            .create_channel()
            .await
            .expect("consumer channel");
        channel
            .basic_qos(10, BasicQosOptions::default())
            .await
            .expect("prefetch");
        let mut consumer = channel
            .basic_consume(
                self.queue.as_str().into(),
                unique("c").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume");
        let mut settled = Vec::new();
        while settled.len() < want {
            let delivery = tokio::time::timeout(WAIT, consumer.next())
                .await
                .expect("a delivery in time")
                .expect("consumer open")
                .expect("delivery");
            settled.push(
                worker
                    .process(&delivery, &mut side_effect)
                    .await
                    .expect("settled with the broker"),
            );
        }
        channel.close(200, "done".into()).await.expect("close");
        settled
    }

    /// Waits until the work queue and the dead-letter queue hold exactly these counts.
    async fn assert_counts(&self, queue: u32, dead_letter: u32) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = (
                message_count(&self.channel, &self.queue).await,
                message_count(&self.channel, &self.dead_letter_queue).await,
            );
            if got == (queue, dead_letter) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "queue and dead-letter queue hold {got:?}, want {:?}",
                (queue, dead_letter)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn delete(&self) {
        for queue in [&self.queue, &self.dead_letter_queue] {
            let _ = self
                .channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for exchange in [&self.exchange, &self.dead_letter_exchange] {
            let _ = self
                .channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
}

async fn declare_queue(channel: &Channel, name: &str, args: FieldTable) {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .expect("declare queue");
}

async fn message_count(channel: &Channel, queue: &str) -> u32 {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("passive declare")
        .message_count()
}

fn verifying_worker() -> Worker {
    Worker::new(worker::secrets_from(Some(format!(" {SECRET} , "))), 1_000)
}

#[tokio::test]
async fn duplicate_delivery_is_acked_without_a_second_side_effect() {
    let topology = Topology::declare("consumer-dup").await;
    let id = unique("evt_dup");
    let body = event_body(&id, "gate_session.completed");
    let signature = sign(SECRET, now(), body.as_bytes());
    topology.publish(&id, &body, &signature).await;
    topology.publish(&id, &body, &signature).await;

    let mut worker = verifying_worker();
    let effects = Cell::new(0);
    let settled = topology
        .consume(&mut worker, 2, |event| {
            assert_eq!(event.id, id);
            assert_eq!(event.event_type, "gate_session.completed");
            assert_eq!(
                event.body,
                body.as_bytes(),
                "the body is forwarded untouched"
            );
            effects.set(effects.get() + 1);
            Ok(())
        })
        .await;

    assert_eq!(
        settled,
        [
            Settled::Fulfilled(id.clone()),
            Settled::Duplicate(id.clone())
        ]
    );
    assert_eq!(effects.get(), 1, "one side effect for two deliveries");
    topology.assert_counts(0, 0).await; // both acked: nothing came back after the close
    topology.delete().await;
}

#[tokio::test]
async fn message_with_a_bad_signature_is_dead_lettered() {
    let topology = Topology::declare("consumer-bad-sig").await;
    let id = unique("evt_forged");
    let body = event_body(&id, "gate_session.completed");
    let forged = sign("whsec_someone_else_0123456789", now(), body.as_bytes());
    topology.publish(&id, &body, &forged).await;

    let mut worker = verifying_worker();
    let effects = Cell::new(0);
    let settled = topology
        .consume(&mut worker, 1, |_| {
            effects.set(effects.get() + 1);
            Ok(())
        })
        .await;

    assert_eq!(settled, [Settled::Rejected("invalid_signature")]);
    assert_eq!(effects.get(), 0);
    topology.assert_counts(0, 1).await;
    topology.delete().await;
}

#[tokio::test]
async fn failed_side_effect_is_requeued_and_then_fulfilled_once() {
    let topology = Topology::declare("consumer-retry").await;
    let id = unique("evt_retry");
    let body = event_body(&id, "gate_session.completed");
    topology
        .publish(&id, &body, &sign(SECRET, now(), body.as_bytes()))
        .await;

    let mut worker = verifying_worker();
    let attempts = Cell::new(0);
    let settled = topology
        .consume(&mut worker, 2, |_| {
            attempts.set(attempts.get() + 1);
            if attempts.get() == 1 {
                Err("the order database is down".to_owned())
            } else {
                Ok(())
            }
        })
        .await;

    assert_eq!(
        settled,
        [Settled::Retried(id.clone()), Settled::Fulfilled(id.clone())]
    );
    topology.assert_counts(0, 0).await;
    topology.delete().await;
}

#[test]
fn decisions_without_a_broker() {
    let body = event_body("evt_1", "webhook.test");
    let good = sign(SECRET, now(), body.as_bytes());
    let old = sign(SECRET, now() - 86_400, body.as_bytes());
    let verifying = verifying_worker();
    let trusting = Worker::new(Vec::new(), 10);
    let reject = |reason| Decision::Reject { reason };
    let fulfil = Decision::Fulfil {
        event_id: "evt_1".to_owned(),
    };
    // (case, worker, message_id, Gate-Signature header, expected decision)
    type Case<'a> = (
        &'a str,
        &'a Worker,
        Option<&'a str>,
        Option<&'a str>,
        Decision,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            "valid",
            &verifying,
            Some("evt_1"),
            Some(&good),
            fulfil.clone(),
        ),
        (
            "signed a day ago: authenticity only",
            &verifying,
            Some("evt_1"),
            Some(&old),
            fulfil.clone(),
        ),
        (
            "no message_id",
            &verifying,
            None,
            Some(&good),
            reject("missing_message_id"),
        ),
        (
            "no signature",
            &verifying,
            Some("evt_1"),
            None,
            reject("missing_signature"),
        ),
        (
            "message_id is not the body's id",
            &verifying,
            Some("evt_2"),
            Some(&good),
            reject("message_id_mismatch"),
        ),
        (
            "no secrets: trust the relay",
            &trusting,
            Some("evt_1"),
            None,
            fulfil.clone(),
        ),
    ];
    for (name, worker, message_id, signature, want) in cases {
        let got = worker.decide(message_id, signature, body.as_bytes(), now());
        assert_eq!(got, want, "case {name}");
    }
    assert!(
        worker::secrets_from(Some(" , ".to_owned())).is_empty(),
        "blank means do not verify"
    );
}

#[test]
fn seen_ids_forget_the_oldest_past_capacity() {
    let mut seen = worker::SeenIds::new(2);
    for id in ["a", "b", "a", "c"] {
        seen.insert(id.to_owned());
    }
    assert!(!seen.contains("a"), "a was the oldest when c came");
    assert!(seen.contains("b") && seen.contains("c"));
}
