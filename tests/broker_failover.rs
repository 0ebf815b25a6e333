//! Several broker nodes (`[amqp] urls`): the relay connects to a reachable node, moves to the
//! next when its node goes away, shows which node it is on (`/outbox`, `/readyz`, the
//! `gate_relay_amqp_node_connected` gauge), and every delivery acknowledged on either node is
//! published. Two TCP proxies in front of the one real broker stand in for two nodes.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::{BrokerProxy, Options, TestApp, event_body, eventually, unique};

fn node_gauge(app: &TestApp, node: &str) -> f64 {
    app.metric("gate_relay_amqp_node_connected", &[("node", node)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_fails_over_to_the_next_broker_node_and_loses_nothing() {
    let (first, second) = (BrokerProxy::start().await, BrokerProxy::start().await);
    first.cut();
    let options = Options {
        ack: "confirmed",
        amqp_urls: vec![first.url(), second.url()],
        ..Options::default()
    };
    // Waits until connected: to node 1, whichever node it tried first.
    let mut app = TestApp::spawn("failover", options).await;
    let broker = Arc::clone(&app.running.as_ref().expect("running").broker);
    assert_eq!(broker.node(), Some(1), "node 0 refuses connections");
    assert_eq!(node_gauge(&app, "1"), 1.0);
    let mut acked = Vec::new();
    for _ in 0..5 {
        let id = unique("evt");
        assert_eq!(app.post_event(&event_body(&id, "t")).await.status, 200);
        acked.push(id);
    }

    // Node 1 goes away, node 0 comes back: the relay moves over and confirms there.
    first.restore();
    second.cut();
    let on_first = Arc::clone(&broker);
    eventually("the relay connects to node 0", || {
        on_first.node() == Some(0)
    })
    .await;
    assert_eq!((node_gauge(&app, "0"), node_gauge(&app, "1")), (1.0, 0.0));
    let (status, outbox) = app.admin(http::Method::GET, "/outbox", None).await;
    assert_eq!(
        (status, &outbox["broker_node"]),
        (200, &serde_json::json!(0)),
        "{outbox}"
    );
    for _ in 0..5 {
        let id = unique("evt");
        assert_eq!(app.post_event(&event_body(&id, "t")).await.status, 200);
        acked.push(id);
    }

    let mut published = app.topology.message_ids(Duration::from_millis(300)).await;
    published.sort();
    published.dedup();
    acked.sort();
    assert_eq!(published, acked, "every acknowledged event published");
    app.stop().await;
    app.topology.delete().await;
}
