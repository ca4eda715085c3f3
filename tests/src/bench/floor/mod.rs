//! Floors: what the required crates alone spend on one webhook and one job,
//! with no hookfleet code beyond its topology and the serde types that give
//! its records their shape — the least any implementation of the same promise
//! built on them can spend, measured in the same rounds as the broker's
//! ceilings so the ratios compare with the targets'.
//!
//! Two of each ([`Work`]): the bare path (claim, publish, AI call, markers), and
//! the same path keeping what the services keep with their shipped defaults —
//! event status, the dedup record, the response cache, the limiter's read, the
//! full result record — as plain Redis commands, which cost less than the
//! scripts that make the same writes safe. The shipped floor is the one a
//! target's ratio is held against; the bare one shows what those records cost.
//!
//! - [`ingest`]: an axum server in its own process, under ingest's closed
//!   loop, at the target's depth and at the deep one (256 in flight).
//! - [`worker`]: in this process, over a pre-filled backlog.
//!
//! Each is checked as the real runs are: every 202 landed, one result per job.

pub mod ingest;
pub mod worker;

use std::time::Duration;

use serde::Serialize;

use super::broker::{self, Throughput};
use super::ingest::IngestParams;
use super::procs::Lab;
use ingest::IngestFloorRun;

/// How much of the services' promise a floor keeps (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Work {
    /// Claim, publish, AI call and markers only.
    Bare,
    /// Plus the records of the shipped defaults, as plain commands.
    Shipped,
}

/// Sizes of one round of [`rounds`].
#[derive(Debug, Clone, Copy)]
pub struct FloorParams {
    /// Ingest floor: requests in flight (and the publish ceiling's depth).
    pub concurrency: usize,
    /// The deep run's requests in flight (and its ceiling's depth).
    pub deep_concurrency: usize,
    /// Publish ceiling: messages per run.
    pub publish_messages: u64,
    /// Ingest floor: length of a run.
    pub duration: Duration,
    /// Worker floor: jobs (the relay ceiling moves as many).
    pub jobs: u64,
    /// Worker floor and relay: prefetch.
    pub prefetch: u16,
    /// Message and body size.
    pub body_bytes: usize,
}

impl FloorParams {
    fn publish(&self, in_flight: usize) -> broker::PublishParams {
        broker::PublishParams {
            messages: self.publish_messages,
            in_flight,
            channels: 1,
            body_bytes: self.body_bytes,
        }
    }

    fn load(&self, concurrency: usize) -> IngestParams {
        IngestParams {
            concurrency,
            duration: self.duration,
            body_bytes: self.body_bytes,
        }
    }
}

/// One round: each ceiling, then the floors compared with it.
#[derive(Debug, Clone, Serialize)]
pub struct FloorRound {
    /// Publish ceiling at `concurrency` in flight.
    pub publish: Throughput,
    /// The bare ingest floor.
    pub ingest: IngestFloorRun,
    /// The shipped ingest floor.
    pub ingest_shipped: IngestFloorRun,
    /// Publish ceiling at `deep_concurrency` in flight.
    pub publish_deep: Throughput,
    /// The shipped ingest floor at `deep_concurrency`.
    pub ingest_deep: IngestFloorRun,
    /// Consume-publish-ack ceiling (c′).
    pub relay: Throughput,
    /// The bare worker floor.
    pub worker: Throughput,
    /// The shipped worker floor.
    pub worker_shipped: Throughput,
}

/// `runs` rounds of ceilings, each followed by its floors.
pub async fn rounds(
    lab: &Lab,
    params: &FloorParams,
    runs: usize,
) -> anyhow::Result<Vec<FloorRound>> {
    lab.check()?;
    let mut out = Vec::new();
    for n in 1..=runs {
        let round = round(lab, params).await?;
        eprintln!(
            "floor round {n}: publish {:.0}/s, ingest floors {:.0}/s and {:.0}/s; at {}: {:.0}/s, {:.0}/s; relay {:.0}/s, worker floors {:.0}/s and {:.0}/s",
            round.publish.per_second,
            round.ingest.load.rps,
            round.ingest_shipped.load.rps,
            params.deep_concurrency,
            round.publish_deep.per_second,
            round.ingest_deep.load.rps,
            round.relay.per_second,
            round.worker.per_second,
            round.worker_shipped.per_second,
        );
        out.push(round);
    }
    Ok(out)
}

