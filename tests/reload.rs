//! TLS on the webhook listener and SIGHUP reloads, through the relay itself.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use support::{
    Options, PATH, RelayProcess, SECRET, TestApp, Topology, event_body, now, sign, unique,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A self-signed certificate for `localhost`, written as PEM files.
fn certificate(
    dir: &std::path::Path,
) -> (
    std::path::PathBuf,
    std::path::PathBuf,
    CertificateDer<'static>,
) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    let der = CertificateDer::from_pem_slice(certified.cert.pem().as_bytes()).expect("der");
    (cert, key, der)
}

#[tokio::test]
async fn a_tls_client_completes_a_signed_delivery_and_plaintext_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key, der) = certificate(dir.path());
    let mut app = TestApp::spawn(
        "tls",
        Options {
            tls: Some((cert, key)),
            ..Options::default()
        },
    )
    .await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).expect("root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let tls = connector
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("handshake");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http");
    let driver = tokio::spawn(connection);
    let id = unique("evt");
    let body = event_body(&id, "gate_session.completed");
    let request = http::Request::post(PATH)
        .header("host", "localhost")
        .header("Gate-Signature", sign(SECRET, now(), body.as_bytes()))
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let response = tokio::time::timeout(support::WAIT, sender.send_request(request))
        .await
        .expect("in time")
        .expect("sent");
    assert_eq!(response.status(), 200);
    let _ = response.into_body().collect().await;
    drop(sender);
    let _ = driver.await;
    app.outbox_drained().await;
    assert_eq!(app.topology.queue_len().await, 1);

    // Plain HTTP to the TLS port: no HTTP answer, and the relay keeps serving.
    let mut plain = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    plain
        .write_all(
            format!("POST {PATH} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(support::WAIT, plain.read_to_end(&mut buf))
        .await
        .expect("closed in time");
    assert!(
        !buf.starts_with(b"HTTP/1.1 2"),
        "plaintext got an HTTP success"
    );
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn sighup_reloads_secrets_from_the_secrets_file_without_a_restart() {
    let topology = Topology::declare("reload", &[]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = dir.path().join("secrets");
    std::fs::write(&secrets, format!("{SECRET}\n")).expect("write secrets");
    let options = Options {
        ack: "durable",
        secrets_file: Some(secrets.clone()),
        ..Options::default()
    };
    let config = support::write_config(&options, &topology.exchange, dir.path());
    let relay = RelayProcess::start(&config);
    let addr = relay.addr;
    let url = format!("http://{addr}{PATH}");
    let client = support::http_client();
    let rotated = "whsec_test_rotated_0123456789abcdef";
    let post = |secret: &'static str| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let body = event_body(&unique("evt"), "webhook.test");
            let sig = sign(secret, now(), body.as_bytes());
            support::post(&client, &url, Bytes::from(body), Some(&sig))
                .await
                .status
        }
    };
    assert_eq!(post(rotated).await, 401, "not configured yet");

    std::fs::write(&secrets, format!("{rotated}\n")).expect("rotate");
    relay.signal("HUP");
    // The reload is acknowledged in the log; after it the new secret verifies, the old does not.
    relay.wait_for_line("endpoints and secrets reloaded");
    assert_eq!(post(rotated).await, 200);
    assert_eq!(post(SECRET).await, 401);
    // A config that does not validate is refused whole: the running one stays.
    std::fs::write(&config, "[server]\nlisten = \"nonsense\"\n").expect("break config");
    relay.signal("HUP");
    relay.wait_for_line("reload refused");
    assert_eq!(post(rotated).await, 200);
    let mut relay = relay;
    assert!(
        relay.child.0.try_wait().expect("status").is_none(),
        "SIGHUP must not stop the relay"
    );
    relay.signal("TERM");
    assert!(relay.child.0.wait().expect("exit").success());
    topology.delete().await;
}

/// A TLS terminator in front of the plain RabbitMQ, so `amqps://` is tested against the real broker.
async fn tls_proxy_to_broker(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let settings = gate_relay::tls::TlsSettings {
        cert_path: cert.to_path_buf(),
        key_path: key.to_path_buf(),
        client_ca_path: None,
    };
    let acceptor = gate_relay::tls::ServerTls::load(settings)
        .expect("proxy tls")
        .acceptor();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((client, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            connections.spawn(async move {
                let Ok(mut client) = acceptor.accept(client).await else {
                    return;
                };
                let Ok(mut broker) = tokio::net::TcpStream::connect("127.0.0.1:5672").await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn the_publisher_speaks_amqps_with_a_custom_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key, _) = certificate(dir.path());
    let (proxy, proxy_task) = tls_proxy_to_broker(&cert, &key).await;
    let options = Options {
        ack: "confirmed",
        amqp_url: format!("amqps://guest:guest@localhost:{}/%2f", proxy.port()),
        amqp_ca_path: Some(cert.clone()),
        ..Options::default()
    };
    // TestApp waits until the publisher is connected: through TLS, trusting only our CA.
    let mut app = TestApp::spawn("amqps", options).await;
    let id = unique("evt");
    let reply = app
        .post_event(&event_body(&id, "gate_session.completed"))
        .await;
    assert_eq!(reply.status, 200, "confirmed through amqps: {reply:?}");
    assert_eq!(
        app.topology
            .message_ids(std::time::Duration::from_millis(500))
            .await,
        [id]
    );
    app.stop().await;
    app.topology.delete().await;
    proxy_task.abort();
}
