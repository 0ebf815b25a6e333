//! Soak: the real binary at a fixed request rate for a long time, with faults at random
//! (seeded) points: kill -9 of the relay (restarted on the same store), power cuts (the store
//! lives on the powerfs FUSE filesystem; torn, then remounted from what survived) and broker
//! restarts (only on a private RabbitMQ node, never the shared one). A consumer runs all along.
//! At the end it prints the cycles of each fault, the ids acknowledged (2xx), lost
//! (acknowledged, never consumed), corrupted (consumed with other bytes) and duplicated (one
//! `message_id` consumed more than once), and a table of the relay's RSS and the store's size
//! over time; it fails when anything acknowledged was lost or corrupted.
//!
//! Not in CI (`#[ignore]`): `scripts/soak --help` runs it and lists the `SOAK_*` variables.

mod powerfs;
mod support;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ExchangeDeleteOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use powerfs::{Metadata, PowerFs, Rng, StoreMount};
use support::rabbit_node::RabbitNode;
use support::{Options, PATH, RelayProcess, SECRET, Topology, now, sign, unique};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A request that takes longer than this counts as failed (the relay's own deadlines are
/// shorter: confirm 5 s, header read 10 s), so the load generator never waits forever.
const REQUEST_DEADLINE: Duration = Duration::from_secs(15);
/// How often the load generator catches up with the schedule: 10 ms keeps bursts small at
/// any rate up to a few thousand per second.
const LOAD_TICK: Duration = Duration::from_millis(10);
/// Messages the consumer holds unacknowledged: enough to keep up, small enough that a
/// broker restart redelivers few.
const PREFETCH: u16 = 500;
/// The consumer checks its connection after this long without a message.
const IDLE_CHECK: Duration = Duration::from_secs(5);
/// Bound on one connect or declare to the broker.
const BROKER_DEADLINE: Duration = Duration::from_secs(10);
/// Pause between the consumer's connection attempts while the broker is away.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);

/// The run's parameters, from `SOAK_*` environment variables (see `scripts/soak --help`).
#[derive(Debug, Clone)]
struct Settings {
    minutes: f64,
    rate: f64,
    kill_every: f64,
    power_every: f64,
    broker_every: f64,
    broker_down: f64,
    sample_every: f64,
    seed: u64,
    ack: &'static str,
    pad: usize,
    retain_bodies: String,
    drain_secs: u64,
    max_in_flight: usize,
    report: Option<PathBuf>,
}

fn var<T: FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) if !text.is_empty() => text
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a valid value")),
        _ => default,
    }
}

