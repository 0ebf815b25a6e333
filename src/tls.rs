//! Ingress TLS: the server certificate, its reload, and the rustls configuration of the listener.
//!
//! Owns: reading the PEM files named in `[server.tls]`, the one [`ServerConfig`] every TLS
//! connection is accepted with, and swapping the certificate on [`ServerTls::reload`]. Does not
//! own: the listener, the SIGHUP handler (the caller decides when to reload) or HTTP.
//!
//! Guarantees:
//! - Only TLS 1.3 and TLS 1.2, only the aws-lc-rs provider, ALPN `h2` then `http/1.1`, no 0-RTT
//!   (early data could be replayed, and a replayed webhook is a second delivery). The provider is
//!   given to rustls explicitly, so nothing here needs a process-wide default to be installed.
//! - A reload is all or nothing: the new chain and key are parsed and checked to match before
//!   they replace the old pair in one atomic swap. A handshake sees either the old pair or the new
//!   one; open connections are never touched. A failed reload keeps serving the old pair.
//!   Sessions resumed from tickets issued before a reload present no certificate at all: they
//!   stay valid (rustls' default ticket lifetime) whatever the reload did.
//! - Errors name the file and the kind of problem, never key material.
//! - With `client_ca_path`, every client must present a certificate chaining to one of its CAs.
//!   That CA file is read once, by [`ServerTls::load`]; a reload does not re-read it (restart to
//!   change it).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::version::{TLS12, TLS13};
use rustls::{ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

pub use crate::config::TlsSettings;

/// 1.2 stays for older webhook senders; rustls has nothing older. The highest common one wins.
const PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] = &[&TLS13, &TLS12];

/// `h2` first so that clients that speak both get HTTP/2; the server serves either.
const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why TLS material could not be loaded. Always the operator's fault (a config or file problem),
/// never the client's.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Unreadable { path: PathBuf, source: io::Error },
    #[error("{} is not valid PEM: {reason}", path.display())]
    MalformedPem { path: PathBuf, reason: PemProblem },
    #[error("{} holds no certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} holds no private key", path.display())]
    NoPrivateKey { path: PathBuf },
    #[error("private key in {} is not usable: {source}", path.display())]
    UnusableKey {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("certificate in {} is not usable: {source}", path.display())]
    UnusableCertificate {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("certificate {} does not match private key {}", cert.display(), key.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("client CA file {} is not usable: {reason}", path.display())]
    UnusableClientCa { path: PathBuf, reason: String },
}

/// What is wrong with a PEM file, without echoing any of its content (the pem crate's own errors
/// can quote lines of the file, which for a key file would be key material).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PemProblem {
    MissingEnd,
    MalformedBegin,
    BadBase64,
    Other,
}

impl fmt::Display for PemProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::MissingEnd => "a section has no END line",
            Self::MalformedBegin => "malformed BEGIN line",
            Self::BadBase64 => "invalid base64 in a section",
            Self::Other => "unreadable section",
        })
    }
}

impl PemProblem {
    fn from_pem(err: &pem::Error) -> Self {
        match err {
            pem::Error::MissingSectionEnd { .. } => Self::MissingEnd,
            pem::Error::IllegalSectionStart { .. } => Self::MalformedBegin,
            pem::Error::Base64Decode(_) => Self::BadBase64,
            _ => Self::Other,
        }
    }
}

/// The listener's TLS state: settings, the current certificate and the config built around it.
pub struct ServerTls {
    settings: TlsSettings,
    provider: Arc<CryptoProvider>,
    current: Arc<ArcSwap<CertifiedKey>>,
    config: Arc<ServerConfig>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads certificate, key and (if set) client CAs, and builds the server config.
    pub fn load(settings: TlsSettings) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let certified = load_certified_key(&settings, &provider)?;
        let current = Arc::new(ArcSwap::from_pointee(certified));

        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .expect("the aws-lc-rs provider supports TLS 1.2 and 1.3");
        let builder = match &settings.client_ca_path {
            Some(path) => builder.with_client_cert_verifier(client_verifier(path, &provider)?),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(SwappableCert {
            current: Arc::clone(&current),
        }));
        config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
        config.max_early_data_size = 0;

        info!(
            cert = %settings.cert_path.display(),
            client_auth = settings.client_ca_path.is_some(),
            "tls certificate loaded"
        );
        Ok(Self {
            settings,
            provider,
            current,
            config: Arc::new(config),
        })
    }

    /// Re-reads cert and key; on error keeps the old ones and returns the error.
    ///
    /// The outcome is logged here (info on success, warn with the reason on failure); callers
    /// need not log it again. Concurrent reloads are safe; the last one to finish wins.
    pub fn reload(&self) -> Result<(), TlsError> {
        match load_certified_key(&self.settings, &self.provider) {
            Ok(certified) => {
                self.current.store(Arc::new(certified));
                info!(cert = %self.settings.cert_path.display(), "tls certificate reloaded");
                Ok(())
            }
            Err(error) => {
                warn!(%error, "tls certificate reload failed, keeping the previous certificate");
                Err(error)
            }
        }
    }

    /// An acceptor over the one shared config; cheap, call it per listener or per connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.config))
    }
}

