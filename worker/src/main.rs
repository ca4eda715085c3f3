//! `hookfleet-worker`: parse arguments, run the command (see `cli`).

use std::process::ExitCode;

use clap::Parser;
use hookfleet_worker::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    cli::run(Cli::parse()).await
}
