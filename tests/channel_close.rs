//! A broker that closes the relay's channel, not its connection: the relay's exchange is deleted
//! while events flow, so RabbitMQ answers the next publish with `channel.close` (404 NOT_FOUND).
//! The relay must notice, recover once the exchange and its binding are back, publish every
//! event it acknowledged, be ready again, and never hang a request or its shutdown.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use lapin::options::ExchangeDeleteOptions;
use support::{Options, TestApp, WAIT, declare_exchange, event_body, eventually, unique};

/// Events sent in all, at [`PACE`]: long enough to straddle the outage.
const EVENTS: usize = 300;
const PACE: Duration = Duration::from_millis(5);

#[tokio::test]
async fn a_channel_closed_by_the_broker_is_replaced_and_nothing_acknowledged_is_lost() {
    let options = Options {
        ack: "durable",
        ..Options::default()
    };
    let app = Arc::new(TestApp::spawn("channel.close", options).await);
    // The test's own channel: the broker closes only the channel that publishes to a missing
    // exchange, so this one keeps working for the delete and the re-declare.
    let admin = app.topology.channel.clone();
    let exchange = app.topology.exchange.clone();

    let sending = Arc::new(AtomicBool::new(true));
    let sender = {
        let app = Arc::clone(&app);
        let sending = Arc::clone(&sending);
        tokio::spawn(async move {
            let mut acked = HashMap::new();
            let mut refused = 0;
            for _ in 0..EVENTS {
                let id = unique("evt");
                let body = event_body(&id, "a.x");
                match app.post_event(&body).await.status {
                    200 => {
                        acked.insert(id, Bytes::from(body));
                    }
                    _ => refused += 1,
                }
                tokio::time::sleep(PACE).await;
            }
            sending.store(false, Ordering::SeqCst);
            (acked, refused)
        })
    };
    let published = || app.metric("gate_relay_publish_total", &[("result", "ack")]);
    eventually("events are being published", || published() >= 20.0).await;

    admin
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .expect("delete the relay's exchange");
    let failures = || {
        app.metric("gate_relay_amqp_reconnects_total", &[])
            + app.metric("gate_relay_publish_total", &[("result", "error")])
    };
    eventually("the relay sees its channel closed", || failures() >= 1.0).await;
    // The operator restores the topology: the exchange and the test queue's binding.
    declare_exchange(&admin, &exchange).await;
    app.topology.bind("#").await;

    let (acked, refused) = tokio::time::timeout(2 * WAIT, sender)
        .await
        .expect("every request was answered (nothing hangs)")
        .expect("sender");
    assert!(!sending.load(Ordering::SeqCst));
    println!(
        "channel close: {} acknowledged, {refused} refused, {} reconnects, {} publish errors",
        acked.len(),
        app.metric("gate_relay_amqp_reconnects_total", &[]),
        app.metric("gate_relay_publish_total", &[("result", "error")]),
    );
    app.outbox_drained().await;
    let store = Arc::clone(&app.running.as_ref().expect("running").store);
    assert_eq!(store.parked_count(), 0, "nothing parked");
    let arrivals = app.topology.arrivals(&acked, Duration::ZERO).await;
    assert!(
        arrivals.missing.is_empty(),
        "acknowledged and never delivered: {:?}",
        arrivals.missing
    );
    eventually("the relay is ready again", || {
        app.running.as_ref().expect("running").broker.is_connected()
    })
    .await;
    let (status, body) = app.admin(http::Method::GET, "/readyz", None).await;
    assert_eq!(status, 200, "{body}");

    let mut app = Arc::into_inner(app).expect("the sender is done");
    tokio::time::timeout(WAIT, app.stop())
        .await
        .expect("shutdown does not hang");
    app.topology.delete().await;
}
