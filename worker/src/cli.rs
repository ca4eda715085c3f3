//! `hookfleet-worker`'s command line: the clap definition ([`Cli`]) and what
//! each subcommand loads before it runs. `main` only parses and calls [`run`];
//! tests parse every documented command line with [`Cli`].
//!
//! Each subcommand loads only what it uses: `run` all the settings (every
//! secret must resolve), `dlq` the broker's ([`dlq::run_cli`]), `health` only
//! `worker.admin_listen`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{Settings, WorkerConfig};
use anyhow::Context;
use clap::{Parser, Subcommand};
use hookfleet_common::config::{self, Sources};
use hookfleet_common::health::HealthArgs;
use hookfleet_common::{shutdown, telemetry};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::dlq::{self, DlqCommand};

/// Consumes hookfleet jobs, calls AI providers and delivers the results.
#[derive(Debug, Parser)]
#[command(name = "hookfleet-worker", version, about)]
pub struct Cli {
    /// Config file (defaults to $HOOKFLEET_CONFIG; built-in defaults otherwise).
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the worker until SIGTERM.
    Run,
    /// Inspect, replay and purge the dead-letter queue.
    Dlq {
        /// The `dlq` command.
        #[command(subcommand)]
        command: Box<DlqCommand>,
    },
    /// Exit 0 if the worker on this host is ready (`/readyz` on
    /// `worker.admin_listen` answers 200), else 1: a container healthcheck.
    Health(HealthArgs),
}

/// Runs the parsed command line; the process exits with what it returns.
pub async fn run(cli: Cli) -> ExitCode {
    let config = cli.config.as_deref();
    match cli.command {
        Command::Run => match run_worker(config).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("Error: {e:?}");
                ExitCode::FAILURE
            }
        },
        Command::Dlq { command } => dlq::run_cli(config, *command).await.into(),
        Command::Health(args) => match admin_listen(config) {
            Ok(listen) => args.run(listen).await,
            Err(e) => {
                eprintln!("Error: health: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// The settings of `run`: all of them, every secret resolved.
pub fn worker_settings(config: Option<&Path>) -> anyhow::Result<Settings> {
    Settings::load(config).context("cannot start the worker")
}

async fn run_worker(config: Option<&Path>) -> anyhow::Result<()> {
    let settings = worker_settings(config)?;
    telemetry::init(&settings.telemetry);
    let app = crate::Application::build(settings).await?;
    let token = CancellationToken::new();
    tokio::spawn(shutdown::cancel_on_signal(token.clone()));
    app.run_until_stopped(token).await
}

/// `worker.admin_listen` from the config, reading nothing else.
pub fn admin_listen(config: Option<&Path>) -> anyhow::Result<SocketAddr> {
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Part {
        worker: WorkerPart,
    }
    #[derive(Deserialize)]
    #[serde(default)]
    struct WorkerPart {
        admin_listen: SocketAddr,
    }
    impl Default for WorkerPart {
        fn default() -> Self {
            Self {
                admin_listen: WorkerConfig::default().admin_listen,
            }
        }
    }
    let sources = Sources {
        file: config.map(Path::to_path_buf),
        ..Sources::default()
    };
    let part: Part = config::read(sources, &[]).context("cannot load the config")?;
    Ok(part.worker.admin_listen)
}
