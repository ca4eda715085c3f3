//! `hookfleet-worker`: parse arguments, load config, run.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hookfleet_common::config::Settings;
use hookfleet_common::{shutdown, telemetry};
use tokio_util::sync::CancellationToken;

/// Consumes hookfleet jobs, calls AI providers and delivers the results.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Config file (defaults to $HOOKFLEET_CONFIG; built-in defaults otherwise).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the worker until SIGTERM.
    Run,
    /// Inspect and replay the dead-letter queue (not yet available).
    Dlq,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = Settings::load(args.config.as_deref()).context("cannot start the worker")?;
    telemetry::init(&settings.telemetry);
    match args.command {
        Command::Run => {
            let app = hookfleet_worker::Application::build(settings).await?;
            let token = CancellationToken::new();
            tokio::spawn(shutdown::cancel_on_signal(token.clone()));
            app.run_until_stopped(token).await
        }
        Command::Dlq => anyhow::bail!("`hookfleet-worker dlq` is not implemented yet"),
    }
}
