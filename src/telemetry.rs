//! Logging setup: `tracing` with JSON (default) or pretty output on stdout.
//!
//! `RUST_LOG`, when set, overrides `[log] level`. Callers log constant messages with values as
//! fields; no body, secret or full config is ever logged. The AMQP client's own logs are capped
//! whatever `RUST_LOG` says (see [`no_payloads`]): they carry message bodies and headers.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterFn, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Installs the global subscriber; a second call (tests) is a no-op.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .finish()
            .with(no_payloads())
            .try_init(),
        LogFormat::Pretty => builder.finish().with(no_payloads()).try_init(),
    };
}

/// lapin logs every returned message at WARN with its whole body and headers (`Gate-Signature`
/// included), and its frames at TRACE; amq-protocol likewise below WARN. Drop the first always
/// and the rest below WARN, so no `RUST_LOG` can put an event body into the log.
fn no_payloads() -> FilterFn<impl Fn(&tracing::Metadata<'_>) -> bool> {
    filter_fn(|meta| {
        let target = meta.target();
        if target.starts_with("lapin::returned_messages") {
            return false;
        }
        let amqp = target.starts_with("lapin") || target.starts_with("amq_protocol");
        !amqp || *meta.level() <= tracing::Level::WARN
    })
}
