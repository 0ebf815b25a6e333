//! The real binary under load: kill -9 and SIGTERM lose nothing that got a 2xx.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use support::{Options, PATH, RelayProcess, SECRET, Topology, event_body, now, sign, unique};

/// Distinct events each client keeps sending until told to stop.
const CLIENTS: usize = 16;
/// How many 2xx answers to collect before pulling the plug: enough that requests are in flight
/// in every stage (reading, flushing, confirming) when the signal lands.
const ACKED_BEFORE_SIGNAL: usize = 300;

/// What each acknowledged id was sent with.
type Acked = Arc<Mutex<HashMap<String, Bytes>>>;

/// An event whose body is about `pad` bytes larger than usual (0: the usual body).
fn body_for(id: &str, pad: usize) -> String {
    let body = event_body(id, "gate_session.completed");
    if pad == 0 {
        return body;
    }
    let open = body.rfind('}').expect("a JSON object");
    format!(r#"{},"pad":"{}"}}"#, &body[..open], "x".repeat(pad))
}

/// Sends distinct signed events from CLIENTS tasks until `stop`; returns the ids that got a 2xx
/// with the bodies they were sent with.
async fn load(addr: SocketAddr, stop: tokio_util::sync::CancellationToken, pad: usize) -> Acked {
    let acked: Acked = Arc::new(Mutex::new(HashMap::new()));
    let url = format!("http://{addr}{PATH}");
    for _ in 0..CLIENTS {
        let (acked, url, stop) = (Arc::clone(&acked), url.clone(), stop.clone());
        let client = support::http_client();
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let id = unique("evt");
                let body = Bytes::from(body_for(&id, pad));
                let sig = sign(SECRET, now(), &body);
                let request = http::Request::post(&url)
                    .header("Gate-Signature", sig)
                    .body(http_body_util::Full::new(body.clone()))
                    .expect("request");
                let sent = tokio::select! {
                    r = client.request(request) => r,
                    () = stop.cancelled() => break,
                };
                match sent {
                    Ok(response) if response.status().is_success() => {
                        acked.lock().expect("lock").insert(id, body);
                    }
                    Ok(_) => {}
                    Err(_) => break, // the relay is gone
                }
            }
        });
    }
    acked
}

async fn wait_for_acks(acked: &Acked, n: usize) {
    let acked = Arc::clone(acked);
    support::eventually("enough deliveries were acknowledged", move || {
        acked.lock().expect("lock").len() >= n
    })
    .await;
}

/// Every acknowledged id must reach the queue with the bytes it was sent with; duplicates are
/// allowed (same message_id).
async fn assert_all_delivered(topology: &Topology, acked: &HashMap<String, Bytes>) {
    let mut seen: HashMap<String, Vec<u8>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + support::WAIT;
    let all_seen = |seen: &HashMap<String, Vec<u8>>| acked.keys().all(|id| seen.contains_key(id));
    while !all_seen(&seen) && tokio::time::Instant::now() < deadline {
        for delivery in topology
            .collect(usize::MAX, Duration::from_millis(500))
            .await
        {
            let id = delivery
                .properties
                .message_id()
                .as_ref()
                .expect("message_id set")
                .to_string();
            seen.insert(id, delivery.data);
        }
    }
    let missing: Vec<&String> = acked.keys().filter(|id| !seen.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events were lost: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    for (id, body) in acked {
        assert!(
            seen[id] == body.as_ref(),
            "event {id} arrived with other bytes than it was sent with"
        );
    }
}

async fn crash_and_restart(ack: &'static str, kill: bool, pad: usize) {
    let topology = Topology::declare(&format!("crash.{ack}"), &[]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        ack,
        max_body_bytes: 64 * 1024 + pad,
        ..Options::default()
    };
    let config = support::write_config(&options, &topology.exchange, dir.path());

    let mut relay = RelayProcess::start(&config);
    let stop = tokio_util::sync::CancellationToken::new();
    let acked = load(relay.addr, stop.clone(), pad).await;
    wait_for_acks(&acked, ACKED_BEFORE_SIGNAL).await;
    if kill {
        relay.child.0.kill().expect("SIGKILL");
        relay.child.0.wait().expect("reaped");
    } else {
        relay.signal("TERM");
        let exit = relay.child.0.wait().expect("reaped");
        assert!(exit.success(), "graceful shutdown must exit 0, got {exit}");
    }
    stop.cancel();
    let acked = acked.lock().expect("lock").clone();

    // Restart on the same store: whatever was pending is published again.
    let relay = RelayProcess::start(&config);
    assert_all_delivered(&topology, &acked).await;
    // Everything that survived, acknowledged or not, is whole: the outbox drains to empty (an
    // entry whose body or record were lost would stay queued and be skipped forever).
    support::assert_outbox_drains(relay.admin_addr).await;
    drop(relay);
    topology.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_event_in_durable_mode() {
    crash_and_restart("durable", true, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_event_in_confirmed_mode() {
    crash_and_restart("confirmed", true, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_bodies_of_several_chunks_loses_and_corrupts_nothing() {
    // About 4.5 chunks each: an admit's writes span many log entries, and sled's pages grow
    // large enough to become blobs.
    crash_and_restart("durable", true, 4 * 32 * 1024 + 16 * 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_under_load_exits_0_and_loses_nothing() {
    crash_and_restart("durable", false, 0).await;
}
