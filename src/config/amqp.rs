//! `[amqp]`: the broker, the exchange and routing key events go to, and the publisher's bounds.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::problems::{Bound, Problems};
use super::routing_key::RoutingKeyTemplate;

const DEFAULT_ROUTING_KEY: &str = "{environment}.{type}";
const MAX_IN_FLIGHT: Bound = Bound {
    key: "amqp.max_in_flight",
    // Enough to keep a broker's confirm pipeline full across a loopback or LAN round trip.
    default: 256,
    max: 65_535,
};
const CONNECT_TIMEOUT_MS: Bound = Bound {
    key: "amqp.connect_timeout_ms",
    default: 5_000,
    max: 600_000,
};
const PUBLISH_CONFIRM_TIMEOUT_MS: Bound = Bound {
    key: "amqp.publish_confirm_timeout_ms",
    // A confirm this late means a blocked or broken broker; the connection is replaced.
    default: 15_000,
    max: 600_000,
};
const RECONNECT_MAX_BACKOFF_MS: Bound = Bound {
    key: "amqp.reconnect_max_backoff_ms",
    default: 30_000,
    max: 3_600_000,
};
const PARK_AFTER_ATTEMPTS: Bound = Bound {
    key: "amqp.park_after_attempts",
    // With the refusal backoff (100 ms doubling to `reconnect_max_backoff_ms`, 30 s by default)
    // twenty attempts span about six minutes: a full queue or a missing binding fixed within
    // that is delivered without an operator; past it, the event stops holding up the others.
    default: 20,
    max: 1_000_000,
};
/// AMQP short strings (exchange names, routing keys) are at most 255 bytes.
pub(crate) const AMQP_SHORT_STRING: usize = 255;
/// Broker nodes one relay may list: a cluster is 3 or 5 nodes; the bound keeps the node label
/// of `gate_relay_amqp_node_connected` a small closed set.
pub(crate) const MAX_BROKER_NODES: usize = 16;

/// An AMQP URL; `Debug`/`Display` hide the password.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpUrl(String);

