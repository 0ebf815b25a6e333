//! Ingress TLS (`gate_relay::tls`) against real rustls clients, with certificates made by rcgen at
//! test time. Exercises only the TLS module: the server here is a minimal hyper server that
//! answers every request with 200.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use gate_relay::tls::{ServerTls, TlsSettings};
use http_body_util::{Empty, Full};
use hyper::StatusCode;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::version::{TLS12, TLS13};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;

/// Generous bound for one step (connect, handshake, request) on a loaded CI machine.
const STEP: Duration = Duration::from_secs(10);
const SERVER_NAME: &str = "localhost";
const BOTH_VERSIONS: &[&SupportedProtocolVersion] = &[&TLS13, &TLS12];

// ---------------------------------------------------------------------------------------------
// Certificates

/// A CA that can issue server and client certificates.
struct Ca {
    cert: CertificateDer<'static>,
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// An issued certificate with its key, as PEM (for files) and DER (for comparisons and clients).
struct Leaf {
    cert_pem: String,
    key_pem: String,
    cert: CertificateDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("generate CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign CA");
        Self {
            cert: cert.der().clone(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn issue(&self, common_name: &str, usage: ExtendedKeyUsagePurpose) -> Leaf {
        let key = KeyPair::generate().expect("generate leaf key");
        let mut params = CertificateParams::new(vec![SERVER_NAME.to_owned()]).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert: cert.der().clone(),
        }
    }

    fn server_leaf(&self, common_name: &str) -> Leaf {
        self.issue(common_name, ExtendedKeyUsagePurpose::ServerAuth)
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.clone()).expect("CA is a valid anchor");
        roots
    }
}

/// PEM files in a temp dir, laid out as `[server.tls]` would name them.
struct TlsFiles {
    dir: tempfile::TempDir,
}

impl TlsFiles {
    fn new(server: &Leaf) -> Self {
        let files = Self {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        files.write_server(&server.cert_pem, &server.key_pem);
        files
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_server(&self, cert_pem: &str, key_pem: &str) {
        write(&self.path("server.pem"), cert_pem);
        write(&self.path("server.key"), key_pem);
    }

    fn settings(&self, client_ca_pem: Option<&str>) -> TlsSettings {
        let client_ca_path = client_ca_pem.map(|pem| {
            let path = self.path("client-ca.pem");
            write(&path, pem);
            path
        });
        TlsSettings {
            cert_path: self.path("server.pem"),
            key_path: self.path("server.key"),
            client_ca_path,
        }
    }
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).expect("write PEM to temp dir");
}

// ---------------------------------------------------------------------------------------------
// Server

/// A hyper server behind the acceptor under test. Reports every handshake outcome, so tests can
/// tell "the server rejected it" from "it never arrived". Dropping it stops all its tasks.
struct TestServer {
    addr: SocketAddr,
    handshakes: mpsc::UnboundedReceiver<Result<(), String>>,
    accept_loop: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // Aborting the loop drops its JoinSet, which aborts every connection task.
        self.accept_loop.abort();
    }
}

impl TestServer {
    async fn spawn(tls: &ServerTls) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("bound address");
        let acceptor = tls.acceptor();
        let (report, handshakes) = mpsc::unbounded_channel();
        let accept_loop = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let report = report.clone();
                connections.spawn(async move {
                    let stream = match timeout(STEP, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let _ = report.send(Ok(()));
                            stream
                        }
                        Ok(Err(err)) => {
                            let _ = report.send(Err(err.to_string()));
                            return;
                        }
                        Err(_) => {
                            let _ = report.send(Err("handshake timed out".to_owned()));
                            return;
                        }
                    };
                    let ok = service_fn(|_request| async {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                            b"ok",
                        ))))
                    });
                    // A client going away mid-connection is not this test's concern.
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), ok)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Self {
            addr,
            handshakes,
            accept_loop,
        }
    }

    /// The server-side outcome of the next handshake, in accept order.
    async fn next_handshake(&mut self) -> Result<(), String> {
        timeout(STEP, self.handshakes.recv())
            .await
            .expect("server reports a handshake in time")
            .expect("server is running")
    }
}

// ---------------------------------------------------------------------------------------------
// Client

