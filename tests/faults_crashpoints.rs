//! The real binary dying at each step of the delivery path (a failpoint aborts it, as kill -9
//! would): after admit before the flush, after the flush before the answer, after a publish
//! before its confirm, after the confirms before marking published. Restarted without the
//! failpoint on the same store, every id that got a 2xx is queued byte-identical and the outbox
//! drains. Each test prints acknowledged / lost / duplicates.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use support::{Options, PATH, RelayProcess, SECRET, Topology, event_body, now, sign, unique};

/// Concurrent senders: enough that several requests sit in every stage when the abort lands.
const CLIENTS: usize = 8;
/// `std::process::abort()` raises it (Linux's number; no libc crate just for a constant).
const SIGABRT: i32 = 6;
/// The failpoint fires on this hit, so a few hundred events were acknowledged before it.
const HIT: &str = "200";

type Acked = Arc<Mutex<HashMap<String, Bytes>>>;

/// Sends distinct signed events from CLIENTS tasks until the relay goes away; returns the ids
/// that got a 2xx with their bodies.
fn load(addr: SocketAddr) -> (Acked, tokio::task::JoinSet<()>) {
    let acked: Acked = Arc::new(Mutex::new(HashMap::new()));
    let mut senders = tokio::task::JoinSet::new();
    let url = format!("http://{addr}{PATH}");
    for _ in 0..CLIENTS {
        let (acked, url) = (Arc::clone(&acked), url.clone());
        let client = support::http_client();
        senders.spawn(async move {
            loop {
                let id = unique("evt");
                let body = Bytes::from(event_body(&id, "gate_session.completed"));
                let request = http::Request::post(&url)
                    .header("Gate-Signature", sign(SECRET, now(), &body))
                    .body(http_body_util::Full::new(body.clone()))
                    .expect("request");
                match client.request(request).await {
                    Ok(r) if r.status().is_success() => {
                        acked.lock().expect("lock").insert(id, body);
                    }
                    Ok(_) => {}
                    Err(_) => break, // the relay died
                }
            }
        });
    }
    (acked, senders)
}

/// `GET /outbox`: the outbox depth in events.
async fn outbox_events(admin: SocketAddr) -> u64 {
    let body = support::admin_get(admin, "/outbox").await;
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    v["events"].as_u64().expect("events count")
}

async fn crash_at(failpoint: &str, ack: &'static str) {
    let topology = Topology::declare(&format!("faults.{failpoint}"), &[]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        ack,
        ..Options::default()
    };
    let config = support::write_config(&options, &topology.exchange, dir.path());

    let armed = format!("{failpoint}@{HIT}");
    let mut relay = RelayProcess::start_with_env(&config, &[("GATE_RELAY_FAILPOINT", &armed)]);
    let (acked, senders) = load(relay.addr);
    let mut exit = None;
    support::eventually("the failpoint aborted the relay", || {
        exit = relay.child.0.try_wait().expect("try_wait");
        exit.is_some()
    })
    .await;
    let exit = exit.expect("exited");
    // The failpoint's `abort()`, not some other failure (a panic or an error exit).
    assert_eq!(
        exit.signal(),
        Some(SIGABRT),
        "the relay must die of the failpoint at {failpoint}, got {exit}"
    );
    // The senders see the connection drop and stop; what they got answered is final.
    tokio::time::timeout(support::WAIT, senders.join_all())
        .await
        .expect("every sender saw the relay die");
    let acked = acked.lock().expect("lock").clone();
    assert!(
        !acked.is_empty(),
        "nothing was acknowledged before {failpoint}"
    );

    let relay = RelayProcess::start(&config);
    // Late redeliveries of already seen ids still count as duplicates.
    let arrivals = topology.arrivals(&acked, Duration::from_millis(300)).await;
    let (lost, duplicates) = (arrivals.missing.len(), arrivals.duplicates);
    println!(
        "failpoint {failpoint} ({ack}): acknowledged {} lost {lost} duplicates {duplicates}",
        acked.len()
    );
    assert_eq!(
        lost, 0,
        "acknowledged events were lost after a crash at {failpoint}"
    );
    let deadline = tokio::time::Instant::now() + support::WAIT;
    loop {
        let events = outbox_events(relay.admin_addr).await;
        if events == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the outbox never drained after a crash at {failpoint}: {events} left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(relay);
    topology.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_admit_before_the_flush_loses_no_acknowledged_event() {
    crash_at(gate_relay::failpoint::AFTER_ADMIT, "durable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_flush_before_the_answer_loses_no_acknowledged_event() {
    crash_at(gate_relay::failpoint::AFTER_FLUSH, "durable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_a_publish_before_its_confirm_loses_no_acknowledged_event() {
    crash_at(gate_relay::failpoint::AFTER_PUBLISH, "durable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_confirm_before_marking_published_loses_no_acknowledged_event() {
    crash_at(gate_relay::failpoint::AFTER_CONFIRM, "confirmed").await;
}
