//! `hookfleet-worker dlq …`: inspect, replay and purge the dead-letter queue.
//!
//! - [`DlqCommand`]: the clap subcommands and their flags (main only parses them).
//! - [`run`]: one command, in-process — settings, a cancellation token and an
//!   output writer in, a [`Summary`] out.
//! - `exit`: [`run_cli`], the binary's entry point (config, signals, messages),
//!   and the [`Exit`] status a result maps to.
//! - `pass`: one pass over `{ns}.dead` — the only code that acks or republishes
//!   dead letters, and where the ordering and no-loss design is explained.
//! - `letter`: a dead letter's view (from `hf-*` headers or RabbitMQ's `x-death`)
//!   and the rewrites for replay and put-back.
//! - `filter`, `pace`: which letters (`--source`, `--class`, …), how fast (`--rate`).
//! - `inspect` (stats, list, show), `replay`, `purge`: the commands.
//! - `output`: progress bar, table, JSON.
//! - `page`: one page of letters for the web console (`console`).
//!
//! Operators' guide: docs/dead-letters.md.

mod dead_queue;
mod exit;
mod filter;
mod inspect;
mod letter;
mod output;
mod pace;
mod page;
mod pass;
mod purge;
mod replay;

use std::io::Write;

use crate::config::Settings;
use hookfleet_common::broker::BrokerError;
use hookfleet_common::publisher::PublishError;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use exit::{Exit, run_cli};
pub use filter::{Filter, FilterError};
pub use inspect::Stats;
pub use letter::{Class, Death, LAST_ERROR, Letter, REPLAYED_AT};
pub use pace::Rate;
pub use page::{Page, PageLetter, PageRequest, read_page};

/// Letters a pass keeps unacked before it starts putting them back (`--hold`).
pub const DEFAULT_HOLD: usize = 1000;
/// Replays after which `replay` refuses a letter without `--force`.
pub const DEFAULT_MAX_REPLAYS: u32 = 3;

/// `hookfleet-worker dlq <command>`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DlqCommand {
    /// Counts of dead letters by class, reason, source, event type and stage.
    Stats(StatsArgs),
    /// One line per dead letter, in queue order (oldest first).
    List(ListArgs),
    /// Everything about one dead letter: headers, x-death, body.
    Show(ShowArgs),
    /// Republish matching dead letters to the jobs queue as fresh jobs.
    Replay(ReplayArgs),
    /// Delete matching dead letters (needs --yes).
    Purge(PurgeArgs),
}

/// Flags of every command.
#[derive(Debug, Clone, clap::Args)]
pub struct PassArgs {
    /// JSON output for scripts (JSON lines for `list`), no progress bar.
    #[arg(long)]
    pub json: bool,
    /// No progress bar (it is only drawn when stderr is a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
    /// Letters kept unacked before the pass starts putting kept letters back at
    /// the tail of the DLQ; a DLQ no longer than this is read without rewriting.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_HOLD)]
    pub hold: usize,
}

impl Default for PassArgs {
    fn default() -> Self {
        Self {
            json: false,
            no_progress: false,
            hold: DEFAULT_HOLD,
        }
    }
}

/// `dlq stats`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StatsArgs {
    /// Which letters.
    #[command(flatten)]
    pub filter: Filter,
    /// Output and pass tuning.
    #[command(flatten)]
    pub pass: PassArgs,
}

/// `dlq list`.
#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    /// Which letters.
    #[command(flatten)]
    pub filter: Filter,
    /// Show at most this many letters (0: all).
    #[arg(long, default_value_t = 100)]
    pub limit: u64,
    /// Output and pass tuning.
    #[command(flatten)]
    pub pass: PassArgs,
}

impl Default for ListArgs {
    fn default() -> Self {
        Self {
            filter: Filter::default(),
            limit: 100,
            pass: PassArgs::default(),
        }
    }
}

/// `dlq show ID`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ShowArgs {
    /// The letter's message id (the ULID in `list`).
    pub id: String,
    /// Output and pass tuning.
    #[command(flatten)]
    pub pass: PassArgs,
}

