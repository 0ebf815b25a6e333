//! Test support: a relay on port 0 with its own sled dir, exchange and queue on the real
//! RabbitMQ; signed-request builders; queue and metric helpers; a TCP proxy to cut the broker.
#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]

pub mod cli;
pub mod load;
pub mod rabbit_node;
pub mod skip;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_lite::StreamExt;
use gate_relay::app::{self, Listeners, Running};
use gate_relay::config::{Config, Secret};
use gate_relay::signature;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub const BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const SECRET: &str = "whsec_test_0123456789abcdef0123";
pub const OLD_SECRET: &str = "whsec_test_old_0123456789abcdef";
pub const PATH: &str = "/webhooks/0gate/test";
/// The second endpoint's path, with [`Options::live_endpoint`].
pub const LIVE_PATH: &str = "/webhooks/0gate/live";
/// Generous bound for anything that should take milliseconds; only reached when a test fails.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs(),
    )
    .expect("fits")
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!(
        "{prefix}.{}.{nanos}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub async fn broker() -> Connection {
    match Connection::connect(BROKER, ConnectionProperties::default()).await {
        Ok(c) => c,
        Err(e) => panic!(
            "RabbitMQ is not reachable at 127.0.0.1:5672 ({e}). Start it with `rabbitmq-server -detached` \
             (install: `apt-get install -y rabbitmq-server`), or run `scripts/test`, which does both."
        ),
    }
}

/// An event body with the given id and type.
pub fn event_body(id: &str, event_type: &str) -> String {
    format!(
        r#"{{"id":"{id}","type":"{event_type}","created_at":{},"data":{{"id":"gs_1","object":"gate_session","mode":"test","status":"completed","amount":"100.00","currency":"EUR"}}}}"#,
        now()
    )
}

pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    signature::sign(&Secret::new(secret.to_owned()), t, body)
}

/// Options for a relay under test.
#[derive(Debug, Clone)]
pub struct Options {
    pub ack: &'static str,
    pub amqp_url: String,
    pub max_body_bytes: usize,
    pub confirm_timeout_ms: u64,
    pub header_read_timeout_ms: u64,
    pub max_outbox_events: u64,
    pub extra_queue_args: Vec<(&'static str, AMQPValue)>,
    pub wait_for_broker: bool,
    /// Bearer token the admin API requires (read from `ADMIN_TOKEN`).
    pub admin_token: Option<String>,
    /// `[server.tls]` certificate and key files.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Read the endpoint's secrets from this file instead of inline.
    pub secrets_file: Option<std::path::PathBuf>,
    /// `[amqp] ca_path`, for amqps:// through a test TLS terminator.
    pub amqp_ca_path: Option<std::path::PathBuf>,
    pub max_connections: usize,
    /// A second endpoint, `live` at [`LIVE_PATH`], same secrets, environment `live`.
    pub live_endpoint: bool,
    /// `[amqp] park_after_attempts`.
    pub park_after_attempts: u32,
    /// Further `[server]` lines, verbatim (keys a test needs that have no field here).
    pub server_extra: String,
    /// `[amqp] urls` (several broker nodes) instead of `amqp_url`, when not empty.
    pub amqp_urls: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            ack: "confirmed",
            amqp_url: BROKER.to_owned(),
            max_body_bytes: 64 * 1024,
            confirm_timeout_ms: 5_000,
            header_read_timeout_ms: 10_000,
            max_outbox_events: 100_000,
            extra_queue_args: Vec::new(),
            wait_for_broker: true,
            admin_token: None,
            tls: None,
            secrets_file: None,
            amqp_ca_path: None,
            max_connections: 1024,
            live_endpoint: false,
            park_after_attempts: 20,
            server_extra: String::new(),
            amqp_urls: Vec::new(),
        }
    }
}

/// What arrived on a test's queue for a set of acknowledged events.
#[derive(Debug)]
pub struct Arrivals {
    /// Acknowledged ids that never arrived.
    pub missing: Vec<String>,
    /// Messages beyond the first of each id.
    pub duplicates: usize,
}

