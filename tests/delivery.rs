//! The data path against the real RabbitMQ: acceptance, dedupe, rejections, limits.

mod support;

use std::time::Duration;

use bytes::Bytes;
use lapin::types::AMQPValue;
use support::{OLD_SECRET, Options, PATH, SECRET, TestApp, event_body, now, sign, unique};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn header_str(delivery: &lapin::message::Delivery, name: &str) -> String {
    let headers = delivery.properties.headers().as_ref().expect("headers set");
    match headers
        .inner()
        .get(name)
        .unwrap_or_else(|| panic!("header {name} missing"))
    {
        AMQPValue::LongString(s) => s.to_string(),
        other => panic!("header {name} is {other:?}"),
    }
}

#[tokio::test]
async fn accepted_event_arrives_once_byte_identical_with_its_properties() {
    let mut app = TestApp::spawn("accepted", Options::default()).await;
    let id = unique("evt");
    // Odd spacing and key order: the relay must forward the bytes, not a re-serialisation.
    let body = format!(
        "{{ \"type\":\"gate_session.completed\",  \"id\":\"{id}\", \"data\":{{\"amount\":\"1.00\"}} }}\n"
    );
    let sig = sign(SECRET, now(), body.as_bytes());

    let reply = app
        .post_raw(PATH, Bytes::from(body.clone()), Some(&sig))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["status"], "accepted");
    assert_eq!(reply.body["event_id"], id.as_str());
    assert!(reply.headers.contains_key("x-request-id"));

    app.outbox_drained().await;
    assert_eq!(app.topology.queue_len().await, 1);
    let messages = app.topology.collect(1, support::WAIT).await;
    let m = &messages[0];
    assert_eq!(m.data, body.as_bytes(), "body must be byte-identical");
    assert_eq!(m.routing_key.as_str(), "test.gate_session.completed");
    let p = &m.properties;
    assert_eq!(
        p.message_id().as_ref().map(|s| s.as_str()),
        Some(id.as_str())
    );
    assert_eq!(
        p.kind().as_ref().map(|s| s.as_str()),
        Some("gate_session.completed")
    );
    assert_eq!(p.delivery_mode(), &Some(2));
    assert_eq!(
        p.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    assert_eq!(p.app_id().as_ref().map(|s| s.as_str()), Some("gate-relay"));
    assert!(p.timestamp().is_some());
    assert_eq!(header_str(m, "gate-environment"), "test");
    assert_eq!(header_str(m, "gate-endpoint"), "test");
    assert_eq!(header_str(m, "Gate-Signature"), sig);
    assert_eq!(
        header_str(m, "gate-request-id"),
        reply.headers["x-request-id"].to_str().expect("ascii")
    );
    assert_eq!(
        app.metric("gate_relay_requests_total", &[("outcome", "accepted")]),
        1.0
    );
    assert_eq!(
        app.metric("gate_relay_publish_total", &[("result", "ack")]),
        1.0
    );
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn redelivery_is_acknowledged_as_duplicate_and_published_once() {
    let mut app = TestApp::spawn("redelivery", Options::default()).await;
    let id = unique("evt");
    let body = event_body(&id, "rail.pay_in.settled");
    let first = app.post_event(&body).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body["status"], "accepted");
    // A retry days later is signed anew; a replay carries the same id.
    for _ in 0..3 {
        let again = app.post_event(&body).await;
        assert_eq!(again.status, 200, "{again:?}");
        assert_eq!(again.body["status"], "duplicate");
    }
    app.outbox_drained().await;
    assert_eq!(app.topology.queue_len().await, 1);
    assert_eq!(
        app.metric("gate_relay_requests_total", &[("outcome", "duplicate")]),
        3.0
    );
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn twenty_concurrent_deliveries_of_one_id_publish_once() {
    for ack in ["confirmed", "durable"] {
        let mut app = TestApp::spawn(
            "concurrent",
            Options {
                ack,
                ..Options::default()
            },
        )
        .await;
        let id = unique("evt");
        let body = event_body(&id, "gate_session.completed");
        let sig = sign(SECRET, now(), body.as_bytes());
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (client, url, body, sig) =
                (app.client.clone(), app.url(PATH), body.clone(), sig.clone());
            tasks.push(tokio::spawn(async move {
                support::post(&client, &url, Bytes::from(body), Some(&sig)).await
            }));
        }
        let mut statuses = Vec::new();
        for task in tasks {
            let reply = task.await.expect("join");
            assert_eq!(reply.status, 200, "{ack}: {reply:?}");
            statuses.push(reply.body["status"].as_str().expect("status").to_owned());
        }
        assert_eq!(
            statuses.iter().filter(|s| *s == "accepted").count(),
            1,
            "{ack}: {statuses:?}"
        );
        app.outbox_drained().await;
        assert_eq!(app.topology.queue_len().await, 1, "{ack}");
        app.stop().await;
        app.topology.delete().await;
    }
}

