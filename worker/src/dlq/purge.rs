//! `dlq purge`: deletes matching dead letters, for good.
//!
//! Guarded: without `--yes` it deletes nothing, prints what it would delete
//! (counts by class, reason, source, …) and fails, so a script that forgot the
//! flag stops there. With `--yes` each matching letter is acked; letters that do
//! not match stay where they are (see `pass`).

use std::io::Write;
use std::time::SystemTime;

use lapin::message::Delivery;
use tokio_util::sync::CancellationToken;

use super::dead_queue::DeadQueue;
use super::filter::Matcher;
use super::inspect::{count, options, summary};
use super::letter::Letter;
use super::output;
use super::pass::{self, Action, Visitor};
use super::{DlqError, PurgeArgs, Summary};

struct PurgeVisitor {
    matcher: Matcher,
    now: SystemTime,
    limit: Option<u64>,
    matched: u64,
}

impl Visitor for PurgeVisitor {
    fn visit(&mut self, letter: &Letter, _: &Delivery) -> Result<Action, DlqError> {
        if self.satisfied() || !self.matcher.matches(letter, self.now) {
            return Ok(Action::Keep);
        }
        self.matched += 1;
        Ok(Action::Purge)
    }

    fn satisfied(&self) -> bool {
        self.limit.is_some_and(|limit| self.matched >= limit)
    }
}

/// `dlq purge`.
pub(crate) async fn purge(
    queue: &DeadQueue,
    args: PurgeArgs,
    cancel: &CancellationToken,
    out: &mut (dyn Write + Send),
) -> Result<Summary, DlqError> {
    let started = std::time::Instant::now();
    let progress = output::progress(!args.pass.json && !args.pass.no_progress);
    let limit = args.limit.filter(|l| *l > 0);
    if !args.yes {
        let (stats, tally, now) = count(queue, &args.filter, &args.pass, &progress, cancel).await?;
        let would = limit.map_or(stats.matched, |l| l.min(stats.matched));
        if args.pass.json {
            let preview = serde_json::json!({ "would_purge": would, "stats": stats });
            serde_json::to_writer(&mut *out, &preview).map_err(std::io::Error::from)?;
            writeln!(out)?;
        } else {
            stats.write(out, true, now)?;
            writeln!(
                out,
                "\n{would} dead letters would be purged. Nothing was deleted: pass --yes to purge them."
            )?;
        }
        if tally.cancelled {
            return Ok(summary("purge", queue, &tally, stats.matched));
        }
        return Err(DlqError::NotConfirmed(would));
    }
    let mut visitor = PurgeVisitor {
        matcher: args.filter.compile()?,
        now: SystemTime::now(),
        limit,
        matched: 0,
    };
    let (tally, result) =
        pass::run(queue, &mut visitor, options(&args.pass, &progress), cancel).await;
    progress.finish_and_clear();
    let summary = Summary {
        command: "purge",
        queue: queue.name(),
        ready: tally.expected,
        scanned: tally.scanned,
        matched: visitor.matched,
        purged: tally.purged,
        requeued: tally.requeued,
        cancelled: tally.cancelled,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        ..Summary::default()
    };
    summary.write(out, args.pass.json)?;
    result.map(|()| summary)
}
