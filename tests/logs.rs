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