impl Settings {
    fn from_env() -> Self {
        let default_seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos() as u64;
        let ack: String = var("SOAK_ACK", "durable".to_owned());
        let ack = match ack.as_str() {
            "durable" => "durable",
            "confirmed" => "confirmed",
            other => panic!("SOAK_ACK={other:?}: durable or confirmed"),
        };
        Self {
            minutes: var("SOAK_MINUTES", 30.0),
            rate: var("SOAK_RATE", 100.0),
            kill_every: var("SOAK_KILL_EVERY_SECS", 15.0),
            power_every: var("SOAK_POWER_EVERY_SECS", 90.0),
            broker_every: var("SOAK_BROKER_EVERY_SECS", 120.0),
            broker_down: var("SOAK_BROKER_DOWN_SECS", 5.0),
            sample_every: var("SOAK_SAMPLE_SECS", 30.0),
            seed: var("SOAK_SEED", default_seed),
            ack,
            pad: var("SOAK_PAD", 512),
            retain_bodies: var("SOAK_RETAIN_BODIES", "10m".to_owned()),
            drain_secs: var("SOAK_DRAIN_SECS", 180),
            max_in_flight: var("SOAK_MAX_IN_FLIGHT", 256),
            report: std::env::var_os("SOAK_REPORT").map(PathBuf::from),
        }
    }
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// What the load generator saw.
#[derive(Default)]
struct Sent {
    /// Acknowledged ids with the hash of the bytes they were sent with.
    acked: Mutex<HashMap<String, u64>>,
    /// Answers other than 2xx, by status.
    statuses: Mutex<BTreeMap<u16, u64>>,
    /// Connection errors (mostly: the relay was just killed) and timeouts.
    errors: AtomicU64,
    timeouts: AtomicU64,
    /// Scheduled while the relay was restarting (no address to send to).
    relay_down: AtomicU64,
    /// Scheduled while `max_in_flight` requests were already waiting.
    capped: AtomicU64,
}

/// What the consumer saw.
#[derive(Default)]
struct Seen {
    /// Every message_id consumed, with the hash of its first body.
    ids: Mutex<HashMap<String, u64>>,
    /// Deliveries of an id already consumed, and among them those the broker flagged as
    /// redelivered (to this consumer, after its connection broke, not sent twice by the relay).
    duplicates: AtomicU64,
    redelivered_duplicates: AtomicU64,
    /// A later delivery of an id whose bytes differ from the first one.
    differing_duplicates: AtomicU64,
    reconnects: AtomicU64,
}

/// Sends one signed distinct event per slot of the schedule until `stop`.
async fn load(
    settings: Settings,
    target: Arc<Mutex<Option<SocketAddr>>>,
    sent: Arc<Sent>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let client = support::http_client();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(settings.max_in_flight));
    let mut tick = tokio::time::interval(LOAD_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let start = Instant::now();
    let mut issued: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let due = (start.elapsed().as_secs_f64() * settings.rate) as u64;
        while issued < due {
            issued += 1;
            let Some(addr) = *target.lock().expect("lock") else {
                sent.relay_down.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
                sent.capped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let (client, sent) = (client.clone(), Arc::clone(&sent));
            let pad = settings.pad;
            tracker.spawn(async move {
                let _permit = permit;
                let id = unique("soak");
                let body = Bytes::from(support::load::padded_body(&id, pad));
                let digest = hash(&body);
                let request = http::Request::post(format!("http://{addr}{PATH}"))
                    .header("Gate-Signature", sign(SECRET, now(), &body))
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(body))
                    .expect("request");
                match tokio::time::timeout(REQUEST_DEADLINE, client.request(request)).await {
                    Ok(Ok(response)) if response.status().is_success() => {
                        sent.acked.lock().expect("lock").insert(id, digest);
                    }
                    Ok(Ok(response)) => {
                        *sent
                            .statuses
                            .lock()
                            .expect("lock")
                            .entry(response.status().as_u16())
                            .or_default() += 1;
                    }
                    Ok(Err(_)) => {
                        sent.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        sent.timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    }
}

async fn connect(url: &str) -> Result<Connection, String> {
    match tokio::time::timeout(
        BROKER_DEADLINE,
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
    {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("connect timed out".to_owned()),
    }
}

/// Closes a connection politely, within a bound (the broker may be gone).
async fn close(connection: &Connection) {
    let _ = tokio::time::timeout(RECONNECT_PAUSE * 10, connection.close(200, "done".into())).await;
}

/// Consumes the queue until `stop`, reconnecting whenever the broker goes away; acks each
/// message after recording it, so nothing is consumed without being counted.
async fn consume(url: String, queue: String, seen: Arc<Seen>, stop: CancellationToken) {
    let mut first = true;
    while !stop.is_cancelled() {
        let Ok(connection) = connect(&url).await else {
            tokio::select! {
                () = tokio::time::sleep(RECONNECT_PAUSE) => continue,
                () = stop.cancelled() => return,
            }
        };
        if !first {
            seen.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        let consumer = async {
            let channel = connection.create_channel().await?;
            channel
                .basic_qos(PREFETCH, BasicQosOptions::default())
                .await?;
            channel
                .basic_consume(
                    queue.as_str().into(),
                    unique("soak.consumer").as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
        };
        let mut consumer = match tokio::time::timeout(BROKER_DEADLINE, consumer).await {
            Ok(Ok(c)) => c,
            _ => {
                close(&connection).await;
                tokio::select! {
                    () = tokio::time::sleep(RECONNECT_PAUSE) => continue,
                    () = stop.cancelled() => return,
                }
            }
        };
        loop {
            let delivery = tokio::select! {
                d = tokio::time::timeout(IDLE_CHECK, consumer.next()) => d,
                () = stop.cancelled() => {
                    close(&connection).await;
                    return;
                }
            };
            let delivery = match delivery {
                Ok(Some(Ok(delivery))) => delivery,
                // Quiet: fine while the connection stands (a broker restart, a slow restart
                // of the relay); a connection that died without ending the stream is replaced.
                Err(_) if connection.status().connected() => continue,
                _ => break,
            };
            let id = delivery
                .properties
                .message_id()
                .as_ref()
                .expect("the relay sets message_id")
                .to_string();
            let digest = hash(&delivery.data);
            {
                let mut ids = seen.ids.lock().expect("lock");
                match ids.get(&id) {
                    Some(&first) => {
                        seen.duplicates.fetch_add(1, Ordering::Relaxed);
                        if delivery.redelivered {
                            seen.redelivered_duplicates.fetch_add(1, Ordering::Relaxed);
                        }
                        if first != digest {
                            seen.differing_duplicates.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    None => {
                        ids.insert(id, digest);
                    }
                }
            }
            if delivery.ack(BasicAckOptions::default()).await.is_err() {
                break;
            }
        }
    }
}

/// The test's exchange and queue on the broker at `url` (durable, so they survive a broker
/// restart; the queue expires a minute after its last consumer, should a run die).
async fn declare(url: &str) -> (String, String) {
    let connection = connect(url).await.unwrap_or_else(|e| {
        panic!("RabbitMQ is not reachable at {url} ({e}); `scripts/test` shows how to start it")
    });
    let topology = Topology::declare_on(connection, "soak", &[]).await;
    (topology.exchange.clone(), topology.queue.clone())
}

async fn delete(url: &str, exchange: &str, queue: &str) {
    if let Ok(connection) = connect(url).await {
        if let Ok(channel) = connection.create_channel().await {
            let _ = channel
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await;
            let _ = channel
                .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
                .await;
        }
        close(&connection).await;
    }
}

/// WARN and ERROR log lines of every relay run, by message.
type LogTally = Arc<Mutex<BTreeMap<(String, String), u64>>>;

/// A running relay process; its log is read (and WARN/ERROR lines tallied) by a thread.
struct Relay {
    child: support::KillOnDrop,
    admin: SocketAddr,
    addr: SocketAddr,
    started: Instant,
    log: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    async fn start(config: &Path, tally: &LogTally) -> Result<Self, String> {
        let config = config.to_owned();
        let process = tokio::task::spawn_blocking(move || RelayProcess::start(&config))
            .await
            .map_err(|e| format!("the relay did not start: {e}"))?;
        let RelayProcess {
            child,
            addr,
            admin_addr,
            lines,
            ..
        } = process;
        let tally = Arc::clone(tally);
        let log = std::thread::spawn(move || {
            for line in lines {
                if !(line.contains("WARN") || line.contains("ERROR")) {
                    continue;
                }
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    // Not JSON: a panic message or similar on stderr.
                    *tally
                        .lock()
                        .expect("lock")
                        .entry(("stderr".to_owned(), line))
                        .or_default() += 1;
                    continue;
                };
                let level = v["level"].as_str().unwrap_or("?").to_owned();
                if level != "WARN" && level != "ERROR" {
                    continue;
                }
                let message = v["message"]
                    .as_str()
                    .or_else(|| v["fields"]["message"].as_str())
                    .unwrap_or("?")
                    .to_owned();
                *tally
                    .lock()
                    .expect("lock")
                    .entry((level, message))
                    .or_default() += 1;
            }
        });
        Ok(Self {
            child,
            admin: admin_addr,
            addr,
            started: Instant::now(),
            log: Some(log),
        })
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// kill -9, reaped; the log thread ends with the closed pipes.
    fn kill(mut self) {
        self.child.0.kill().expect("SIGKILL");
        self.child.0.wait().expect("reaped");
        if let Some(log) = self.log.take() {
            let _ = log.join();
        }
    }
}

/// The resident set size of `pid` in bytes, from /proc.
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Bytes in the files under `dir` (the store on powerfs, which allocates exactly that).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// `GET /outbox` on the admin listener: the outbox depth in events.
async fn outbox_events(admin: SocketAddr) -> Option<u64> {
    let client = support::http_client();
    let url: http::Uri = format!("http://{admin}/outbox").parse().ok()?;
    let response = tokio::time::timeout(Duration::from_secs(5), client.get(url))
        .await
        .ok()?
        .ok()?;
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .ok()?
        .to_bytes();
    serde_json::from_slice::<serde_json::Value>(&body).ok()?["events"].as_u64()
}

struct Sample {
    at_secs: u64,
    relay_age_secs: u64,
    relay_rss: Option<u64>,
    harness_rss: Option<u64>,
    store_bytes: u64,
    acked: usize,
    consumed: usize,
    outbox: Option<u64>,
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

fn sample_row(s: &Sample) -> String {
    format!(
        "| {:>5} | {:>4} | {:>8} | {:>8} | {:>8} | {:>8} | {:>8} | {:>6} |",
        s.at_secs,
        s.relay_age_secs,
        s.relay_rss.map_or("-".to_owned(), mib),
        s.harness_rss.map_or("-".to_owned(), mib),
        mib(s.store_bytes),
        s.acked,
        s.consumed,
        s.outbox.map_or("-".to_owned(), |o| o.to_string()),
    )
}

const SAMPLE_HEADER: &str = "|   t s | age s | relay RSS MiB | harness RSS MiB | store MiB | acked | consumed | outbox |\n|---|---|---|---|---|---|---|---|";

/// Next time a fault with mean interval `every` seconds fires: uniform in [0.5, 1.5] × mean
/// (never, for 0).
fn next_after(rng: &mut Rng, from: Instant, every: f64) -> Option<Instant> {
    if every <= 0.0 {
        return None;
    }
    let unit = (rng.next() % 1_000_000) as f64 / 1_000_000.0;
    Some(from + Duration::from_secs_f64(every * (0.5 + unit)))
}

#[derive(Default)]
struct Cycles {
    kills: u64,
    power_cuts: u64,
    power_cuts_strict: u64,
    broker_restarts: u64,
    slowest_restart: Duration,
}

/// The store and its filesystem: mounted powerfs, replaced by what survives at each cut.
struct Disk {
    fs: PowerFs,
    mounted: Option<powerfs::Mounted>,
    mountpoint: PathBuf,
}

#[derive(Clone, Copy)]
enum Step {
    End,
    Sample,
    Kill,
    Power,
    Broker,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a long soak: run with scripts/soak"]
async fn soak_with_kill_9_power_cuts_and_broker_restarts_loses_nothing_acknowledged() {
    let settings = Settings::from_env();
    assert!(
        powerfs::fuse_available(),
        "the soak needs /dev/fuse for its power cuts"
    );
    let mut rng = Rng::new(settings.seed);
    eprintln!("soak: seed {} (SOAK_SEED), {settings:?}", settings.seed);

    // Broker restarts need a private node; the shared broker is never restarted. Without
    // them (SOAK_BROKER_EVERY_SECS=0) the run uses the shared broker.
    let node = if settings.broker_every > 0.0 {
        Some(RabbitNode::start().await)
    } else {
        None
    };
    let broker_url = node
        .as_ref()
        .map_or_else(|| support::BROKER.to_owned(), RabbitNode::amqp_url);
    eprintln!(
        "soak: broker {broker_url} ({})",
        node.as_ref()
            .map_or("shared, never restarted".to_owned(), |n| format!(
                "private node {}",
                n.name()
            ))
    );

    let (exchange, queue) = declare(&broker_url).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let StoreMount {
        fs,
        mounted,
        mountpoint,
        store,
    } = StoreMount::new(dir.path(), Metadata::Strict);
    let mut disk = Disk {
        fs,
        mounted: Some(mounted),
        mountpoint,
    };

    let options = Options {
        ack: settings.ack,
        amqp_url: broker_url.clone(),
        max_body_bytes: 64 * 1024 + settings.pad,
        ..Options::default()
    };
    let text = support::config_text(&options, &exchange, &store, "127.0.0.1:0", "127.0.0.1:0")
        .replacen(
            "[store]\n",
            &format!("[store]\nretain_bodies = \"{}\"\n", settings.retain_bodies),
            1,
        );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, text).expect("write config");

    let tally: LogTally = Arc::default();
    let sent = Arc::new(Sent::default());
    let seen = Arc::new(Seen::default());
    let stop = CancellationToken::new();
    let load_stop = CancellationToken::new();
    let tracker = TaskTracker::new();

    let mut relay = Some(Relay::start(&config, &tally).await.expect("first start"));
    let target = Arc::new(Mutex::new(relay.as_ref().map(|r| r.addr)));
    let consumer = tokio::spawn(consume(
        broker_url.clone(),
        queue.clone(),
        Arc::clone(&seen),
        stop.clone(),
    ));
    let loader = tokio::spawn(load(
        settings.clone(),
        Arc::clone(&target),
        Arc::clone(&sent),
        load_stop.clone(),
        tracker.clone(),
    ));

    let start = Instant::now();
    let end = start + Duration::from_secs_f64(settings.minutes * 60.0);
    let mut next_kill = next_after(&mut rng, start, settings.kill_every);
    let mut next_power = next_after(&mut rng, start, settings.power_every);
    let mut next_broker = next_after(&mut rng, start, settings.broker_every);
    let mut next_sample = Some(start);
    let mut cycles = Cycles::default();
    let mut samples = Vec::new();
    let mut failure: Option<String> = None;
    // An interrupted run still cleans up (the relay is killed, the mount unmounted) and prints
    // its figures so far.
    let mut sigint = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut sigterm = signal(SignalKind::terminate()).expect("SIGTERM handler");
    eprintln!("{SAMPLE_HEADER}");

    while failure.is_none() {
        let mut step = (end, Step::End);
        for (when, what) in [
            (next_sample, Step::Sample),
            (next_kill, Step::Kill),
            (next_power, Step::Power),
            (next_broker, Step::Broker),
        ] {
            if let Some(when) = when {
                if when < step.0 {
                    step = (when, what);
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep_until(step.0) => {}
            () = interrupted(&mut sigint, &mut sigterm) => {
                failure = Some("interrupted (SIGINT or SIGTERM)".to_owned());
                break;
            }
        }
        match step.1 {
            Step::End => break,
            Step::Sample => {
                let running = relay.as_ref().expect("a relay runs between faults");
                let store_dir = store.clone();
                let store_bytes = tokio::task::spawn_blocking(move || dir_bytes(&store_dir))
                    .await
                    .expect("walk the store");
                // Awaited before the counts are read: no lock is held across an await.
                let outbox = outbox_events(running.admin).await;
                let acked = sent.acked.lock().expect("lock").len();
                let consumed = seen.ids.lock().expect("lock").len();
                let sample = Sample {
                    at_secs: start.elapsed().as_secs(),
                    relay_age_secs: running.started.elapsed().as_secs(),
                    relay_rss: rss_bytes(running.pid()),
                    harness_rss: rss_bytes(std::process::id()),
                    store_bytes,
                    acked,
                    consumed,
                    outbox,
                };
                eprintln!("{}", sample_row(&sample));
                samples.push(sample);
                next_sample = Some(step.0 + Duration::from_secs_f64(settings.sample_every));
            }
            Step::Kill => {
                *target.lock().expect("lock") = None;
                let began = Instant::now();
                relay.take().expect("running").kill();
                match Relay::start(&config, &tally).await {
                    Ok(r) => {
                        *target.lock().expect("lock") = Some(r.addr);
                        relay = Some(r);
                    }
                    Err(e) => failure = Some(format!("after kill -9 #{}: {e}", cycles.kills + 1)),
                }
                cycles.kills += 1;
                cycles.slowest_restart = cycles.slowest_restart.max(began.elapsed());
                next_kill = next_after(&mut rng, Instant::now(), settings.kill_every);
            }
            Step::Power => {
                *target.lock().expect("lock") = None;
                let began = Instant::now();
                let seed = rng.next();
                let model = if rng.next() % 2 == 0 {
                    Metadata::Strict
                } else {
                    Metadata::Ext4Like
                };
                let fs = disk.fs.clone();
                // The cut first (every later operation fails), then the process dies.
                let image = tokio::task::spawn_blocking(move || fs.cut_power(Some(seed)))
                    .await
                    .expect("cut the power");
                relay.take().expect("running").kill();
                let old = disk.mounted.take();
                tokio::task::spawn_blocking(move || drop(old))
                    .await
                    .expect("unmount");
                disk.fs = PowerFs::from_image(image, model);
                disk.mounted = Some(disk.fs.mount(&disk.mountpoint).expect("remount powerfs"));
                cycles.power_cuts += 1;
                if model == Metadata::Strict {
                    cycles.power_cuts_strict += 1;
                }
                eprintln!(
                    "soak: power cut #{} at {} s, torn seed {seed}, remounted {model:?}",
                    cycles.power_cuts,
                    start.elapsed().as_secs()
                );
                match Relay::start(&config, &tally).await {
                    Ok(r) => {
                        *target.lock().expect("lock") = Some(r.addr);
                        relay = Some(r);
                    }
                    Err(e) => {
                        failure = Some(format!(
                            "after power cut #{} (seed {seed}): {e}",
                            cycles.power_cuts
                        ));
                    }
                }
                cycles.slowest_restart = cycles.slowest_restart.max(began.elapsed());
                next_power = next_after(&mut rng, Instant::now(), settings.power_every);
            }
            Step::Broker => {
                let node = node
                    .as_ref()
                    .expect("broker restarts only with a private node");
                node.stop_app().await;
                // The outage itself: the relay keeps answering (durable mode) or answers 503
                // (confirmed) while its publisher reconnects.
                tokio::time::sleep(Duration::from_secs_f64(settings.broker_down)).await;
                node.start_app().await;
                cycles.broker_restarts += 1;
                next_broker = next_after(&mut rng, Instant::now(), settings.broker_every);
            }
        }
    }

    // Stop the load, let the answers in flight come back, then wait for the queue to hold
    // every acknowledged id.
    stop_load(&load_stop, loader, &tracker).await;
    let acked = sent.acked.lock().expect("lock").clone();
    let drain_deadline = Instant::now() + Duration::from_secs(settings.drain_secs);
    let all_seen = || {
        let ids = seen.ids.lock().expect("lock");
        acked.keys().all(|id| ids.contains_key(id))
    };
    while failure.is_none() && !all_seen() && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut outbox_end = None;
    if let Some(running) = relay.as_ref() {
        while Instant::now() < drain_deadline {
            outbox_end = outbox_events(running.admin).await;
            if outbox_end == Some(0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    consumer_stop(&stop, consumer).await;

    let ids = seen.ids.lock().expect("lock").clone();
    let lost: Vec<&String> = acked.keys().filter(|id| !ids.contains_key(*id)).collect();
    let corrupted = acked
        .iter()
        .filter(|(id, digest)| ids.get(*id).is_some_and(|d| d != *digest))
        .count();
    let report = report(
        &settings,
        start.elapsed(),
        &cycles,
        &sent,
        &seen,
        &acked,
        &lost,
        corrupted,
        outbox_end,
        &samples,
        &tally,
        failure.as_deref(),
    );
    eprintln!("{report}");
    if let Some(path) = &settings.report {
        std::fs::write(path, &report).expect("write the report");
    }

    if let Some(r) = relay.take() {
        r.kill();
    }
    drop(disk);
    delete(&broker_url, &exchange, &queue).await;
    drop(node);
    assert!(failure.is_none(), "the soak stopped early: {failure:?}");
    assert!(
        lost.is_empty() && corrupted == 0,
        "{} of {} acknowledged events were lost and {corrupted} corrupted, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
}

async fn interrupted(sigint: &mut Signal, sigterm: &mut Signal) {
    tokio::select! {
        _ = sigint.recv() => {}
        _ = sigterm.recv() => {}
    }
}

async fn stop_load(
    stop: &CancellationToken,
    loader: tokio::task::JoinHandle<()>,
    tracker: &TaskTracker,
) {
    stop.cancel();
    let _ = loader.await;
    tracker.close();
    // Every request has its own deadline, so this ends within it.
    let _ = tokio::time::timeout(REQUEST_DEADLINE * 2, tracker.wait()).await;
}

async fn consumer_stop(stop: &CancellationToken, consumer: tokio::task::JoinHandle<()>) {
    stop.cancel();
    let _ = tokio::time::timeout(BROKER_DEADLINE, consumer).await;
}

#[expect(clippy::too_many_arguments, reason = "one report of one run's figures")]
fn report(
    settings: &Settings,
    elapsed: Duration,
    cycles: &Cycles,
    sent: &Sent,
    seen: &Seen,
    acked: &HashMap<String, u64>,
    lost: &[&String],
    corrupted: usize,
    outbox_end: Option<u64>,
    samples: &[Sample],
    tally: &LogTally,
    failure: Option<&str>,
) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "## soak figures");
    let _ = writeln!(
        w,
        "seed {}, ack {}, rate {}/s, {:.1} min planned, {:.1} min run (load + faults), bodies ~{} B, retain_bodies {}",
        settings.seed,
        settings.ack,
        settings.rate,
        settings.minutes,
        elapsed.as_secs_f64() / 60.0,
        support::load::padded_body("soak.0.0.0", settings.pad).len(),
        settings.retain_bodies,
    );
    let _ = writeln!(
        w,
        "faults: kill -9 {} (mean every {} s), power cuts {} ({} strict, {} ext4-like; mean every {} s), broker restarts {}{}",
        cycles.kills,
        settings.kill_every,
        cycles.power_cuts,
        cycles.power_cuts_strict,
        cycles.power_cuts - cycles.power_cuts_strict,
        settings.power_every,
        cycles.broker_restarts,
        if settings.broker_every > 0.0 {
            format!(
                " (stop_app, {} s down, start_app; mean every {} s, private node)",
                settings.broker_down, settings.broker_every
            )
        } else {
            " (off: shared broker)".to_owned()
        },
    );
    let _ = writeln!(
        w,
        "slowest restart (kill or cut to `listening`): {} ms",
        cycles.slowest_restart.as_millis()
    );
    let statuses = sent.statuses.lock().expect("lock");
    let _ = writeln!(
        w,
        "acknowledged (2xx) {}, lost {}, corrupted {}, duplicates {} (of them flagged redelivered by the broker {}, with other bytes {}); consumer reconnects {}",
        acked.len(),
        lost.len(),
        corrupted,
        seen.duplicates.load(Ordering::Relaxed),
        seen.redelivered_duplicates.load(Ordering::Relaxed),
        seen.differing_duplicates.load(Ordering::Relaxed),
        seen.reconnects.load(Ordering::Relaxed),
    );
    let _ = writeln!(
        w,
        "not acknowledged: by status {:?}, connection errors {}, timeouts {}; not sent: relay restarting {}, {} in flight already {}",
        *statuses,
        sent.errors.load(Ordering::Relaxed),
        sent.timeouts.load(Ordering::Relaxed),
        sent.relay_down.load(Ordering::Relaxed),
        settings.max_in_flight,
        sent.capped.load(Ordering::Relaxed),
    );
    let _ = writeln!(
        w,
        "outbox at the end: {}",
        outbox_end.map_or("unknown".to_owned(), |o| o.to_string())
    );
    if !lost.is_empty() {
        let _ = writeln!(w, "lost, first ids: {:?}", &lost[..lost.len().min(10)]);
    }
    if let Some(failure) = failure {
        let _ = writeln!(w, "STOPPED EARLY: {failure}");
    }
    let rss: Vec<u64> = samples.iter().filter_map(|s| s.relay_rss).collect();
    let store: Vec<u64> = samples.iter().map(|s| s.store_bytes).collect();
    if let (Some(lo), Some(hi)) = (rss.iter().min(), rss.iter().max()) {
        let _ = writeln!(w, "relay RSS {}–{} MiB", mib(*lo), mib(*hi));
    }
    if let (Some(lo), Some(hi)) = (store.iter().min(), store.iter().max()) {
        let _ = writeln!(w, "store size {}–{} MiB", mib(*lo), mib(*hi));
    }
    let _ = writeln!(
        w,
        "\nsamples every {} s (age: seconds since the relay's last start):",
        settings.sample_every
    );
    let _ = writeln!(w, "{SAMPLE_HEADER}");
    for s in samples {
        let _ = writeln!(w, "{}", sample_row(s));
    }
    let _ = writeln!(w, "\nrelay WARN/ERROR log lines, by message:");
    for ((level, message), n) in tally.lock().expect("lock").iter() {
        let _ = writeln!(w, "  {n:>6}  {level} {message}");
    }
    out
}
