//! `[admin]`: the listener of health, readiness, metrics, inspection and replay, and its token.

use std::net::SocketAddr;

use serde::Deserialize;

use super::problems::Problems;
use super::secret::Secret;

const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    listen: Option<String>,
    token_env: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Health, readiness, metrics, inspection and replay; loopback by default.
    pub listen: SocketAddr,
    /// Bearer token for the admin API; required when `listen` is not loopback.
    pub token: Option<Secret>,
}

impl RawAdmin {
    pub(super) fn validate(
        self,
        env: &dyn Fn(&str) -> Option<String>,
        problems: &mut Problems,
    ) -> Option<AdminConfig> {
        let listen = self.listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN);
        let listen: Option<SocketAddr> = problems.check(
            "admin.listen",
            listen
                .parse()
                .map_err(|_| format!("{listen:?} is not an address like 127.0.0.1:9090")),
        );
        let token = match &self.token_env {
            None => Some(None),
            Some(var) => problems.check("admin.token_env", token(var, env)).map(Some),
        };
        let open = listen.is_some_and(|addr| !addr.ip().is_loopback());
        if self.token_env.is_none() && open {
            problems.report(
                "admin.token_env",
                "the admin listener is not on loopback: set token_env",
            );
        }
        Some(AdminConfig {
            listen: listen?,
            token: token?,
        })
    }
}

/// The admin token from the environment variable `var`.
fn token(var: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Secret, String> {
    match env(var) {
        Some(token) if token.len() >= 16 => Ok(Secret::new(token)),
        Some(_) => Err(format!("the token in {var} is shorter than 16 characters")),
        None => Err(format!("environment variable {var} is not set")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::super::testing::{MINIMAL, no_env};

    #[test]
    fn admin_beyond_loopback_needs_a_token() {
        let text = format!("{MINIMAL}\n[admin]\nlisten = \"0.0.0.0:9090\"\n");
        let err = Config::parse(&text, &no_env).expect_err("no token");
        assert!(err.to_string().contains("admin.token_env"), "{err}");
        let text = format!("{MINIMAL}\n[admin]\nlisten = \"0.0.0.0:9090\"\ntoken_env = \"T\"\n");
        let env = |_: &str| Some("a-long-enough-admin-token".to_owned());
        let c = Config::parse(&text, &env).expect("valid");
        assert!(c.admin.token.is_some());
    }
}
