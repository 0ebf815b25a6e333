//! A load generator for a relay running as its own process, so the relay's figures are its own:
//! it sends signed events to `--target`, and reads the relay's CPU time and memory from
//! `/proc/<relay-pid>` (and RabbitMQ's, from its `beam.smp`) before and after the run.
//!
//! Closed loop (`--rate 0`, the default): C connections each send as fast as answers come back,
//! for throughput. Open loop (`--rate R`): requests are due at a fixed total rate R, and latency
//! is measured from when a request was due, not from when it was sent, so a stalled relay shows
//! up in the percentiles instead of slowing the load down (no coordinated omission).
//!
//! Before sending it declares `--exchange` (as the relay does) and a queue bound to it, so every
//! event has a home; it waits for the relay's `/readyz`, and after the run for an empty outbox,
//! then deletes the queue and exchange. `scripts/bench` starts a relay and runs this against it.
//!
//! ```text
//! cargo run --release --example loadgen -- --target URL --admin URL --exchange X --secret-env VAR
//!     [--relay-pid PID] [--events N] [--connections C] [--body-bytes B] [--rate R] [--label L]
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use gate_relay::config::Secret;
use gate_relay::signature;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};

mod common;

const BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

struct Args {
    target: String,
    admin: String,
    exchange: String,
    secret: Secret,
    relay_pid: Option<u32>,
    events: usize,
    connections: usize,
    body_bytes: usize,
    /// Events per second in all; 0 for a closed loop.
    rate: f64,
    label: String,
}

fn parse_args() -> anyhow::Result<Args> {
    let (mut target, mut admin, mut exchange, mut secret) = (None, None, None, None);
    let mut args = Args {
        target: String::new(),
        admin: String::new(),
        exchange: String::new(),
        secret: Secret::new(String::new()),
        relay_pid: None,
        events: 20_000,
        connections: 32,
        body_bytes: 600,
        rate: 0.0,
        label: "run".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--target" => target = Some(value()?),
            "--admin" => admin = Some(value()?),
            "--exchange" => exchange = Some(value()?),
            "--secret-env" => {
                let var = value()?;
                secret = Some(std::env::var(&var).with_context(|| format!("{var} is not set"))?);
            }
            "--relay-pid" => args.relay_pid = Some(value()?.parse()?),
            "--events" => args.events = value()?.parse()?,
            "--connections" => args.connections = value()?.parse()?,
            "--body-bytes" => args.body_bytes = value()?.parse()?,
            "--rate" => args.rate = value()?.parse()?,
            "--label" => args.label = value()?,
            other => bail!("unknown flag {other}"),
        }
    }
    args.target = target.context("--target is required")?;
    args.admin = admin.context("--admin is required")?;
    args.exchange = exchange.context("--exchange is required")?;
    args.secret = Secret::new(secret.context("--secret-env is required")?);
    if args.connections == 0 || args.events < args.connections {
        bail!("need at least one connection and one event per connection");
    }
    Ok(args)
}

/// A 0Gate-shaped envelope of about `size` bytes.
fn body(id: &str, size: usize) -> String {
    let head = format!(
        r#"{{"id":"{id}","type":"gate_session.completed","created_at":1782475200,"data":{{"id":"gs_{id}","object":"gate_session","status":"completed","metadata":{{"order_id":"ord_{id}"}},"pad":""#
    );
    let tail = r#""}}"#;
    let pad = size.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", "x".repeat(pad))
}

/// CPU time (user, system) of a process and all its threads, from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> anyhow::Result<(Duration, Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after `) state`.
    let ticks =
        |i: usize| -> anyhow::Result<u64> { Ok(fields.get(i).context("short stat")?.parse()?) };
    let per_tick = Duration::from_secs(1) / clock_ticks_per_second()?;
    Ok((
        per_tick * u32::try_from(ticks(11)?)?,
        per_tick * u32::try_from(ticks(12)?)?,
    ))
}

fn clock_ticks_per_second() -> anyhow::Result<u32> {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()?;
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

/// A `/proc/<pid>/status` value in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field}"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("no value")?
        .parse()?)
}

/// RabbitMQ's Erlang VM, to report the broker's CPU per event beside the relay's.
fn broker_pid() -> Option<u32> {
    let out = std::process::Command::new("pgrep")
        .args(["-o", "beam.smp"])
        .output()
        .ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    // No Nagle delay, as real senders set (Go's net/http does by default).
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build(connector)
}

async fn get_json(client: &HttpClient, url: &str) -> anyhow::Result<(u16, serde_json::Value)> {
    let response = client.get(url.parse()?).await?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, serde_json::from_slice(&bytes).unwrap_or_default()))
}

