//! Throughput and latency of the whole data path, against the real RabbitMQ on this machine.
//!
//! Starts a relay in this process (temp store, its own exchange and queue), sends N distinct
//! signed events over C keep-alive connections, once per ack mode, and prints accepted events/s
//! and p50/p99/max latency. The client shares the machine with the relay and the broker, so the
//! figures are for comparing runs on one machine, not absolute capacity.
//!
//! ```text
//! cargo run --release --example bench -- [--events N] [--connections C] [--body-bytes B] [--mode durable|confirmed|both] [--consume] [--http2]
//! ```

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use gate_relay::app::{self, Listeners};
use gate_relay::config::{Config, Secret};
use gate_relay::signature;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use tokio::net::TcpListener;

mod common;

const BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const SECRET: &str = "whsec_bench_0123456789abcdef0123";

struct Args {
    events: usize,
    connections: usize,
    body_bytes: usize,
    modes: Vec<&'static str>,
    /// Drain the queue with an auto-ack consumer while sending, as partners' workers would.
    consume: bool,
    /// Speak HTTP/2 (prior knowledge) instead of HTTP/1.1.
    http2: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        events: 20_000,
        connections: 32,
        body_bytes: 600,
        modes: vec!["durable", "confirmed"],
        consume: false,
        http2: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--events" => args.events = value()?.parse()?,
            "--connections" => args.connections = value()?.parse()?,
            "--body-bytes" => args.body_bytes = value()?.parse()?,
            "--consume" => args.consume = true,
            "--http2" => args.http2 = true,
            "--mode" => {
                args.modes = match value()?.as_str() {
                    "durable" => vec!["durable"],
                    "confirmed" => vec!["confirmed"],
                    "both" => vec!["durable", "confirmed"],
                    other => bail!("unknown mode {other}"),
                }
            }
            other => bail!("unknown flag {other}"),
        }
    }
    if args.connections == 0 || args.events < args.connections {
        bail!("need at least one connection and one event per connection");
    }
    Ok(args)
}

fn body(id: &str, size: usize) -> String {
    let head = format!(
        r#"{{"id":"{id}","type":"gate_session.completed","created_at":1782475200,"data":{{"pad":""#
    );
    let tail = r#""}}"#;
    let pad = size.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", "x".repeat(pad))
}

async fn run_mode(mode: &str, args: &Args) -> anyhow::Result<()> {
    let broker = Connection::connect(BROKER, ConnectionProperties::default())
        .await
        .context("RabbitMQ at 127.0.0.1:5672")?;
    let channel = broker.create_channel().await?;
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let exchange = format!("gate.bench.{nanos}");
    let queue = format!("gate.bench.{nanos}.q");
    common::declare(&channel, &exchange, &queue).await?;

    let store = tempfile::tempdir()?;
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
max_connections = 4096
[admin]
listen = "127.0.0.1:0"
[store]
path = "{}"
[amqp]
url = "{BROKER}"
exchange = "{exchange}"
max_in_flight = 1024
[delivery]
ack = "{mode}"
[log]
level = "warn"
[[endpoint]]
name = "bench"
path = "/hook"
environment = "live"
secrets = ["{SECRET}"]
"#,
        store.path().display()
    );
    let config = Config::parse(&text, &|_| None)?;
    gate_relay::telemetry::init(config.log.format, &config.log.level);
    let listeners = Listeners {
        webhook: TcpListener::bind("127.0.0.1:0").await?,
        admin: TcpListener::bind("127.0.0.1:0").await?,
    };
    let running = app::start(config, listeners).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !running.broker.is_connected() {
        if Instant::now() > deadline {
            bail!("the relay did not connect to RabbitMQ");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let url = format!("http://{}/hook", running.addr);
    let consumed = if args.consume {
        Some(common::consume(&broker.create_channel().await?, &queue, "bench").await?)
    } else {
        None
    };
    let secret = Secret::new(SECRET.to_owned());
    // Sign up front so the client's HMAC work is not in the measured loop.
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())?;
    let mut work: Vec<Vec<(Bytes, String)>> = Vec::new();
    for c in 0..args.connections {
        // Exactly N in all: the first N mod C connections send one more.
        let per_connection =
            args.events / args.connections + usize::from(c < args.events % args.connections);
        work.push(
            (0..per_connection)
                .map(|i| {
                    let b = body(&format!("evt_{nanos}_{c}_{i}"), args.body_bytes);
                    let sig = signature::sign(&secret, now, b.as_bytes());
                    (Bytes::from(b), sig)
                })
                .collect(),
        );
    }

    let started = Instant::now();
    let mut tasks = Vec::new();
    for requests in work {
        let url = url.clone();
        // One client (and so one keep-alive connection) per simulated sender.
        // No Nagle delay, as real senders set (Go's net/http does by default): HTTP/2 writes
        // HEADERS and DATA separately, and Nagle would hold DATA for the server's delayed ACK.
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1)
            .http2_only(args.http2)
            .build(connector);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(requests.len());
            let mut failures = 0usize;
            for (body, sig) in requests {
                let request = http::Request::post(&url)
                    .header("Gate-Signature", sig)
                    .body(Full::new(body))
                    .expect("valid request");
                let t = Instant::now();
                match client.request(request).await {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        let _ = response.into_body().collect().await;
                        if ok {
                            latencies.push(t.elapsed());
                        } else {
                            failures += 1;
                        }
                    }
                    Err(_) => failures += 1,
                }
            }
            (latencies, failures)
        }));
    }
    let mut latencies = Vec::new();
    let mut failures = 0;
    for task in tasks {
        let (l, f) = task.await?;
        latencies.extend(l);
        failures += f;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let accepted = latencies.len();
    println!(
        "{mode:>9}: {accepted} accepted, {failures} failed in {:.2} s = {:.0} events/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        elapsed.as_secs_f64(),
        accepted as f64 / elapsed.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );

    let flushes = running.metrics.store_flush.get_sample_count();
    let flush_time = running.metrics.store_flush.get_sample_sum();
    println!(
        "{:>9}  {flushes} group commits ({:.1} events each, {:.2} ms each on average)",
        "",
        accepted as f64 / flushes.max(1) as f64,
        flush_time * 1e3 / flushes.max(1) as f64
    );
    // Let the publisher finish (durable mode answers before publishing), then report its lag.
    let drain_start = Instant::now();
    while running.store.outbox_depth().events > 0 && drain_start.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "{:>9}  outbox drained {:.2} s after the last answer; {} events left",
        "",
        drain_start.elapsed().as_secs_f64(),
        running.store.outbox_depth().events
    );
    if let Some(consumed) = consumed {
        let deadline = Instant::now() + Duration::from_secs(60);
        while consumed.load(Ordering::Relaxed) < accepted && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "{:>9}  consumer received {} messages",
            "",
            consumed.load(Ordering::Relaxed)
        );
    }
    running
        .shutdown()
        .await
        .expect("the store flushed at shutdown");
    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    channel
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    println!(
        "gate-relay bench: {} events of {} bytes over {} connections; relay, client and RabbitMQ share {} cores",
        args.events,
        args.body_bytes,
        args.connections,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for mode in &args.modes {
        run_mode(mode, &args).await?;
    }
    Ok(())
}
