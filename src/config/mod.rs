//! Configuration: the TOML file as written (one `Raw*` struct per section, unknown keys rejected)
//! and the validated [`Config`] the rest of the relay trusts.
//!
//! Owns: the shape of the file, the defaults with their reasons and the validation, one file per
//! section (`server`, `admin`, `store`, `amqp`, `delivery`, `log`, `endpoint`), each reporting into
//! one problem collector. Does not own: reading the config file (the caller passes its text),
//! the process environment (the caller passes a lookup function) or the files a config names
//! (`secrets_file` is read through a reader the caller passes; certificate paths are only
//! carried). Pure: nothing here touches the process or the file system.
//!
//! Guarantee: `Config::parse` reports every problem at once, each with its key path, and no error
//! or `Debug` output contains a secret value or the broker password.

use std::io;
use std::path::Path;

use serde::Deserialize;

mod admin;
mod amqp;
mod delivery;
mod duration;
mod endpoint;
mod log;
mod problems;
mod routing_key;
mod secret;
mod server;
mod store;
#[cfg(test)]
mod testing;

pub use admin::AdminConfig;
pub(crate) use amqp::AMQP_SHORT_STRING;
pub use amqp::{AmqpConfig, AmqpUrl};
pub use delivery::{AckMode, DeliveryConfig};
pub use endpoint::Endpoint;
pub use log::{LogConfig, LogFormat};
pub use server::{ServerConfig, TlsSettings};
pub use store::{DEFAULT_CACHE_CAPACITY_BYTES, StoreConfig};

pub use problems::ConfigError;
use problems::Problems;
pub use routing_key::RoutingKeyTemplate;
pub use secret::Secret;

// ---------------------------------------------------------------------------------------------
// The file as written.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: server::RawServer,
    store: store::RawStore,
    amqp: amqp::RawAmqp,
    #[serde(default)]
    delivery: delivery::RawDelivery,
    #[serde(default)]
    log: log::RawLog,
    #[serde(default)]
    admin: admin::RawAdmin,
    #[serde(default)]
    endpoint: Vec<endpoint::RawEndpoint>,
}

// ---------------------------------------------------------------------------------------------
// The validated configuration.

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub amqp: AmqpConfig,
    pub delivery: DeliveryConfig,
    pub log: LogConfig,
    pub admin: AdminConfig,
    pub endpoints: Vec<Endpoint>,
}

impl Config {
    /// Parses and validates `text`; `env` looks up environment variables (`url_env`,
    /// `token_env`, `secrets_env`). Reads no file: a `secrets_file` is reported as unreadable
    /// (see [`Config::parse_with_files`]).
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::parse_with_files(text, env, &|_| Err(io::ErrorKind::Unsupported.into()))
    }

    /// As [`Config::parse`], with `read_file` reading each endpoint's `secrets_file`.
    pub fn parse_with_files(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        read_file: &dyn Fn(&Path) -> io::Result<String>,
    ) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            problems: vec![redact_toml_error(&e)],
        })?;
        let mut problems = Problems::default();
        let sources = endpoint::SecretSources { env, read_file };
        let config = validate(raw, &sources, &mut problems);
        problems.finish(config)
    }
}

/// toml's messages quote the offending line, which may hold a secret: keep only the first line
/// (what is wrong and where) and drop the excerpt.
fn redact_toml_error(e: &toml::de::Error) -> String {
    let mut message = e.message().to_owned();
    if let Some(span) = e.span() {
        message = format!("{message} (at byte {})", span.start);
    }
    message
}

/// Every section in the order of `config.toml.example`; `None` when one could not be built.
fn validate(
    raw: RawConfig,
    sources: &endpoint::SecretSources<'_>,
    problems: &mut Problems,
) -> Option<Config> {
    let env = sources.env;
    let request_timeout_ms = raw.server.request_timeout_ms();
    let server = raw.server.validate(problems);
    let admin = raw.admin.validate(env, problems);
    let store = raw.store.validate(problems);
    let amqp = raw.amqp.validate(env, problems);
    let delivery = raw.delivery.validate(request_timeout_ms, problems);
    let log = raw.log.validate(problems);
    let endpoints = endpoint::validate(raw.endpoint, sources, problems);
    let config = Config {
        server: server?,
        store: store?,
        amqp: amqp?,
        delivery,
        log,
        admin: admin?,
        endpoints: endpoints?,
    };
    Some(config)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::testing::{MINIMAL, no_env};
    use super::*;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(MINIMAL, &no_env).expect("valid");
        assert_eq!(c.server.max_body_bytes, 1024 * 1024);
        assert_eq!(c.delivery.ack, AckMode::Confirmed);
        assert_eq!(c.delivery.confirm_timeout, Duration::from_secs(5));
        assert_eq!(c.endpoints[0].tolerance_secs, 300);
        assert_eq!(c.amqp.routing_key.render("live", "a.b", "ep"), "live.a.b");
        assert_eq!(c.store.cache_capacity_bytes, 64 * 1024 * 1024);
        assert_eq!(c.amqp.park_after_attempts, 20);
    }

    #[test]
    fn example_config_is_valid() {
        let text = include_str!("../../config.toml.example");
        Config::parse(text, &no_env).expect("config.toml.example must stay valid");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let text = MINIMAL.replace("[store]", "[store]\nsurprise = 1");
        let err = Config::parse(&text, &no_env).expect_err("unknown key");
        assert!(err.problems[0].contains("surprise"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_with_its_key_path() {
        let text = MINIMAL
            .replace("127.0.0.1:8080", "nope")
            .replace(
                "\"gate.events\"",
                "\"gate.events\"\nrouting_key = \"{env}\"",
            )
            .replace(
                "secrets = [\"whsec_live_0123456789abcdef\"]",
                "secrets = [\"whsec_short\"]",
            )
            .replace("[store]", "[delivery]\nconfirm_timeout_ms = 20000\n[store]");
        let err = Config::parse(&text, &no_env).expect_err("invalid");
        let all = err.to_string();
        for key in [
            "server.listen",
            "amqp.routing_key",
            "endpoint[0].secrets[0]",
            "delivery.confirm_timeout_ms",
        ] {
            assert!(all.contains(key), "{key} missing from {all}");
        }
        assert!(!all.contains("whsec_short"), "secret leaked: {all}");
    }

    #[test]
    fn toml_syntax_errors_do_not_quote_the_file() {
        let text = MINIMAL.replace(
            "secrets = [\"whsec_live_0123456789abcdef\"]",
            "secrets = [\"whsec_live_0123456789abcdef\"",
        );
        let err = Config::parse(&text, &no_env).expect_err("syntax");
        assert!(!err.to_string().contains("whsec_live"), "{err}");
    }
}