/// Polls `/readyz` until the relay is ready, at most 30 s.
async fn wait_ready(client: &HttpClient, admin: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, _)) = get_json(client, &format!("{admin}/readyz")).await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the relay at {admin} was not ready within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `/outbox` until it is empty, at most 120 s; returns how long that took.
async fn wait_drained(client: &HttpClient, admin: &str) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let (_, outbox) = get_json(client, &format!("{admin}/outbox")).await?;
        if outbox["events"].as_u64() == Some(0) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(120) {
            bail!("the outbox did not drain within 120 s: {outbox}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Sent {
    latencies: Vec<Duration>,
    failures: usize,
}

/// One connection's share: every event whose number it draws from `next`, until `events`.
/// With a rate, event k is due at `start + k / rate`, and its latency counts from then.
async fn sender(args: Arc<Args>, next: Arc<AtomicU64>, run: String, start: Instant) -> Sent {
    let client = client();
    let mut sent = Sent {
        latencies: Vec::new(),
        failures: 0,
    };
    loop {
        let k = next.fetch_add(1, Ordering::Relaxed);
        if k >= args.events as u64 {
            return sent;
        }
        let due = if args.rate > 0.0 {
            let due = start + Duration::from_secs_f64(k as f64 / args.rate);
            tokio::time::sleep_until(due.into()).await;
            due
        } else {
            Instant::now()
        };
        let b = body(&format!("evt_{run}_{k}"), args.body_bytes);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let sig = signature::sign(&args.secret, i64::try_from(now).unwrap_or(0), b.as_bytes());
        let request = http::Request::post(&args.target)
            .header("Gate-Signature", sig)
            .body(Full::new(Bytes::from(b)))
            .expect("valid request");
        match client.request(request).await {
            Ok(response) => {
                let ok = response.status().is_success();
                let _ = response.into_body().collect().await;
                if ok {
                    sent.latencies.push(due.elapsed());
                } else {
                    sent.failures += 1;
                }
            }
            Err(_) => sent.failures += 1,
        }
    }
}

struct Usage {
    relay: Option<(Duration, Duration)>,
    broker: Option<(Duration, Duration)>,
}

fn usage(args: &Args, broker: Option<u32>) -> Usage {
    Usage {
        relay: args.relay_pid.and_then(|p| cpu_time(p).ok()),
        broker: broker.and_then(|p| cpu_time(p).ok()),
    }
}

fn per_event(
    before: Option<(Duration, Duration)>,
    after: Option<(Duration, Duration)>,
    n: usize,
) -> String {
    match (before, after) {
        (Some((u0, s0)), Some((u1, s1))) if n > 0 => {
            let (user, sys) = (u1.saturating_sub(u0), s1.saturating_sub(s0));
            let us = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
            format!(
                "{:.0} µs (user {:.0}, sys {:.0})",
                us(user + sys),
                us(user),
                us(sys)
            )
        }
        _ => "n/a".into(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(parse_args()?);
    let run = format!(
        "{}",
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos()
    );
    let queue = format!("{}.loadgen.{run}", args.exchange);
    let broker = Connection::connect(BROKER, ConnectionProperties::default())
        .await
        .context("RabbitMQ at 127.0.0.1:5672")?;
    let channel = broker.create_channel().await?;
    common::declare(&channel, &args.exchange, &queue).await?;
    let consumed = common::consume(&channel, &queue, "loadgen").await?;
    let http = client();
    wait_ready(&http, &args.admin).await?;

    // Peak RSS over the run, sampled: VmHWM would include the relay's whole life.
    let peak_rss = Arc::new(AtomicU64::new(0));
    let sampler = args.relay_pid.map(|pid| {
        let peak = Arc::clone(&peak_rss);
        tokio::spawn(async move {
            loop {
                if let Ok(kib) = status_kib(pid, "VmRSS:") {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });
    let beam = broker_pid();
    let before = usage(&args, beam);
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..args.connections)
        .map(|_| {
            tokio::spawn(sender(
                Arc::clone(&args),
                Arc::clone(&next),
                run.clone(),
                start,
            ))
        })
        .collect();
    let mut latencies = Vec::with_capacity(args.events);
    let mut failures = 0;
    for task in tasks {
        let sent = task.await?;
        latencies.extend(sent.latencies);
        failures += sent.failures;
    }
    let elapsed = start.elapsed();
    let drained = wait_drained(&http, &args.admin).await?;
    // CPU counted until the outbox drained: in durable mode publishing trails the answers, and
    // its cost belongs to the events.
    let after = usage(&args, beam);
    if let Some(sampler) = sampler {
        sampler.abort();
    }
    latencies.sort();
    let accepted = latencies.len();
    let pct = |p: f64| {
        latencies
            .get(((accepted as f64 * p) as usize).min(accepted.saturating_sub(1)))
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
            * 1e3
    };
    println!(
        "{}: {accepted} accepted, {failures} failed in {:.2} s = {:.0} events/s{}; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        args.label,
        elapsed.as_secs_f64(),
        accepted as f64 / elapsed.as_secs_f64(),
        if args.rate > 0.0 {
            format!(" (open loop, {} /s due)", args.rate)
        } else {
            String::new()
        },
        pct(0.50),
        pct(0.99),
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    println!(
        "{}: relay CPU per event {}; RabbitMQ CPU per event {}; relay peak RSS {:.1} MiB; outbox drained {:.2} s after the last answer",
        args.label,
        per_event(before.relay, after.relay, accepted),
        per_event(before.broker, after.broker, accepted),
        peak_rss.load(Ordering::Relaxed) as f64 / 1024.0,
        drained.as_secs_f64(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while consumed.load(Ordering::Relaxed) < accepted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "{}: consumer received {} messages",
        args.label,
        consumed.load(Ordering::Relaxed)
    );
    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    channel
        .exchange_delete(
            args.exchange.as_str().into(),
            ExchangeDeleteOptions::default(),
        )
        .await?;
    Ok(())
}