/// A durable topic exchange, as the relay declares it (again, after a test deleted it).
pub async fn declare_exchange(channel: &Channel, exchange: &str) {
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare exchange");
}

/// The exchange and queue a test owns.
pub struct Topology {
    pub exchange: String,
    pub queue: String,
    pub channel: Channel,
    _connection: Connection,
}

impl Topology {
    /// Declares a durable topic exchange and a queue bound to everything on it.
    pub async fn declare(name: &str, extra_queue_args: &[(&'static str, AMQPValue)]) -> Self {
        Self::declare_on(broker().await, name, extra_queue_args).await
    }

    /// [`Topology::declare`] through `connection`: on another broker, such as a private node.
    pub async fn declare_on(
        connection: Connection,
        name: &str,
        extra_queue_args: &[(&'static str, AMQPValue)],
    ) -> Self {
        let channel = connection.create_channel().await.expect("channel");
        let exchange = unique(&format!("gate.test.{name}"));
        let queue = unique(&format!("gate.test.{name}.q"));
        declare_exchange(&channel, &exchange).await;
        let mut args = FieldTable::default();
        // Leftovers of a crashed test run disappear after a minute unused.
        args.insert("x-expires".into(), AMQPValue::LongInt(60_000));
        for (k, v) in extra_queue_args {
            args.insert((*k).into(), v.clone());
        }
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args,
            )
            .await
            .expect("declare queue");
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind queue");
        Self {
            exchange,
            queue,
            channel,
            _connection: connection,
        }
    }

    /// Consumes everything that arrives until `quiet` passes with nothing new, or `want`
    /// messages have arrived.
    pub async fn collect(&self, want: usize, quiet: Duration) -> Vec<lapin::message::Delivery> {
        let mut consumer = self
            .channel
            .basic_consume(
                self.queue.as_str().into(),
                unique("c").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume");
        let mut got = Vec::new();
        while got.len() < want {
            match tokio::time::timeout(quiet, consumer.next()).await {
                Ok(Some(Ok(delivery))) => {
                    delivery.ack(BasicAckOptions::default()).await.expect("ack");
                    got.push(delivery);
                }
                Ok(Some(Err(e))) => panic!("consumer failed: {e}"),
                Ok(None) | Err(_) => break,
            }
        }
        let _ = self
            .channel
            .basic_cancel(consumer.tag().as_str().into(), Default::default())
            .await;
        // What the broker pushed before it took the cancel is still in the stream, unacked: left
        // there it would never be delivered again while this channel lives (a power_loss run
        // under load "lost" 38 events that were published, a batch that arrived just as a quiet
        // period ended). Take it while wanted, give the rest back to the queue.
        while let Ok(Some(Ok(delivery))) = tokio::time::timeout(quiet, consumer.next()).await {
            if got.len() < want {
                delivery.ack(BasicAckOptions::default()).await.expect("ack");
                got.push(delivery);
            } else {
                let requeue = lapin::options::BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                };
                delivery.nack(requeue).await.expect("nack");
            }
        }
        got
    }

    /// Messages in the queue now (ready, not yet delivered), exactly as the broker counts them.
    pub async fn queue_len(&self) -> u32 {
        self.channel
            .queue_declare(
                self.queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("passive declare")
            .message_count()
    }

    /// Message ids in the queue, collected until `quiet` passes with nothing new.
    pub async fn message_ids(&self, quiet: Duration) -> Vec<String> {
        self.collect(usize::MAX, quiet)
            .await
            .iter()
            .map(|d| {
                d.properties
                    .message_id()
                    .as_ref()
                    .expect("message_id set")
                    .to_string()
            })
            .collect()
    }

    /// Consumes until every id in `acked` has arrived (bounded by [`WAIT`]), then for `linger`
    /// more, so late redeliveries count as duplicates. Panics if an acknowledged event arrived
    /// with other bytes than it was sent with; the caller decides what `missing` means.
    pub async fn arrivals(&self, acked: &HashMap<String, Bytes>, linger: Duration) -> Arrivals {
        let mut seen: HashMap<String, (Vec<u8>, usize)> = HashMap::new();
        let take = |seen: &mut HashMap<_, _>, deliveries: Vec<lapin::message::Delivery>| {
            for d in deliveries {
                let id = d.properties.message_id().as_ref().expect("message_id set");
                seen.entry(id.to_string()).or_insert((d.data, 0)).1 += 1;
            }
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        while !acked.keys().all(|id| seen.contains_key(id))
            && tokio::time::Instant::now() < deadline
        {
            take(
                &mut seen,
                self.collect(usize::MAX, Duration::from_millis(300)).await,
            );
        }
        if !linger.is_zero() {
            take(&mut seen, self.collect(usize::MAX, linger).await);
        }
        for (id, body) in acked {
            if let Some((data, _)) = seen.get(id) {
                assert!(
                    data == body.as_ref(),
                    "event {id} arrived with other bytes than it was sent with"
                );
            }
        }
        Arrivals {
            missing: acked
                .keys()
                .filter(|id| !seen.contains_key(*id))
                .cloned()
                .collect(),
            duplicates: seen.values().map(|(_, n)| n - 1).sum(),
        }
    }

    /// Routes to the test's queue only what matches `routing_key` (instead of `#`); `None`
    /// routes nothing, so every publish comes back as a return.
    pub async fn route_only(&self, routing_key: Option<&str>) {
        self.channel
            .queue_unbind(
                self.queue.as_str().into(),
                self.exchange.as_str().into(),
                "#".into(),
                FieldTable::default(),
            )
            .await
            .expect("unbind");
        if let Some(routing_key) = routing_key {
            self.bind(routing_key).await;
        }
    }

    /// Also routes `routing_key` to the test's queue.
    pub async fn bind(&self, routing_key: &str) {
        self.channel
            .queue_bind(
                self.queue.as_str().into(),
                self.exchange.as_str().into(),
                routing_key.into(),
                lapin::options::QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind");
    }

    pub async fn delete(&self) {
        let _ = self
            .channel
            .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
            .await;
        let _ = self
            .channel
            .exchange_delete(
                self.exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await;
    }
}

pub fn config_text(
    options: &Options,
    exchange: &str,
    store: &std::path::Path,
    listen: &str,
    admin: &str,
) -> String {
    format!(
        r#"
[server]
listen = "{listen}"
max_body_bytes = {max_body}
header_read_timeout_ms = {header_timeout}
shutdown_grace_ms = 5000
max_connections = {max_connections}
{server_extra}
{tls}
[admin]
listen = "{admin}"
{token}
[store]
path = "{store}"
max_outbox_events = {max_outbox}
[amqp]
{url}
exchange = "{exchange}"
connect_timeout_ms = 2000
publish_confirm_timeout_ms = 3000
reconnect_max_backoff_ms = 500
park_after_attempts = {park_after}
{amqp_ca}
[delivery]
ack = "{ack}"
confirm_timeout_ms = {confirm_timeout}
retry_after_secs = 1
[log]
format = "json"
level = "info"
[[endpoint]]
name = "test"
path = "{PATH}"
environment = "test"
{secrets}
tolerance_secs = 300
{live}
"#,
        live = if options.live_endpoint {
            format!(
                "[[endpoint]]\nname = \"live\"\npath = \"{LIVE_PATH}\"\nenvironment = \"live\"\nsecrets = [\"{SECRET}\"]\ntolerance_secs = 300"
            )
        } else {
            String::new()
        },
        max_body = options.max_body_bytes,
        park_after = options.park_after_attempts,
        max_connections = options.max_connections,
        server_extra = options.server_extra,
        header_timeout = options.header_read_timeout_ms,
        store = store.display(),
        max_outbox = options.max_outbox_events,
        url = if options.amqp_urls.is_empty() {
            format!("url = \"{}\"", options.amqp_url)
        } else {
            format!("urls = {:?}", options.amqp_urls)
        },
        ack = options.ack,
        confirm_timeout = options.confirm_timeout_ms,
        amqp_ca = options
            .amqp_ca_path
            .as_ref()
            .map_or(String::new(), |p| format!("ca_path = \"{}\"", p.display())),
        tls = options.tls.as_ref().map_or(String::new(), |(cert, key)| {
            format!(
                "[server.tls]\ncert_path = \"{}\"\nkey_path = \"{}\"",
                cert.display(),
                key.display()
            )
        }),
        secrets = options.secrets_file.as_ref().map_or_else(
            || format!("secrets = [\"{SECRET}\", \"{OLD_SECRET}\"]"),
            |path| format!("secrets_file = \"{}\"", path.display())
        ),
        token = if options.admin_token.is_some() {
            "token_env = \"ADMIN_TOKEN\""
        } else {
            ""
        },
    )
}

/// Writes `dir/config.toml` for the real binary: ports 0, store in `dir/data`.
pub fn write_config(
    options: &Options,
    exchange: &str,
    dir: &std::path::Path,
) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    let text = config_text(
        options,
        exchange,
        &dir.join("data"),
        "127.0.0.1:0",
        "127.0.0.1:0",
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// What a POST returned.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: serde_json::Value,
    pub headers: http::HeaderMap,
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub async fn post(client: &HttpClient, url: &str, body: Bytes, signature: Option<&str>) -> Reply {
    let mut request = http::Request::post(url).header("content-type", "application/json");
    if let Some(sig) = signature {
        request = request.header("Gate-Signature", sig);
    }
    let request = request.body(Full::new(body)).expect("request");
    let response = tokio::time::timeout(WAIT, client.request(request))
        .await
        .expect("relay answered in time")
        .expect("request sent");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status.as_u16(),
        body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        headers: parts.headers,
    }
}

/// A relay running in this process.
pub struct TestApp {
    pub running: Option<Running>,
    pub addr: SocketAddr,
    pub topology: Topology,
    pub client: HttpClient,
    pub options: Options,
    pub store_dir: Arc<tempfile::TempDir>,
}

impl TestApp {
    pub async fn spawn(name: &str, options: Options) -> Self {
        let topology = Topology::declare(name, &options.extra_queue_args).await;
        let store_dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        Self::start(topology, store_dir, options).await
    }

    /// Starts a relay on an existing topology and store (for restarts).
    pub async fn start(
        topology: Topology,
        store_dir: Arc<tempfile::TempDir>,
        options: Options,
    ) -> Self {
        let text = config_text(
            &options,
            &topology.exchange,
            store_dir.path(),
            "127.0.0.1:0",
            "127.0.0.1:0",
        );
        let token = options.admin_token.clone();
        let env = move |name: &str| {
            if name == "ADMIN_TOKEN" {
                token.clone()
            } else {
                None
            }
        };
        let read_file = |path: &std::path::Path| std::fs::read_to_string(path);
        let config =
            Config::parse_with_files(&text, &env, &read_file).expect("test config is valid");
        let listeners = Listeners {
            webhook: TcpListener::bind("127.0.0.1:0").await.expect("bind"),
            admin: TcpListener::bind("127.0.0.1:0").await.expect("bind admin"),
        };
        let running = app::start(config, listeners).await.expect("relay starts");
        if options.wait_for_broker {
            let broker = Arc::clone(&running.broker);
            eventually("the relay connects to RabbitMQ", || broker.is_connected()).await;
        }
        Self {
            addr: running.addr,
            running: Some(running),
            topology,
            client: http_client(),
            options,
            store_dir,
        }
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!(
            "http://{}{path}",
            self.running.as_ref().expect("running").admin_addr
        )
    }

    /// An admin API call; returns status and JSON body.
    pub async fn admin(
        &self,
        method: http::Method,
        path: &str,
        token: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let mut request = http::Request::builder()
            .method(method)
            .uri(self.admin_url(path));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request.body(Full::new(Bytes::new())).expect("request");
        let response = tokio::time::timeout(WAIT, self.client.request(request))
            .await
            .expect("admin answered in time")
            .expect("request sent");
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (
            status,
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned().into()),
        )
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Posts `body` signed now with the current secret.
    pub async fn post_event(&self, body: &str) -> Reply {
        let sig = sign(SECRET, now(), body.as_bytes());
        self.post_raw(PATH, Bytes::from(body.to_owned()), Some(&sig))
            .await
    }

    pub async fn post_raw(&self, path: &str, body: Bytes, signature: Option<&str>) -> Reply {
        post(&self.client, &self.url(path), body, signature).await
    }

    /// Connections (or HTTP/2 streams) on the webhook listener that hyper refused before a
    /// handler ran, for `reason`.
    pub fn refused(&self, reason: &str) -> f64 {
        self.metric(
            "gate_relay_connections_refused_total",
            &[("listener", "webhook"), ("reason", reason)],
        )
    }

    /// A fresh signed delivery gets 200 within 5 s: far below "never" (a slot held for good),
    /// with room for a loaded machine.
    pub async fn assert_still_serving(&self) {
        let started = std::time::Instant::now();
        let reply = self
            .post_event(&event_body(&unique("evt"), "gate_session.completed"))
            .await;
        assert_eq!(reply.status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    /// The value of a metric sample, e.g. `metric("gate_relay_requests_total", &[("outcome", "accepted")])`.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let running = self.running.as_ref().expect("running");
        running
            .metrics
            .registry
            .gather()
            .iter()
            .filter(|family| family.name() == name)
            .flat_map(|family| {
                let counter = family.get_field_type() == prometheus::proto::MetricType::COUNTER;
                family.get_metric().iter().map(move |m| (counter, m))
            })
            .filter(|(_, m)| {
                labels.iter().all(|(k, v)| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == *k && l.value() == *v)
                })
            })
            .map(|(counter, m)| {
                if counter {
                    m.get_counter().value()
                } else {
                    m.get_gauge().value()
                }
            })
            .sum()
    }

    /// Waits until the relay has every stored event confirmed by the broker.
    pub async fn outbox_drained(&self) {
        let store = Arc::clone(&self.running.as_ref().expect("running").store);
        eventually("the outbox is empty", || store.outbox_depth().events == 0).await;
    }

    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running
                .shutdown()
                .await
                .expect("shutdown flushes the store");
        }
    }
}

/// Polls `condition` every few milliseconds until it holds; panics after [`WAIT`].
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A TCP proxy in front of RabbitMQ that a test can cut, blackhole and restore.
pub struct BrokerProxy {
    pub addr: SocketAddr,
    up: watch::Sender<bool>,
    /// False while blackholed: connections stay open but no byte is passed on.
    passing: watch::Sender<bool>,
    /// Local ports of the proxy's connections to the broker (the broker's peer ports).
    upstream_ports: Arc<std::sync::Mutex<Vec<u16>>>,
    task: tokio::task::JoinHandle<()>,
}

/// Copies `from` to `to`, holding each read until `passing` is true; ends when either side
/// closes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut passing: watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if passing.wait_for(|p| *p).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl BrokerProxy {
    pub async fn start() -> Self {
        Self::start_to("127.0.0.1:5672").await
    }

    /// A proxy in front of the broker at `target` (a private node).
    pub async fn start_to(target: &str) -> Self {
        let target = target.to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let (up, up_rx) = watch::channel(true);
        let (passing, passing_rx) = watch::channel(true);
        let upstream_ports = Arc::new(std::sync::Mutex::new(Vec::new()));
        let ports = Arc::clone(&upstream_ports);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if !*up_rx.borrow() {
                    drop(client); // refused while down
                    continue;
                }
                let mut up_rx = up_rx.clone();
                let (passing_a, passing_b) = (passing_rx.clone(), passing_rx.clone());
                let target = target.clone();
                let ports = Arc::clone(&ports);
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    if let Ok(local) = server.local_addr() {
                        ports.lock().expect("ports lock").push(local.port());
                    }
                    let (client_r, client_w) = client.into_split();
                    let (server_r, server_w) = server.into_split();
                    tokio::select! {
                        () = pump(client_r, server_w, passing_a) => {}
                        () = pump(server_r, client_w, passing_b) => {}
                        _ = up_rx.wait_for(|up| !*up) => {} // cut: both sockets drop
                    }
                });
            }
        });
        Self {
            addr,
            up,
            passing,
            upstream_ports,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    /// The peer port the broker sees for the newest connection through this proxy.
    pub fn latest_upstream_port(&self) -> Option<u16> {
        self.upstream_ports
            .lock()
            .expect("ports lock")
            .last()
            .copied()
    }

    /// The link stops passing bytes but every connection stays open (a silent network).
    pub fn blackhole(&self) {
        self.passing.send_replace(false);
    }

    pub fn restore(&self) {
        self.passing.send_replace(true);
        self.up.send_replace(true);
    }
}

