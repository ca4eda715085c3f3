//! `dlq stats`, `dlq list` and `dlq show`: passes that keep every letter.
//!
//! They change nothing an operator can see. A small DLQ (up to `--hold`) is read
//! without writing anything; `list` and `show` stop as soon as they have what
//! they want when no letter had to be put back yet; anything longer is read in
//! one full pass that puts each letter back at the tail in order (see `pass`).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::SystemTime;

use indicatif::ProgressBar;
use lapin::BasicProperties;
use lapin::message::Delivery;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::dead_queue::DeadQueue;
use super::filter::Filter;
use super::filter::Matcher;
use super::letter::{Letter, hex, serialize_time, table_json};
use super::output::{self, LetterJson, short_age, timestamp};
use super::pass::{self, Action, PassOptions, Tally, Visitor};
use super::{DlqError, ListArgs, PassArgs, ShowArgs, StatsArgs, Summary};

/// Distinct values counted per breakdown; the rest are counted as `(other)`.
const MAX_KEYS: usize = 1000;

/// Counts of dead letters by what failed (`dlq stats`, and `purge`'s preview).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// The DLQ.
    pub queue: String,
    /// Letters ready when the pass started.
    pub ready: u64,
    /// Letters looked at.
    pub scanned: u64,
    /// Letters matching the filters (all of them without filters).
    pub matched: u64,
    /// By `hf-error-class` (or `delivery-limit` from `x-death`).
    pub by_class: BTreeMap<String, u64>,
    /// By reason code (`ai_http_500`, `delivery_limit`).
    pub by_reason: BTreeMap<String, u64>,
    /// By source.
    pub by_source: BTreeMap<String, u64>,
    /// By event type.
    pub by_event_type: BTreeMap<String, u64>,
    /// By stage.
    pub by_stage: BTreeMap<String, u64>,
    /// Letters already replayed at least once before.
    pub replayed_before: u64,
    /// When the oldest matching letter failed.
    #[serde(serialize_with = "serialize_time")]
    pub oldest: Option<SystemTime>,
    /// When the newest matching letter failed.
    #[serde(serialize_with = "serialize_time")]
    pub newest: Option<SystemTime>,
    /// Total body bytes of the matching letters.
    pub body_bytes: u64,
}

impl Stats {
    /// Counts one matching letter.
    pub fn add(&mut self, letter: &Letter) {
        self.matched += 1;
        let dash = || "-".to_owned();
        bump(&mut self.by_class, letter.class.as_str().to_owned());
        bump(&mut self.by_reason, letter.reason().to_owned());
        bump(
            &mut self.by_source,
            letter.source.clone().unwrap_or_else(dash),
        );
        bump(
            &mut self.by_event_type,
            letter.event_type.clone().unwrap_or_else(dash),
        );
        bump(
            &mut self.by_stage,
            letter.stage.clone().unwrap_or_else(dash),
        );
        if letter.replays > 0 {
            self.replayed_before += 1;
        }
        if let Some(at) = letter.failed_at {
            self.oldest = Some(self.oldest.map_or(at, |o| o.min(at)));
            self.newest = Some(self.newest.map_or(at, |n| n.max(at)));
        }
        self.body_bytes += letter.body_bytes as u64;
    }

    /// The readable report.
    pub fn write(
        &self,
        out: &mut dyn Write,
        filtered: bool,
        now: SystemTime,
    ) -> std::io::Result<()> {
        if filtered {
            writeln!(
                out,
                "{}: {} of {} dead letters match",
                self.queue, self.matched, self.scanned
            )?;
        } else {
            writeln!(out, "{}: {} dead letters", self.queue, self.matched)?;
        }
        if let (Some(oldest), Some(newest)) = (self.oldest, self.newest) {
            let ago = |at: SystemTime| short_age(now.duration_since(at).unwrap_or_default());
            writeln!(
                out,
                "failed between {} ({} ago) and {} ({} ago)",
                timestamp(oldest),
                ago(oldest),
                timestamp(newest),
                ago(newest)
            )?;
        }
        if self.replayed_before > 0 {
            writeln!(out, "{} were replayed before", self.replayed_before)?;
        }
        for (title, counts) in [
            ("CLASS", &self.by_class),
            ("REASON", &self.by_reason),
            ("SOURCE", &self.by_source),
            ("EVENT TYPE", &self.by_event_type),
            ("STAGE", &self.by_stage),
        ] {
            if counts.is_empty() {
                continue;
            }
            writeln!(out)?;
            writeln!(out, "{title:<40} {:>8}", "COUNT")?;
            let mut rows: Vec<(&String, &u64)> = counts.iter().collect();
            rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            for (name, count) in rows {
                writeln!(out, "{:<40} {count:>8}", output::cut(name, 40))?;
            }
        }
        Ok(())
    }
}

