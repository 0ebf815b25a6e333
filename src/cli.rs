//! Command-line interface: subcommands, reading the config file, exit codes.
//!
//! Exit codes: 0 clean, 64 usage or configuration error (EX_USAGE), 1 runtime failure. Secrets are
//! never accepted as arguments; they come from the config file or the environment.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app;
use crate::config::Config;
use crate::telemetry;

/// EX_USAGE from sysexits.h: the command was used incorrectly (bad flags or configuration).
pub const EXIT_USAGE: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "gate-relay",
    version,
    about = "Verifies 0Gate webhooks, dedupes them into a durable outbox and publishes them to RabbitMQ",
    after_help = "Examples:\n  gate-relay check-config --config config.toml\n  gate-relay serve --config config.toml"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay until SIGTERM or SIGINT, then drain and exit 0.
    Serve {
        /// The TOML configuration file (see config.toml.example).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a configuration file: exit 0 when valid, 64 with every problem listed otherwise.
    CheckConfig {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

fn load(path: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Config::parse(&text, &|name| std::env::var(name).ok())
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
            match runtime.block_on(app::run(config, || load(&path), shutdown_signal())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "gate-relay failed");
                    eprintln!("gate-relay: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
        _ = int.recv() => tracing::info!(signal = "SIGINT", "shutdown requested"),
    }
}
