//! Command-line interface: subcommands, reading the config file, exit codes.
//!
//! Owns: the subcommands (`serve`, `check-config`, the operator tools `sign`, `send-test`, `events`,
//! `outbox`), reading files, standard input and the environment, and exit codes. The HTTP clients
//! and their output formats live in `admin_client`. This file: the argument types and `run`;
//! `tools.rs`: `sign` and `send-test`; `events.rs`: the admin API's commands.
//!
//! Exit codes: 0 clean, 64 usage or configuration error (EX_USAGE), 1 runtime failure. Secrets are
//! never accepted as arguments (they would land in shell history and `ps`); they come from the
//! config file, an environment variable or a file, and are never printed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::admin_client;
use crate::app;
use crate::config::Config;
use crate::telemetry;

mod events;
mod tools;

use events::{admin_call, events};
use tools::{send_test, sign};

/// EX_USAGE from sysexits.h: the command was used incorrectly (bad flags or configuration).
pub const EXIT_USAGE: u8 = 64;

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
                    c.amqp
                        .urls
                        .iter()
                        .map(crate::config::AmqpUrl::redacted)
                        .collect::<Vec<_>>()
                        .join(", ")
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