fn bump(counts: &mut BTreeMap<String, u64>, key: String) {
    let key = if counts.len() >= MAX_KEYS && !counts.contains_key(&key) {
        "(other)".to_owned()
    } else {
        key
    };
    *counts.entry(key).or_default() += 1;
}

/// Counts matching letters, keeps all.
struct StatsVisitor {
    pub matcher: Matcher,
    pub now: SystemTime,
    pub stats: Stats,
}

impl Visitor for StatsVisitor {
    fn visit(&mut self, letter: &Letter, _: &Delivery) -> Result<Action, DlqError> {
        if self.matcher.matches(letter, self.now) {
            self.stats.add(letter);
        }
        Ok(Action::Keep)
    }
}

/// `dlq stats`.
pub(crate) async fn stats(
    queue: &DeadQueue,
    args: StatsArgs,
    cancel: &CancellationToken,
    out: &mut (dyn Write + Send),
) -> Result<Summary, DlqError> {
    let progress = output::progress(!args.pass.json && !args.pass.no_progress);
    let (stats, tally, now) = count(queue, &args.filter, &args.pass, &progress, cancel).await?;
    if args.pass.json {
        serde_json::to_writer(&mut *out, &stats).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else {
        stats.write(out, !args.filter.is_empty(), now)?;
    }
    Ok(summary("stats", queue, &tally, stats.matched))
}

/// One pass that only counts the letters `filter` matches, keeping all: what
/// `stats` shows and what `purge` without `--yes` previews. Returns the counts,
/// the pass's tally and the moment ages were measured from.
pub(crate) async fn count(
    queue: &DeadQueue,
    filter: &Filter,
    pass_args: &PassArgs,
    progress: &ProgressBar,
    cancel: &CancellationToken,
) -> Result<(Stats, Tally, SystemTime), DlqError> {
    let mut visitor = StatsVisitor {
        matcher: filter.compile()?,
        now: SystemTime::now(),
        stats: Stats {
            queue: queue.name(),
            ..Stats::default()
        },
    };
    let (tally, result) =
        pass::run(queue, &mut visitor, options(pass_args, progress), cancel).await;
    progress.finish_and_clear();
    result?;
    let mut stats = visitor.stats;
    stats.ready = tally.expected;
    stats.scanned = tally.scanned;
    Ok((stats, tally, visitor.now))
}

struct ListVisitor<'o> {
    matcher: Matcher,
    now: SystemTime,
    limit: Option<u64>,
    shown: u64,
    json: bool,
    out: &'o mut (dyn Write + Send),
    progress: &'o ProgressBar,
}

impl Visitor for ListVisitor<'_> {
    fn visit(&mut self, letter: &Letter, _: &Delivery) -> Result<Action, DlqError> {
        if self.satisfied() || !self.matcher.matches(letter, self.now) {
            return Ok(Action::Keep);
        }
        self.shown += 1;
        let (out, now, json) = (&mut *self.out, self.now, self.json);
        self.progress.suspend(|| -> Result<(), DlqError> {
            if json {
                serde_json::to_writer(&mut *out, &LetterJson::new(letter, now))
                    .map_err(std::io::Error::from)?;
                writeln!(out)?;
            } else {
                output::table_row(out, letter, now)?;
            }
            Ok(())
        })?;
        Ok(Action::Keep)
    }

    fn satisfied(&self) -> bool {
        self.limit.is_some_and(|limit| self.shown >= limit)
    }
}