fn client_config(
    ca: &Ca,
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
    client_cert: Option<&Leaf>,
) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(versions)
    .expect("aws-lc-rs supports these versions")
    .with_root_certificates(ca.roots());
    let mut config = match client_cert {
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![leaf.cert.clone()],
                PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("leaf key PEM"),
            )
            .expect("client cert and key match"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // A resumed session presents no certificate and rustls reports the one cached from the first
    // handshake: every connection here must be a full handshake for certificate checks to mean
    // anything.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

/// One open TLS connection with an HTTP client on it.
struct Connection {
    sender: Sender,
    alpn: Option<Vec<u8>>,
    server_cert: CertificateDer<'static>,
    driver: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Connection {
    async fn open(addr: SocketAddr, config: Arc<ClientConfig>) -> anyhow::Result<Self> {
        timeout(STEP, Self::open_unbounded(addr, config))
            .await
            .context("connect timed out")?
    }

    async fn open_unbounded(addr: SocketAddr, config: Arc<ClientConfig>) -> anyhow::Result<Self> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from(SERVER_NAME)?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        let session = tls.get_ref().1;
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let server_cert = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .context("server presented no certificate")?
            .clone()
            .into_owned();
        let io = TokioIo::new(tls);
        let (sender, driver) = if alpn.as_deref() == Some(b"h2") {
            let (sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            (Sender::Http2(sender), tokio::spawn(drive(conn)))
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            (Sender::Http1(sender), tokio::spawn(drive(conn)))
        };
        Ok(Self {
            sender,
            alpn,
            server_cert,
            driver,
        })
    }

    async fn get(&mut self) -> anyhow::Result<StatusCode> {
        let request = hyper::Request::get(format!("https://{SERVER_NAME}/"))
            .header(hyper::header::HOST, SERVER_NAME)
            .body(Empty::new())?;
        let response = timeout(STEP, async {
            match &mut self.sender {
                Sender::Http1(sender) => sender.send_request(request).await,
                Sender::Http2(sender) => sender.send_request(request).await,
            }
        })
        .await
        .context("request timed out")??;
        Ok(response.status())
    }
}

async fn drive<F: Future<Output = hyper::Result<()>>>(conn: F) {
    // Errors surface on the next send_request; nothing to do with them here.
    let _ = conn.await;
}

/// Connects, sends one GET and returns the connection for further checks.
async fn get_once(addr: SocketAddr, config: Arc<ClientConfig>) -> anyhow::Result<Connection> {
    let mut connection = Connection::open(addr, config).await?;
    let status = connection.get().await?;
    anyhow::ensure!(status == StatusCode::OK, "status {status}");
    Ok(connection)
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn tls_client_completes_a_request_and_gets_h2_when_it_offers_it() {
    let ca = Ca::new("test ca");
    let files = TlsFiles::new(&ca.server_leaf("server"));
    let tls = ServerTls::load(files.settings(None)).expect("load TLS material");
    let mut server = TestServer::spawn(&tls).await;

    let h2 = get_once(
        server.addr,
        client_config(&ca, BOTH_VERSIONS, &[b"h2", b"http/1.1"], None),
    )
    .await
    .expect("h2 request");
    assert_eq!(h2.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(server.next_handshake().await, Ok(()));

    let h1 = get_once(
        server.addr,
        client_config(&ca, BOTH_VERSIONS, &[b"http/1.1"], None),
    )
    .await
    .expect("http/1.1 request");
    assert_eq!(h1.alpn.as_deref(), Some(&b"http/1.1"[..]));

    let tls12 = get_once(server.addr, client_config(&ca, &[&TLS12], &[], None))
        .await
        .expect("TLS 1.2 request without ALPN");
    assert_eq!(tls12.alpn, None);
}

#[tokio::test]
async fn plaintext_client_on_the_tls_port_fails_cleanly_and_the_server_keeps_serving() {
    let ca = Ca::new("test ca");
    let files = TlsFiles::new(&ca.server_leaf("server"));
    let tls = ServerTls::load(files.settings(None)).expect("load TLS material");
    let mut server = TestServer::spawn(&tls).await;

    let mut plain = TcpStream::connect(server.addr).await.expect("connect");
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("send plaintext request");
    let mut reply = Vec::new();
    // The server closes the connection: reading ends (EOF or reset), it does not hang.
    let _ = timeout(STEP, plain.read_to_end(&mut reply))
        .await
        .expect("server closes the plaintext connection in time");
    assert!(
        !reply.starts_with(b"HTTP/"),
        "plaintext client got an HTTP answer: {:?}",
        String::from_utf8_lossy(&reply)
    );
    let rejected = server.next_handshake().await;
    assert!(rejected.is_err(), "plaintext handshake accepted");

    get_once(
        server.addr,
        client_config(&ca, BOTH_VERSIONS, &[b"h2", b"http/1.1"], None),
    )
    .await
    .expect("next TLS client is served");
    assert_eq!(server.next_handshake().await, Ok(()));
}

#[tokio::test]
async fn reload_serves_the_new_certificate_to_new_handshakes_and_keeps_open_connections() {
    let ca = Ca::new("test ca");
    let first = ca.server_leaf("first");
    let files = TlsFiles::new(&first);
    let tls = ServerTls::load(files.settings(None)).expect("load TLS material");
    let server = TestServer::spawn(&tls).await;
    let config = client_config(&ca, BOTH_VERSIONS, &[b"http/1.1"], None);

    let mut before = get_once(server.addr, config.clone())
        .await
        .expect("request before reload");
    assert_eq!(before.server_cert, first.cert);

    let second = ca.server_leaf("second");
    files.write_server(&second.cert_pem, &second.key_pem);
    tls.reload().expect("reload valid material");

    let after = get_once(server.addr, config.clone())
        .await
        .expect("request after reload");
    assert_eq!(
        after.server_cert, second.cert,
        "new handshake sees new cert"
    );
    assert_eq!(
        before.get().await.expect("old connection still serves"),
        StatusCode::OK
    );
}

#[tokio::test]
async fn bad_reload_is_an_error_and_the_old_certificate_stays() {
    let ca = Ca::new("test ca");
    let first = ca.server_leaf("first");
    let files = TlsFiles::new(&first);
    let tls = ServerTls::load(files.settings(None)).expect("load TLS material");
    let server = TestServer::spawn(&tls).await;
    let config = client_config(&ca, BOTH_VERSIONS, &[b"h2"], None);

    // A valid new certificate with a garbage key: neither half may be taken.
    let second = ca.server_leaf("second");
    files.write_server(
        &second.cert_pem,
        "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
    );
    let err = tls.reload().expect_err("garbage key is rejected");
    assert!(err.to_string().contains("server.key"), "{err}");

    let after = get_once(server.addr, config)
        .await
        .expect("request after failed reload");
    assert_eq!(after.server_cert, first.cert, "old cert still served");
}

#[tokio::test]
async fn with_a_client_ca_only_clients_with_a_certificate_from_it_are_served() {
    let ca = Ca::new("server ca");
    let client_ca = Ca::new("client ca");
    let stranger_ca = Ca::new("stranger ca");
    let files = TlsFiles::new(&ca.server_leaf("server"));
    let tls = ServerTls::load(files.settings(Some(&client_ca.pem))).expect("load TLS material");
    let mut server = TestServer::spawn(&tls).await;
    let alpn: &[&[u8]] = &[b"h2", b"http/1.1"];

    // In TLS 1.3 the client may finish its side before the server rejects it, so the failure can
    // show on connect or on the first request; the server's handshake is what must fail.
    let anonymous = get_once(server.addr, client_config(&ca, BOTH_VERSIONS, alpn, None)).await;
    assert!(
        anonymous.is_err(),
        "client without a certificate was served"
    );
    assert!(server.next_handshake().await.is_err());

    let stranger = stranger_ca.issue("stranger", ExtendedKeyUsagePurpose::ClientAuth);
    let foreign = get_once(
        server.addr,
        client_config(&ca, BOTH_VERSIONS, alpn, Some(&stranger)),
    )
    .await;
    assert!(
        foreign.is_err(),
        "client with a foreign certificate was served"
    );
    assert!(server.next_handshake().await.is_err());

    let member = client_ca.issue("member", ExtendedKeyUsagePurpose::ClientAuth);
    for versions in [&[&TLS13][..], &[&TLS12][..]] {
        get_once(
            server.addr,
            client_config(&ca, versions, alpn, Some(&member)),
        )
        .await
        .expect("client with a certificate from the client CA");
        assert_eq!(server.next_handshake().await, Ok(()));
    }
}