impl AmqpUrl {
    /// The URL with its password, for connecting. Never log or format it.
    pub(crate) fn expose(&self) -> &str {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAmqp {
    url: Option<String>,
    url_env: Option<String>,
    urls: Option<Vec<String>>,
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

#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// The broker's nodes (one with `url` or `url_env`, several with `urls`). The publisher
    /// starts at a random one and moves to the next when a connect fails or a connection is
    /// lost, so several relays spread over a cluster.
    pub urls: Vec<AmqpUrl>,
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

impl RawAmqp {
    pub(super) fn validate(
        self,
        env: &dyn Fn(&str) -> Option<String>,
        problems: &mut Problems,
    ) -> Option<AmqpConfig> {
        let max_in_flight = problems.positive(&MAX_IN_FLIGHT, self.max_in_flight);
        let connect_timeout_ms = problems.positive(&CONNECT_TIMEOUT_MS, self.connect_timeout_ms);
        let publish_confirm_timeout_ms =
            problems.positive(&PUBLISH_CONFIRM_TIMEOUT_MS, self.publish_confirm_timeout_ms);
        let reconnect_max_backoff_ms =
            problems.positive(&RECONNECT_MAX_BACKOFF_MS, self.reconnect_max_backoff_ms);
        let park_after_attempts = problems.positive(&PARK_AFTER_ATTEMPTS, self.park_after_attempts);
        let urls = self.urls(env, problems);
        if self.client_cert_path.is_some() != self.client_key_path.is_some() {
            problems.report(
                "amqp.client_cert_path",
                "set client_cert_path and client_key_path together",
            );
        }
        self.check_names(problems);
        let routing_key = problems.check(
            "amqp.routing_key",
            RoutingKeyTemplate::parse(self.routing_key.as_deref().unwrap_or(DEFAULT_ROUTING_KEY)),
        );
        let ms = Duration::from_millis;
        Some(AmqpConfig {
            urls: urls?,
            ca_path: self.ca_path,
            client_cert_path: self.client_cert_path,
            client_key_path: self.client_key_path,
            exchange: self.exchange,
            routing_key: routing_key?,
            declare_queue: self.declare_queue,
            max_in_flight: usize::try_from(max_in_flight).unwrap_or(usize::MAX),
            connect_timeout: ms(connect_timeout_ms),
            publish_confirm_timeout: ms(publish_confirm_timeout_ms),
            reconnect_max_backoff: ms(reconnect_max_backoff_ms),
            park_after_attempts: u32::try_from(park_after_attempts).unwrap_or(u32::MAX),
        })
    }

    /// The URLs: one inline (`url`) or from the environment (`url_env`), or several (`urls`);
    /// exactly one of the three.
    fn urls(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        problems: &mut Problems,
    ) -> Option<Vec<AmqpUrl>> {
        let (key, urls) = match (&self.url, &self.url_env, &self.urls) {
            (Some(url), None, None) => ("amqp.url", vec![url.clone()]),
            (None, Some(var), None) => (
                "amqp.url_env",
                vec![problems.check(
                    "amqp.url_env",
                    env(var).ok_or_else(|| format!("environment variable {var} is not set")),
                )?],
            ),
            (None, None, Some(urls)) => ("amqp.urls", urls.clone()),
            (None, None, None) => {
                problems.report(
                    "amqp.url",
                    "set url, url_env to read it from the environment, or urls for several nodes",
                );
                return None;
            }
            _ => {
                problems.report("amqp.url", "set one of url, url_env and urls");
                return None;
            }
        };
        if urls.is_empty() || urls.len() > MAX_BROKER_NODES {
            problems.report(
                key,
                format!("list between 1 and {MAX_BROKER_NODES} broker nodes"),
            );
            return None;
        }
        if urls
            .iter()
            .any(|url| !(url.starts_with("amqp://") || url.starts_with("amqps://")))
        {
            problems.report(key, "must start with amqp:// or amqps:// (value not shown)");
            return None;
        }
        Some(urls.into_iter().map(AmqpUrl).collect())
    }

    /// `exchange` and `declare_queue` are AMQP short strings outside RabbitMQ's `amq.` namespace.
    fn check_names(&self, problems: &mut Problems) {
        let bad_queue =
            |q: &String| q.is_empty() || q.len() > AMQP_SHORT_STRING || q.starts_with("amq.");
        if self.declare_queue.as_ref().is_some_and(bad_queue) {
            problems.report(
                "amqp.declare_queue",
                format!("must be 1..={AMQP_SHORT_STRING} bytes, not starting with amq."),
            );
        }
        if self.exchange.is_empty() || self.exchange.len() > AMQP_SHORT_STRING {
            problems.report(
                "amqp.exchange",
                format!("must be 1..={AMQP_SHORT_STRING} bytes"),
            );
        } else if self.exchange.starts_with("amq.") {
            problems.report(
                "amqp.exchange",
                "names starting with amq. are reserved by RabbitMQ",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::super::testing::{MINIMAL, no_env};
    use super::*;

    #[test]
    fn secrets_and_password_never_show_in_debug() {
        let c = Config::parse(MINIMAL, &no_env).expect("valid");
        let debug = format!("{c:?}");
        assert!(!debug.contains("whsec_live"), "{debug}");
        assert!(!debug.contains("guest:guest"), "{debug}");
        assert_eq!(
            c.amqp.urls[0].redacted(),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        let at = AmqpUrl("amqp://relay:p@ss@broker:5672/%2f".to_owned());
        assert_eq!(at.redacted(), "amqp://relay:***@broker:5672/%2f");
    }

    #[test]
    fn several_broker_nodes_are_listed_with_urls_and_exactly_one_form_is_allowed() {
        let one = r#"url = "amqp://guest:guest@127.0.0.1:5672/%2f""#;
        let with = |amqp: &str| MINIMAL.replace(one, amqp);
        let c = Config::parse(
            &with(r#"urls = ["amqp://a:pw@n1:5672/%2f", "amqps://a:pw@n2:5671/%2f"]"#),
            &no_env,
        )
        .expect("valid");
        let shown: Vec<_> = c.amqp.urls.iter().map(AmqpUrl::redacted).collect();
        assert_eq!(
            shown,
            ["amqp://a:***@n1:5672/%2f", "amqps://a:***@n2:5671/%2f"]
        );
        for (amqp, problem) in [
            (
                format!(
                    r#"{one}
urls = ["amqp://n2"]"#
                ),
                "amqp.url: set one of url, url_env and urls",
            ),
            (
                "urls = []".to_owned(),
                "amqp.urls: list between 1 and 16 broker nodes",
            ),
            (
                r#"urls = ["amqp://n1", "http://pw@n2"]"#.to_owned(),
                "amqp.urls: must start with amqp:// or amqps:// (value not shown)",
            ),
        ] {
            let err = Config::parse(&with(&amqp), &no_env).expect_err("invalid");
            let text = err.to_string();
            assert!(text.contains(problem), "{text}");
            assert!(!text.contains("pw@"), "no URL is quoted: {text}");
        }
    }
}
