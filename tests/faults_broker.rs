//! Broker faults through a TCP proxy in front of the real RabbitMQ, against the real binary
//! (`RelayProcess`, observed through its admin API): a blackholed link (open but silent) must not
//! hang any answer past 0Gate's 10 s, and loses nothing acknowledged once the link is back; the
//! broker closing our connection repeatedly under load loses nothing. Each test prints
//! acknowledged / lost / duplicates and the slowest answer.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use support::{
    BrokerProxy, Options, PATH, RelayProcess, SECRET, Topology, event_body, now, sign, unique,
};

/// 0Gate gives up on an answer after this long.
const GATE_DEADLINE: Duration = Duration::from_secs(10);
/// Events sent at once while the link is blackholed.
const EVENTS: usize = 40;

/// The relay's own view (`GET /outbox`): is its publisher connected?
async fn broker_connected(admin: SocketAddr) -> bool {
    let body = support::admin_get(admin, "/outbox").await;
    let outbox: serde_json::Value = serde_json::from_slice(&body).expect("json");
    outbox["broker_connected"]
        .as_bool()
        .expect("broker_connected")
}

/// `gate_relay_amqp_reconnects_total` on the admin listener.
async fn reconnects(admin: SocketAddr) -> f64 {
    let body = support::admin_get(admin, "/metrics").await;
    let text = String::from_utf8(body.to_vec()).expect("utf-8 metrics");
    text.lines()
        .find_map(|line| line.strip_prefix("gate_relay_amqp_reconnects_total "))
        .expect("gate_relay_amqp_reconnects_total exported")
        .trim()
        .parse()
        .expect("a number")
}

/// Polls `ready` (an admin API question) until it holds, within `support::WAIT`.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut ready: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + support::WAIT;
    while !ready().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A relay process through `proxy`, its topology and config directory.
async fn relay_through(
    proxy: &BrokerProxy,
    name: &str,
    ack: &'static str,
) -> (RelayProcess, Topology, tempfile::TempDir) {
    let topology = Topology::declare(name, &[]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        ack,
        amqp_url: proxy.url(),
        ..Options::default()
    };
    let config = support::write_config(&options, &topology.exchange, dir.path());
    let relay = RelayProcess::start(&config);
    (relay, topology, dir)
}

async fn blackhole_then_restore(ack: &'static str) {
    let proxy = BrokerProxy::start().await;
    let (relay, topology, _dir) =
        relay_through(&proxy, &format!("faults.blackhole.{ack}"), ack).await;
    let admin = relay.admin_addr;
    until("the relay is connected", || broker_connected(admin)).await;
    proxy.blackhole();

    let url = format!("http://{}{PATH}", relay.addr);
    let mut sends = tokio::task::JoinSet::new();
    for _ in 0..EVENTS {
        let (client, url) = (support::http_client(), url.clone());
        sends.spawn(async move {
            let id = unique("evt");
            let body = Bytes::from(event_body(&id, "gate_session.completed"));
            let sig = sign(SECRET, now(), &body);
            let started = Instant::now();
            let reply = tokio::time::timeout(
                2 * GATE_DEADLINE,
                support::post(&client, &url, body, Some(&sig)),
            )
            .await
            .expect("an answer came (nothing hangs)");
            (id, reply.status, started.elapsed())
        });
    }
    let answers = sends.join_all().await;
    let slowest = answers.iter().map(|a| a.2).max().expect("answers");
    let acked: Vec<String> = answers
        .iter()
        .filter(|a| (200..300).contains(&a.1))
        .map(|a| a.0.clone())
        .collect();
    for (_, status, _) in &answers {
        assert!(
            (200..300).contains(status) || *status == 503,
            "a blackholed broker is an upstream fault: 2xx or 503, got {status}"
        );
    }
    if ack == "durable" {
        assert_eq!(acked.len(), EVENTS, "durable mode answers once stored");
    }

    proxy.restore();
    support::assert_outbox_drains(admin).await;
    let got = topology.message_ids(Duration::from_secs(2)).await;
    let (lost, duplicates) = lost_and_duplicates(&acked, &got);
    // A 503 here came after the event was stored (the confirm timed out, or the broker was
    // known away): once the link is back every event sent is published, answered 2xx or not.
    let unpublished = answers.iter().filter(|a| !got.contains(&a.0)).count();
    println!(
        "blackhole ({ack}): acknowledged {} lost {lost} duplicates {} slowest answer {slowest:?}, \
         {} of {EVENTS} sent published",
        acked.len(),
        duplicates,
        EVENTS - unpublished
    );
    assert_eq!(
        unpublished, 0,
        "a stored event was not published after the blackhole"
    );
    assert!(
        slowest < GATE_DEADLINE,
        "an answer took {slowest:?}, past 0Gate's deadline"
    );
    assert_eq!(lost, 0, "acknowledged events were lost after the blackhole");
    drop(relay);
    topology.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_broker_link_answers_within_10_s_and_loses_nothing_in_durable_mode() {
    blackhole_then_restore("durable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_broker_link_answers_within_10_s_and_loses_nothing_in_confirmed_mode() {
    blackhole_then_restore("confirmed").await;
}

/// Acknowledged ids that never arrived, and messages beyond the first of each id.
fn lost_and_duplicates(acked: &[String], got: &[String]) -> (usize, usize) {
    let lost = acked.iter().filter(|id| !got.contains(id)).count();
    let unique: std::collections::HashSet<&String> = got.iter().collect();
    (lost, got.len() - unique.len())
}

/// The broker's pid for the connection whose peer (our side) uses `port`.
fn connection_pid(port: u16) -> Option<String> {
    let out = std::process::Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "-q",
            "--no-table-headers",
            "pid",
            "peer_port",
        ])
        .output()
        .expect("run rabbitmqctl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| {
            let (pid, peer) = line.split_once('\t')?;
            (peer.trim() == port.to_string()).then(|| pid.trim().to_owned())
        })
}

