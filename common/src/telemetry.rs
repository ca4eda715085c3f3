//! Logging: structured JSON lines (or pretty text for humans) through `tracing`.
//!
//! Secrets never reach a log: config secrets are `Secret`s whose `Debug` is
//! redacted, URLs are logged through `redact_url`, and request headers are never
//! logged whole.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt;
use tracing_subscriber::prelude::*;

use crate::config::{LogFormat, TelemetryConfig};

/// Installs the global subscriber. `RUST_LOG`, when set, wins over the config.
/// A second call (tests starting several services) is a no-op.
pub fn init(config: &TelemetryConfig) {
    init_with(config, std::io::stdout);
}

/// Like [`init`], but logs to stderr: for commands whose stdout is their output
/// (`hookfleet-worker dlq … --json`).
pub fn init_stderr(config: &TelemetryConfig) {
    init_with(config, std::io::stderr);
}

fn init_with<W>(config: &TelemetryConfig, writer: W)
where
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match config.log_format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .with_writer(writer)
                    .json()
                    .flatten_event(true)
                    .with_current_span(false),
            )
            .try_init(),
        LogFormat::Pretty => registry.with(fmt::layer().with_writer(writer)).try_init(),
    };
    drop(result);
}

/// `outer: inner: innermost` — an error with its whole chain, for one log line.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