impl Drop for BrokerProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The real binary, started on a config file, with its log lines as they come.
pub struct RelayProcess {
    pub child: KillOnDrop,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// Every stdout line after `listening`, in order, until the relay exits.
    pub lines: std::sync::mpsc::Receiver<String>,
    /// The lines logged before `listening` (opening the store, connecting).
    pub startup: Vec<String>,
}

impl RelayProcess {
    /// Starts `gate-relay serve` and waits for its `listening` log line, which carries the
    /// bound address (the config listens on port 0).
    pub fn start(config: &std::path::Path) -> Self {
        Self::start_with_env(config, &[])
    }

    /// As `start`, with extra environment variables (a failpoint).
    pub fn start_with_env(config: &std::path::Path, env: &[(&str, &str)]) -> Self {
        use std::io::BufRead;
        let mut child = KillOnDrop(
            std::process::Command::new(env!("CARGO_BIN_EXE_gate-relay"))
                .args(["serve", "--config"])
                .arg(config)
                .envs(env.iter().copied())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn gate-relay"),
        );
        let (tx, lines) = std::sync::mpsc::channel();
        // Both streams are read to the end so the relay never blocks on a full pipe.
        let stderr = child.0.stderr.take().expect("stderr piped");
        let err_tx = tx.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = err_tx.send(line);
            }
        });
        let stdout = child.0.stdout.take().expect("stdout piped");
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let mut startup = Vec::new();
        let (addr, admin_addr) = loop {
            let line = lines.recv_timeout(WAIT).unwrap_or_else(|_| {
                panic!(
                    "gate-relay logged no `listening`; it said:\n{}",
                    startup.join("\n")
                )
            });
            startup.push(line.clone());
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if v["message"] == "listening" {
                    let field = |name: &str| -> SocketAddr {
                        v[name]
                            .as_str()
                            .unwrap_or_else(|| panic!("{name} field"))
                            .parse()
                            .expect("socket address")
                    };
                    break (field("addr"), field("admin_addr"));
                }
            }
        };
        Self {
            child,
            addr,
            admin_addr,
            lines,
            startup,
        }
    }

    /// Sends a signal by name (`TERM`, `HUP`) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{name}"), self.child.0.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the next log line containing `text`; returns it.
    pub fn wait_for_line(&self, text: &str) -> String {
        // The last lines seen, to show what the relay said instead when the line never comes.
        let mut seen = std::collections::VecDeque::new();
        loop {
            let Ok(line) = self.lines.recv_timeout(WAIT) else {
                let seen: Vec<_> = seen.into_iter().collect();
                panic!(
                    "no log line with {text:?}; the last lines were:\n{}",
                    seen.join("\n")
                );
            };
            if line.contains(text) {
                return line;
            }
            if seen.len() == 20 {
                seen.pop_front();
            }
            seen.push_back(line);
        }
    }
}

/// A child process killed when dropped, so a failing test never leaves a relay running (it
/// would hold the test harness's output pipe open).
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` on a relay's admin listener (one started as a process, where there is no
/// [`TestApp`]); the body.
pub async fn admin_get(admin: SocketAddr, path: &str) -> Bytes {
    let url: http::Uri = format!("http://{admin}{path}").parse().expect("uri");
    let response = tokio::time::timeout(WAIT, http_client().get(url))
        .await
        .expect("admin answered in time")
        .expect("admin answered");
    http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("body")
        .to_bytes()
}

/// Polls `/outbox` on a relay's admin listener until it holds no event (bounded by [`WAIT`]).
pub async fn assert_outbox_drains(admin: SocketAddr) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = serde_json::Value::Null;
    while tokio::time::Instant::now() < deadline {
        last = serde_json::from_slice(&admin_get(admin, "/outbox").await).expect("json");
        if last["events"] == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the outbox never drained after the restart: {last}");
}
