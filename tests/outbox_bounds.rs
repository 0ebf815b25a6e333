//! The outbox bounds apply to each environment alone: a backlog in `test` never refuses `live`.

mod support;

use bytes::Bytes;
use support::{LIVE_PATH, Options, PATH, SECRET, TestApp, event_body, now, sign, unique};

async fn post_to(app: &TestApp, path: &str) -> u16 {
    let body = Bytes::from(event_body(&unique("evt"), "gate_session.completed"));
    let sig = sign(SECRET, now(), &body);
    app.post_raw(path, body, Some(&sig)).await.status
}

#[tokio::test]
async fn a_full_outbox_in_one_environment_does_not_refuse_another() {
    // Durable mode with no broker: nothing drains, so the outbox only grows.
    let options = Options {
        ack: "durable",
        amqp_url: "amqp://guest:guest@127.0.0.1:1/%2f".to_owned(),
        wait_for_broker: false,
        max_outbox_events: 3,
        live_endpoint: true,
        ..Options::default()
    };
    let mut app = TestApp::spawn("bounds.env", options).await;
    for _ in 0..3 {
        assert_eq!(post_to(&app, PATH).await, 200);
    }
    assert_eq!(post_to(&app, PATH).await, 503, "test is at its bound");
    assert_eq!(post_to(&app, LIVE_PATH).await, 200, "live is not");
    let (status, outbox) = app.admin(http::Method::GET, "/outbox", None).await;
    assert_eq!(status, 200);
    assert_eq!(outbox["by_environment"]["test"]["events"], 3);
    assert_eq!(outbox["by_environment"]["live"]["events"], 1);
    assert_eq!(outbox["events"], 4);
    app.stop().await;
}
