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
    /// Inspect, replay and purge the dead-letter queue.
    Dlq {
        #[command(subcommand)]
        command: Box<hookfleet_worker::dlq::DlqCommand>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = Settings::load(args.config.as_deref()).context("cannot start the worker")?;
    match args.command {
        // stdout is the command's output (`--json`): logs go to stderr.
        Command::Dlq { .. } => telemetry::init_stderr(&settings.telemetry),
        Command::Run => telemetry::init(&settings.telemetry),
    }
    match args.command {
        Command::Run => {
            let app = hookfleet_worker::Application::build(settings).await?;
            let token = CancellationToken::new();
            tokio::spawn(shutdown::cancel_on_signal(token.clone()));
            app.run_until_stopped(token).await
        }
        Command::Dlq { command } => hookfleet_worker::dlq::run_cli(&settings, *command).await,
    }
}
