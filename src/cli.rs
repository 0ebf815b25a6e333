//! Command-line interface: subcommands, reading the config file, exit codes.
//!
//! Owns: the subcommands (`serve`, `check-config`, the operator tools `sign`, `send-test`, `events`,
//! `outbox`), reading files, standard input and the environment, and exit codes. The HTTP clients
//! and their output formats live in `admin_client`.
//!
//! Exit codes: 0 clean, 64 usage or configuration error (EX_USAGE), 1 runtime failure. Secrets are
//! never accepted as arguments (they would land in shell history and `ps`); they come from the
//! config file, an environment variable or a file, and are never printed.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::admin_client::{self, AdminClient, ClientError, HttpUrl, ListFilter, Outgoing};
use crate::app;
use crate::config::{Config, Secret};
use crate::signature;
use crate::telemetry;

/// EX_USAGE from sysexits.h: the command was used incorrectly (bad flags or configuration).
pub const EXIT_USAGE: u8 = 64;

/// Bodies read by `sign` and `send-test`: four times the largest body the relay can be configured
/// to accept (16 MiB), so oversize deliveries can still be tested.
const MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;

/// Secret files hold one line; anything this long is the wrong file.
const MAX_SECRET_FILE_BYTES: u64 = 4096;

#[derive(Debug, Parser)]
#[command(
    name = "gate-relay",
    version,
    about = "Verifies 0Gate webhooks, dedupes them into a durable outbox and publishes them to RabbitMQ",
    after_help = "Examples:\n  gate-relay check-config --config config.toml\n  gate-relay serve --config config.toml\n  \
                  gate-relay send-test --url http://127.0.0.1:8080/webhooks/0gate/test --secret-env GATE_WEBHOOK_SECRET\n  \
                  gate-relay events list --state pending\n  gate-relay outbox"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay until SIGTERM or SIGINT, then drain and exit 0.
    #[command(after_help = "Examples:\n  gate-relay serve --config /etc/gate-relay/config.toml")]
    Serve {
        /// The TOML configuration file (see config.toml.example).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a configuration file: exit 0 when valid, 64 with every problem listed otherwise.
    #[command(after_help = "Examples:\n  gate-relay check-config --config config.toml")]
    CheckConfig {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Print a Gate-Signature header value for a body, signed as 0Gate signs it.
    #[command(after_help = SIGN_EXAMPLES)]
    Sign {
        #[command(flatten)]
        secret: SecretArgs,
        /// The signed `t` (unix seconds); defaults to now.
        #[arg(long, value_name = "T", value_parser = clap::value_parser!(i64).range(1..))]
        timestamp: Option<i64>,
        /// The body to sign, byte for byte; `-` or nothing reads standard input.
        #[arg(value_name = "FILE|-")]
        body: Option<PathBuf>,
    },
    /// Send a signed test event to a webhook URL, like 0Gate's test button; exit 0 on a 2xx.
    #[command(after_help = SEND_TEST_EXAMPLES)]
    SendTest {
        /// The webhook URL (http:// only).
        #[arg(long, value_name = "URL")]
        url: String,
        #[command(flatten)]
        secret: SecretArgs,
        /// The event type of the generated event.
        #[arg(
            long = "type",
            value_name = "TYPE",
            default_value = "webhook.test",
            conflicts_with = "body"
        )]
        event_type: String,
        /// Send this file byte for byte instead of a generated event.
        #[arg(long, value_name = "FILE")]
        body: Option<PathBuf>,
        /// Which 0Gate environment the generated event pretends to come from (`data.livemode`).
        #[arg(long, value_enum, value_name = "MODE", default_value_t = EnvironmentMode::Test, conflicts_with = "body")]
        environment_mode: EnvironmentMode,
    },
    /// Look up, list and replay stored events through the admin API.
    #[command(after_help = "Examples:\n  gate-relay events list --state pending\n  \
                            gate-relay events show evt_123 --body\n  \
                            gate-relay events replay evt_123 --token-env GATE_ADMIN_TOKEN")]
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Show the outbox (events waiting for the broker) and the broker connection.
    #[command(
        after_help = "Examples:\n  gate-relay outbox\n  gate-relay outbox --admin http://127.0.0.1:9090 --json"
    )]
    Outbox {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

const SIGN_EXAMPLES: &str = "\
Examples:
  gate-relay sign --secret-env GATE_WEBHOOK_SECRET body.json
  gate-relay sign --secret-file /run/secrets/gate-webhook --timestamp 1782475200 - < body.json
  curl -H \"Gate-Signature: $(gate-relay sign --secret-env GATE_WEBHOOK_SECRET body.json)\" \\
       --data-binary @body.json http://127.0.0.1:8080/webhooks/0gate/test

The secret is read from the named environment variable or file, never from an argument.";

const SEND_TEST_EXAMPLES: &str = "\
Examples:
  gate-relay send-test --url http://127.0.0.1:8080/webhooks/0gate/test --secret-env GATE_WEBHOOK_SECRET
  gate-relay send-test --url http://127.0.0.1:8080/webhooks/0gate/live --secret-file secret.txt \\
      --type gate_session.completed --environment-mode live
  gate-relay send-test --url http://127.0.0.1:8080/webhooks/0gate/test --secret-env GATE_WEBHOOK_SECRET \\
      --body event.json

Prints the HTTP status, the relay's outcome and the latency.";

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Show one stored event.
    #[command(
        after_help = "Examples:\n  gate-relay events show evt_123\n  gate-relay events show evt_123 --environment live --body"
    )]
    Show {
        /// The 0Gate event id.
        id: String,
        /// The environment (endpoint's `environment`); needed when several exist.
        #[arg(long, value_name = "ENV")]
        environment: Option<String>,
        /// Include the raw body (unless pruned after publishing).
        #[arg(long)]
        body: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List stored events, newest first.
    #[command(after_help = "Examples:\n  gate-relay events list --state pending\n  \
                            gate-relay events list --type gate_session.completed --limit 20\n  \
                            gate-relay events list --before 1200   # the next page")]
    List {
        /// Only events in this state (`pending`: not yet confirmed by the broker; `parked`:
        /// refused by the broker past the attempt bound, waiting for `replay` or `drop`).
        #[arg(long, value_enum)]
        state: Option<StateFilter>,
        /// Only events of this type, e.g. `gate_session.completed`.
        #[arg(long = "type", value_name = "TYPE")]
        event_type: Option<String>,
        /// Only events received at or after this time (unix milliseconds).
        #[arg(long, value_name = "MS")]
        since: Option<u64>,
        /// At most this many events.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
        /// Only events with a sequence number below this (from the previous page's `more:` line).
        #[arg(long, value_name = "SEQ")]
        before: Option<u64>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Publish a stored event again (same event id), e.g. after a consumer lost it.
    #[command(
        after_help = "Examples:\n  gate-relay events replay evt_123\n  gate-relay events replay evt_123 --environment live"
    )]
    Replay {
        /// The 0Gate event id.
        id: String,
        /// The environment (endpoint's `environment`); needed when several exist.
        #[arg(long, value_name = "ENV")]
        environment: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Decide not to deliver a parked event (it stays listed as `dropped`).
    #[command(after_help = "Examples:\n  gate-relay events list --state parked\n  \
                            gate-relay events drop evt_123 --environment test")]
    Drop {
        /// The 0Gate event id.
        id: String,
        /// The environment (endpoint's `environment`); needed when several exist.
        #[arg(long, value_name = "ENV")]
        environment: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Where the webhook secret comes from. There is deliberately no `--secret VALUE`: clap refuses it
/// (exit 64) without echoing the value and points at `--secret-env`.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct SecretArgs {
    /// Name of the environment variable that holds the webhook secret.
    #[arg(long, value_name = "VAR")]
    secret_env: Option<String>,
    /// File that holds the webhook secret (a trailing newline is ignored).
    #[arg(long, value_name = "PATH")]
    secret_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Base URL of the relay's admin listener (`[admin] listen`).
    #[arg(long = "admin", value_name = "URL", default_value = admin_client::DEFAULT_ADMIN_URL)]
    url: String,
    /// Name of the environment variable that holds the admin token, sent as a Bearer token.
    #[arg(long, value_name = "VAR")]
    token_env: Option<String>,
    /// Print the JSON the admin API returned instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateFilter {
    Pending,
    Published,
    /// Refused by the broker past the attempt bound; waiting for `replay` or `drop`.
    Parked,
    Dropped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EnvironmentMode {
    Test,
    Live,
}

/// Reads the config file and, through `Config::parse_with_files`, the secrets files it names:
/// the process's environment and file system are reached here, not in `config`.
fn load(path: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let env = |name: &str| std::env::var(name).ok();
    Config::parse_with_files(&text, &env, &|secrets| std::fs::read_to_string(secrets))
        .map_err(|e| format!("{}: {e}", path.display()))
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::CheckConfig { config } => match load(&config) {
            Ok(c) => {
                println!(
                    "{}: valid ({} endpoint(s), ack mode {:?}, store {}, broker {})",
                    config.display(),
                    c.endpoints.len(),
                    c.delivery.ack,
                    c.store.path.display(),
                    c.amqp.url.redacted()
                );
                ExitCode::SUCCESS
            }
            Err(problems) => {
                eprintln!("{problems}");
                ExitCode::from(EXIT_USAGE)
            }
        },
        Command::Serve { config: path } => {
            let config = match load(&path) {
                Ok(c) => c,
                Err(problems) => {
                    eprintln!("{problems}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            telemetry::init(config.log.format, &config.log.level);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            // In the runtime (signal handlers need one), before anything starts.
            let serve = async { app::run(config, || load(&path), shutdown_signal()).await };
            match runtime.block_on(serve) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "gate-relay failed");
                    eprintln!("gate-relay: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Sign {
            secret,
            timestamp,
            body,
        } => sign(&secret, timestamp, body.as_deref()),
        Command::SendTest {
            url,
            secret,
            event_type,
            body,
            environment_mode,
        } => send_test(
            &url,
            &secret,
            &event_type,
            body.as_deref(),
            environment_mode,
        ),
        Command::Events { command } => events(command),
        Command::Outbox { admin } => admin_call(&admin, |client| async move {
            let reply = client.outbox().await?;
            Ok((reply.raw, admin_client::format_outbox(&reply.value)))
        }),
    }
}

/// A usage or configuration problem: said once on stderr, exit 64.
fn usage(message: &str) -> ExitCode {
    eprintln!("gate-relay: {message}");
    ExitCode::from(EXIT_USAGE)
}

/// A runtime failure: said once on stderr, exit 1.
fn failure(message: &str) -> ExitCode {
    eprintln!("gate-relay: {message}");
    ExitCode::FAILURE
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| failure(&format!("cannot start the runtime: {e}")))
}

/// 0Gate's secrets start `whsec_` (webhooks) or `sk_` (API keys).
fn looks_like_secret(text: &str) -> bool {
    text.starts_with("whsec_") || text.starts_with("sk_")
}

/// Reads an environment variable named on the command line. The name is echoed in errors, so a
/// name that looks like a pasted secret is refused without being repeated.
fn from_env(flag: &str, name: &str) -> Result<String, String> {
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

fn sign(secret: &SecretArgs, timestamp: Option<i64>, body: Option<&Path>) -> ExitCode {
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

fn send_test(
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

fn events(command: EventsCommand) -> ExitCode {
    match command {
        EventsCommand::Show {
            id,
            environment,
            body,
            admin,
        } => admin_call(&admin, |client| async move {
            let reply = client.show(&id, environment.as_deref(), body).await?;
            Ok((reply.raw, admin_client::format_event(&reply.value)))
        }),
        EventsCommand::List {
            state,
            event_type,
            since,
            limit,
            before,
            admin,
        } => {
            let filter = ListFilter {
                state: state.map(|s| match s {
                    StateFilter::Pending => "pending",
                    StateFilter::Published => "published",
                    StateFilter::Parked => "parked",
                    StateFilter::Dropped => "dropped",
                }),
                event_type,
                since_ms: since,
                limit,
                before,
            };
            admin_call(&admin, |client| async move {
                let reply = client.list(&filter).await?;
                Ok((reply.raw, admin_client::format_page(&reply.value)))
            })
        }
        EventsCommand::Replay {
            id,
            environment,
            admin,
        } => admin_call(&admin, |client| async move {
            let reply = client.replay(&id, environment.as_deref()).await?;
            Ok((reply.raw, admin_client::format_replayed(&reply.value)))
        }),
        EventsCommand::Drop {
            id,
            environment,
            admin,
        } => admin_call(&admin, |client| async move {
            let reply = client.drop_parked(&id, environment.as_deref()).await?;
            Ok((reply.raw, admin_client::format_replayed(&reply.value)))
        }),
    }
}

/// Runs one admin API call; prints its raw JSON (`--json`) or its text, and maps errors to exit
/// codes.
fn admin_call<F, Fut>(args: &AdminArgs, call: F) -> ExitCode
where
    F: FnOnce(AdminClient) -> Fut,
    Fut: Future<Output = Result<(Bytes, String), ClientError>>,
{
    let url = match HttpUrl::parse(&args.url) {
        Ok(u) => u,
        Err(e) => return usage(&format!("--admin {e}")),
    };
    let token = match &args.token_env {
        Some(name) => match from_env("--token-env", name) {
            Ok(t) => Some(Secret::new(t)),
            Err(message) => return usage(&message),
        },
        None => None,
    };
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(call(AdminClient::new(url, token))) {
        Ok((raw, text)) => {
            if args.json {
                let mut raw = String::from_utf8_lossy(&raw).into_owned();
                if !raw.ends_with('\n') {
                    raw.push('\n');
                }
                emit(&raw);
            } else {
                emit(&text);
            }
            ExitCode::SUCCESS
        }
        Err(e) if e.is_usage() => usage(&e.to_string()),
        Err(e) => failure(&e.to_string()),
    }
}

/// Installs the SIGTERM and SIGINT handlers at once, and resolves on the first of them. At once,
/// not at the first poll: until a handler exists a signal takes its default action, which ends
/// the process without the final flush (a TERM right after "listening" did, 1 run in 12).
fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "shutdown requested"),
        }
    }
}
