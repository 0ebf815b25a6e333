//! `X-0bit-Event-Id` against the signed envelope: balancers hash on the header (deploy/nginx),
//! so a header that names another id sends deliveries of one event to different replicas. The
//! signed id always wins; a mismatch is counted and logged, a missing header is not a mismatch,
//! and an unverified delivery is never compared.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use support::{Options, PATH, SECRET, TestApp, event_body, now, sign, unique};

async fn post_with_header(app: &TestApp, body: &str, signature: &str, header: Option<&str>) -> u16 {
    let mut request = http::Request::post(app.url(PATH)).header("Gate-Signature", signature);
    if let Some(id) = header {
        request = request.header("X-0bit-Event-Id", id);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let response = tokio::time::timeout(support::WAIT, app.client.request(request))
        .await
        .expect("answered in time")
        .expect("answered");
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    status
}

fn mismatches(app: &TestApp) -> f64 {
    app.metric(
        "gate_relay_event_id_header_mismatch_total",
        &[("endpoint", "test")],
    )
}

#[tokio::test]
async fn a_header_naming_another_id_is_counted_and_the_signed_id_is_published() {
    let mut app = TestApp::spawn("evtid.header", Options::default()).await;
    let (matching, other, missing) = (unique("evt"), unique("evt"), unique("evt"));
    let mut sent = Vec::new();
    for (id, header) in [
        (&matching, Some(matching.as_str())),
        (&other, Some("evt_not_the_signed_one")),
        (&missing, None),
    ] {
        let body = event_body(id, "gate_session.completed");
        let signature = sign(SECRET, now(), body.as_bytes());
        assert_eq!(post_with_header(&app, &body, &signature, header).await, 200);
        sent.push(id.clone());
    }
    assert_eq!(mismatches(&app), 1.0, "only the differing header counts");

    // A delivery that fails verification is not compared: its id is not known to be 0Gate's.
    let body = event_body(&unique("evt"), "gate_session.completed");
    let forged = sign("whsec_someone_else_0123456789abcd", now(), body.as_bytes());
    assert_eq!(
        post_with_header(&app, &body, &forged, Some("evt_x")).await,
        401
    );
    assert_eq!(mismatches(&app), 1.0);

    let mut published = app.topology.message_ids(Duration::from_millis(300)).await;
    published.sort();
    sent.sort();
    assert_eq!(
        published, sent,
        "each event published once, under its signed id"
    );
    app.stop().await;
    app.topology.delete().await;
}
