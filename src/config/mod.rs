//! Configuration: the TOML file as written (`RawConfig`, unknown keys rejected) and the validated
//! [`Config`] the rest of the relay trusts.
//!
//! Owns: defaults, validation, secret lookup from the environment. Does not own: reading the file
//! (the caller passes its text) or the process environment (the caller passes a lookup function).
//! Pure. Guarantee: `Config::parse` reports every problem at once, each with its key path, and no
//! error or `Debug` output contains a secret value or the broker password.

use std::collections::HashSet;

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

mod admin;
mod delivery;
mod duration;
mod log;
mod problems;
mod secret;
mod server;
mod store;
#[cfg(test)]
mod testing;

pub use admin::AdminConfig;
pub use delivery::{AckMode, DeliveryConfig};
pub use log::{LogConfig, LogFormat};
pub use server::ServerConfig;
pub use store::{DEFAULT_CACHE_CAPACITY_BYTES, StoreConfig};

pub use problems::ConfigError;
use problems::Problems;
pub use secret::Secret;

/// An AMQP URL; `Debug`/`Display` hide the password.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpUrl(String);

impl AmqpUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced, for logs.
    pub fn redacted(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return "<unparsable amqp url>".to_owned();
        };
        // The authority ends at the first '/'; its userinfo at the last '@' (a password may hold '@').
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let Some((userinfo, host)) = authority.rsplit_once('@') else {
            return self.0.clone();
        };
        let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
        format!("{scheme}://{user}:***@{host}{path}")
    }
}

impl std::fmt::Debug for AmqpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AmqpUrl({})", self.redacted())
    }
}

// ---------------------------------------------------------------------------------------------
// The file as written.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: server::RawServer,
    store: store::RawStore,
    amqp: RawAmqp,
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
struct RawAmqp {
    url: Option<String>,
    url_env: Option<String>,
    ca_path: Option<PathBuf>,
    client_cert_path: Option<PathBuf>,
    client_key_path: Option<PathBuf>,
    exchange: String,
    routing_key: Option<String>,
    declare_queue: Option<String>,
    max_in_flight: Option<u64>,
    connect_timeout_ms: Option<u64>,
    publish_confirm_timeout_ms: Option<u64>,
    reconnect_max_backoff_ms: Option<u64>,
    park_after_attempts: Option<u64>,
}

impl std::fmt::Debug for RawAmqp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawAmqp").finish_non_exhaustive()
    }
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
pub struct AmqpConfig {
    pub url: AmqpUrl,
    /// For `amqps://`: extra CA certificates (PEM) and an optional client certificate and key.
    pub ca_path: Option<PathBuf>,
    pub client_cert_path: Option<PathBuf>,
    pub client_key_path: Option<PathBuf>,
    pub exchange: String,
    pub routing_key: RoutingKeyTemplate,
    /// For development and quick starts: a durable queue the relay declares and binds to every
    /// routing key (`#`), so events have somewhere to go. Production topologies declare their own.
    pub declare_queue: Option<String>,
    pub max_in_flight: usize,
    pub connect_timeout: Duration,
    /// How long the publisher waits for one confirm before treating the channel as broken.
    pub publish_confirm_timeout: Duration,
    pub reconnect_max_backoff: Duration,
    /// Refusals (nack, return) or isolated failed publishes after which an event is parked.
    pub park_after_attempts: u32,
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: String,
    pub path: String,
    pub environment: String,
    pub secrets: Vec<Secret>,
    pub tolerance_secs: u32,
}

/// One segment of a routing-key template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Environment,
    Type,
    Endpoint,
}

/// `{environment}.{type}` and friends, parsed once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingKeyTemplate(Vec<Segment>);

impl RoutingKeyTemplate {
    pub fn parse(template: &str) -> Result<Self, String> {
        let mut segments = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                segments.push(Segment::Literal(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| "unclosed '{'".to_owned())?;
            let name = &rest[open + 1..open + close];
            segments.push(match name {
                "environment" => Segment::Environment,
                "type" => Segment::Type,
                "endpoint" => Segment::Endpoint,
                other => {
                    return Err(format!(
                        "unknown placeholder {{{other}}}; use {{environment}}, {{type}} or {{endpoint}}"
                    ));
                }
            });
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err("unmatched '}'".to_owned());
        }
        if !rest.is_empty() {
            segments.push(Segment::Literal(rest.to_owned()));
        }
        Ok(Self(segments))
    }

    pub fn render(&self, environment: &str, event_type: &str, endpoint: &str) -> String {
        self.0
            .iter()
            .map(|segment| match segment {
                Segment::Literal(s) => s.as_str(),
                Segment::Environment => environment,
                Segment::Type => event_type,
                Segment::Endpoint => endpoint,
            })
            .collect()
    }
}

