//! What the real binary writes to its log: one line per request with the trace fields, and
//! never a secret, the broker password or a body.

mod support;

use bytes::Bytes;
use support::{OLD_SECRET, Options, PATH, RelayProcess, SECRET, Topology, now, sign, unique};

#[tokio::test]
async fn a_run_with_failures_logs_one_line_per_request_and_no_secret() {
    let topology = Topology::declare("logs", &[]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        ack: "durable",
        ..Options::default()
    };
    let config = support::write_config(&options, &topology.exchange, dir.path());
    let mut relay = RelayProcess::start(&config);
    let addr = relay.addr;
    let url = format!("http://{addr}{PATH}");
    let client = support::http_client();
    let marker = "PII_MARKER_never_in_logs";
    let body = format!(
        r#"{{"id":"{}","type":"a.b","data":{{"user_reference":"{marker}"}}}}"#,
        unique("evt")
    );
    let t = now();
    let cases: Vec<(Option<String>, u16)> = vec![
        (Some(sign(SECRET, t, body.as_bytes())), 200),
        (
            Some(sign("whsec_wrong_0123456789abcdef", t, body.as_bytes())),
            401,
        ),
        (Some(sign(OLD_SECRET, t - 1000, body.as_bytes())), 401),
        (Some("t=abc".to_owned()), 400),
        (None, 400),
    ];
    for (sig, status) in &cases {
        let reply = support::post(&client, &url, Bytes::from(body.clone()), sig.as_deref()).await;
        assert_eq!(reply.status, *status);
    }
    relay.signal("TERM");
    assert!(relay.child.0.wait().expect("exit").success());

    // Everything the relay wrote after `listening`, stdout and stderr; the readers end at EOF.
    let text: String = relay.lines.iter().map(|line| line + "\n").collect();
    for secret in [SECRET, OLD_SECRET, "guest:guest", marker] {
        assert!(!text.contains(secret), "{secret:?} appears in the log");
    }
    let requests: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "request")
        .collect();
    assert_eq!(requests.len(), cases.len(), "one line per request");
    for line in &requests {
        for field in ["request_id", "endpoint", "outcome", "status", "latency_ms"] {
            assert!(line.get(field).is_some(), "{field} missing from {line}");
        }
    }
    assert_eq!(requests[0]["outcome"], "accepted");
    assert_eq!(requests[1]["outcome"], "invalid_signature");
    assert_eq!(requests[2]["outcome"], "stale_timestamp");
    topology.delete().await;
}

/// The decimal byte list a `Debug` of `Vec<u8>` or `&[u8]` shows, as lapin logs returned bodies.
fn as_byte_list(text: &str) -> String {
    let bytes: Vec<String> = text.bytes().map(|b| b.to_string()).collect();
    bytes.join(", ")
}

#[tokio::test]
async fn a_returned_message_logs_neither_its_body_nor_its_signature() {
    // An exchange nothing is bound to: every publish comes back as a basic.return.
    let exchange = unique("logs.unroutable");
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        ack: "durable",
        ..Options::default()
    };
    let config = support::write_config(&options, &exchange, dir.path());
    let mut relay = RelayProcess::start(&config);
    let url = format!("http://{}{PATH}", relay.addr);
    let marker = "BODY_MARKER_never_in_logs";
    let body = format!(
        r#"{{"id":"{}","type":"a.b","data":{{"user_reference":"{marker}"}}}}"#,
        unique("evt")
    );
    let sig = sign(SECRET, now(), body.as_bytes());
    let reply = support::post(
        &support::http_client(),
        &url,
        Bytes::from(body.clone()),
        Some(&sig),
    )
    .await;
    assert_eq!(reply.status, 200);
    // Keep every line: lapin logs the return before our own line about it.
    let mut text = String::new();
    while !text.contains("\"result\":\"returned\"") {
        let line = relay
            .lines
            .recv_timeout(support::WAIT)
            .expect("the relay logs the returned event");
        text.push_str(&line);
        text.push('\n');
    }
    relay.signal("TERM");
    assert!(relay.child.0.wait().expect("exit").success());
    text.extend(relay.lines.iter().map(|line| line + "\n"));
    let v1 = sig.split("v1=").nth(1).expect("a v1 part");
    for needle in [
        marker.to_owned(),
        as_byte_list(marker),
        v1.to_owned(),
        as_byte_list(v1),
    ] {
        assert!(!text.contains(&needle), "{needle:?} appears in the log");
    }
}
