//! The HTTP edge against hostile connections rather than hostile requests: HTTP/2 heads over
//! the bounds, floods of reset streams, the per-connection stream cap, a peer that never reads
//! its responses, heads never finished, idle kept-alive connections, and HTTP/1.1 pipelining. Each either gets a clear refusal (counted) or is
//! served exactly once, and the relay keeps serving.
//!
//! The HTTP/2 cases write frames by hand where a well-behaved client (hyper's) would refuse to
//! misbehave: it honours the server's stream cap and never resets a stream it just opened.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use support::{Options, PATH, SECRET, TestApp, event_body, now, sign, unique};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
/// RFC 9113 7: error codes.
const CANCEL: u32 = 0x8;
const REFUSED_STREAM: u32 = 0x7;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("small frame");
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 5.1), `first` holding the pattern bits.
fn hpack_int(first: u8, n: u32, value: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A header field "literal without indexing", name by static-table index or literal.
fn hpack_field(name: Result<usize, &str>, value: &str, out: &mut Vec<u8>) {
    match name {
        Ok(index) => hpack_int(0x00, 4, index, out),
        Err(name) => {
            out.push(0x00);
            hpack_int(0x00, 7, name.len(), out);
            out.extend(name.as_bytes());
        }
    }
    hpack_int(0x00, 7, value.len(), out);
    out.extend(value.as_bytes());
}

/// A request head: `:method` from the static table (2 GET, 3 POST), `:scheme http`, `:path`
/// and `:authority`, then `extra` fields.
fn request_block(method_index: u8, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut out = vec![0x80 | method_index, 0x86];
    hpack_field(Ok(4), path, &mut out);
    hpack_field(Ok(1), "relay", &mut out);
    for (name, value) in extra {
        hpack_field(Err(name), value, &mut out);
    }
    out
}

/// Opens a prior-knowledge HTTP/2 connection: the preface and our SETTINGS.
async fn raw_h2(app: &TestApp, settings: &[(u16, u32)]) -> TcpStream {
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    let payload: Vec<u8> = settings
        .iter()
        .flat_map(|(id, value)| id.to_be_bytes().into_iter().chain(value.to_be_bytes()))
        .collect();
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &payload));
    stream.write_all(&hello).await.expect("write preface");
    stream
}

/// The next frame from the server: (type, stream, payload); `None` once it closed.
async fn next_frame(stream: &mut TcpStream) -> Option<(u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.ok()?;
    Some((head[3], id, payload))
}

fn error_code(payload: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(payload[at..at + 4].try_into().expect("4 bytes"))
}

/// Reads until the relay closes `stream` (bounded by [`support::WAIT`]); what arrived.
async fn read_until_closed(mut stream: TcpStream) -> String {
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(support::WAIT, stream.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "still open after {:?}", support::WAIT);
    String::from_utf8_lossy(&rest).into_owned()
}

/// An HTTP/2 connection through hyper's client.
async fn h2_client(app: &TestApp) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    let tcp = TcpStream::connect(app.addr).await.expect("connect");
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
}

