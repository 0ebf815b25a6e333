//! `[server]` and `[server.tls]`: the webhook listener and its bounds.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::problems::{Bound, Problems};

const MAX_BODY_BYTES: Bound = Bound {
    key: "server.max_body_bytes",
    // 0Gate publishes no size limit; 1 MiB is far above any envelope seen and bounds memory.
    default: 1024 * 1024,
    // Chunked bodies keep every sled value small, but a body is still held in memory whole.
    max: 16 * 1024 * 1024,
};
const HEADER_READ_TIMEOUT_MS: Bound = Bound {
    key: "server.header_read_timeout_ms",
    // A sender that has not finished its headers in 10 s is not 0Gate.
    default: 10_000,
    max: 600_000,
};
const REQUEST_TIMEOUT_MS: Bound = Bound {
    key: "server.request_timeout_ms",
    // 0Gate gives up after about 10 s; answering later is useless.
    default: 9_000,
    max: 600_000,
};
const MAX_CONNECTIONS: Bound = Bound {
    key: "server.max_connections",
    default: 1_024,
    max: 1_000_000,
};
const MAX_BODY_BYTES_IN_FLIGHT: Bound = Bound {
    key: "server.max_body_bytes_in_flight",
    // Body bytes held at once by all requests (reserved before reading, by Content-Length or chunk
    // by chunk): 64 MiB leaves most of a 512 MiB pod to sled's cache and everything else, where
    // max_connections × max_body_bytes (1 GiB by default) would not.
    default: 64 * 1024 * 1024,
    // Reserved through a semaphore whose requests count in u32.
    max: u32::MAX as u64,
};
const SHUTDOWN_GRACE_MS: Bound = Bound {
    key: "server.shutdown_grace_ms",
    default: 10_000,
    max: 600_000,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    listen: String,
    max_body_bytes: Option<u64>,
    header_read_timeout_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    max_connections: Option<u64>,
    max_body_bytes_in_flight: Option<u64>,
    shutdown_grace_ms: Option<u64>,
    tls: Option<RawTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_path: PathBuf,
    key_path: PathBuf,
    client_ca_path: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    /// Body bytes all requests together may hold while being read and handled.
    pub max_body_bytes_in_flight: usize,
    pub shutdown_grace: Duration,
    pub tls: Option<TlsSettings>,
}

/// Where the certificate material lives (`[server.tls]`); `tls.rs` reads it.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// PEM: the server certificate first, then any intermediates.
    pub cert_path: PathBuf,
    /// PEM: one private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: PathBuf,
    /// PEM: CA certificates that client certificates must chain to. `None`: no client auth.
    pub client_ca_path: Option<PathBuf>,
}

impl RawServer {
    /// `request_timeout_ms` as configured or defaulted, for the checks of other sections.
    pub(super) fn request_timeout_ms(&self) -> u64 {
        self.request_timeout_ms
            .unwrap_or(REQUEST_TIMEOUT_MS.default)
    }

    pub(super) fn validate(self, problems: &mut Problems) -> Option<ServerConfig> {
        let listen = problems.check(
            "server.listen",
            self.listen
                .parse()
                .map_err(|_| format!("{:?} is not an address like 127.0.0.1:8080", self.listen)),
        );
        let max_body_bytes = problems.positive(&MAX_BODY_BYTES, self.max_body_bytes);
        let header_read_timeout_ms =
            problems.positive(&HEADER_READ_TIMEOUT_MS, self.header_read_timeout_ms);
        let request_timeout_ms = problems.positive(&REQUEST_TIMEOUT_MS, self.request_timeout_ms);
        let max_connections = problems.positive(&MAX_CONNECTIONS, self.max_connections);
        let max_body_bytes_in_flight =
            problems.positive(&MAX_BODY_BYTES_IN_FLIGHT, self.max_body_bytes_in_flight);
        let shutdown_grace_ms = problems.positive(&SHUTDOWN_GRACE_MS, self.shutdown_grace_ms);
        if max_body_bytes_in_flight < max_body_bytes {
            problems.report(
                "server.max_body_bytes_in_flight",
                format!(
                    "{max_body_bytes_in_flight} is below server.max_body_bytes ({max_body_bytes}): no body of the largest allowed size could be read"
                ),
            );
        }
        let ms = Duration::from_millis;
        Some(ServerConfig {
            listen: listen?,
            max_body_bytes: usize::try_from(max_body_bytes).unwrap_or(usize::MAX),
            header_read_timeout: ms(header_read_timeout_ms),
            request_timeout: ms(request_timeout_ms),
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
            max_body_bytes_in_flight: usize::try_from(max_body_bytes_in_flight)
                .unwrap_or(usize::MAX),
            shutdown_grace: ms(shutdown_grace_ms),
            tls: self.tls.map(|t| TlsSettings {
                cert_path: t.cert_path,
                key_path: t.key_path,
                client_ca_path: t.client_ca_path,
            }),
        })
    }
}
