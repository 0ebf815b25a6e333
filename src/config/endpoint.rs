//! `[[endpoint]]`: the webhook URLs, their environments and their secrets.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::problems::Problems;
use super::secret::Secret;

const DEFAULT_TOLERANCE_SECS: u64 = 300;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEndpoint {
    name: String,
    path: String,
    environment: String,
    secrets: Option<Vec<String>>,
    secrets_env: Option<String>,
    secrets_file: Option<PathBuf>,
    tolerance_secs: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: String,
    pub path: String,
    pub environment: String,
    pub secrets: Vec<Secret>,
    pub tolerance_secs: u32,
}

/// Where `secrets_env` and `secrets_file` are looked up; the caller decides.
pub(super) struct SecretSources<'a> {
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
    pub(super) read_file: &'a dyn Fn(&Path) -> io::Result<String>,
}

/// Names and paths already taken by earlier endpoints.
#[derive(Default)]
struct Taken {
    names: HashSet<String>,
    paths: HashSet<String>,
}

/// Every `[[endpoint]]`, or `None` when the secrets of one could not be had.
pub(super) fn validate(
    raw: Vec<RawEndpoint>,
    sources: &SecretSources<'_>,
    problems: &mut Problems,
) -> Option<Vec<Endpoint>> {
    if raw.is_empty() {
        problems.report("endpoint", "at least one [[endpoint]] is required");
    }
    let mut taken = Taken::default();
    let endpoints: Vec<Option<Endpoint>> = raw
        .into_iter()
        .enumerate()
        .map(|(i, e)| e.validate(i, sources, &mut taken, problems))
        .collect();
    check_shared_environments(&endpoints, problems);
    endpoints.into_iter().collect()
}

impl RawEndpoint {
    fn validate(
        self,
        i: usize,
        sources: &SecretSources<'_>,
        taken: &mut Taken,
        problems: &mut Problems,
    ) -> Option<Endpoint> {
        let key = |field: &str| format!("endpoint[{i}].{field}");
        if !valid_name(&self.name) {
            problems.report(
                &key("name"),
                format!("{:?} must be 1-64 of [A-Za-z0-9_-]", self.name),
            );
        } else if !taken.names.insert(self.name.clone()) {
            problems.report(&key("name"), format!("{:?} is used twice", self.name));
        }
        if !valid_path(&self.path) {
            problems.report(
                &key("path"),
                format!(
                    "{:?} must start with / and have no query, fragment or spaces",
                    self.path
                ),
            );
        } else if !taken.paths.insert(self.path.clone()) {
            problems.report(&key("path"), format!("{:?} is used twice", self.path));
        }
        if !valid_name(&self.environment) {
            problems.report(
                &key("environment"),
                format!("{:?} must be 1-64 of [A-Za-z0-9_-]", self.environment),
            );
        }
        let secrets = self.secrets(&key, sources, problems);
        let tolerance = self.tolerance_secs.unwrap_or(DEFAULT_TOLERANCE_SECS);
        if tolerance == 0 || tolerance > 86_400 {
            problems.report(
                &key("tolerance_secs"),
                format!("{tolerance} is out of range 1..=86400"),
            );
        }
        Some(Endpoint {
            name: self.name,
            path: self.path,
            environment: self.environment,
            secrets: secrets?,
            tolerance_secs: u32::try_from(tolerance).unwrap_or(u32::MAX),
        })
    }

    /// The secrets, each checked; `None` when their source could not be read.
    fn secrets(
        &self,
        key: &dyn Fn(&str) -> String,
        sources: &SecretSources<'_>,
        problems: &mut Problems,
    ) -> Option<Vec<Secret>> {
        let values = self.secret_values(key, sources, problems)?;
        if values.is_empty() {
            problems.report(&key("secrets"), "at least one secret is required");
        }
        for (j, value) in values.iter().enumerate() {
            // Short secrets are guessable; 0Gate's are whsec_ plus a long random tail.
            if value.len() < 16 {
                problems.report(
                    &key(&format!("secrets[{j}]")),
                    "is shorter than 16 characters (value not shown)",
                );
            }
        }
        Some(values.into_iter().map(Secret::new).collect())
    }

    /// Secrets from `secrets` (inline), `secrets_env` (comma-separated) or `secrets_file`,
    /// exactly one of them.
    fn secret_values(
        &self,
        key: &dyn Fn(&str) -> String,
        sources: &SecretSources<'_>,
        problems: &mut Problems,
    ) -> Option<Vec<String>> {
        match (&self.secrets, &self.secrets_env, &self.secrets_file) {
            (Some(inline), None, None) => Some(inline.clone()),
            (None, Some(var), None) => {
                let list = problems.check(
                    &key("secrets_env"),
                    (sources.env)(var)
                        .ok_or_else(|| format!("environment variable {var} is not set")),
                )?;
                Some(
                    list.split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect(),
                )
            }
            // One secret per line; blank lines and # comments skipped. Re-read on SIGHUP.
            (None, None, Some(path)) => {
                let text = problems.check(
                    &key("secrets_file"),
                    (sources.read_file)(path)
                        .map_err(|err| format!("cannot read {}: {}", path.display(), err.kind())),
                )?;
                Some(
                    text.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                        .map(str::to_owned)
                        .collect(),
                )
            }
            _ => {
                problems.report(
                    &key("secrets"),
                    "set exactly one of secrets (inline), secrets_env (environment variable) or secrets_file",
                );
                None
            }
        }
    }
}

fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn valid_path(path: &str) -> bool {
    path.starts_with('/') && !path.contains(['?', '#']) && !path.chars().any(char::is_whitespace)
}

/// The dedupe key is (environment, event id): an endpoint whose secrets differ from another's
/// in the same environment would let one secret's holder claim the other's event ids. Endpoints
/// whose secrets could not be read are left out (their problem is already reported).
fn check_shared_environments(endpoints: &[Option<Endpoint>], problems: &mut Problems) {
    for (i, e) in endpoints.iter().enumerate() {
        let Some(e) = e else { continue };
        let same_env = endpoints[..i]
            .iter()
            .flatten()
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
}

/// An endpoint's secrets, order aside.
fn secret_set(endpoint: &Endpoint) -> Vec<&str> {
    let mut set: Vec<&str> = endpoint.secrets.iter().map(Secret::expose).collect();
    set.sort_unstable();
    set
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::super::testing::{MINIMAL, no_env};
    use super::*;

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
    fn secrets_files_are_read_only_through_the_reader_passed_in() {
        let text = MINIMAL.replace(
            "secrets = [\"whsec_live_0123456789abcdef\"]",
            "secrets_file = \"/run/live.secrets\"",
        );
        let err = Config::parse(&text, &no_env).expect_err("parse reads no file");
        assert!(
            err.to_string()
                .contains("endpoint[0].secrets_file: cannot read /run/live.secrets: unsupported"),
            "{err}"
        );
        let read = |path: &Path| {
            assert_eq!(path, Path::new("/run/live.secrets"));
            Ok("# rotated on Monday\n\n  whsec_file_0123456789abcdef  \n".to_owned())
        };
        let c = Config::parse_with_files(&text, &no_env, &read).expect("valid");
        let got: Vec<&str> = c.endpoints[0].secrets.iter().map(Secret::expose).collect();
        assert_eq!(got, ["whsec_file_0123456789abcdef"]);
    }
}