/// Times the broker closes the relay's connection.
const CLOSES: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_closing_our_connection_repeatedly_under_load_loses_nothing() {
    let proxy = BrokerProxy::start().await;
    let (relay, topology, _dir) = relay_through(&proxy, "faults.close", "durable").await;
    let admin = relay.admin_addr;
    let url = format!("http://{}{PATH}", relay.addr);
    let stop = tokio_util::sync::CancellationToken::new();
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (client, url, stop, acked) = (
            support::http_client(),
            url.clone(),
            stop.clone(),
            Arc::clone(&acked),
        );
        senders.spawn(async move {
            while !stop.is_cancelled() {
                let id = unique("evt");
                let body = Bytes::from(event_body(&id, "gate_session.completed"));
                let sig = sign(SECRET, now(), &body);
                if (200..300).contains(&support::post(&client, &url, body, Some(&sig)).await.status)
                {
                    acked.lock().expect("lock").push(id);
                }
            }
        });
    }
    let mut closed = Vec::new();
    for _ in 0..CLOSES {
        // The newest connection through the proxy, not one closed before, with the relay
        // connected on it.
        let deadline = tokio::time::Instant::now() + support::WAIT;
        let target = loop {
            let port = proxy.latest_upstream_port().filter(|p| !closed.contains(p));
            if let Some(port) = port
                && broker_connected(admin).await
                && let Some(pid) = connection_pid(port)
            {
                break Some((port, pid));
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for a fresh broker connection"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let (port, pid) = target.expect("found");
        let status = std::process::Command::new("rabbitmqctl")
            .args(["close_connection", &pid, "fault test"])
            .status()
            .expect("run rabbitmqctl");
        assert!(status.success(), "close_connection failed");
        closed.push(port);
    }
    until("the relay reconnected after the last close", || {
        let port = proxy.latest_upstream_port();
        let closed = &closed;
        async move { port.is_some_and(|p| !closed.contains(&p)) && broker_connected(admin).await }
    })
    .await;
    stop.cancel();
    senders.join_all().await;
    let acked = acked.lock().expect("lock").clone();
    support::assert_outbox_drains(admin).await;
    let got = topology.message_ids(Duration::from_secs(2)).await;
    let (lost, duplicates) = lost_and_duplicates(&acked, &got);
    println!(
        "broker closed our connection {CLOSES} times: acknowledged {} lost {lost} duplicates {}",
        acked.len(),
        duplicates
    );
    assert!(reconnects(admin).await >= CLOSES as f64);
    assert_eq!(
        lost, 0,
        "acknowledged events were lost across connection closes"
    );
    drop(relay);
    topology.delete().await;
}