/// `dlq list`.
pub(crate) async fn list(
    queue: &DeadQueue,
    args: ListArgs,
    cancel: &CancellationToken,
    out: &mut (dyn Write + Send),
) -> Result<Summary, DlqError> {
    let progress = output::progress(!args.pass.json && !args.pass.no_progress);
    let json = args.pass.json;
    if !json {
        output::table_header(out)?;
    }
    let mut visitor = ListVisitor {
        matcher: args.filter.compile()?,
        now: SystemTime::now(),
        limit: (args.limit > 0).then_some(args.limit),
        shown: 0,
        json,
        out: &mut *out,
        progress: &progress,
    };
    let (tally, result) =
        pass::run(queue, &mut visitor, options(&args.pass, &progress), cancel).await;
    let shown = visitor.shown;
    let limited = visitor.satisfied();
    progress.finish_and_clear();
    result?;
    if !json {
        let more = if limited {
            format!(" (--limit {}; there may be more)", args.limit)
        } else {
            String::new()
        };
        writeln!(
            out,
            "{shown} shown of {} dead letters scanned{more}",
            tally.scanned
        )?;
    }
    Ok(summary("list", queue, &tally, shown))
}

struct ShowVisitor<'o> {
    id: String,
    found: bool,
    json: bool,
    now: SystemTime,
    out: &'o mut (dyn Write + Send),
}

impl Visitor for ShowVisitor<'_> {
    fn visit(&mut self, letter: &Letter, delivery: &Delivery) -> Result<Action, DlqError> {
        if !self.found && letter.message_id.as_deref() == Some(self.id.as_str()) {
            self.found = true;
            if self.json {
                write_json(self.out, letter, delivery, self.now)?;
            } else {
                write_details(self.out, letter, delivery, self.now)?;
            }
        }
        Ok(Action::Keep)
    }

    fn satisfied(&self) -> bool {
        self.found
    }
}

/// `dlq show ID`.
pub(crate) async fn show(
    queue: &DeadQueue,
    args: ShowArgs,
    cancel: &CancellationToken,
    out: &mut (dyn Write + Send),
) -> Result<Summary, DlqError> {
    let progress = output::progress(!args.pass.json && !args.pass.no_progress);
    let mut visitor = ShowVisitor {
        id: args.id.clone(),
        found: false,
        json: args.pass.json,
        now: SystemTime::now(),
        out,
    };
    let (tally, result) =
        pass::run(queue, &mut visitor, options(&args.pass, &progress), cancel).await;
    progress.finish_and_clear();
    result?;
    if !visitor.found && !tally.cancelled {
        return Err(DlqError::NotFound(args.id));
    }
    Ok(summary("show", queue, &tally, u64::from(visitor.found)))
}

