//! Broker faults an operator causes, each on a private RabbitMQ node (`support::rabbit_node`;
//! never the shared broker, which other tests use): the broker's application restarted under
//! load (`stop_app`, `start_app`), and a memory alarm that makes the broker block publishing
//! connections (`connection.blocked`). In both ack modes nothing that got a 2xx is lost (every
//! acknowledged id is consumed from the queue, byte-identical), every answer comes within 0Gate's
//! 10 s, and the relay recovers on its own: it reconnects, or becomes ready again, and its outbox
//! drains. Each test prints acknowledged / lost / duplicates / reconnects and its timings.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gate_relay::publisher::{BROKER_DOWN_FAIL_FAST, BrokerStatus};
use support::rabbit_node::RabbitNode;
use support::{Options, PATH, SECRET, TestApp, event_body, now, sign, unique};
use tokio_util::sync::CancellationToken;

/// 0Gate gives up on an answer after this long.
const GATE_DEADLINE: Duration = Duration::from_secs(10);
/// Concurrent senders, each posting one event after another: a steady load that keeps the
/// publisher busy when the fault hits, on 2 cores shared with the broker.
const SENDERS: usize = 2;
/// Answers (and acknowledgements) to see in each phase (before, during, after the fault), so
/// each phase really carried load.
const PER_PHASE: usize = 30;
/// How long the memory alarm lasts at least: past the publisher's confirm timeout (3 s in the
/// test config) and `PUBLISH_SEND_TIMEOUT` (5 s), so the relay's own timeouts fire while the
/// broker blocks it. The length of the fault, not a wait for anything.
const ALARM_AT_LEAST: Duration = Duration::from_secs(6);

/// One request and what it got.
struct Answer {
    id: String,
    body: Bytes,
    status: u16,
    sent: Instant,
    elapsed: Duration,
}

