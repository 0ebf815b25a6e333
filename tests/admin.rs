//! The admin listener: health, readiness, metrics, inspection, replay and its token.

mod support;

use std::time::Duration;

use http::Method;
use support::{Options, TestApp, event_body, unique};

#[tokio::test]
async fn health_readiness_and_metrics_are_served() {
    let mut app = TestApp::spawn("admin.health", Options::default()).await;
    assert_eq!(app.admin(Method::GET, "/healthz", None).await.0, 200);
    let (status, ready) = app.admin(Method::GET, "/readyz", None).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["checks"]["broker_connected"], true);
    assert_eq!(
        app.post_event(&event_body(&unique("evt"), "a.b"))
            .await
            .status,
        200
    );
    let (status, text) = app.admin(Method::GET, "/metrics", None).await;
    assert_eq!(status, 200);
    let text = text.as_str().expect("text format").to_owned();
    for name in [
        "gate_relay_requests_total{endpoint=\"test\",outcome=\"accepted\"} 1",
        "gate_relay_request_duration_seconds_bucket",
        "gate_relay_signature_skew_seconds_bucket",
        "gate_relay_secret_matches_total{endpoint=\"test\",secret=\"0\"} 1",
        "gate_relay_outbox_events",
        "gate_relay_outbox_oldest_age_seconds",
        "gate_relay_publish_total{result=\"ack\"}",
        "gate_relay_publish_confirm_seconds_bucket",
        "gate_relay_amqp_connected 1",
        "gate_relay_events_stored 1",
        "gate_relay_store_size_bytes",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn an_event_can_be_inspected_listed_and_replayed() {
    let mut app = TestApp::spawn("admin.inspect", Options::default()).await;
    let id = unique("evt");
    let body = event_body(&id, "rail.pay_in.settled");
    assert_eq!(app.post_event(&body).await.status, 200);
    assert_eq!(app.post_event(&body).await.body["status"], "duplicate");
    let other = unique("evt");
    assert_eq!(
        app.post_event(&event_body(&other, "kyc.required"))
            .await
            .status,
        200
    );
    app.outbox_drained().await;

    let (status, record) = app.admin(Method::GET, &format!("/events/{id}"), None).await;
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["state"], "published");
    assert_eq!(record["event_type"], "rail.pay_in.settled");
    assert_eq!(record["deliveries"], 2);
    assert_eq!(record["request_ids"].as_array().expect("ids").len(), 2);
    assert!(
        record.get("body").is_none(),
        "the body only with ?body=true"
    );
    let (_, with_body) = app
        .admin(Method::GET, &format!("/events/{id}?body=true"), None)
        .await;
    assert_eq!(with_body["body"], body.as_str());
    assert_eq!(app.admin(Method::GET, "/events/nope", None).await.0, 404);

    let (_, listing) = app.admin(Method::GET, "/events?limit=10", None).await;
    let ids: Vec<&str> = listing["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["event_id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, [other.as_str(), id.as_str()], "newest first");
    let (_, filtered) = app
        .admin(
            Method::GET,
            "/events?type=kyc.required&state=published",
            None,
        )
        .await;
    assert_eq!(filtered["events"].as_array().expect("events").len(), 1);
    assert_eq!(
        app.admin(Method::GET, "/events?state=bogus", None).await.0,
        400
    );

    // Drain what was published, then replay: the same message arrives again.
    assert_eq!(app.topology.collect(2, support::WAIT).await.len(), 2);
    let (status, replay) = app
        .admin(Method::POST, &format!("/events/{id}/replay"), None)
        .await;
    assert_eq!(status, 202, "{replay}");
    app.outbox_drained().await;
    let again = app.topology.collect(1, support::WAIT).await;
    assert_eq!(again.len(), 1);
    assert_eq!(
        again[0]
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str()),
        Some(id.as_str())
    );
    assert_eq!(again[0].data, body.as_bytes());

    // Only the one path replays: a doubled suffix or a nested id is no replay at all.
    for path in [
        format!("/events/{id}/replay/replay"),
        format!("/events/x/{id}/replay"),
    ] {
        let (status, _) = app.admin(Method::POST, &path, None).await;
        assert_eq!(status, 404, "{path}");
    }
    assert!(
        app.topology
            .collect(1, Duration::from_millis(300))
            .await
            .is_empty()
    );

    let (status, outbox) = app.admin(Method::GET, "/outbox", None).await;
    assert_eq!(status, 200);
    assert_eq!(outbox["events"], 0);
    assert_eq!(outbox["broker_connected"], true);
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn the_inspection_api_requires_the_token_when_one_is_set() {
    let token = "an-admin-token-long-enough";
    let options = Options {
        admin_token: Some(token.to_owned()),
        ..Options::default()
    };
    let mut app = TestApp::spawn("admin.token", options).await;
    assert_eq!(app.admin(Method::GET, "/outbox", None).await.0, 401);
    assert_eq!(
        app.admin(Method::GET, "/outbox", Some("wrong-token-of-some-length"))
            .await
            .0,
        401
    );
    assert_eq!(app.admin(Method::GET, "/outbox", Some(token)).await.0, 200);
    // Probes and scrapers need no token.
    assert_eq!(app.admin(Method::GET, "/healthz", None).await.0, 200);
    assert_eq!(app.admin(Method::GET, "/metrics", None).await.0, 200);
    app.stop().await;
    app.topology.delete().await;
}