#[tokio::test]
async fn an_h2_request_with_too_many_or_too_large_headers_is_refused_with_431_and_counted() {
    let mut app = TestApp::spawn("h2heads", Options::default()).await;
    let mut sender = h2_client(&app).await;
    let many: Vec<(String, String)> = (0..80).map(|i| (format!("x-h{i}"), "v".into())).collect();
    // Over 16 KiB as a header list, under h2's own hard cap.
    let large = vec![("x-filler".to_owned(), "b".repeat(20 * 1024))];
    // h2 counts the pseudo-headers (`:path` here) in the header list as well.
    let long_path = format!("?q={}", "p".repeat(20 * 1024));
    for (query, headers) in [
        (String::new(), many),
        (String::new(), large),
        (long_path, vec![]),
    ] {
        let mut request = http::Request::post(format!("http://{}{PATH}{query}", app.addr));
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        let request = request.body(Empty::new()).expect("request");
        let response = tokio::time::timeout(support::WAIT, sender.send_request(request))
            .await
            .expect("answered in time")
            .expect("answered");
        assert_eq!(response.status(), 431);
    }
    assert_eq!(app.refused("head_too_large"), 3.0);
    assert_eq!(app.metric("gate_relay_requests_total", &[]), 0.0);
    assert_eq!(
        app.post_event(&event_body(&unique("evt"), "t"))
            .await
            .status,
        200
    );
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn the_h2_settings_bound_streams_windows_and_header_lists() {
    let mut app = TestApp::spawn("h2settings", Options::default()).await;
    let mut stream = raw_h2(&app, &[]).await;
    let mut settings = Vec::new();
    let mut connection_window = None;
    // The server's SETTINGS, then the WINDOW_UPDATE that raises its connection window.
    let read = async {
        while let Some((kind, id, payload)) = next_frame(&mut stream).await {
            if kind == SETTINGS && settings.is_empty() {
                settings = payload
                    .chunks(6)
                    .map(|c| (u16::from_be_bytes([c[0], c[1]]), error_code(c, 2)))
                    .collect();
            }
            if kind == WINDOW_UPDATE && id == 0 {
                connection_window = Some(65_535 + error_code(&payload, 0));
                return;
            }
        }
    };
    let _ = tokio::time::timeout(support::WAIT, read).await;
    // RFC 9113 6.5.2: 3 MAX_CONCURRENT_STREAMS, 4 INITIAL_WINDOW_SIZE, 6 MAX_HEADER_LIST_SIZE.
    for expected in [(0x3, 8), (0x4, 64 * 1024), (0x6, 32 * 1024)] {
        assert!(settings.contains(&expected), "{expected:?} in {settings:?}");
    }
    assert_eq!(connection_window, Some(128 * 1024));
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn a_flood_of_h2_streams_reset_right_after_opening_is_cut_off_and_the_relay_keeps_serving() {
    let mut app = TestApp::spawn("h2reset", Options::default()).await;
    let mut flood = raw_h2(&app, &[]).await;
    // HEADERS then RST_STREAM, 500 times in one write: the CVE-2023-44487 pattern.
    let block = request_block(2, "/unknown", &[]);
    let mut burst = Vec::new();
    for i in 0..500u32 {
        let id = 2 * i + 1;
        burst.extend(frame(HEADERS, END_HEADERS, id, &block));
        burst.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
    }
    // The server may close before reading it all; that is the point.
    let _ = flood.write_all(&burst).await;
    let goaway = tokio::time::timeout(support::WAIT, async {
        while let Some((kind, _, payload)) = next_frame(&mut flood).await {
            if kind == GOAWAY {
                return Some(error_code(&payload, 4));
            }
        }
        None
    })
    .await
    .expect("the flood is answered in time");
    assert_eq!(goaway, Some(ENHANCE_YOUR_CALM));
    support::eventually("the flood is counted", || {
        app.refused("protocol_error") == 1.0
    })
    .await;
    app.assert_still_serving().await;
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn an_h2_connection_holds_at_most_eight_streams_open() {
    let mut app = TestApp::spawn("h2streams", Options::default()).await;
    let body = event_body(&unique("evt"), "gate_session.completed");
    let signature = sign(SECRET, now(), body.as_bytes());
    // Each declares a body and sends none: its handler waits for it, its stream stays open.
    let block = request_block(
        3,
        PATH,
        &[("content-length", "100"), ("gate-signature", &signature)],
    );
    let mut stream = raw_h2(&app, &[]).await;
    let mut opens = Vec::new();
    for i in 0..9u32 {
        opens.extend(frame(HEADERS, END_HEADERS, 2 * i + 1, &block));
    }
    stream.write_all(&opens).await.expect("write");
    let reset = tokio::time::timeout(support::WAIT, async {
        while let Some((kind, id, payload)) = next_frame(&mut stream).await {
            if kind == RST_STREAM {
                return Some((id, error_code(&payload, 0)));
            }
        }
        None
    })
    .await
    .expect("a stream is refused in time");
    // The ninth (stream 17), and only it: the first eight are being handled.
    assert_eq!(reset, Some((17, REFUSED_STREAM)));
    support::eventually("eight deliveries are in flight", || {
        app.metric("gate_relay_requests_in_flight", &[]) == 8.0
    })
    .await;
    drop(stream);
    support::eventually("they end with the connection", || {
        app.metric("gate_relay_requests_in_flight", &[]) == 0.0
    })
    .await;
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn an_h2_peer_that_never_reads_its_responses_loses_its_slot_within_twice_the_header_read_timeout()
 {
    let mut app = TestApp::spawn(
        "h2slowreader",
        Options {
            max_connections: 1,
            header_read_timeout_ms: 300,
            ..Options::default()
        },
    )
    .await;
    // A receive window of 0: the server can send the response head but never its body, so the
    // stream never ends while the connection holds the only slot.
    let mut reader = raw_h2(&app, &[(0x4, 0)]).await;
    let block = request_block(2, "/unknown", &[]);
    reader
        .write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &block))
        .await
        .expect("write");
    // Closed when idle (300 ms), dropped if still not done after as long again.
    app.assert_still_serving().await;
    let closed = tokio::time::timeout(support::WAIT, async {
        while next_frame(&mut reader).await.is_some() {}
    })
    .await;
    assert!(closed.is_ok(), "the slow reader is still connected");
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn pipelined_http1_deliveries_on_one_connection_are_each_answered_and_published_once() {
    let mut app = TestApp::spawn("pipeline", Options::default()).await;
    let ids: Vec<String> = (0..3).map(|_| unique("evt")).collect();
    let mut requests = Vec::new();
    for id in &ids {
        let body = event_body(id, "gate_session.completed");
        let signature = sign(SECRET, now(), body.as_bytes());
        requests.extend(
            format!(
                "POST {PATH} HTTP/1.1\r\nhost: relay\r\ncontent-type: application/json\r\n\
                 gate-signature: {signature}\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        );
    }
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    stream.write_all(&requests).await.expect("write");
    let mut answers = String::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        while answers.matches("\"event_id\"").count() < ids.len() {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answers.push_str(&String::from_utf8_lossy(&chunk[..n])),
            }
        }
    };
    let _ = tokio::time::timeout(support::WAIT, read).await;
    assert_eq!(answers.matches("HTTP/1.1 200").count(), 3, "{answers}");
    for id in &ids {
        assert_eq!(answers.matches(id.as_str()).count(), 1, "{id}: {answers}");
    }
    let mut published = app.topology.message_ids(Duration::from_millis(500)).await;
    published.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(published, expected, "each published once");
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn kept_alive_http1_connections_that_expire_idle_are_not_counted_as_refused() {
    let mut app = TestApp::spawn(
        "keepalive",
        Options {
            header_read_timeout_ms: 300,
            ..Options::default()
        },
    )
    .await;
    // Ten connections each get an answer, then wait for their next request until the relay
    // closes them: hyper's header-read timer and the idle timer expire in the same instant,
    // and which one the connection sees first is chance, so ten make the race show.
    let mut connections = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let addr = app.addr;
        connections.spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            stream
                .write_all(b"GET /unknown HTTP/1.1\r\nhost: relay\r\n\r\n")
                .await
                .expect("write");
            read_until_closed(stream).await
        });
    }
    while let Some(answer) = connections.join_next().await {
        let answer = answer.expect("connection task");
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer:?}");
    }
    // A refusal is counted before the connection's socket is dropped, so before the EOF above.
    assert_eq!(app.refused("header_timeout"), 0.0);
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn a_head_not_finished_before_the_header_read_timeout_is_closed_and_counted() {
    let mut app = TestApp::spawn(
        "headtimeout",
        Options {
            header_read_timeout_ms: 300,
            ..Options::default()
        },
    )
    .await;
    // One connection sends nothing, one half a head; neither ever reaches a handler.
    let silent = TcpStream::connect(app.addr).await.expect("connect");
    let mut partial = TcpStream::connect(app.addr).await.expect("connect");
    partial
        .write_all(format!("POST {PATH} HTTP/1.1\r\nhost: relay\r\n").as_bytes())
        .await
        .expect("write");
    for stream in [silent, partial] {
        read_until_closed(stream).await;
    }
    support::eventually("both closes are counted", || {
        app.refused("header_timeout") == 2.0
    })
    .await;
    assert_eq!(app.metric("gate_relay_requests_total", &[]), 0.0);
    app.stop().await;
    app.topology.delete().await;
}
