//! `hookfleet-worker`: parse arguments, run the command (see `cli`).

use std::process::ExitCode;

use clap::Parser;
use hookfleet_worker::cli::{self, Cli};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    cli::run(Cli::parse()).await
}