/// `dlq replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Which letters.
    #[command(flatten)]
    pub filter: Filter,
    /// Replay every dead letter: required when no filter flag is given (and
    /// not `--dry-run`), so a forgotten filter cannot replay the whole DLQ.
    #[arg(
        long,
        visible_alias = "yes",
        required_unless_present_any = REPLAY_SELECTORS,
    )]
    pub all: bool,
    /// Replay at most this many letters (0: no limit).
    #[arg(long)]
    pub limit: Option<u64>,
    /// Replays per second at most: `50/s`, `3000/m`, `0.5` (default: as fast as
    /// the broker confirms).
    #[arg(long, value_name = "N/s")]
    pub rate: Option<Rate>,
    /// Count what would be replayed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Skip letters already replayed this many times (they stay in the DLQ).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_REPLAYS)]
    pub max_replays: u32,
    /// Replay letters even past --max-replays.
    #[arg(long)]
    pub force: bool,
    /// Output and pass tuning.
    #[command(flatten)]
    pub pass: PassArgs,
}

impl Default for ReplayArgs {
    fn default() -> Self {
        Self {
            filter: Filter::default(),
            limit: None,
            rate: None,
            dry_run: false,
            all: false,
            max_replays: DEFAULT_MAX_REPLAYS,
            force: false,
            pass: PassArgs::default(),
        }
    }
}

/// The flags that let `replay` run without `--all`: any filter, or `--dry-run`.
const REPLAY_SELECTORS: [&str; 9] = [
    "sources",
    "event_types",
    "classes",
    "error",
    "stages",
    "ids",
    "older_than",
    "newer_than",
    "dry_run",
];

/// `dlq purge`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PurgeArgs {
    /// Which letters.
    #[command(flatten)]
    pub filter: Filter,
    /// Purge at most this many letters (0: no limit).
    #[arg(long)]
    pub limit: Option<u64>,
    /// Really delete. Without it: show what would be deleted and fail.
    #[arg(long)]
    pub yes: bool,
    /// Output and pass tuning.
    #[command(flatten)]
    pub pass: PassArgs,
}

impl DlqCommand {
    /// Parses the words after `dlq`, as the binary does (`["replay", "--source", "stripe"]`).
    pub fn try_parse_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        #[command(name = "dlq")]
        struct Cli {
            #[command(subcommand)]
            command: DlqCommand,
        }
        let args = std::iter::once(std::ffi::OsString::from("dlq"))
            .chain(args.into_iter().map(Into::into));
        <Cli as clap::Parser>::try_parse_from(args).map(|cli| cli.command)
    }

    /// The command's name (`replay`), for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Stats(_) => "stats",
            Self::List(_) => "list",
            Self::Show(_) => "show",
            Self::Replay(_) => "replay",
            Self::Purge(_) => "purge",
        }
    }

    fn json(&self) -> bool {
        match self {
            Self::Stats(a) => a.pass.json,
            Self::List(a) => a.pass.json,
            Self::Show(a) => a.pass.json,
            Self::Replay(a) => a.pass.json,
            Self::Purge(a) => a.pass.json,
        }
    }
}

/// What a command did. Counts are of dead letters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// `stats`, `list`, `show`, `replay` or `purge`.
    pub command: &'static str,
    /// The DLQ (`{ns}.dead`).
    pub queue: String,
    /// Ready in the DLQ when the command started (it looks at no more than these).
    pub ready: u64,
    /// Looked at.
    pub scanned: u64,
    /// Matching the filters (`list`: shown; `show`: found).
    pub matched: u64,
    /// Confirmed into the jobs queue and removed from the DLQ.
    pub replayed: u64,
    /// Deleted.
    pub purged: u64,
    /// Matching but refused by the loop guard (`--max-replays`): still in the DLQ.
    pub skipped: u64,
    /// Matching but not confirmed into the jobs queue: still in the DLQ.
    pub failed: u64,
    /// Put back at the tail of the DLQ to keep its order (a pass over a DLQ
    /// longer than `--hold`).
    pub requeued: u64,
    /// `--dry-run`: nothing was replayed (`matched - skipped` would have been).
    pub dry_run: bool,
    /// Interrupted before the end; what is reported was done.
    pub cancelled: bool,
    /// Wall time.
    pub elapsed_ms: u64,
}