async fn round(lab: &Lab, params: &FloorParams) -> anyhow::Result<FloorRound> {
    let (shallow, deep) = (params.concurrency, params.deep_concurrency);
    let publish = super::suite::publish(&params.publish(shallow)).await?;
    let ingest = ingest::run(lab, &params.load(shallow), Work::Bare).await?;
    let ingest_shipped = ingest::run(lab, &params.load(shallow), Work::Shipped).await?;
    let publish_deep = super::suite::publish(&params.publish(deep)).await?;
    let ingest_deep = ingest::run(lab, &params.load(deep), Work::Shipped).await?;
    let relay = super::suite::relay(params.jobs, params.prefetch, &params.publish(shallow)).await?;
    let (jobs, prefetch, bytes) = (params.jobs, params.prefetch, params.body_bytes);
    let worker = worker::run(lab, jobs, prefetch, bytes, Work::Bare).await?;
    let worker_shipped = worker::run(lab, jobs, prefetch, bytes, Work::Shipped).await?;
    Ok(FloorRound {
        publish,
        ingest,
        ingest_shipped,
        publish_deep,
        ingest_deep,
        relay,
        worker,
        worker_shipped,
    })
}

/// One column of a section's table: its heading, its cell in a round, the
/// cell's unit (`""`: a ratio), whether it gets a median (rates do not: the
/// medians are of what the targets compare).
struct Column {
    heading: String,
    cell: fn(&FloorRound) -> f64,
    unit: &'static str,
    median: bool,
}

/// Messages per second.
fn rate(heading: impl Into<String>, cell: fn(&FloorRound) -> f64) -> Column {
    Column {
        heading: heading.into(),
        cell,
        unit: "/s",
        median: false,
    }
}

/// A floor's rate over its ceiling's.
fn ratio(heading: &str, cell: fn(&FloorRound) -> f64) -> Column {
    Column {
        heading: heading.into(),
        cell,
        unit: "",
        median: true,
    }
}

/// CPU µs per message.
fn cpu(heading: &str, cell: fn(&FloorRound) -> f64) -> Column {
    Column {
        heading: heading.into(),
        cell,
        unit: " µs",
        median: true,
    }
}

/// A table of `columns`, a row per round and a row of medians.
fn table(rounds: &[FloorRound], columns: &[Column]) -> String {
    use std::fmt::Write as _;
    let mut w = String::from("| round |");
    for c in columns {
        let _ = write!(w, " {} |", c.heading);
    }
    let _ = writeln!(w, "\n|---|{}", "---|".repeat(columns.len()));
    for (i, r) in rounds.iter().enumerate() {
        let _ = write!(w, "| {} |", i + 1);
        for c in columns {
            let _ = write!(w, " {}{} |", number((c.cell)(r), c.unit), c.unit);
        }
        w.push('\n');
    }
    w.push_str("| **median** |");
    for c in columns {
        if c.median {
            let m = super::suite::median(rounds.iter().map(c.cell));
            let _ = write!(w, " **{}{}** |", number(m, c.unit), c.unit);
        } else {
            w.push_str(" |");
        }
    }
    w.push('\n');
    w
}

/// A cell: ratios with two decimals, the rest whole.
fn number(value: f64, unit: &str) -> String {
    if unit.is_empty() {
        format!("{value:.2}")
    } else {
        format!("{value:.0}")
    }
}

/// CPU µs per request of `process` in an ingest floor run.
fn ingest_cpu(run: &IngestFloorRun, process: &str) -> f64 {
    run.cpu.micros(process, run.load.rps)
}

/// CPU µs per job of `process` in a worker floor run.
fn worker_cpu(run: &Throughput, process: &str) -> f64 {
    run.cpu.micros(process, run.per_second)
}