// Defaults, each with its reason.
const DEFAULT_ROUTING_KEY: &str = "{environment}.{type}";
/// Enough to keep a broker's confirm pipeline full across a loopback or LAN round trip.
const DEFAULT_MAX_IN_FLIGHT: u64 = 256;
const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// A confirm this late means a blocked or broken broker; the connection is replaced.
const DEFAULT_PUBLISH_CONFIRM_TIMEOUT_MS: u64 = 15_000;
const DEFAULT_RECONNECT_MAX_BACKOFF_MS: u64 = 30_000;
/// With the refusal backoff (100 ms doubling to `reconnect_max_backoff_ms`, 30 s by default)
/// twenty attempts span about six minutes: a full queue or a missing binding fixed within
/// that is delivered without an operator; past it, the event stops holding up the others.
const DEFAULT_PARK_AFTER_ATTEMPTS: u64 = 20;
const DEFAULT_TOLERANCE_SECS: u64 = 300;
/// AMQP short strings (exchange names, routing keys) are at most 255 bytes.
pub const AMQP_SHORT_STRING: usize = 255;

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
    let max_in_flight = problems.positive(
        "amqp.max_in_flight",
        raw.amqp.max_in_flight,
        DEFAULT_MAX_IN_FLIGHT,
        65_535,
    );
    let connect_timeout_ms = problems.positive(
        "amqp.connect_timeout_ms",
        raw.amqp.connect_timeout_ms,
        DEFAULT_CONNECT_TIMEOUT_MS,
        600_000,
    );
    let publish_confirm_timeout_ms = problems.positive(
        "amqp.publish_confirm_timeout_ms",
        raw.amqp.publish_confirm_timeout_ms,
        DEFAULT_PUBLISH_CONFIRM_TIMEOUT_MS,
        600_000,
    );
    let reconnect_max_backoff_ms = problems.positive(
        "amqp.reconnect_max_backoff_ms",
        raw.amqp.reconnect_max_backoff_ms,
        DEFAULT_RECONNECT_MAX_BACKOFF_MS,
        3_600_000,
    );
    let park_after_attempts = problems.positive(
        "amqp.park_after_attempts",
        raw.amqp.park_after_attempts,
        DEFAULT_PARK_AFTER_ATTEMPTS,
        1_000_000,
    );
    let url = match (raw.amqp.url, &raw.amqp.url_env) {
        (Some(url), None) => url,
        (None, Some(var)) => env(var).unwrap_or_else(|| {
            problems.report(
                "amqp.url_env",
                format!("environment variable {var} is not set"),
            );
            "amqp://unset".to_owned()
        }),
        (Some(_), Some(_)) => {
            problems.report("amqp.url", "set either url or url_env, not both".to_owned());
            String::new()
        }
        (None, None) => {
            problems.report(
                "amqp.url",
                "set url, or url_env to read it from the environment".to_owned(),
            );
            "amqp://unset".to_owned()
        }
    };
    if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
        problems.report(
            "amqp.url",
            "must start with amqp:// or amqps:// (value not shown)".to_owned(),
        );
    }
    if raw.amqp.client_cert_path.is_some() != raw.amqp.client_key_path.is_some() {
        problems.report(
            "amqp.client_cert_path",
            "set client_cert_path and client_key_path together".to_owned(),
        );
    }
    if raw
        .amqp
        .declare_queue
        .as_ref()
        .is_some_and(|q| q.is_empty() || q.len() > AMQP_SHORT_STRING || q.starts_with("amq."))
    {
        problems.report(
            "amqp.declare_queue",
            format!("must be 1..={AMQP_SHORT_STRING} bytes, not starting with amq."),
        );
    }
    if raw.amqp.exchange.is_empty() || raw.amqp.exchange.len() > AMQP_SHORT_STRING {
        problems.report(
            "amqp.exchange",
            format!("must be 1..={AMQP_SHORT_STRING} bytes"),
        );
    } else if raw.amqp.exchange.starts_with("amq.") {
        problems.report(
            "amqp.exchange",
            "names starting with amq. are reserved by RabbitMQ".to_owned(),
        );
    }
    let routing_key = RoutingKeyTemplate::parse(
        raw.amqp
            .routing_key
            .as_deref()
            .unwrap_or(DEFAULT_ROUTING_KEY),
    )
    .unwrap_or_else(|why| {
        problems.report("amqp.routing_key", why);
        RoutingKeyTemplate(Vec::new())
    });

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

    let ms = Duration::from_millis;
    let config = Config {
        server: server?,
        store: store?,
        amqp: AmqpConfig {
            url: AmqpUrl(url),
            ca_path: raw.amqp.ca_path,
            client_cert_path: raw.amqp.client_cert_path,
            client_key_path: raw.amqp.client_key_path,
            exchange: raw.amqp.exchange,
            declare_queue: raw.amqp.declare_queue,
            routing_key,
            max_in_flight: usize::try_from(max_in_flight).unwrap_or(usize::MAX),
            connect_timeout: ms(connect_timeout_ms),
            publish_confirm_timeout: ms(publish_confirm_timeout_ms),
            reconnect_max_backoff: ms(reconnect_max_backoff_ms),
            park_after_attempts: u32::try_from(park_after_attempts).unwrap_or(u32::MAX),
        },
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
    fn secrets_and_password_never_show_in_debug() {
        let c = Config::parse(MINIMAL, &no_env).expect("valid");
        let debug = format!("{c:?}");
        assert!(!debug.contains("whsec_live"), "{debug}");
        assert!(!debug.contains("guest:guest"), "{debug}");
        assert_eq!(c.amqp.url.redacted(), "amqp://guest:***@127.0.0.1:5672/%2f");
        let at = AmqpUrl("amqp://relay:p@ss@broker:5672/%2f".to_owned());
        assert_eq!(at.redacted(), "amqp://relay:***@broker:5672/%2f");
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

    #[test]
    fn routing_key_templates() {
        let t = RoutingKeyTemplate::parse("gate.{endpoint}.{environment}.{type}").expect("valid");
        assert_eq!(
            t.render("live", "kyc.required", "main"),
            "gate.main.live.kyc.required"
        );
        assert!(RoutingKeyTemplate::parse("{nope}").is_err());
        assert!(RoutingKeyTemplate::parse("{type").is_err());
        assert!(RoutingKeyTemplate::parse("a}").is_err());
    }
}
