//! The `gate-relay` binary: parse arguments, run, map the result to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match gate_relay::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(gate_relay::cli::EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    gate_relay::cli::run(cli)
}