/// Hands every handshake the certificate current at that moment.
#[derive(Debug)]
struct SwappableCert {
    current: Arc<ArcSwap<CertifiedKey>>,
}

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn load_certified_key(
    settings: &TlsSettings,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = read_certificates(&settings.cert_path)?;
    let key = read_private_key(&settings.key_path)?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|source| TlsError::UnusableKey {
            path: settings.key_path.clone(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // Unknown: the key type cannot report its public key; rustls accepts that too.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            cert: settings.cert_path.clone(),
            key: settings.key_path.clone(),
        }),
        // The end-entity certificate did not parse.
        Err(source) => Err(TlsError::UnusableCertificate {
            path: settings.cert_path.clone(),
            source,
        }),
    }
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| malformed(path, &err))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => Err(TlsError::NoPrivateKey {
            path: path.to_owned(),
        }),
        Err(err) => Err(malformed(path, &err)),
    }
}

fn client_verifier(
    path: &Path,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let unusable = |reason: String| TlsError::UnusableClientCa {
        path: path.to_owned(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(path)? {
        roots.add(cert).map_err(|err| unusable(err.to_string()))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
        .build()
        .map_err(|err| unusable(err.to_string()))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Unreadable {
        path: path.to_owned(),
        source,
    })
}

fn malformed(path: &Path, err: &pem::Error) -> TlsError {
    TlsError::MalformedPem {
        path: path.to_owned(),
        reason: PemProblem::from_pem(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, contents).expect("temp dir is writable");
        path
    }

    fn settings(dir: &Path, cert: &[u8], key: &[u8]) -> TlsSettings {
        TlsSettings {
            cert_path: write(dir, "cert.pem", cert),
            key_path: write(dir, "key.pem", key),
            client_ca_path: None,
        }
    }

    fn self_signed() -> (String, String) {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
                .expect("rcgen generates a self-signed certificate");
        (cert.pem(), signing_key.serialize_pem())
    }

    #[test]
    fn load_reports_each_problem_by_file_without_key_material() {
        let (cert, key) = self_signed();
        let (_, other_key) = self_signed();
        let secret_looking =
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0IGtleSBieXRlcw==!!\n-----END PRIVATE KEY-----\n";
        let not_der_cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let not_der_key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let cases: [(&str, &str, &str, &str); 8] = [
            ("cert not DER", not_der_cert, &key, "cert.pem is not usable"),
            ("key not DER", &cert, not_der_key, "key.pem is not usable"),
            ("no certificate", "", &key, "cert.pem holds no certificate"),
            ("no key", &cert, "", "key.pem holds no private key"),
            (
                "garbage key",
                &cert,
                "not pem at all",
                "key.pem holds no private key",
            ),
            (
                "bad base64",
                &cert,
                secret_looking,
                "key.pem is not valid PEM",
            ),
            (
                "unterminated",
                &cert,
                "-----BEGIN PRIVATE KEY-----\nAAAA\n",
                "key.pem is not valid PEM: a section has no END line",
            ),
            ("mismatch", &cert, &other_key, "does not match"),
        ];
        for (name, cert, key, expected) in cases {
            let dir = tempfile::tempdir().expect("temp dir");
            let err = ServerTls::load(settings(dir.path(), cert.as_bytes(), key.as_bytes()))
                .expect_err(name);
            let message = err.to_string();
            assert!(message.contains(expected), "{name}: {message}");
            assert!(!message.contains("c2VjcmV0"), "{name} leaks: {message}");
        }
    }

    #[test]
    fn missing_file_is_unreadable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = ServerTls::load(TlsSettings {
            cert_path: dir.path().join("absent.pem"),
            key_path: dir.path().join("absent-key.pem"),
            client_ca_path: None,
        })
        .expect_err("missing files");
        assert!(matches!(err, TlsError::Unreadable { .. }), "{err}");
    }

    #[test]
    fn config_offers_h2_then_http1_and_no_early_data() {
        let (cert, key) = self_signed();
        let dir = tempfile::tempdir().expect("temp dir");
        let tls = ServerTls::load(settings(dir.path(), cert.as_bytes(), key.as_bytes()))
            .expect("valid material loads");
        let config = &tls.config;
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert_eq!(config.max_early_data_size, 0);
    }
}
