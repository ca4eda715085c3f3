//! `hookfleet-ingest`: parse arguments, load config, run.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use hookfleet_common::config::Settings;
use hookfleet_common::{shutdown, telemetry};
use tokio_util::sync::CancellationToken;

/// Verifies webhooks and publishes them durably to RabbitMQ.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Config file (defaults to $HOOKFLEET_CONFIG; built-in defaults otherwise).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = Settings::load(args.config.as_deref()).context("cannot start ingest")?;
    telemetry::init(&settings.telemetry);
    let app = hookfleet_ingest::Application::build(settings).await?;
    let token = CancellationToken::new();
    tokio::spawn(shutdown::cancel_on_signal(token.clone()));
    app.run_until_stopped(token).await
}
