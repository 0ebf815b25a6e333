//! Broker outages through a TCP proxy in front of the real RabbitMQ. Each test prints
//! acknowledged / lost / duplicates.

mod support;

use std::sync::Arc;

use support::{BrokerProxy, Options, TestApp, event_body, eventually, unique};

/// Prints what `acked` (ids that got a 2xx) became in `got` (message ids consumed).
fn report(test: &str, acked: &[String], got: &[String]) {
    let lost = acked.iter().filter(|id| !got.contains(id)).count();
    let mut distinct = got.to_vec();
    distinct.sort();
    distinct.dedup();
    println!(
        "{test}: acknowledged {} lost {lost} duplicates {}",
        acked.len(),
        got.len() - distinct.len()
    );
}

/// A relay connected to RabbitMQ through a proxy, which is then cut; returns once the relay has
/// noticed.
async fn connected_then_cut(name: &str, ack: &'static str) -> (BrokerProxy, TestApp) {
    let proxy = BrokerProxy::start().await;
    let options = Options {
        ack,
        amqp_url: proxy.url(),
        ..Options::default()
    };
    let app = TestApp::spawn(name, options).await;
    let broker = Arc::clone(&app.running.as_ref().expect("running").broker);
    proxy.cut();
    eventually("the relay notices the broker is gone", || {
        !broker.is_connected()
    })
    .await;
    (proxy, app)
}

#[tokio::test]
async fn durable_mode_accepts_during_an_outage_and_delivers_after_recovery() {
    let (proxy, mut app) = connected_then_cut("outage.durable", "durable").await;
    let ids: Vec<String> = (0..5).map(|_| unique("evt")).collect();
    for id in &ids {
        let reply = app
            .post_event(&event_body(id, "rail.pay_out.settled"))
            .await;
        assert_eq!(
            reply.status, 200,
            "durable mode answers once stored: {reply:?}"
        );
    }
    assert_eq!(
        app.topology.queue_len().await,
        0,
        "nothing can have been published yet"
    );

    proxy.restore();
    app.outbox_drained().await;
    let mut got = app
        .topology
        .message_ids(std::time::Duration::from_secs(2))
        .await;
    report("durable, link cut", &ids, &got);
    got.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got, want);
    assert!(app.metric("gate_relay_amqp_reconnects_total", &[]) >= 1.0);
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn confirmed_mode_answers_503_during_an_outage_and_still_delivers() {
    let (proxy, mut app) = connected_then_cut("outage.confirmed", "confirmed").await;
    let id = unique("evt");
    let body = event_body(&id, "gate_session.failed");
    let reply = app.post_event(&body).await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.body["error"], "unavailable");
    assert!(reply.headers.contains_key("retry-after"));

    proxy.restore();
    app.outbox_drained().await;
    let got = app
        .topology
        .message_ids(std::time::Duration::from_secs(2))
        .await;
    // Nothing was acknowledged (503), yet the stored event is published.
    report("confirmed, link cut", &[], &got);
    assert_eq!(got, std::slice::from_ref(&id));
    // 0Gate's retry now finds the event published: 200, and no second message.
    let retry = app.post_event(&body).await;
    assert_eq!(retry.status, 200);
    assert_eq!(retry.body["status"], "duplicate");
    assert_eq!(app.topology.queue_len().await, 0);
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn the_relay_starts_and_stores_while_the_broker_is_down() {
    let proxy = BrokerProxy::start().await;
    proxy.cut();
    let options = Options {
        ack: "durable",
        amqp_url: proxy.url(),
        wait_for_broker: false,
        ..Options::default()
    };
    let mut app = TestApp::spawn("outage.start", options).await;
    let id = unique("evt");
    assert_eq!(
        app.post_event(&event_body(&id, "webhook.test"))
            .await
            .status,
        200
    );
    proxy.restore();
    app.outbox_drained().await;
    let got = app
        .topology
        .message_ids(std::time::Duration::from_secs(2))
        .await;
    report(
        "durable, started with the link cut",
        std::slice::from_ref(&id),
        &got,
    );
    assert_eq!(got, [id]);
    app.stop().await;
    app.topology.delete().await;
}
