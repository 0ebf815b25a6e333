//! The HTTP edge against hostile senders: what an unauthenticated client can make the relay hold
//! (body bytes, header bytes, idle connections), and odd framing. Every bad input gets a clear
//! 4xx or 503, is counted, never reaches the queue, and the relay keeps serving.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use support::{Options, PATH, SECRET, TestApp, event_body, now, sign, unique};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Far below the default request deadline (9 s): an answer this fast did not wait for a body.
const EARLY: Duration = Duration::from_secs(2);

/// Connects, writes `bytes`, and reads until one response with its JSON body has arrived, the
/// server closes, or [`support::WAIT`] passes. Returns what arrived.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    read_response(&mut stream).await
}

async fn read_response(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> String {
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            let text = String::from_utf8_lossy(&buf);
            if let Some(end) = text.find("\r\n\r\n") {
                let rest = &text[end + 4..];
                let interim = text.starts_with("HTTP/1.1 100");
                if !interim && (rest.ends_with('}') || text.contains("content-length: 0")) {
                    break;
                }
                if interim && rest.contains("\r\n\r\n") && rest.ends_with('}') {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(support::WAIT, read).await;
    String::from_utf8_lossy(&buf).into_owned()
}

fn head(path: &str, signature: Option<&str>, extra: &str) -> String {
    let signature = signature.map_or(String::new(), |s| format!("gate-signature: {s}\r\n"));
    format!(
        "POST {path} HTTP/1.1\r\nhost: relay\r\ncontent-type: application/json\r\n{signature}{extra}\r\n"
    )
}

fn outcome(app: &TestApp, outcome: &str) -> f64 {
    app.metric("gate_relay_requests_total", &[("outcome", outcome)])
}

#[tokio::test]
async fn a_missing_malformed_or_stale_signature_is_refused_before_the_body_is_read() {
    let mut app = TestApp::spawn("early", Options::default()).await;
    let body = event_body(&unique("evt"), "gate_session.completed");
    let stale = sign(SECRET, now() - 3_600, body.as_bytes());
    // Each declares a 60 KB body and sends none of it: only an answer that did not wait for the
    // body can arrive before the request deadline.
    let cases: [(Option<&str>, &str, &str); 4] = [
        (None, "HTTP/1.1 400", "missing_header"),
        (Some("garbage"), "HTTP/1.1 400", "malformed_header"),
        (Some(&stale), "HTTP/1.1 401", "stale_timestamp"),
        (Some("t=1,v1=zz"), "HTTP/1.1 400", "malformed_header"),
    ];
    for (signature, status, label) in cases {
        let before = outcome(&app, label);
        let started = Instant::now();
        let response = exchange(
            app.addr,
            head(PATH, signature, "content-length: 60000\r\n").as_bytes(),
        )
        .await;
        assert!(
            response.starts_with(status),
            "{signature:?}: expected {status}, got {response:?}"
        );
        assert!(
            started.elapsed() < EARLY,
            "{signature:?}: answered after {:?}, so it waited for the body",
            started.elapsed()
        );
        assert_eq!(outcome(&app, label), before + 1.0, "{label} counted");
    }
    assert_eq!(app.topology.queue_len().await, 0);
    assert_eq!(app.post_event(&body).await.status, 200, "still serving");
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn body_bytes_in_flight_are_bounded_as_a_whole_with_503_and_retry_after() {
    let mut app = TestApp::spawn(
        "budget",
        Options {
            max_body_bytes: 64 * 1024,
            server_extra: "max_body_bytes_in_flight = 100000".to_owned(),
            ..Options::default()
        },
    )
    .await;
    // A well-signed delivery that declares 64 KiB and stalls holds 64 KiB of the budget.
    let body = event_body(&unique("evt"), "gate_session.completed");
    let signature = sign(SECRET, now(), body.as_bytes());
    let mut stalled = TcpStream::connect(app.addr).await.expect("connect");
    stalled
        .write_all(head(PATH, Some(&signature), "content-length: 65536\r\n").as_bytes())
        .await
        .expect("write");
    stalled.write_all(b"{\"id\":").await.expect("write");
    support::eventually("the stalled body holds its reservation", || {
        app.metric("gate_relay_body_bytes_in_flight", &[]) == 65_536.0
    })
    .await;

    // Another declared 64 KiB does not fit: 503 at once, before its body is read.
    let response = exchange(
        app.addr,
        head(PATH, Some(&signature), "content-length: 65536\r\n").as_bytes(),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 503"), "{response:?}");
    assert!(response.contains("retry-after: 1"), "{response:?}");

    // A chunked body is reserved chunk by chunk: 20 000 bytes fit, 40 000 do not.
    let chunk = "x".repeat(20_000);
    let chunked = format!(
        "{}{:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        head(PATH, Some(&signature), "transfer-encoding: chunked\r\n"),
        chunk.len(),
        chunk.len()
    );
    let response = exchange(app.addr, chunked.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 503"), "{response:?}");
    assert_eq!(outcome(&app, "unavailable"), 2.0);

    // Released when the stalled delivery ends.
    drop(stalled);
    support::eventually("the reservation is released", || {
        app.metric("gate_relay_body_bytes_in_flight", &[]) == 0.0
    })
    .await;
    assert_eq!(app.post_event(&body).await.status, 200);
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn an_oversized_gate_signature_is_refused_with_431_and_never_queued() {
    let mut app = TestApp::spawn("sigcap", Options::default()).await;
    let body = event_body(&unique("evt"), "gate_session.completed");
    // Valid, but padded with an unknown key to 3 KiB: stored and forwarded as an AMQP header,
    // a large one makes RabbitMQ close the connection.
    let signature = format!(
        "{},pad={}",
        sign(SECRET, now(), body.as_bytes()),
        "a".repeat(3 * 1024)
    );
    let reply = app
        .post_raw(PATH, Bytes::from(body.clone()), Some(&signature))
        .await;
    assert_eq!(reply.status, 431, "{:?}", reply.body);
    assert_eq!(reply.body["error"], "signature_too_large");
    assert_eq!(outcome(&app, "signature_too_large"), 1.0);
    assert_eq!(app.topology.queue_len().await, 0);
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn oversized_or_too_many_request_headers_are_refused_with_431_on_http1() {
    let mut app = TestApp::spawn("headers", Options::default()).await;
    let big = format!("x-filler: {}\r\n", "b".repeat(40 * 1024));
    let many: String = (0..80).map(|i| format!("x-h{i}: v\r\n")).collect();
    for extra in [big, many] {
        let response = exchange(
            app.addr,
            head(
                PATH,
                Some("t=1,v1=00"),
                &format!("{extra}content-length: 0\r\n"),
            )
            .as_bytes(),
        )
        .await;
        assert!(
            response.starts_with("HTTP/1.1 431"),
            "{}",
            &response[..response.len().min(200)]
        );
    }
    // hyper answers these itself, so only the connection's end can count them.
    support::eventually("both 431s are counted", || {
        app.refused("head_too_large") == 2.0
    })
    .await;
    assert_eq!(outcome(&app, "accepted"), 0.0, "no handler ran");
    assert_eq!(
        app.post_event(&event_body(&unique("evt"), "t"))
            .await
            .status,
        200
    );
    app.stop().await;
    app.topology.delete().await;
}

/// An HTTP/2 (prior knowledge) connection that has answered one request and is then left idle;
/// the returned task keeps it driven (it answers pings) until aborted.
async fn idle_h2_connection(
    addr: SocketAddr,
    path: &str,
) -> Option<(
    hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    tokio::task::JoinHandle<()>,
)> {
    let tcp = TcpStream::connect(addr).await.ok()?;
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .ok()?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = http::Request::get(format!("http://{addr}{path}"))
        .body(Empty::new())
        .expect("request");
    let response = sender.send_request(request).await.ok()?;
    let _ = response.into_body().collect().await;
    Some((sender, driver))
}

#[tokio::test]
async fn idle_h2_connections_past_max_connections_do_not_stop_a_fresh_signed_post() {
    let mut app = TestApp::spawn(
        "h2idle",
        Options {
            max_connections: 4,
            header_read_timeout_ms: 300,
            ..Options::default()
        },
    )
    .await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(
            idle_h2_connection(app.addr, "/unknown")
                .await
                .expect("idle h2 connection"),
        );
    }
    // Every slot is held by an idle connection; a fresh delivery waits in the backlog until
    // they are closed for idleness.
    app.assert_still_serving().await;
    for (_, driver) in idle {
        driver.abort();
    }
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn eighty_idle_h2_connections_on_the_admin_port_do_not_block_healthz() {
    let mut app = TestApp::spawn(
        "h2admin",
        Options {
            header_read_timeout_ms: 300,
            ..Options::default()
        },
    )
    .await;
    let admin = app.running.as_ref().expect("running").admin_addr;
    // 80 > the admin listener's 64 slots; those past it wait in the backlog, then go idle too.
    let answered = Arc::new(AtomicUsize::new(0));
    let holders: Vec<_> = (0..80)
        .map(|_| {
            let answered = Arc::clone(&answered);
            tokio::spawn(async move {
                let held = idle_h2_connection(admin, "/healthz").await;
                answered.fetch_add(1, Ordering::SeqCst);
                held
            })
        })
        .collect();
    // Every admin slot is taken by a connection that has been answered and is now idle.
    support::eventually("64 idle h2 connections hold the admin slots", || {
        answered.load(Ordering::SeqCst) >= 64
    })
    .await;
    let started = Instant::now();
    let (status, _) = app.admin(http::Method::GET, "/healthz", None).await;
    assert_eq!(status, 200);
    // kubelet's default probe timeout is 1 s, three failures restart the pod.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    for holder in holders {
        if let Ok(Some((_, driver))) = holder.await {
            driver.abort();
        }
    }
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn expect_100_continue_with_a_bad_signature_is_refused_without_inviting_the_body() {
    let mut app = TestApp::spawn("expect", Options::default()).await;
    let response = exchange(
        app.addr,
        head(
            PATH,
            Some("garbage"),
            "content-length: 60000\r\nexpect: 100-continue\r\n",
        )
        .as_bytes(),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response:?}");
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn odd_framing_is_refused_and_never_queued() {
    let mut app = TestApp::spawn("framing", Options::default()).await;
    let body = event_body(&unique("evt"), "gate_session.completed");
    let signature = sign(SECRET, now(), body.as_bytes());
    let cases = [
        // Both Content-Length and chunked: hyper drops Content-Length, follows chunked and
        // closes the connection afterwards (RFC 9112 6.3 allows it); not refused here.
        // A transfer coding we do not decode.
        format!(
            "{}{body}",
            head(PATH, Some(&signature), "transfer-encoding: gzip\r\n")
        ),
        // Two different Content-Length values.
        format!(
            "{}{body}",
            head(
                PATH,
                Some(&signature),
                &format!("content-length: {}\r\ncontent-length: 5\r\n", body.len())
            )
        ),
    ];
    for request in &cases {
        let response = exchange(app.addr, request.as_bytes()).await;
        assert!(
            response.starts_with("HTTP/1.1 4"),
            "{:?} got {response:?}",
            &request[..request.len().min(300)]
        );
    }
    support::eventually("both framing 400s are counted", || {
        app.refused("bad_request") == 2.0
    })
    .await;
    assert_eq!(app.topology.queue_len().await, 0);
    assert_eq!(app.post_event(&body).await.status, 200, "still serving");
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn a_body_longer_than_its_content_length_does_not_become_a_second_request() {
    // The bytes past Content-Length are read as the next pipelined request: garbage gets 400
    // and is never delivered.
    let mut app = TestApp::spawn("overlong", Options::default()).await;
    let body = event_body(&unique("evt"), "gate_session.completed");
    let signature = sign(SECRET, now(), body.as_bytes());
    let request = format!(
        "{}{body}{{\"trailing\":true}}",
        head(
            PATH,
            Some(&signature),
            &format!("content-length: {}\r\n", body.len())
        )
    );
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let first = read_response(&mut stream).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first:?}");
    let rest = read_response(&mut stream).await;
    assert!(
        rest.is_empty() || rest.starts_with("HTTP/1.1 400"),
        "{rest:?}"
    );
    assert_eq!(
        app.topology
            .collect(2, Duration::from_millis(500))
            .await
            .len(),
        1
    );
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn a_body_trickled_byte_by_byte_ends_at_the_request_deadline() {
    let mut app = TestApp::spawn(
        "trickle",
        Options {
            confirm_timeout_ms: 500,
            server_extra: "request_timeout_ms = 1000".to_owned(),
            ..Options::default()
        },
    )
    .await;
    let body = event_body(&unique("evt"), "gate_session.completed");
    let signature = sign(SECRET, now(), body.as_bytes());
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    stream
        .write_all(
            head(
                PATH,
                Some(&signature),
                &format!("content-length: {}\r\n", body.len()),
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    let started = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    let bytes = body.into_bytes();
    // The trickle would take far longer than the deadline; the answer must not wait for it.
    let trickle = tokio::spawn(async move {
        for byte in bytes {
            if writer.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let response = read_response(&mut reader).await;
    trickle.abort();
    assert!(response.starts_with("HTTP/1.1 408"), "{response:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(outcome(&app, "request_timeout"), 1.0);
    app.stop().await;
    app.topology.delete().await;
}
