//! Unroutable and routable events in one window: lapin attaches a returned message to whichever
//! confirm it resolves next, so the relay must match returns by message_id.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use gate_relay::store::{EventState, ListFilter};
use support::{Options, TestApp, event_body, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_events_are_never_marked_published_among_routable_ones() {
    let app = TestApp::spawn(
        "returns",
        Options {
            ack: "durable",
            ..Options::default()
        },
    )
    .await;
    let t = &app.topology;
    t.route_only(Some("test.a.#")).await;
    let app = Arc::new(app);
    let mut tasks = Vec::new();
    for i in 0..600 {
        let app = Arc::clone(&app);
        tasks.push(tokio::spawn(async move {
            let (id, event_type) = (unique("evt"), if i % 3 == 0 { "b.y" } else { "a.x" });
            let status = app.post_event(&event_body(&id, event_type)).await.status;
            assert_eq!(status, 200);
            (id, event_type)
        }));
    }
    let (mut routable, mut unroutable) = (HashSet::new(), HashSet::new());
    for task in tasks {
        let (id, event_type) = task.await.expect("join");
        if event_type == "a.x" {
            routable.insert(id)
        } else {
            unroutable.insert(id)
        };
    }
    let store = Arc::clone(&app.running.as_ref().expect("running").store);
    let published = |event_type: &str| {
        let filter = ListFilter {
            event_type: Some(event_type.to_owned()),
            state: Some(EventState::Published),
            ..ListFilter::default()
        };
        store
            .list(&filter, None, 10_000)
            .expect("list")
            .events
            .len()
    };
    support::eventually("every routable event is published", || {
        published("a.x") == routable.len()
    })
    .await;
    assert_eq!(
        published("b.y"),
        0,
        "an unroutable event was marked published"
    );
    let in_queue: HashSet<String> = app
        .topology
        .message_ids(Duration::from_millis(500))
        .await
        .into_iter()
        .collect();
    assert_eq!(in_queue, routable);
    assert!(in_queue.is_disjoint(&unroutable));
    assert!(store.outbox_depth().events >= unroutable.len() as u64);
    app.topology.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_return_in_one_environment_does_not_settle_the_same_id_in_another() {
    let app = TestApp::spawn(
        "returns.envs",
        Options {
            ack: "durable",
            live_endpoint: true,
            ..Options::default()
        },
    )
    .await;
    let t = &app.topology;
    t.route_only(Some("live.#")).await;
    let app = Arc::new(app);
    let ids: Vec<String> = (0..300).map(|_| unique("evt")).collect();
    let mut tasks = Vec::new();
    for id in &ids {
        for path in [support::PATH, support::LIVE_PATH] {
            let (app, id) = (Arc::clone(&app), id.clone());
            tasks.push(tokio::spawn(async move {
                let body = bytes::Bytes::from(event_body(&id, "a.x"));
                let sig = support::sign(support::SECRET, support::now(), &body);
                app.post_raw(path, body, Some(&sig)).await.status
            }));
        }
    }
    for task in tasks {
        assert_eq!(task.await.expect("join"), 200);
    }
    let store = Arc::clone(&app.running.as_ref().expect("running").store);
    let published = |environment: &str| {
        let filter = ListFilter {
            state: Some(EventState::Published),
            ..ListFilter::default()
        };
        let listing = store.list(&filter, None, 10_000).expect("list");
        listing
            .events
            .iter()
            .filter(|r| r.environment == environment)
            .count()
    };
    support::eventually("every live event is published", || {
        published("live") == ids.len()
    })
    .await;
    assert_eq!(
        published("test"),
        0,
        "a test event was marked published though it was returned every time"
    );
    let in_queue = app.topology.message_ids(Duration::from_millis(500)).await;
    let unique_in_queue: HashSet<&String> = in_queue.iter().collect();
    assert_eq!(unique_in_queue.len(), ids.len());
    app.topology.delete().await;
}