fn write_json(
    out: &mut dyn Write,
    letter: &Letter,
    delivery: &Delivery,
    now: SystemTime,
) -> Result<(), DlqError> {
    let body = std::str::from_utf8(&delivery.data).ok();
    let value = serde_json::json!({
        "letter": LetterJson::new(letter, now),
        "properties": properties_json(&delivery.properties),
        "headers": delivery.properties.headers().as_ref().map(table_json),
        "body": body,
        "body_hex": if body.is_none() { Some(hex(&delivery.data)) } else { None },
    });
    serde_json::to_writer_pretty(&mut *out, &value).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

fn write_details(
    out: &mut dyn Write,
    letter: &Letter,
    delivery: &Delivery,
    now: SystemTime,
) -> std::io::Result<()> {
    write_summary(out, letter, now)?;
    write_message(out, delivery)
}

/// What the `hf-*` headers say: the event, the failure, the attempts.
fn write_summary(out: &mut dyn Write, letter: &Letter, now: SystemTime) -> std::io::Result<()> {
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let failed = match letter.failed_at {
        Some(at) => format!(
            "{} ({} ago)",
            timestamp(at),
            short_age(now.duration_since(at).unwrap_or_default())
        ),
        None => "unknown".into(),
    };
    let rows = [
        ("message id", or_dash(&letter.message_id)),
        ("source", or_dash(&letter.source)),
        ("event type", or_dash(&letter.event_type)),
        ("event id", or_dash(&letter.event_id)),
        ("class", letter.class.as_str().to_owned()),
        ("reason", letter.reason().to_owned()),
        ("error", letter.error.clone()),
        ("stage", or_dash(&letter.stage)),
        ("failed at", failed),
        ("received at", or_dash(&letter.received_at)),
        (
            "attempts",
            letter.attempts.map_or("-".into(), |a| a.to_string()),
        ),
        ("replays", letter.replays.to_string()),
        ("routing key", or_dash(&letter.routing_key)),
    ];
    for (name, value) in rows {
        writeln!(out, "{name:<13} {value}")?;
    }
    if let Some(death) = &letter.death {
        writeln!(
            out,
            "{:<13} {} from {} ({} time(s); published to {} with {})",
            "x-death",
            death.reason,
            death.queue,
            death.count,
            if death.exchange.is_empty() {
                "\"\""
            } else {
                &death.exchange
            },
            death.routing_keys.join(", ")
        )?;
    }
    Ok(())
}

/// The message as stored: its properties, every header, the body.
fn write_message(out: &mut dyn Write, delivery: &Delivery) -> std::io::Result<()> {
    writeln!(out, "\nproperties")?;
    if let serde_json::Value::Object(props) = properties_json(&delivery.properties) {
        for (name, value) in props {
            writeln!(out, "  {name}: {value}")?;
        }
    }
    writeln!(out, "\nheaders")?;
    if let Some(headers) = delivery.properties.headers() {
        for (name, value) in headers.inner() {
            writeln!(out, "  {name}: {}", super::letter::value_json(value))?;
        }
    }
    writeln!(out, "\nbody ({} bytes)", delivery.data.len())?;
    match std::str::from_utf8(&delivery.data) {
        Ok(text) => writeln!(out, "{text}"),
        Err(_) => writeln!(out, "(not UTF-8; hex) {}", hex(&delivery.data)),
    }
}

fn properties_json(p: &BasicProperties) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    let mut put = |name: &str, value: Option<serde_json::Value>| {
        if let Some(value) = value {
            map.insert(name.to_owned(), value);
        }
    };
    let text = |v: &Option<lapin::types::ShortString>| v.as_ref().map(|s| s.as_str().into());
    put("message_id", text(p.message_id()));
    put("content_type", text(p.content_type()));
    put("content_encoding", text(p.content_encoding()));
    put("delivery_mode", p.delivery_mode().map(Into::into));
    put("priority", p.priority().map(Into::into));
    put("correlation_id", text(p.correlation_id()));
    put("reply_to", text(p.reply_to()));
    put("expiration", text(p.expiration()));
    put(
        "timestamp",
        p.timestamp().map(|t| {
            super::letter::epoch_secs(t)
                .map_or_else(|| format!("{t} (not a valid time)"), timestamp)
                .into()
        }),
    );
    put("type", text(p.kind()));
    put("user_id", text(p.user_id()));
    put("app_id", text(p.app_id()));
    serde_json::Value::Object(map)
}

/// Pass options from the shared flags.
pub(crate) fn options<'a>(args: &super::PassArgs, progress: &'a ProgressBar) -> PassOptions<'a> {
    PassOptions {
        hold: args.hold,
        rate: None,
        progress,
    }
}

/// The summary of a pass that only looked.
pub(crate) fn summary(
    command: &'static str,
    queue: &DeadQueue,
    tally: &Tally,
    matched: u64,
) -> Summary {
    Summary {
        command,
        queue: queue.name(),
        ready: tally.expected,
        scanned: tally.scanned,
        matched,
        requeued: tally.requeued,
        cancelled: tally.cancelled,
        ..Summary::default()
    }
}
