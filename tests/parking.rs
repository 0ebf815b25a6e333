//! Events the broker refuses for good are parked after a bounded number of attempts, so they
//! stop holding up the others; an operator lists, replays or drops them. Never discarded.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gate_relay::event::EventId;
use gate_relay::store::{EventKey, EventState, NewEvent};
use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use support::{Options, TestApp, event_body, eventually, unique};

/// A queue that nacks everything routed to it: `x-max-length = 0` with `reject-publish`.
async fn bind_rejecting_queue(app: &TestApp, routing_key: &str) -> String {
    let t = &app.topology;
    let queue = unique("parking.reject");
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(0));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    args.insert("x-expires".into(), AMQPValue::LongInt(120_000));
    t.channel
        .queue_declare(queue.as_str().into(), QueueDeclareOptions::default(), args)
        .await
        .expect("declare the rejecting queue");
    t.channel
        .queue_bind(
            queue.as_str().into(),
            t.exchange.as_str().into(),
            routing_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind the rejecting queue");
    queue
}

fn state_of(app: &TestApp, id: &str) -> Option<EventState> {
    let store = &app.running.as_ref().expect("running").store;
    let key = EventKey::new("test", &EventId::parse(id).expect("id"));
    store.record(&key).expect("read").map(|r| r.state)
}