impl Answer {
    fn acknowledged(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Senders posting signed events until stopped, recording every answer.
struct Load {
    stop: CancellationToken,
    senders: tokio::task::JoinSet<()>,
    answers: Arc<Mutex<Vec<Answer>>>,
}

impl Load {
    fn start(app: &TestApp) -> Self {
        let stop = CancellationToken::new();
        let answers = Arc::new(Mutex::new(Vec::new()));
        let mut senders = tokio::task::JoinSet::new();
        for _ in 0..SENDERS {
            let (client, url, stop, answers) = (
                support::http_client(),
                app.url(PATH),
                stop.clone(),
                Arc::clone(&answers),
            );
            senders.spawn(async move {
                while !stop.is_cancelled() {
                    let id = unique("evt");
                    let body = Bytes::from(event_body(&id, "gate_session.completed"));
                    let sig = sign(SECRET, now(), &body);
                    let sent = Instant::now();
                    // `post` panics past 20 s: an answer that never comes fails the test.
                    let reply = support::post(&client, &url, body.clone(), Some(&sig)).await;
                    answers.lock().expect("lock").push(Answer {
                        id,
                        body,
                        status: reply.status,
                        sent,
                        elapsed: sent.elapsed(),
                    });
                }
            });
        }
        Self {
            stop,
            senders,
            answers,
        }
    }

    /// How many answers satisfy `which`.
    fn count(&self, which: impl Fn(&Answer) -> bool) -> usize {
        self.answers
            .lock()
            .expect("lock")
            .iter()
            .filter(|a| which(a))
            .count()
    }

    /// Stops the senders (each finishes its request in hand); every answer.
    async fn finish(mut self) -> Vec<Answer> {
        self.stop.cancel();
        while let Some(done) = self.senders.join_next().await {
            done.expect("a sender got every answer in time");
        }
        std::mem::take(&mut *self.answers.lock().expect("lock"))
    }
}

/// What the queue holds against what was acknowledged.
#[derive(Debug)]
struct Tally {
    answers: usize,
    acknowledged: usize,
    refused_503: usize,
    lost: usize,
    /// Deliveries of a sent id whose body differs from what was sent.
    altered: usize,
    duplicates: usize,
    slowest: Duration,
}

/// Consumes everything the relay published (its outbox must be empty) and compares.
async fn tally(app: &mut TestApp, node: &RabbitNode, answers: &[Answer]) -> Tally {
    // The test's own connection may not have survived the fault.
    app.topology = node.reattach(&app.topology).await;
    let queued = app.topology.queue_len().await as usize;
    let deliveries = app.topology.collect(queued, Duration::from_secs(5)).await;
    assert_eq!(deliveries.len(), queued, "consumed everything queued");
    let mut delivered: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    for d in &deliveries {
        let id = d
            .properties
            .message_id()
            .as_ref()
            .expect("message_id set")
            .to_string();
        delivered.entry(id).or_default().push(d.data.clone());
    }
    let sent: HashMap<&str, &Answer> = answers.iter().map(|a| (a.id.as_str(), a)).collect();
    let altered = delivered
        .iter()
        .filter_map(|(id, bodies)| Some((sent.get(id.as_str())?, bodies)))
        .map(|(a, bodies)| bodies.iter().filter(|b| **b != a.body).count())
        .sum();
    let acked: Vec<&Answer> = answers.iter().filter(|a| a.acknowledged()).collect();
    Tally {
        answers: answers.len(),
        acknowledged: acked.len(),
        refused_503: answers.iter().filter(|a| a.status == 503).count(),
        lost: acked
            .iter()
            .filter(|a| !delivered.contains_key(&a.id))
            .count(),
        altered,
        duplicates: deliveries.len() - delivered.len(),
        slowest: answers.iter().map(|a| a.elapsed).max().unwrap_or_default(),
    }
}

fn assert_promise_kept(what: &str, ack: &str, tally: &Tally, answers: &[Answer]) {
    for a in answers {
        assert!(
            a.acknowledged() || a.status == 503,
            "{what} ({ack}) is an upstream fault: 2xx or 503, got {}",
            a.status
        );
    }
    if ack == "durable" {
        assert_eq!(
            tally.acknowledged, tally.answers,
            "{what}: durable mode answers 2xx once the event is on disk"
        );
    }
    assert!(
        tally.slowest < GATE_DEADLINE,
        "{what} ({ack}): an answer took {:?}, past 0Gate's deadline",
        tally.slowest
    );
    assert_eq!(tally.lost, 0, "{what} ({ack}): acknowledged events lost");
    assert_eq!(
        tally.altered, 0,
        "{what} ({ack}): delivered bodies differ from what was sent"
    );
}

async fn relay_on(node: &RabbitNode, name: &str, ack: &'static str) -> TestApp {
    let topology = node.topology(name, &[]).await;
    let store_dir = Arc::new(tempfile::tempdir().expect("tempdir"));
    let options = Options {
        ack,
        amqp_url: node.amqp_url(),
        ..Options::default()
    };
    TestApp::start(topology, store_dir, options).await
}

/// A private node, a relay on it and a load that has had `PER_PHASE` events acknowledged: the
/// state each fault starts from.
struct UnderLoad {
    started: Instant,
    node_up: Duration,
    node: RabbitNode,
    app: TestApp,
    broker: Arc<BrokerStatus>,
    load: Load,
}

async fn under_load(fault: &str, ack: &'static str) -> UnderLoad {
    let started = Instant::now();
    let node = RabbitNode::start().await;
    let node_up = started.elapsed();
    let app = relay_on(&node, &format!("ops.{fault}.{ack}"), ack).await;
    let broker = Arc::clone(&app.running.as_ref().expect("running").broker);
    let load = Load::start(&app);
    support::eventually(
        &format!("events are acknowledged before the {fault}"),
        || load.count(Answer::acknowledged) >= PER_PHASE,
    )
    .await;
    UnderLoad {
        started,
        node_up,
        node,
        app,
        broker,
        load,
    }
}

async fn restart_under_load(ack: &'static str) {
    let UnderLoad {
        started,
        node_up,
        node,
        mut app,
        broker,
        load,
    } = under_load("restart", ack).await;

    let stopping = Instant::now();
    node.stop_app().await;
    support::eventually("the relay sees the broker gone", || !broker.is_connected()).await;
    let (down, answered_before) = (Instant::now(), load.count(|_| true));
    support::eventually("the relay answers while the broker is stopped", || {
        load.count(|a| a.sent >= down) >= PER_PHASE
    })
    .await;
    let during = load.count(|_| true) - answered_before;

    node.start_app().await;
    let app_up = Instant::now();
    support::eventually("the relay reconnects on its own", || broker.is_connected()).await;
    let reconnected = Instant::now();
    support::eventually("events are acknowledged after the restart", || {
        load.count(|a| a.sent >= reconnected && a.acknowledged()) >= PER_PHASE
    })
    .await;
    let answers = load.finish().await;
    let load_stopped = Instant::now();
    app.outbox_drained().await;
    let drained = Instant::now();

    let tally = tally(&mut app, &node, &answers).await;
    let reconnects = app.metric("gate_relay_amqp_reconnects_total", &[]);
    println!(
        "broker restart ({ack}): answers {} acknowledged {} (503: {}) lost {} duplicates {} \
         reconnects {reconnects} slowest answer {:?}; answers while stopped {during}; \
         stop_app to start_app returned {:?}, to reconnected {:?}; outbox drained {:?} after \
         the load stopped; node start {node_up:?}, test {:?}",
        tally.answers,
        tally.acknowledged,
        tally.refused_503,
        tally.lost,
        tally.duplicates,
        tally.slowest,
        app_up - stopping,
        reconnected - stopping,
        drained - load_stopped,
        started.elapsed(),
    );
    assert_promise_kept("a broker restart", ack, &tally, &answers);
    assert!(reconnects >= 1.0, "the reconnect was counted");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_under_load_loses_nothing_acknowledged_in_durable_mode() {
    restart_under_load("durable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_under_load_loses_nothing_acknowledged_in_confirmed_mode() {
    restart_under_load("confirmed").await;
}

/// Whether the admin listener's `/readyz` says ready (200) or not (503). A new connection each
/// time: a pooled one left idle through a long phase may be closed by the relay's idle timeout
/// just as it is reused.
async fn ready(app: &TestApp) -> bool {
    let client: support::HttpClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build_http();
    let request = http::Request::get(app.admin_url("/readyz"))
        .body(http_body_util::Full::new(Bytes::new()))
        .expect("request");
    let response = tokio::time::timeout(support::WAIT, client.request(request))
        .await
        .expect("/readyz answered in time")
        .expect("/readyz request sent");
    let status = response.status().as_u16();
    assert!(status == 200 || status == 503, "/readyz answered {status}");
    status == 200
}

/// Polls `/readyz` until it says `want`; panics after [`support::WAIT`].
async fn until_ready_is(app: &TestApp, want: bool) {
    let deadline = Instant::now() + support::WAIT;
    while ready(app).await != want {
        assert!(
            Instant::now() < deadline,
            "/readyz did not turn {want} within {:?}",
            support::WAIT
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn memory_alarm_under_load(ack: &'static str) {
    let UnderLoad {
        started,
        node_up,
        node,
        mut app,
        broker,
        load,
    } = under_load("alarm", ack).await;
    until_ready_is(&app, true).await;

    let alarm = Instant::now();
    node.set_memory_alarm(true).await;
    let alarm_in_effect = Instant::now();
    until_ready_is(&app, false).await;
    let blocked = Instant::now();
    let alarm_to_unready = blocked - alarm_in_effect;
    // Hold the alarm; meanwhile `/readyz` must stay false and answers keep coming. The relay's
    // own view is sampled every millisecond too: a reconnect would show as a brief "connected".
    let sampling = CancellationToken::new();
    let sampler = tokio::spawn({
        let (broker, sampling) = (Arc::clone(&broker), sampling.clone());
        async move {
            let (mut samples, mut connected) = (0u64, 0u64);
            while !sampling.is_cancelled() {
                samples += 1;
                connected += u64::from(broker.is_connected());
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            (samples, connected)
        }
    });
    let (mut samples, mut ready_samples) = (0, 0);
    let hold_deadline = blocked + support::WAIT + ALARM_AT_LEAST;
    while blocked.elapsed() < ALARM_AT_LEAST || load.count(|a| a.sent >= blocked) < PER_PHASE {
        assert!(
            Instant::now() < hold_deadline,
            "fewer than {PER_PHASE} answers during the alarm"
        );
        samples += 1;
        if ready(&app).await {
            ready_samples += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let clearing = Instant::now();
    sampling.cancel();
    let (status_samples, connected_samples) = sampler.await.expect("sampler");
    let reconnects_while_blocked = app.metric("gate_relay_amqp_reconnects_total", &[]);
    let blocked_answers: Vec<(u16, Duration)> = {
        let answers = load.answers.lock().expect("lock");
        answers
            .iter()
            .filter(|a| a.sent >= alarm_in_effect && a.sent + a.elapsed <= clearing)
            .map(|a| (a.status, a.elapsed))
            .collect()
    };
    node.set_memory_alarm(false).await;
    until_ready_is(&app, true).await;
    let unblocked = Instant::now();
    support::eventually("events are acknowledged after the alarm", || {
        load.count(|a| a.sent >= unblocked && a.acknowledged()) >= PER_PHASE
    })
    .await;
    let answers = load.finish().await;
    let load_stopped = Instant::now();
    app.outbox_drained().await;
    let drained = Instant::now();

    let tally = tally(&mut app, &node, &answers).await;
    let reconnects = app.metric("gate_relay_amqp_reconnects_total", &[]);
    let during_ok = blocked_answers.iter().filter(|a| a.0 == 200).count();
    let during_slowest = blocked_answers
        .iter()
        .map(|a| a.1)
        .max()
        .unwrap_or_default();
    println!(
        "memory alarm ({ack}): answers {} acknowledged {} (503: {}) lost {} duplicates {} \
         reconnects {reconnects} slowest answer {:?}; while blocked: {} answers, {during_ok} \
         of them 2xx, slowest {during_slowest:?}, /readyz ready in {ready_samples} of \
         {samples} samples, connected in {connected_samples} of {status_samples}, \
         reconnects {reconnects_while_blocked}; setting the alarm took {:?}, then /readyz \
         false after {alarm_to_unready:?}; alarm held {:?}; cleared to ready {:?}; outbox \
         drained {:?} after the load stopped; node start {node_up:?}, test {:?}",
        tally.answers,
        tally.acknowledged,
        tally.refused_503,
        tally.lost,
        tally.duplicates,
        tally.slowest,
        blocked_answers.len(),
        alarm_in_effect - alarm,
        clearing - blocked,
        unblocked - clearing,
        drained - load_stopped,
        started.elapsed(),
    );
    assert_promise_kept("a memory alarm", ack, &tally, &answers);
    // The relay publishes all the time under this load, so the broker blocks it (and says so)
    // as soon as the alarm is in effect.
    assert!(
        alarm_to_unready < BROKER_DOWN_FAIL_FAST,
        "/readyz still said ready {alarm_to_unready:?} after the alarm was in effect"
    );
    assert_eq!(
        (ready_samples, connected_samples),
        (0, 0),
        "the relay said ready while the broker blocked publishing"
    );
    // Replacing a blocked connection gains nothing: the new one is blocked at its first publish.
    assert_eq!(
        reconnects_while_blocked, 0.0,
        "the relay replaced its connection while the broker blocked it"
    );
    if ack == "confirmed" {
        assert_eq!(
            during_ok, 0,
            "confirmed mode acknowledged an event the blocked broker cannot have confirmed"
        );
        // A blocked broker is known to be away: 503 after BROKER_DOWN_FAIL_FAST, not the full
        // confirm timeout. (Right after the alarm clears, a request may wait that long behind
        // the events stored during the alarm; that is allowed, within 0Gate's deadline.)
        let confirm_timeout = Duration::from_millis(Options::default().confirm_timeout_ms);
        assert!(
            during_slowest < confirm_timeout,
            "an answer during the alarm took {during_slowest:?}: the relay waited for a confirm \
             the blocked broker could not send"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_memory_alarm_makes_the_relay_unready_and_loses_nothing_in_durable_mode() {
    memory_alarm_under_load("durable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_memory_alarm_makes_the_relay_unready_and_answers_503_in_confirmed_mode() {
    memory_alarm_under_load("confirmed").await;
}