#[tokio::test]
async fn every_rejection_class_gets_its_status_and_publishes_nothing() {
    let mut app = TestApp::spawn(
        "rejections",
        Options {
            max_body_bytes: 4096,
            ..Options::default()
        },
    )
    .await;
    let id = unique("evt");
    let body = event_body(&id, "gate_session.completed");
    let t = now();
    let good = sign(SECRET, t, body.as_bytes());
    let mut tampered = body.clone().into_bytes();
    tampered[2] ^= 1;
    let no_id = r#"{"type":"a.b","data":{}}"#;
    let not_json = "this is not json";
    let big = format!(r#"{{"id":"{id}","type":"a","pad":"{}"}}"#, "x".repeat(5000));
    let unsigned = sign(SECRET, t, b"");

    type Case<'a> = (&'a str, &'a str, Bytes, Option<String>, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "tampered",
            PATH,
            Bytes::from(tampered),
            Some(good.clone()),
            401,
            "invalid_signature",
        ),
        (
            "wrong secret",
            PATH,
            Bytes::from(body.clone()),
            Some(sign("whsec_someone_else_123456", t, body.as_bytes())),
            401,
            "invalid_signature",
        ),
        (
            "stale",
            PATH,
            Bytes::from(body.clone()),
            Some(sign(SECRET, t - 301, body.as_bytes())),
            401,
            "stale_timestamp",
        ),
        (
            "future",
            PATH,
            Bytes::from(body.clone()),
            Some(sign(SECRET, t + 301, body.as_bytes())),
            401,
            "stale_timestamp",
        ),
        (
            "malformed header",
            PATH,
            Bytes::from(body.clone()),
            Some("v1=abc".to_owned()),
            400,
            "malformed_header",
        ),
        (
            "missing header",
            PATH,
            Bytes::from(body.clone()),
            None,
            400,
            "missing_header",
        ),
        (
            "invalid json",
            PATH,
            Bytes::from(not_json),
            Some(sign(SECRET, t, not_json.as_bytes())),
            400,
            "invalid_body",
        ),
        (
            "missing id",
            PATH,
            Bytes::from(no_id),
            Some(sign(SECRET, t, no_id.as_bytes())),
            400,
            "invalid_body",
        ),
        (
            "oversized",
            PATH,
            Bytes::from(big.clone()),
            Some(sign(SECRET, t, big.as_bytes())),
            413,
            "too_large",
        ),
        (
            "unknown path",
            "/webhooks/elsewhere",
            Bytes::from(body.clone()),
            Some(good.clone()),
            404,
            "not_found",
        ),
        (
            "empty body",
            PATH,
            Bytes::new(),
            Some(unsigned),
            400,
            "invalid_body",
        ),
    ];
    for (name, path, body, sig, status, code) in cases {
        let reply = app.post_raw(path, body, sig.as_deref()).await;
        assert_eq!(reply.status, status, "{name}: {reply:?}");
        assert_eq!(reply.body["error"], code, "{name}");
        assert!(
            app.metric("gate_relay_requests_total", &[("outcome", code)]) >= 1.0,
            "{name} counted"
        );
    }
    // The relay kept serving, and a valid delivery after all that is the only message.
    assert_eq!(app.post_event(&body).await.status, 200);
    app.outbox_drained().await;
    assert_eq!(app.topology.queue_len().await, 1);
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn oversized_body_without_content_length_is_refused_while_streaming() {
    let mut app = TestApp::spawn(
        "chunked",
        Options {
            max_body_bytes: 1024,
            ..Options::default()
        },
    )
    .await;
    let mut stream = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ngate-signature: t={},v1={}\r\n\r\n",
        now(),
        "0".repeat(64)
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let chunk = "y".repeat(800);
    for _ in 0..3 {
        let _ = stream
            .write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
            .await;
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = vec![0u8; 1024];
    let n = tokio::time::timeout(support::WAIT, stream.read(&mut response))
        .await
        .expect("answered")
        .expect("read");
    let text = String::from_utf8_lossy(&response[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn rotation_and_several_v1_values_are_accepted() {
    let mut app = TestApp::spawn("rotation", Options::default()).await;
    let t = now();
    // Signed with the old secret only: still configured during the overlap.
    let body = event_body(&unique("evt"), "kyc.required");
    assert_eq!(
        app.post_raw(
            PATH,
            Bytes::from(body.clone()),
            Some(&sign(OLD_SECRET, t, body.as_bytes()))
        )
        .await
        .status,
        200
    );
    // Several v1 values, the valid one first (the official SDK would check only the last).
    let body = event_body(&unique("evt"), "kyc.required");
    let good = sign(SECRET, t, body.as_bytes());
    let v1 = good.split_once("v1=").expect("v1").1;
    let header = format!("t={t},v1={v1},v1={}", "ab".repeat(32));
    assert_eq!(
        app.post_raw(PATH, Bytes::from(body), Some(&header))
            .await
            .status,
        200
    );
    assert_eq!(
        app.metric("gate_relay_secret_matches_total", &[("secret", "1")]),
        1.0
    );
    assert_eq!(
        app.metric("gate_relay_secret_matches_total", &[("secret", "0")]),
        1.0
    );
    app.outbox_drained().await;
    assert_eq!(app.topology.queue_len().await, 2);
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn durable_mode_answers_once_flushed() {
    let mut app = TestApp::spawn(
        "durable",
        Options {
            ack: "durable",
            ..Options::default()
        },
    )
    .await;
    let id = unique("evt");
    let reply = app.post_event(&event_body(&id, "quote.consumed")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["status"], "accepted");
    app.outbox_drained().await;
    let ids = app.topology.message_ids(Duration::from_secs(2)).await;
    assert_eq!(ids, [id]);
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn wrong_method_is_405_and_unknown_path_404() {
    let mut app = TestApp::spawn("methods", Options::default()).await;
    let request = http::Request::get(app.url(PATH))
        .body(http_body_util::Full::new(Bytes::new()))
        .expect("req");
    let response = app.client.request(request).await.expect("sent");
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    assert_eq!(app.post_raw("/", Bytes::new(), None).await.status, 404);
    app.stop().await;
    app.topology.delete().await;
}

/// A relay whose header-read timeout (300 ms) is far below the tests' own bound.
async fn spawn_with_short_header_timeout(name: &str) -> TestApp {
    TestApp::spawn(
        name,
        Options {
            header_read_timeout_ms: 300,
            ..Options::default()
        },
    )
    .await
}

/// Connects, sends `bytes` and reads until the server closes the connection: what it sent, or
/// `None` when the connection was still open at the tests' bound.
async fn sent_then_closed(addr: std::net::SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(support::WAIT, stream.read_to_end(&mut buf))
        .await
        .ok()
        .map(|_| buf)
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let mut app = spawn_with_short_header_timeout("slowloris").await;
    let closed = sent_then_closed(
        app.addr,
        format!("POST {PATH} HTTP/1.1\r\nhost: x\r\n").as_bytes(),
    )
    .await;
    assert!(
        closed.is_some(),
        "connection still open after the header-read timeout"
    );
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn a_keep_alive_connection_idle_after_a_request_is_cut_off() {
    // hyper's header-read timeout also runs while a kept-alive connection waits for its next
    // request; our own first-request deadline does not cover this case.
    let mut app = spawn_with_short_header_timeout("keepalive").await;
    let closed = sent_then_closed(
        app.addr,
        b"POST /unknown HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n",
    )
    .await;
    assert!(
        closed.is_some(),
        "idle keep-alive connection still open after the header-read timeout"
    );
    let buf = closed.unwrap_or_default();
    assert!(
        buf.starts_with(b"HTTP/1.1 404"),
        "the request itself was answered first: {:?}",
        String::from_utf8_lossy(&buf)
    );
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn unroutable_events_stay_pending_until_a_queue_is_bound() {
    let mut app = TestApp::spawn(
        "unroutable",
        Options {
            ack: "durable",
            ..Options::default()
        },
    )
    .await;
    let (queue, exchange) = (app.topology.queue.clone(), app.topology.exchange.clone());
    app.topology
        .channel
        .queue_unbind(
            queue.as_str().into(),
            exchange.as_str().into(),
            "#".into(),
            Default::default(),
        )
        .await
        .expect("unbind");
    // Nothing routes now: the broker returns the mandatory message, which must not count as sent.
    let id = unique("evt");
    assert_eq!(app.post_event(&event_body(&id, "a.b")).await.status, 200);
    support::eventually("a returned publish is counted", || {
        app.metric("gate_relay_publish_total", &[("result", "returned")]) >= 1.0
    })
    .await;
    let store = std::sync::Arc::clone(&app.running.as_ref().expect("running").store);
    assert_eq!(
        store.outbox_depth().events,
        1,
        "a returned message stays in the outbox"
    );
    // Bind the queue again: a retry routes and the event is published.
    app.topology
        .channel
        .queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            "#".into(),
            Default::default(),
            Default::default(),
        )
        .await
        .expect("bind");
    app.outbox_drained().await;
    assert_eq!(app.topology.message_ids(Duration::from_secs(2)).await, [id]);
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn nacked_events_stay_pending_and_are_retried() {
    // A queue that holds one message and rejects the rest: the broker nacks.
    let args = vec![
        ("x-max-length", AMQPValue::LongInt(1)),
        ("x-overflow", AMQPValue::LongString("reject-publish".into())),
    ];
    let mut app = TestApp::spawn(
        "nack",
        Options {
            ack: "durable",
            extra_queue_args: args,
            ..Options::default()
        },
    )
    .await;
    let (a, b) = (unique("evt"), unique("evt"));
    assert_eq!(app.post_event(&event_body(&a, "a.b")).await.status, 200);
    assert_eq!(app.post_event(&event_body(&b, "a.b")).await.status, 200);
    support::eventually("a nack is counted", || {
        app.metric("gate_relay_publish_total", &[("result", "nack")]) >= 1.0
    })
    .await;
    // The broker nacks at once but acks only after writing to disk, so the nack may be counted
    // before the other event's ack arrives; then only the nacked event stays (every retry is
    // nacked again while the queue is full).
    let store = std::sync::Arc::clone(&app.running.as_ref().expect("running").store);
    support::eventually("only the nacked event stays in the outbox", || {
        store.outbox_depth().events == 1
    })
    .await;
    // Make room: the retry goes through.
    let first = app.topology.collect(1, support::WAIT).await;
    assert_eq!(first.len(), 1);
    app.outbox_drained().await;
    let second = app.topology.collect(1, support::WAIT).await;
    let mut ids: Vec<String> = first
        .iter()
        .chain(second.iter())
        .map(|d| d.properties.message_id().as_ref().expect("id").to_string())
        .collect();
    ids.sort();
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(ids, want);
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn many_concurrent_distinct_events_are_all_published() {
    // Sequences are drawn before commit, so commits land out of order under concurrency; the
    // publisher must still find every one (it once left some behind its cursor).
    let mut app = TestApp::spawn(
        "many",
        Options {
            ack: "durable",
            ..Options::default()
        },
    )
    .await;
    let ids: Vec<String> = (0..200).map(|_| unique("evt")).collect();
    let mut tasks = Vec::new();
    for chunk in ids.chunks(25) {
        let (client, url, chunk) = (app.client.clone(), app.url(PATH), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            for id in chunk {
                let body = event_body(&id, "gate_session.completed");
                let sig = sign(SECRET, now(), body.as_bytes());
                let reply = support::post(&client, &url, Bytes::from(body), Some(&sig)).await;
                assert_eq!(reply.status, 200, "{reply:?}");
            }
        }));
    }
    for task in tasks {
        task.await.expect("join");
    }
    app.outbox_drained().await;
    assert_eq!(app.topology.queue_len().await, 200);
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn a_client_that_sends_nothing_or_a_few_bytes_is_cut_off() {
    // hyper-util's protocol detection waits for 24 bytes with no timeout of its own.
    let mut app = spawn_with_short_header_timeout("idle").await;
    for first_bytes in [&b""[..], b"P", b"PRI * HTTP/2.0\r\n"] {
        let closed = sent_then_closed(app.addr, first_bytes).await;
        assert!(
            closed.is_some(),
            "connection that sent {first_bytes:?} still open"
        );
    }
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn http2_streams_cannot_exceed_the_delivery_bound() {
    // One allowed connection means one delivery in flight, however many HTTP/2 streams it opens.
    let mut app = TestApp::spawn(
        "h2bound",
        Options {
            max_connections: 1,
            ..Options::default()
        },
    )
    .await;
    let tcp = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2 prior knowledge");
    let driver = tokio::spawn(connection);
    // The first stream sends half a body and stalls, holding the only delivery slot.
    let (mut body_tx, body) =
        http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(1);
    // A plausible signature: a request without one is now refused before its body is read.
    let stalled = http::Request::post(PATH)
        .header("content-length", "100")
        .header(
            "gate-signature",
            support::sign(support::SECRET, support::now(), b"{}"),
        )
        .body(body)
        .expect("request");
    let mut first_sender = sender.clone();
    let first =
        tokio::spawn(async move { first_sender.send_request(stalled).await.map(|r| r.status()) });
    body_tx
        .send_data(Bytes::from_static(b"{\"id\":"))
        .await
        .expect("first bytes");
    support::eventually("the stalled delivery holds the slot", || {
        app.metric("gate_relay_requests_in_flight", &[]) == 1.0
    })
    .await;
    // The second stream is refused at once with 503, before its body is read.
    let (second_tx, second_body) =
        http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(1);
    drop(second_tx);
    let second = http::Request::post(PATH)
        .body(second_body)
        .expect("request");
    let response = tokio::time::timeout(support::WAIT, sender.send_request(second))
        .await
        .expect("answered in time")
        .expect("sent");
    assert_eq!(response.status(), 503);
    drop(body_tx);
    let _ = tokio::time::timeout(support::WAIT, first).await;
    driver.abort();
    app.stop().await;
    app.topology.delete().await;
}