/// An ingest floor's rate over its ceiling's.
fn ingest_over(floor: &IngestFloorRun, ceiling: &Throughput) -> f64 {
    floor.load.rps / ceiling.per_second.max(1e-9)
}

/// A worker floor's rate over its ceiling's.
fn worker_over(floor: &Throughput, ceiling: &Throughput) -> f64 {
    floor.per_second / ceiling.per_second.max(1e-9)
}

/// The ingest table's columns.
fn ingest_columns(deep: usize) -> Vec<Column> {
    vec![
        rate("publish ceiling", |r| r.publish.per_second),
        rate("bare floor", |r| r.ingest.load.rps),
        ratio("bare ÷ ceiling", |r| ingest_over(&r.ingest, &r.publish)),
        rate("shipped floor", |r| r.ingest_shipped.load.rps),
        ratio("shipped ÷ ceiling", |r| {
            ingest_over(&r.ingest_shipped, &r.publish)
        }),
        cpu("bare floor CPU", |r| ingest_cpu(&r.ingest, "floor")),
        cpu("bare Redis CPU", |r| ingest_cpu(&r.ingest, "redis")),
        cpu("shipped floor CPU", |r| {
            ingest_cpu(&r.ingest_shipped, "floor")
        }),
        cpu("shipped Redis CPU", |r| {
            ingest_cpu(&r.ingest_shipped, "redis")
        }),
        rate(format!("ceiling at {deep}"), |r| r.publish_deep.per_second),
        rate(format!("shipped floor at {deep}"), |r| {
            r.ingest_deep.load.rps
        }),
        ratio("shipped ÷ ceiling at depth", |r| {
            ingest_over(&r.ingest_deep, &r.publish_deep)
        }),
    ]
}

/// The worker table's columns.
fn worker_columns() -> Vec<Column> {
    vec![
        rate("relay ceiling (c′)", |r| r.relay.per_second),
        rate("bare floor", |r| r.worker.per_second),
        ratio("bare ÷ c′", |r| worker_over(&r.worker, &r.relay)),
        cpu("bare floor CPU", |r| worker_cpu(&r.worker, "floor")),
        cpu("bare Redis CPU", |r| worker_cpu(&r.worker, "redis")),
        rate("shipped floor", |r| r.worker_shipped.per_second),
        ratio("shipped ÷ c′", |r| {
            worker_over(&r.worker_shipped, &r.relay)
        }),
        cpu("shipped floor CPU", |r| {
            worker_cpu(&r.worker_shipped, "floor")
        }),
        cpu("shipped Redis CPU", |r| {
            worker_cpu(&r.worker_shipped, "redis")
        }),
    ]
}

/// The report's section on the floors: each round's rates, ratios and CPU per
/// message, and their medians.
pub fn section(rounds: &[FloorRound], params: &FloorParams, command: &str) -> String {
    use std::fmt::Write as _;
    let mut w = String::new();
    let _ = writeln!(w, "```sh\n{command}\n```\n");
    let _ = writeln!(w, "Ingest (CPU per request):\n");
    let _ = writeln!(
        w,
        "{}",
        table(rounds, &ingest_columns(params.deep_concurrency))
    );
    let _ = writeln!(w, "Worker (CPU per job):\n");
    let _ = writeln!(w, "{}", table(rounds, &worker_columns()));
    if let Some(r) = rounds.get(rounds.len() / 2) {
        let _ = writeln!(
            w,
            "CPU per message in round {}: shipped ingest floor {}; shipped worker floor {}.\n",
            rounds.len() / 2 + 1,
            r.ingest_shipped.cpu.per_message(r.ingest_shipped.load.rps),
            r.worker_shipped
                .cpu
                .per_message(r.worker_shipped.per_second)
        );
    }
    let _ = writeln!(
        w,
        "{} (and {}) requests in flight and {} s per ingest floor run, {} jobs per worker floor run at prefetch {}, {} B bodies.",
        params.concurrency,
        params.deep_concurrency,
        params.duration.as_secs(),
        params.jobs,
        params.prefetch,
        params.body_bytes
    );
    w
}
