//! `hookfleet-ingest`'s command line: the clap definition ([`Cli`]) and what
//! each command loads. `main` only parses and calls [`run`]; tests parse every
//! documented command line with [`Cli`].
//!
//! Without a subcommand it runs the service (all the settings, every secret
//! resolved); `health` reads only `ingest.listen`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{IngestConfig, Settings};
use anyhow::Context;
use clap::{Parser, Subcommand};
use hookfleet_common::config::{self, Sources};
use hookfleet_common::health::HealthArgs;
use hookfleet_common::{shutdown, telemetry};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// Verifies webhooks and publishes them durably to RabbitMQ.
#[derive(Debug, Parser)]
#[command(name = "hookfleet-ingest", version, about)]
pub struct Cli {
    /// Config file (defaults to $HOOKFLEET_CONFIG; built-in defaults otherwise).
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    /// What to do; without one, run the service until SIGTERM.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Exit 0 if ingest on this host is ready (`/readyz` on `ingest.listen`
    /// answers 200), else 1: a container healthcheck.
    Health(HealthArgs),
}

/// Runs the parsed command line; the process exits with what it returns.
pub async fn run(cli: Cli) -> ExitCode {
    let config = cli.config.as_deref();
    let result = match cli.command {
        None => run_ingest(config).await,
        Some(Command::Health(args)) => match listen(config) {
            Ok(listen) => return args.run(listen).await,
            Err(e) => Err(e.context("health")),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:?}");
            ExitCode::FAILURE
        }
    }
}

async fn run_ingest(config: Option<&Path>) -> anyhow::Result<()> {
    let settings = Settings::load(config).context("cannot start ingest")?;
    telemetry::init(&settings.telemetry);
    let app = crate::Application::build(settings).await?;
    let token = CancellationToken::new();
    tokio::spawn(shutdown::cancel_on_signal(token.clone()));
    app.run_until_stopped(token).await
}

/// `ingest.listen` from the config, reading nothing else.
pub fn listen(config: Option<&Path>) -> anyhow::Result<SocketAddr> {
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Part {
        ingest: IngestPart,
    }
    #[derive(Deserialize)]
    #[serde(default)]
    struct IngestPart {
        listen: SocketAddr,
    }
    impl Default for IngestPart {
        fn default() -> Self {
            Self {
                listen: IngestConfig::default().listen,
            }
        }
    }
    let sources = Sources {
        file: config.map(Path::to_path_buf),
        ..Sources::default()
    };
    let part: Part = config::read(sources, &[]).context("cannot load the config")?;
    Ok(part.ingest.listen)
}