impl Summary {
    /// The summary line of `replay` and `purge` (a JSON object with `json`).
    pub fn write(&self, out: &mut dyn Write, json: bool) -> std::io::Result<()> {
        if json {
            serde_json::to_writer(&mut *out, self)?;
            return writeln!(out);
        }
        let prefix = if self.cancelled { "Interrupted. " } else { "" };
        let seconds = self.elapsed_ms as f64 / 1000.0;
        let scan = format!(
            "scanned {} of {}, put back {}; {seconds:.1} s",
            self.scanned, self.ready, self.requeued
        );
        match (self.command, self.dry_run) {
            ("replay", true) => writeln!(
                out,
                "{prefix}Dry run: {} dead letters would be replayed to the jobs queue (matched {}, skipped {} by the loop guard; {scan}). Nothing changed.",
                self.matched - self.skipped,
                self.matched,
                self.skipped
            ),
            ("replay", false) => writeln!(
                out,
                "{prefix}Replayed {} dead letters to the jobs queue (matched {}, skipped {}, failed {}; {scan}).",
                self.replayed, self.matched, self.skipped, self.failed
            ),
            _ => writeln!(
                out,
                "{prefix}Purged {} dead letters (matched {}; {scan}).",
                self.purged, self.matched
            ),
        }
    }
}

/// Why a `dlq` command failed.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// No connection to RabbitMQ.
    #[error(transparent)]
    Connect(Box<BrokerError>),
    /// `{ns}.dead` does not exist.
    #[error(
        "the dead-letter queue `{0}` does not exist (wrong namespace, or no service declared the topology yet)"
    )]
    MissingQueue(String),
    /// Another `dlq` command holds the lock.
    #[error(
        "another `dlq` command is working on `{queue}` (it holds the exclusive queue `{lock}`); try again when it is done"
    )]
    Busy {
        /// The DLQ.
        queue: String,
        /// The lock queue.
        lock: String,
        /// What the broker said.
        #[source]
        source: Box<lapin::Error>,
    },
    /// A broker operation failed.
    #[error("RabbitMQ failed while {what}")]
    Amqp {
        /// What was being done.
        what: &'static str,
        /// What lapin said.
        #[source]
        source: Box<lapin::Error>,
    },
    /// The broker went away while consuming.
    #[error("the broker cancelled the pass's consumer (was the DLQ deleted?)")]
    ConsumerCancelled,
    /// An ack could not be sent (its letter will be delivered again).
    #[error("an ack could not be sent; the letter stays in the DLQ")]
    AckNotSent,
    /// Replaying needs the broker; it is gone.
    #[error("cannot replay to the jobs queue")]
    Replay(#[source] PublishError),
    /// Putting a kept letter back at the tail of the DLQ failed.
    #[error(
        "cannot put a dead letter back at the tail of the DLQ; it stays unacked and returns to the queue"
    )]
    Requeue(#[source] PublishError),
    /// A filter flag is invalid.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// Writing the output failed.
    #[error("cannot write the output")]
    Output(#[from] std::io::Error),
    /// `show ID` found no such letter.
    #[error("no dead letter with message id `{0}`")]
    NotFound(String),
    /// `purge` without `--yes`.
    #[error("{0} dead letters would be purged; nothing was deleted (pass --yes to purge them)")]
    NotConfirmed(u64),
}

impl From<BrokerError> for DlqError {
    fn from(e: BrokerError) -> Self {
        Self::Connect(Box::new(e))
    }
}

impl DlqError {
    pub(crate) fn amqp(what: &'static str, source: lapin::Error) -> Self {
        Self::Amqp {
            what,
            source: Box::new(source),
        }
    }
}

/// Runs one `dlq` command against the configured broker, writing its output to
/// `out`. Cancelling `cancel` stops it cleanly: publishes in flight finish (a
/// confirmed copy gets its letter acked), nothing else is taken, no letter is
/// lost or duplicated.
pub async fn run(
    settings: &Settings,
    command: DlqCommand,
    cancel: CancellationToken,
    out: &mut (impl Write + Send),
) -> Result<Summary, DlqError> {
    let started = std::time::Instant::now();
    let queue = dead_queue::DeadQueue::open(settings).await?;
    let result = match command {
        DlqCommand::Stats(args) => inspect::stats(&queue, args, &cancel, out).await,
        DlqCommand::List(args) => inspect::list(&queue, args, &cancel, out).await,
        DlqCommand::Show(args) => inspect::show(&queue, args, &cancel, out).await,
        DlqCommand::Replay(args) => replay::replay(&queue, args, &cancel, out).await,
        DlqCommand::Purge(args) => purge::purge(&queue, args, &cancel, out).await,
    };
    queue.close().await;
    let _ = out.flush();
    result.map(|mut summary| {
        if summary.elapsed_ms == 0 {
            summary.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        }
        summary
    })
}
