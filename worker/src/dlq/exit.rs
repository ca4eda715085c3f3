//! The binary's `dlq` entry point and its exit status.
//!
//! [`run_cli`] loads only the settings a `dlq` command uses (the broker's; no
//! provider, sink or source secret), cancels cleanly on Ctrl-C/SIGTERM, writes
//! to stdout, and returns an [`Exit`] that tells a script what happened:
//! 0 done, 1 error, 2 usage, 3 nothing matched or not all done, 130
//! interrupted (documented in docs/dead-letters.md).

use std::path::Path;
use std::process::ExitCode;

use crate::config::Settings;
use hookfleet_common::telemetry;
use tokio_util::sync::CancellationToken;

use super::{DlqCommand, DlqError, Summary, run};

/// How a `dlq` command ended, as its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: it did all it was asked.
    Done,
    /// 1: it could not run (config, broker, missing DLQ, another command busy).
    Error,
    /// 2: the command line was wrong or lacked a guard (`replay` without a
    /// filter or `--all`, `purge` without `--yes`, a bad `--event-type` glob).
    Usage,
    /// 3: nothing matched (`show` of an unknown id, `replay`/`purge` matching
    /// nothing), or not everything matching was done (replays not confirmed,
    /// letters skipped by the loop guard).
    Incomplete,
    /// 130: interrupted (Ctrl-C, SIGTERM); what was reported was done.
    Interrupted,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Self::Done => 0,
            Self::Error => 1,
            Self::Usage => 2,
            Self::Incomplete => 3,
            Self::Interrupted => 130,
        }
    }

    /// The status of a finished command.
    pub fn of(result: &Result<Summary, DlqError>) -> Self {
        match result {
            Ok(summary) if summary.cancelled => Self::Interrupted,
            Ok(summary) if summary.failed > 0 || summary.skipped > 0 => Self::Incomplete,
            Ok(summary)
                if summary.matched == 0 && matches!(summary.command, "replay" | "purge") =>
            {
                Self::Incomplete
            }
            Ok(_) => Self::Done,
            Err(DlqError::Filter(_) | DlqError::NotConfirmed(_)) => Self::Usage,
            Err(DlqError::NotFound(_)) => Self::Incomplete,
            Err(_) => Self::Error,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

/// `hookfleet-worker [--config FILE] dlq <command>`: loads the broker settings,
/// runs the command with stdout as its output, explains on stderr why it did
/// not exit 0. Ctrl-C/SIGTERM cancel cleanly; a second Ctrl-C exits at once.
pub async fn run_cli(config: Option<&Path>, command: DlqCommand) -> Exit {
    let name = command.name();
    let settings = match Settings::load_broker(config) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("Error: dlq {name}: cannot load the config: {e}");
            return Exit::Error;
        }
    };
    // stdout is the command's output (`--json`): logs go to stderr.
    telemetry::init_stderr(&settings.telemetry);
    let cancel = CancellationToken::new();
    tokio::spawn(hookfleet_common::shutdown::cancel_on_signal(cancel.clone()));
    let interrupted = cancel.clone();
    tokio::spawn(async move {
        interrupted.cancelled().await;
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!(
                "Second interrupt: exiting now. Letters whose replay was in flight may be in both queues."
            );
            std::process::exit(i32::from(Exit::Interrupted.code()));
        }
    });
    let json = command.json();
    let result = run(&settings, command, cancel, &mut std::io::stdout()).await;
    let exit = Exit::of(&result);
    match &result {
        Err(e) => eprintln!("Error: dlq {name}: {}", chain(e)),
        Ok(summary) => explain(summary, exit, json),
    }
    exit
}

/// Why a finished command does not exit 0, on stderr.
fn explain(summary: &Summary, exit: Exit, json: bool) {
    let command = summary.command;
    if summary.cancelled {
        eprintln!(
            "dlq {command}: interrupted: stopped after {} of {} dead letters",
            summary.scanned, summary.ready
        );
    }
    if summary.failed > 0 {
        eprintln!(
            "dlq {command}: {} dead letters could not be replayed; they are still in the DLQ",
            summary.failed
        );
    }
    if summary.skipped > 0 && !json {
        eprintln!(
            "dlq {command}: {} letters were skipped by the loop guard (already replayed --max-replays times); see `dlq list --class …`, or replay them with --force.",
            summary.skipped
        );
    }
    if exit == Exit::Incomplete && summary.matched == 0 {
        eprintln!("dlq {command}: no dead letter matched");
    }
}

/// `error: cause: cause`, as anyhow's `{:#}` writes it.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
