//! Configuration: the TOML file as written (`RawConfig`, unknown keys rejected) and the validated
//! [`Config`] the rest of the relay trusts.
//!
//! Owns: defaults, validation, secret lookup from the environment. Does not own: reading the file
//! (the caller passes its text) or the process environment (the caller passes a lookup function).
//! Pure. Guarantee: `Config::parse` reports every problem at once, each with its key path, and no
//! error or `Debug` output contains a secret value or the broker password.

use std::collections::HashSet;

use std::path::PathBuf;

use serde::Deserialize;

mod admin;
mod amqp;
mod delivery;
mod duration;
mod log;
mod problems;
mod routing_key;
mod secret;
mod server;
mod store;
#[cfg(test)]
mod testing;

pub use admin::AdminConfig;
pub use amqp::{AMQP_SHORT_STRING, AmqpConfig, AmqpUrl};
pub use delivery::{AckMode, DeliveryConfig};
pub use log::{LogConfig, LogFormat};
pub use server::ServerConfig;
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
    endpoint: Vec<RawEndpoint>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    name: String,
    path: String,
    environment: String,
    secrets: Option<Vec<String>>,
    secrets_env: Option<String>,
    secrets_file: Option<PathBuf>,
    tolerance_secs: Option<u64>,
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

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: String,
    pub path: String,
    pub environment: String,
    pub secrets: Vec<Secret>,
    pub tolerance_secs: u32,
}

// Defaults, each with its reason.
const DEFAULT_TOLERANCE_SECS: u64 = 300;
impl Config {
    /// Parses and validates `text`; `env` looks up environment variables (for `secrets_env`).
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            problems: vec![redact_toml_error(&e)],
        })?;
        let mut problems = Problems::default();
        let config = validate(raw, env, &mut problems);
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

fn validate(
    raw: RawConfig,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> Option<Config> {
    let request_timeout_ms = raw.server.request_timeout_ms();
    let server = raw.server.validate(problems);
    let admin = raw.admin.validate(env, problems);
    let store = raw.store.validate(problems);
    let amqp = raw.amqp.validate(env, problems);
    if raw.endpoint.is_empty() {
        problems.report(
            "endpoint",
            "at least one [[endpoint]] is required".to_owned(),
        );
    }
    let mut names = HashSet::new();
    let mut paths = HashSet::new();
    let mut endpoints = Vec::new();
    for (i, e) in raw.endpoint.into_iter().enumerate() {
        let key = |field: &str| format!("endpoint[{i}].{field}");
        if !valid_name(&e.name) {
            problems.report(
                &key("name"),
                format!("{:?} must be 1-64 of [A-Za-z0-9_-]", e.name),
            );
        } else if !names.insert(e.name.clone()) {
            problems.report(&key("name"), format!("{:?} is used twice", e.name));
        }
        if !e.path.starts_with('/')
            || e.path.contains(['?', '#'])
            || e.path.chars().any(char::is_whitespace)
        {
            problems.report(
                &key("path"),
                format!(
                    "{:?} must start with / and have no query, fragment or spaces",
                    e.path
                ),
            );
        } else if !paths.insert(e.path.clone()) {
            problems.report(&key("path"), format!("{:?} is used twice", e.path));
        }
        if !valid_name(&e.environment) {
            problems.report(
                &key("environment"),
                format!("{:?} must be 1-64 of [A-Za-z0-9_-]", e.environment),
            );
        }
        let secrets = endpoint_secrets(&e, env, &key, &mut |k, w| problems.report(k, w));
        let tolerance = e.tolerance_secs.unwrap_or(DEFAULT_TOLERANCE_SECS);
        if tolerance == 0 || tolerance > 86_400 {
            problems.report(
                &key("tolerance_secs"),
                format!("{tolerance} is out of range 1..=86400"),
            );
        }
        endpoints.push(Endpoint {
            name: e.name,
            path: e.path,
            environment: e.environment,
            secrets,
            tolerance_secs: u32::try_from(tolerance).unwrap_or(u32::MAX),
        });
    }

    // The dedupe key is (environment, event id): an endpoint whose secrets differ from another's
    // in the same environment would let one secret's holder claim the other's event ids.
    for (i, e) in endpoints.iter().enumerate() {
        let same_env = endpoints[..i]
            .iter()
            .find(|other| other.environment == e.environment);
        if let Some(other) = same_env {
            if secret_set(other) != secret_set(e) {
                problems.report(
                    &format!("endpoint[{i}].secrets"),
                    format!(
                        "endpoints {:?} and {:?} share environment {:?} with different secrets; \
                         give each its own environment, or the same secrets",
                        other.name, e.name, e.environment
                    ),
                );
            }
        }
    }
    let delivery = raw.delivery.validate(request_timeout_ms, problems);
    let log = raw.log.validate(problems);

    let config = Config {
        server: server?,
        store: store?,
        amqp: amqp?,
        delivery,
        log,
        admin: admin?,
        endpoints,
    };
    Some(config)
}

fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Secrets from `secrets` (inline) or `secrets_env` (comma-separated), exactly one of them.
fn endpoint_secrets(
    e: &RawEndpoint,
    env: &dyn Fn(&str) -> Option<String>,
    key: &dyn Fn(&str) -> String,
    problem: &mut dyn FnMut(&str, String),
) -> Vec<Secret> {
    let sources = usize::from(e.secrets.is_some())
        + usize::from(e.secrets_env.is_some())
        + usize::from(e.secrets_file.is_some());
    if sources != 1 {
        problem(
            &key("secrets"),
            "set exactly one of secrets (inline), secrets_env (environment variable) or secrets_file".to_owned(),
        );
        return Vec::new();
    }
    let values: Vec<String> = match (&e.secrets, &e.secrets_env, &e.secrets_file) {
        (Some(inline), _, _) => inline.clone(),
        // One secret per line; blank lines and # comments skipped. Re-read on SIGHUP.
        (_, _, Some(path)) => match std::fs::read_to_string(path) {
            Ok(text) => text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned)
                .collect(),
            Err(err) => {
                problem(
                    &key("secrets_file"),
                    format!("cannot read {}: {}", path.display(), err.kind()),
                );
                return Vec::new();
            }
        },
        (_, Some(var), _) => match env(var) {
            Some(list) => list
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            None => {
                problem(
                    &key("secrets_env"),
                    format!("environment variable {var} is not set"),
                );
                return Vec::new();
            }
        },
        (None, None, None) => unreachable!("exactly one source is set, checked above"),
    };
    if values.is_empty() {
        problem(
            &key("secrets"),
            "at least one secret is required".to_owned(),
        );
    }
    for (j, value) in values.iter().enumerate() {
        // Short secrets are guessable; 0Gate's are whsec_ plus a long random tail.
        if value.len() < 16 {
            problem(
                &key(&format!("secrets[{j}]")),
                "is shorter than 16 characters (value not shown)".to_owned(),
            );
        }
    }
    values.into_iter().map(Secret::new).collect()
}

