//! `dlq replay`: matching dead letters go back to the jobs queue as fresh jobs.
//!
//! Each one is republished — same message id, same body, original headers,
//! `hf-attempt` 0, `hf-replays` + 1, the failure recorded as `hf-last-error`
//! (see [`letter::for_replay`]) — through the confirming publisher, via the
//! default exchange with routing key `{ns}.jobs`: straight into the jobs queue.
//! Not via `{ns}.events`: that would hand the job again to every other binding
//! of the events exchange (an audit queue, a second consumer), and poison letters
//! have no routing key to use. The dead letter is acked only once the copy is
//! confirmed; letters that do not match stay where they are (see `pass`).
//!
//! The loop guard: a letter already replayed `--max-replays` times (3) is
//! skipped and stays — it keeps failing, and replaying it again only moves the
//! problem around — unless `--force`.

use std::io::Write;
use std::time::SystemTime;

use lapin::message::Delivery;
use tokio_util::sync::CancellationToken;

use super::dead_queue::DeadQueue;
use super::filter::Matcher;
use super::letter::{self, Letter};
use super::output;
use super::pass::{self, Action, PassOptions, Visitor};
use super::{DlqError, ReplayArgs, Summary};

struct ReplayVisitor {
    matcher: Matcher,
    now: SystemTime,
    limit: Option<u64>,
    max_replays: u32,
    force: bool,
    dry_run: bool,
    matched: u64,
    skipped: u64,
    /// Letters chosen for replay (what `--limit` counts).
    chosen: u64,
}

impl Visitor for ReplayVisitor {
    fn visit(&mut self, letter: &Letter, delivery: &Delivery) -> Result<Action, DlqError> {
        if self.satisfied() || !self.matcher.matches(letter, self.now) {
            return Ok(Action::Keep);
        }
        self.matched += 1;
        if !self.force && letter.replays >= self.max_replays {
            self.skipped += 1;
            return Ok(Action::Keep);
        }
        self.chosen += 1;
        if self.dry_run {
            return Ok(Action::Keep);
        }
        Ok(Action::Replay(Box::new(letter::for_replay(
            &delivery.properties,
            letter,
        ))))
    }

    fn satisfied(&self) -> bool {
        self.limit.is_some_and(|limit| self.chosen >= limit)
    }
}

/// `dlq replay`.
pub(crate) async fn replay(
    queue: &DeadQueue,
    args: ReplayArgs,
    cancel: &CancellationToken,
    out: &mut (dyn Write + Send),
) -> Result<Summary, DlqError> {
    let started = std::time::Instant::now();
    if !args.dry_run {
        queue.connect_publisher().await?;
    }
    let progress = output::progress(!args.pass.json && !args.pass.no_progress);
    let mut visitor = ReplayVisitor {
        matcher: args.filter.compile()?,
        now: SystemTime::now(),
        limit: args.limit.filter(|l| *l > 0),
        max_replays: args.max_replays,
        force: args.force,
        dry_run: args.dry_run,
        matched: 0,
        skipped: 0,
        chosen: 0,
    };
    let options = PassOptions {
        hold: args.pass.hold,
        rate: args.rate,
        progress: &progress,
    };
    let (tally, result) = pass::run(queue, &mut visitor, options, cancel).await;
    progress.finish_and_clear();
    let summary = Summary {
        command: "replay",
        queue: queue.name(),
        ready: tally.expected,
        scanned: tally.scanned,
        matched: visitor.matched,
        replayed: tally.replayed,
        skipped: visitor.skipped,
        failed: tally.failed,
        requeued: tally.requeued,
        dry_run: args.dry_run,
        cancelled: tally.cancelled,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        ..Summary::default()
    };
    summary.write(out, args.pass.json)?;
    result.map(|()| summary)
}