#[tokio::test]
async fn a_nacked_event_is_parked_at_the_bound_while_newer_events_keep_flowing() {
    let options = Options {
        ack: "durable",
        park_after_attempts: 3,
        ..Options::default()
    };
    let app = TestApp::spawn("parking.nack", options).await;
    let t = &app.topology;
    // The test queue takes only "a" events; "b" events reach nothing but the rejecting queue.
    t.route_only(Some("test.a.#")).await;
    bind_rejecting_queue(&app, "test.b.#").await;

    let poison = unique("evt");
    assert_eq!(
        app.post_event(&event_body(&poison, "b.y")).await.status,
        200
    );
    // Sent while the poison event is being refused and backing off: they must not wait for it.
    let fine: Vec<String> = (0..5).map(|_| unique("evt")).collect();
    for id in &fine {
        assert_eq!(app.post_event(&event_body(id, "a.x")).await.status, 200);
    }
    eventually("the refused event is parked", || {
        state_of(&app, &poison) == Some(EventState::Parked)
    })
    .await;
    for id in &fine {
        assert_eq!(state_of(&app, id), Some(EventState::Published), "{id}");
    }
    assert_eq!(app.metric("gate_relay_events_parked_total", &[]), 1.0);
    let store = &app.running.as_ref().expect("running").store;
    assert_eq!(
        store.outbox_depth().events,
        0,
        "a parked event leaves the outbox"
    );

    let (status, listing) = app
        .admin(http::Method::GET, "/events?state=parked", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(listing["events"][0]["event_id"], poison.as_str());
    assert!(
        listing["events"][0]["parked_reason"]
            .as_str()
            .is_some_and(|r| r.contains("nack")),
        "{listing}"
    );
    let (status, outbox) = app.admin(http::Method::GET, "/outbox", None).await;
    assert_eq!((status, &outbox["parked"]), (200, &serde_json::json!(1)));

    // A duplicate delivery of a parked event is "seen": it is kept, not admitted again.
    let reply = app.post_event(&event_body(&poison, "b.y")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(state_of(&app, &poison), Some(EventState::Parked));

    // The operator decides not to deliver it.
    let (status, _) = app
        .admin(http::Method::POST, &format!("/events/{poison}/drop"), None)
        .await;
    assert_eq!(status, 200, "a parked event can be dropped");
    assert_eq!(state_of(&app, &poison), Some(EventState::Dropped));
    let (status, body) = app
        .admin(http::Method::POST, &format!("/events/{poison}/drop"), None)
        .await;
    assert_eq!(
        (status, &body["error"]),
        (409, &serde_json::json!("not_parked"))
    );
    app.topology.delete().await;
}

/// Newer events must not wait for an older one the broker refuses: with a bound high enough that
/// the refused event stays pending for seconds (20 attempts, backoff capped at 500 ms in tests),
/// events sent between its retries are published at once, and each exactly once.
#[tokio::test]
async fn newer_events_are_published_once_each_while_a_refused_one_is_still_retried() {
    let options = Options {
        ack: "durable",
        park_after_attempts: 20,
        ..Options::default()
    };
    let app = TestApp::spawn("parking.flow", options).await;
    let t = &app.topology;
    t.route_only(Some("test.a.#")).await;
    bind_rejecting_queue(&app, "test.b.#").await;
    let nacks = || app.metric("gate_relay_publish_total", &[("result", "nack")]);

    let poison = unique("evt");
    assert_eq!(
        app.post_event(&event_body(&poison, "b.y")).await.status,
        200
    );
    let mut fine = Vec::new();
    // Three rounds, each after one more refusal of the poison event: newer events flow between
    // its retries, not only once it is parked.
    for round in 1..=3 {
        eventually("the refused event is refused once more", || {
            nacks() >= f64::from(round)
        })
        .await;
        let ids: Vec<String> = (0..3).map(|_| unique("evt")).collect();
        for id in &ids {
            assert_eq!(app.post_event(&event_body(id, "a.x")).await.status, 200);
        }
        eventually("the newer events are published", || {
            ids.iter()
                .all(|id| state_of(&app, id) == Some(EventState::Published))
        })
        .await;
        assert_eq!(
            state_of(&app, &poison),
            Some(EventState::Pending),
            "round {round}: the refused event is still being retried, not parked"
        );
        fine.extend(ids);
    }
    assert!(
        nacks() < 20.0,
        "published before the refused event reached its bound"
    );
    let mut arrived = app.topology.message_ids(Duration::from_millis(500)).await;
    arrived.sort();
    fine.sort();
    assert_eq!(arrived, fine, "exactly the newer events, each once");
    app.topology.delete().await;
}

#[tokio::test]
async fn a_parked_event_replayed_after_the_fix_is_delivered() {
    let options = Options {
        ack: "durable",
        park_after_attempts: 2,
        ..Options::default()
    };
    let app = TestApp::spawn("parking.replay", options).await;
    let t = &app.topology;
    t.route_only(None).await;
    // Nothing is bound: every event comes back as a basic.return.
    let id = unique("evt");
    assert_eq!(app.post_event(&event_body(&id, "c.z")).await.status, 200);
    eventually("the returned event is parked", || {
        state_of(&app, &id) == Some(EventState::Parked)
    })
    .await;
    t.bind("#").await;
    let (status, _) = app
        .admin(http::Method::POST, &format!("/events/{id}/replay"), None)
        .await;
    assert_eq!(status, 202);
    app.outbox_drained().await;
    assert_eq!(state_of(&app, &id), Some(EventState::Published));
    assert_eq!(
        app.topology.message_ids(Duration::from_millis(500)).await,
        std::slice::from_ref(&id)
    );
    app.topology.delete().await;
}

/// Many events refused within milliseconds of each other: each backoff may end while the
/// publisher waits on another event's confirm, behind its cursor. Every one must still be sent
/// again and parked at the bound; none may be left pending with nothing to wake it.
#[tokio::test]
async fn events_refused_together_are_all_retried_and_parked() {
    let options = Options {
        ack: "durable",
        park_after_attempts: 3,
        ..Options::default()
    };
    let app = TestApp::spawn("parking.together", options).await;
    app.topology.route_only(None).await;
    let ids: Vec<String> = (0..30).map(|_| unique("evt")).collect();
    let mut posts = tokio::task::JoinSet::new();
    for id in &ids {
        let body = event_body(id, "c.z");
        let (client, url) = (app.client.clone(), app.url(support::PATH));
        posts.spawn(async move {
            let sig = support::sign(support::SECRET, support::now(), body.as_bytes());
            support::post(&client, &url, Bytes::from(body), Some(&sig))
                .await
                .status
        });
    }
    for status in posts.join_all().await {
        assert_eq!(status, 200);
    }
    let store = Arc::clone(&app.running.as_ref().expect("running").store);
    eventually("every refused event is parked", || {
        store.parked_count() == ids.len() as u64
    })
    .await;
    assert_eq!(store.outbox_depth().events, 0);
    app.topology.delete().await;
}

/// An event whose publish makes the broker drop the connection: a header over the broker's
/// frame size. It is written into the store directly, as one that predates the edge's header
/// cap (or any other such event) would be; the relay must park it and deliver the rest.
#[tokio::test]
async fn an_event_that_breaks_the_connection_is_parked_and_stops_nothing_else() {
    let options = Options {
        ack: "durable",
        park_after_attempts: 3,
        ..Options::default()
    };
    let app = TestApp::spawn("parking.connection", options).await;
    let store = Arc::clone(&app.running.as_ref().expect("running").store);
    let poison = unique("evt");
    let key = EventKey::new("test", &EventId::parse(&poison).expect("id"));
    let body = Bytes::from(event_body(&poison, "d.w"));
    let huge_signature = format!("t=1,v1={}", "0".repeat(200 * 1024));
    store
        .admit(NewEvent {
            key: &key,
            environment: "test",
            event_id: &EventId::parse(&poison).expect("id"),
            event_type: "d.w",
            endpoint: "test",
            received_at_ms: 0,
            request_id: "req",
            signature: &huge_signature,
            body: &body,
        })
        .await
        .expect("admit");
    let fine = unique("evt");
    assert_eq!(app.post_event(&event_body(&fine, "a.x")).await.status, 200);
    eventually("the event that breaks the connection is parked", || {
        state_of(&app, &poison) == Some(EventState::Parked)
    })
    .await;
    eventually("the next event is published", || {
        state_of(&app, &fine) == Some(EventState::Published)
    })
    .await;
    assert_eq!(
        app.topology.message_ids(Duration::from_millis(500)).await,
        std::slice::from_ref(&fine)
    );
    app.topology.delete().await;
}