/// An endpoint's secrets, order aside.
fn secret_set(endpoint: &Endpoint) -> Vec<&str> {
    let mut set: Vec<&str> = endpoint.secrets.iter().map(Secret::expose).collect();
    set.sort_unstable();
    set
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
    fn endpoints_sharing_an_environment_must_share_their_secrets() {
        let second = |secret: &str| {
            format!(
                "{MINIMAL}\n[[endpoint]]\nname = \"other\"\npath = \"/other\"\n\
                 environment = \"live\"\nsecrets = [\"{secret}\"]\n"
            )
        };
        let err = Config::parse(&second("whsec_other_0123456789abcdef"), &no_env)
            .expect_err("different secrets in one environment");
        assert!(err.problems[0].contains("endpoint[1].secrets"), "{err}");
        assert!(
            !err.to_string().contains("whsec_"),
            "no secret in the message: {err}"
        );
        Config::parse(&second("whsec_live_0123456789abcdef"), &no_env)
            .expect("the same secrets in one environment are fine");
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
    fn secrets_come_from_the_environment() {
        let text = MINIMAL.replace(
            "secrets = [\"whsec_live_0123456789abcdef\"]",
            "secrets_env = \"LIVE_SECRETS\"",
        );
        let env = |name: &str| {
            (name == "LIVE_SECRETS")
                .then(|| "whsec_new_0123456789abcdef, whsec_old_0123456789abcdef".to_owned())
        };
        let c = Config::parse(&text, &env).expect("valid");
        let got: Vec<&str> = c.endpoints[0].secrets.iter().map(Secret::expose).collect();
        assert_eq!(
            got,
            ["whsec_new_0123456789abcdef", "whsec_old_0123456789abcdef"]
        );
        let err = Config::parse(&text, &no_env).expect_err("unset variable");
        assert!(err.to_string().contains("endpoint[0].secrets_env"), "{err}");
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
