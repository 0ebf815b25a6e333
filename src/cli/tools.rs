//! `sign` and `send-test`: the operator's tools for producing a signed delivery, and reading the
//! secret and body they need (from a file or the environment, bounded; never from a flag).

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use bytes::Bytes;

use super::{EnvironmentMode, SecretArgs, emit, failure, runtime, unix_now, usage};
use crate::admin_client::{self, HttpUrl, Outgoing};
use crate::config::Secret;
use crate::signature;

/// Bodies read by `sign` and `send-test`: four times the largest body the relay can be configured
/// to accept (16 MiB), so oversize deliveries can still be tested.
const MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;

/// Secret files hold one line; anything this long is the wrong file.
const MAX_SECRET_FILE_BYTES: u64 = 4096;

/// 0Gate's secrets start `whsec_` (webhooks) or `sk_` (API keys).
fn looks_like_secret(text: &str) -> bool {
    text.starts_with("whsec_") || text.starts_with("sk_")
}

/// Reads an environment variable named on the command line. The name is echoed in errors, so a
/// name that looks like a pasted secret is refused without being repeated.
pub(super) fn from_env(flag: &str, name: &str) -> Result<String, String> {
    if looks_like_secret(name) {
        return Err(format!(
            "{flag} takes the NAME of an environment variable, not the secret itself"
        ));
    }
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Ok(value),
        Ok(_) => Err(format!("{flag}: the environment variable {name} is empty")),
        Err(std::env::VarError::NotPresent) => Err(format!(
            "{flag}: the environment variable {name} is not set"
        )),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!(
            "{flag}: the environment variable {name} is not UTF-8"
        )),
    }
}

impl SecretArgs {
    fn load(&self) -> Result<Secret, String> {
        if let Some(name) = &self.secret_env {
            return from_env("--secret-env", name).map(Secret::new);
        }
        let Some(path) = &self.secret_file else {
            return Err(
                "the webhook secret is required: --secret-env VAR or --secret-file PATH".to_owned(),
            );
        };
        if looks_like_secret(&path.to_string_lossy()) {
            return Err("--secret-file takes the path of a file, not the secret itself".to_owned());
        }
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_SECRET_FILE_BYTES + 1).read_to_string(&mut text))
            .map_err(|e| format!("--secret-file {}: {e}", path.display()))?;
        if text.len() as u64 > MAX_SECRET_FILE_BYTES {
            return Err(format!(
                "--secret-file {}: over {MAX_SECRET_FILE_BYTES} bytes, not a secret",
                path.display()
            ));
        }
        let secret = text.strip_suffix('\n').unwrap_or(&text);
        let secret = secret.strip_suffix('\r').unwrap_or(secret);
        if secret.is_empty() {
            return Err(format!(
                "--secret-file {}: the file is empty",
                path.display()
            ));
        }
        Ok(Secret::new(secret.to_owned()))
    }
}

/// The bytes of FILE, or of standard input for `-` or no FILE.
fn read_body(path: Option<&Path>) -> Result<Bytes, String> {
    let mut body = Vec::new();
    let (name, read) = match path {
        None => ("standard input".to_owned(), None),
        Some(p) if p == Path::new("-") => ("standard input".to_owned(), None),
        // A secret pasted where the file name goes must not be echoed back.
        Some(p) if looks_like_secret(&p.to_string_lossy()) => {
            return Err("FILE looks like a secret; pass the body's file name".to_owned());
        }
        Some(p) => (p.display().to_string(), Some(p)),
    };
    let result = match read {
        None => std::io::stdin()
            .lock()
            .take(MAX_BODY_BYTES + 1)
            .read_to_end(&mut body),
        Some(p) => {
            std::fs::File::open(p).and_then(|f| f.take(MAX_BODY_BYTES + 1).read_to_end(&mut body))
        }
    };
    result.map_err(|e| format!("cannot read {name}: {e}"))?;
    if body.len() as u64 > MAX_BODY_BYTES {
        return Err(format!("{name} is over {MAX_BODY_BYTES} bytes"));
    }
    Ok(Bytes::from(body))
}

pub(super) fn sign(secret: &SecretArgs, timestamp: Option<i64>, body: Option<&Path>) -> ExitCode {
    let secret = match secret.load() {
        Ok(s) => s,
        Err(message) => return usage(&message),
    };
    let body = match read_body(body) {
        Ok(b) => b,
        Err(message) => return usage(&message),
    };
    let t = timestamp.unwrap_or_else(unix_now);
    emit(&format!("{}\n", signature::sign(&secret, t, &body)));
    ExitCode::SUCCESS
}

pub(super) fn send_test(
    url: &str,
    secret: &SecretArgs,
    event_type: &str,
    body: Option<&Path>,
    mode: EnvironmentMode,
) -> ExitCode {
    let url = match HttpUrl::parse(url) {
        Ok(u) => u,
        Err(e) => return usage(&format!("--url {e}")),
    };
    let secret = match secret.load() {
        Ok(s) => s,
        Err(message) => return usage(&message),
    };
    let now = unix_now();
    let outgoing = match body {
        Some(path) => match read_body(Some(path)) {
            Ok(b) => Outgoing::from_body(b),
            Err(message) => return usage(&message),
        },
        None => Outgoing::test_event(event_type, mode == EnvironmentMode::Live, now, random()),
    };
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(admin_client::send_test(&url, &secret, &outgoing, now)) {
        Ok(report) => {
            emit(&admin_client::format_send_report(&report));
            if report.succeeded() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => failure(&e.to_string()),
    }
}

/// 64 random bits for a test event id. `RandomState` is seeded from the OS, which is all a
/// never-reused test id needs, without another dependency.
fn random() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(SystemTime::now())
}
