//! Confirmed mode right after start and across a short broker blip: "not connected yet" is not
//! "known to be down", so these deliveries wait (within `confirm_timeout`) and get a 200.

mod support;

use std::sync::Arc;

use support::{BrokerProxy, Options, TestApp, event_body, eventually, unique};

#[tokio::test]
async fn first_delivery_right_after_start_is_confirmed_not_refused() {
    // The link passes no bytes at first: the publisher's first connect is certainly still in
    // its handshake when the delivery arrives (with a direct link it could win the race).
    let proxy = BrokerProxy::start().await;
    proxy.blackhole();
    let options = Options {
        ack: "confirmed",
        amqp_url: proxy.url(),
        wait_for_broker: false,
        ..Options::default()
    };
    let mut app = TestApp::spawn("start.first", options).await;
    let broker = Arc::clone(&app.running.as_ref().expect("running").broker);
    let id = unique("evt");
    let body = event_body(&id, "gate_session.completed");
    let (url, client) = (app.url(support::PATH), app.client.clone());
    let sent = tokio::spawn(async move {
        let sig = support::sign(support::SECRET, support::now(), body.as_bytes());
        support::post(&client, &url, body.into(), Some(&sig)).await
    });
    // Answered at once (a 503) when "not connected yet" counts as "down".
    eventually("the delivery is waiting or answered", || {
        sent.is_finished() || app.metric("gate_relay_requests_in_flight", &[]) >= 1.0
    })
    .await;
    assert!(
        !broker.is_connected(),
        "the publisher must not be connected yet when the first delivery arrives"
    );
    // The handshake goes through: the delivery, still within the start's grace, is confirmed.
    proxy.restore();
    let reply = sent.await.expect("the request task");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        app.topology
            .message_ids(std::time::Duration::from_millis(500))
            .await,
        std::slice::from_ref(&id)
    );
    app.stop().await;
}

#[tokio::test]
async fn delivery_during_a_short_broker_blip_waits_for_the_reconnect() {
    let proxy = BrokerProxy::start().await;
    let options = Options {
        ack: "confirmed",
        amqp_url: proxy.url(),
        ..Options::default()
    };
    let mut app = TestApp::spawn("start.blip", options).await;
    let broker = Arc::clone(&app.running.as_ref().expect("running").broker);
    proxy.cut();
    eventually("the relay notices the broker is gone", || {
        !broker.is_connected()
    })
    .await;

    let id = unique("evt");
    let body = event_body(&id, "gate_session.completed");
    let (url, client) = (app.url(support::PATH), app.client.clone());
    let sent = tokio::spawn(async move {
        let sig = support::sign(support::SECRET, support::now(), body.as_bytes());
        support::post(&client, &url, body.into(), Some(&sig)).await
    });
    // The blip ends while the delivery waits for its confirm.
    eventually("the delivery is waiting", || {
        app.metric("gate_relay_requests_in_flight", &[]) >= 1.0
    })
    .await;
    proxy.restore();
    let reply = sent.await.expect("the request task");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        app.topology
            .message_ids(std::time::Duration::from_millis(500))
            .await,
        std::slice::from_ref(&id)
    );
    app.stop().await;
}
