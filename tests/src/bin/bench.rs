//! `bench`: hookfleet's benchmarks. `bench all` is what `make bench` runs; each
//! other subcommand reproduces one figure of `BENCHMARKS.md` on its own. The
//! measurements live in `hookfleet_tests::bench`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hookfleet_tests::bench::broker::PublishParams;
use hookfleet_tests::bench::e2e::E2eParams;
use hookfleet_tests::bench::floor::{self, FloorParams};
use hookfleet_tests::bench::ingest::IngestParams;
use hookfleet_tests::bench::limiter::{self, LimiterParams};
use hookfleet_tests::bench::procs::Lab;
use hookfleet_tests::bench::report::{self, Host};
use hookfleet_tests::bench::suite::{self, SuiteParams, median};
use hookfleet_tests::bench::worker::WorkerParams;
use hookfleet_tests::bench::{e2e, ingest, worker};
use serde::Serialize;

#[derive(Parser)]
#[command(about = "hookfleet benchmarks against the local RabbitMQ and Redis")]
struct Args {
    /// Directory of hookfleet-ingest, hookfleet-worker and mock-ai.
    #[arg(long, global = true, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Where runs write their config and logs.
    #[arg(long, global = true, default_value = "target/bench")]
    work_dir: PathBuf,
    /// Runs of each measurement.
    #[arg(long, global = true, default_value_t = 3)]
    runs: usize,
    /// Print each run as a JSON line as well.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// (a) Broker ceiling: bare lapin publishing with confirms into the jobs queue.
    Publish {
        /// Messages to publish.
        #[arg(long, default_value_t = 40_000)]
        messages: u64,
        /// Publishes awaiting their confirm.
        #[arg(long, default_value_t = 64)]
        in_flight: usize,
        /// Confirm channels.
        #[arg(long, default_value_t = 1)]
        channels: usize,
        /// Message size.
        #[arg(long, default_value_t = 1024)]
        body_bytes: usize,
    },
    /// (c) Broker ceiling: bare lapin consuming and acking a pre-filled jobs queue.
    Consume {
        /// Jobs in the pre-filled queue.
        #[arg(long, default_value_t = 40_000)]
        messages: u64,
        /// `basic.qos` prefetch.
        #[arg(long, default_value_t = 64)]
        prefetch: u16,
        /// Job body size.
        #[arg(long, default_value_t = 1024)]
        body_bytes: usize,
    },
    /// (c′) Broker ceiling: consume, publish a result with confirm, ack.
    Relay {
        /// Jobs in the pre-filled queue.
        #[arg(long, default_value_t = 20_000)]
        messages: u64,
        /// `basic.qos` prefetch.
        #[arg(long, default_value_t = 64)]
        prefetch: u16,
        /// Job body size.
        #[arg(long, default_value_t = 1024)]
        body_bytes: usize,
    },
    /// (b) hookfleet-ingest under closed-loop load.
    Ingest {
        /// Requests in flight.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Length of each run.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "8s")]
        duration: Duration,
        /// Webhook body size.
        #[arg(long, default_value_t = 1024)]
        body_bytes: usize,
    },
    /// (c) hookfleet-worker draining a backlog with mock-ai at a fixed latency.
    Worker {
        /// Jobs in the pre-filled backlog.
        #[arg(long, default_value_t = 15_000)]
        jobs: u64,
        /// `worker.concurrency` (prefetch).
        #[arg(long, default_value_t = 64)]
        concurrency: u16,
        /// mock-ai's answer latency.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Job body size.
        #[arg(long, default_value_t = 1024)]
        body_bytes: usize,
        /// Worker processes sharing the queue, each with `--concurrency`.
        #[arg(long, default_value_t = 1)]
        processes: u16,
    },
    /// (d) The whole path at a fixed rate: POST → result latency.
    E2e {
        /// Requests per second.
        #[arg(long)]
        rate: f64,
        /// Length of the load in each run.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "8s")]
        duration: Duration,
        /// `worker.concurrency` (prefetch).
        #[arg(long, default_value_t = 64)]
        concurrency: u16,
        /// mock-ai's answer latency.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Webhook body size.
        #[arg(long, default_value_t = 1024)]
        body_bytes: usize,
    },
    /// (f) The fleet-wide limiter: worker processes against mock-ai's enforced
    /// limits; 429s and the share of the limit used. Prints the report's section.
    Limiter {
        /// Jobs in the pre-filled backlog.
        #[arg(long, default_value_t = 2_000)]
        jobs: u64,
        /// Worker processes.
        #[arg(long, default_value_t = 4)]
        workers: u16,
        /// `worker.concurrency` of each.
        #[arg(long, default_value_t = 16)]
        concurrency: u16,
        /// mock-ai's requests per minute (and as many requests' worth of tokens).
        #[arg(long, default_value_t = 600)]
        rpm: u32,
        /// mock-ai's answer latency (plus up to as much jitter).
        #[arg(long, default_value_t = 20)]
        latency_ms: u64,
    },
    /// (h) Floors: the required crates alone (bare axum + hmac + Redis + lapin
    /// for a webhook; lapin + Redis + reqwest for a job), each right after its
    /// ceiling. Prints the report's section.
    Floor {
        /// Ingest floor: requests in flight.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Ingest floor's deep run: requests in flight.
        #[arg(long, default_value_t = 256)]
        deep_concurrency: usize,
        /// Ingest floor: length of each run.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "8s")]
        duration: Duration,
        /// Worker floor: jobs in the pre-filled backlog.
        #[arg(long, default_value_t = 15_000)]
        jobs: u64,
        /// Worker floor: prefetch.
        #[arg(long, default_value_t = 64)]
        prefetch: u16,
        /// Body size.
        #[arg(long, default_value_t = 1024)]
        body_bytes: usize,
    },
    /// The ingest floor's server (started by `bench floor`); the secret is in
    /// `FLOOR_SECRET`.
    #[command(hide = true)]
    FloorServer {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        amqp_url: String,
        #[arg(long)]
        redis_url: String,
        #[arg(long)]
        exchange: String,
        #[arg(long)]
        namespace: String,
        /// Keep the shipped defaults' records too.
        #[arg(long)]
        shipped: bool,
    },
    /// Everything, in rounds; writes the report.
    All {
        /// The report.
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// Hand-written reading appended to the report.
        #[arg(long, default_value = "bench/NOTES.md")]
        notes: PathBuf,
        /// Every run as JSON.
        #[arg(long, default_value = "target/bench/results.json")]
        results: PathBuf,
        /// Tiny sizes: checks the tooling, measures nothing.
        #[arg(long)]
        smoke: bool,
        /// Rounds of the how-cost-grows sweeps (default: `--runs`; 0 skips them).
        #[arg(long)]
        growth_runs: Option<usize>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let lab = Lab::new(&args.bin_dir, &args.work_dir);
    let runs = args.runs.max(1);
    let json = args.json;
    match args.command {
        Command::Publish {
            messages,
            in_flight,
            channels,
            body_bytes,
        } => {
            let params = PublishParams {
                messages,
                in_flight,
                channels,
                body_bytes,
            };
            publish(&params, runs, json).await
        }
        Command::Consume {
            messages,
            prefetch,
            body_bytes,
        } => consume(false, messages, prefetch, body_bytes, runs, json).await,
        Command::Floor {
            concurrency,
            deep_concurrency,
            duration,
            jobs,
            prefetch,
            body_bytes,
        } => {
            let params = FloorParams {
                concurrency,
                deep_concurrency,
                publish_messages: 40_000,
                duration,
                jobs,
                prefetch,
                body_bytes,
            };
            let rounds = floor::rounds(&lab, &params, runs).await?;
            if json {
                for round in &rounds {
                    println!("{}", serde_json::to_string(round)?);
                }
            }
            let command = format!(
                "target/release/bench floor --concurrency {concurrency} --deep-concurrency {deep_concurrency} --duration {}s --jobs {jobs} --prefetch {prefetch} --body-bytes {body_bytes} --runs {runs}",
                duration.as_secs()
            );
            print!("{}", floor::section(&rounds, &params, &command));
            Ok(())
        }
        Command::FloorServer {
            listen,
            amqp_url,
            redis_url,
            exchange,
            namespace,
            shipped,
        } => {
            let secret = std::env::var("FLOOR_SECRET").context("FLOOR_SECRET is not set")?;
            floor::ingest::serve(floor::ingest::ServerParams {
                listen,
                amqp_url,
                redis_url,
                exchange,
                namespace,
                secret,
                work: if shipped {
                    floor::Work::Shipped
                } else {
                    floor::Work::Bare
                },
            })
            .await
        }
        Command::Relay {
            messages,
            prefetch,
            body_bytes,
        } => consume(true, messages, prefetch, body_bytes, runs, json).await,
        Command::Ingest {
            concurrency,
            duration,
            body_bytes,
        } => {
            lab.check()?;
            let params = IngestParams {
                concurrency,
                duration,
                body_bytes,
            };
            ingest_runs(&lab, &params, runs, json).await
        }
        Command::Worker {
            jobs,
            concurrency,
            latency_ms,
            body_bytes,
            processes,
        } => {
            lab.check()?;
            let params = WorkerParams {
                jobs,
                concurrency,
                latency_ms,
                body_bytes,
                processes,
            };
            worker_runs(&lab, &params, runs, json).await
        }
        Command::E2e {
            rate,
            duration,
            concurrency,
            latency_ms,
            body_bytes,
        } => {
            lab.check()?;
            let params = E2eParams {
                rate,
                duration,
                concurrency,
                latency_ms,
                body_bytes,
            };
            e2e_runs(&lab, &params, runs, json).await
        }
        Command::Limiter {
            jobs,
            workers,
            concurrency,
            rpm,
            latency_ms,
        } => {
            lab.check()?;
            let params = LimiterParams {
                jobs,
                workers,
                concurrency,
                rpm,
                latency_ms,
            };
            limiter_runs(&lab, &params, runs, json).await
        }
        Command::All {
            out,
            notes,
            results,
            smoke,
            growth_runs,
        } => {
            let mut params = if smoke {
                SuiteParams::smoke()
            } else {
                SuiteParams::standard(runs)
            };
            if let Some(growth_runs) = growth_runs {
                params.growth.runs = growth_runs;
            }
            all(&lab, &params, &out, &notes, &results).await
        }
    }
}

/// `bench publish`: the broker's confirmed-publish ceiling.
async fn publish(params: &PublishParams, runs: usize, json: bool) -> anyhow::Result<()> {
    let mut rates = Vec::new();
    for run in 1..=runs {
        let result = suite::publish(params).await?;
        println!(
            "run {run}: {:.0} msg/s ({} in {:.2} s); CPU {}",
            result.per_second,
            result.messages,
            result.seconds,
            result.cpu.summary()
        );
        print_json(json, &result)?;
        rates.push(result.per_second);
    }
    println!("median: {:.0} msg/s", median(rates));
    Ok(())
}

/// `bench consume` / `bench relay`: the broker's consume ceilings.
async fn consume(
    relay: bool,
    messages: u64,
    prefetch: u16,
    body_bytes: usize,
    runs: usize,
    json: bool,
) -> anyhow::Result<()> {
    let publish = PublishParams {
        body_bytes,
        ..SuiteParams::standard(runs).publish
    };
    let mut rates = Vec::new();
    for run in 1..=runs {
        let result = if relay {
            suite::relay(messages, prefetch, &publish).await?
        } else {
            suite::consume(messages, prefetch, &publish).await?
        };
        println!(
            "run {run}: {:.0} msg/s ({} in {:.2} s); CPU {}",
            result.per_second,
            result.messages,
            result.seconds,
            result.cpu.summary()
        );
        print_json(json, &result)?;
        rates.push(result.per_second);
    }
    println!("median: {:.0} msg/s", median(rates));
    Ok(())
}

/// `bench ingest`.
async fn ingest_runs(
    lab: &Lab,
    params: &IngestParams,
    runs: usize,
    json: bool,
) -> anyhow::Result<()> {
    let mut rates = Vec::new();
    for run in 1..=runs {
        let r = ingest::run(lab, params).await?;
        println!(
            "run {run}: {:.0} req/s; statuses {:?}; errors {}; landed {}; latency ms p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2}; peak RSS {:.1} MiB; CPU {}",
            r.load.rps,
            r.load.statuses,
            r.load.errors,
            r.landed,
            r.load.p50_ms,
            r.load.p90_ms,
            r.load.p99_ms,
            r.load.p999_ms,
            r.peak_rss_kib as f64 / 1024.0,
            r.cpu.summary()
        );
        print_json(json, &r)?;
        rates.push(r.load.rps);
    }
    println!("median: {:.0} req/s", median(rates));
    Ok(())
}

/// `bench worker`.
async fn worker_runs(
    lab: &Lab,
    params: &WorkerParams,
    runs: usize,
    json: bool,
) -> anyhow::Result<()> {
    let jobs = params.jobs;
    let mut rates = Vec::new();
    for run in 1..=runs {
        let r = worker::run(lab, params).await?;
        println!(
            "run {run}: {:.0} jobs/s ({jobs} in {:.2} s); worker peak RSS {:.1} MiB; CPU {}",
            r.per_second,
            r.seconds,
            r.peak_rss_kib as f64 / 1024.0,
            r.cpu.summary()
        );
        print_json(json, &r)?;
        rates.push(r.per_second);
    }
    let rate = median(rates);
    match params.ideal_per_second() {
        Some(ideal) => println!(
            "median: {rate:.0} jobs/s = {:.2} × concurrency ÷ latency ({ideal:.0})",
            rate / ideal
        ),
        None => println!("median: {rate:.0} jobs/s"),
    }
    Ok(())
}

/// `bench e2e`.
async fn e2e_runs(lab: &Lab, params: &E2eParams, runs: usize, json: bool) -> anyhow::Result<()> {
    let rate = params.rate;
    let (mut p50, mut p99) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        let r = e2e::run(lab, params).await?;
        println!(
            "run {run}: {} results at {rate:.0} req/s; POST→result ms p50 {:.1} p90 {:.1} p99 {:.1} p99.9 {:.1} max {:.1}; server p50 {:.1} p99 {:.1}; CPU {}",
            r.results,
            r.latency.p50_ms,
            r.latency.p90_ms,
            r.latency.p99_ms,
            r.latency.p999_ms,
            r.latency.max_ms,
            r.server.p50_ms,
            r.server.p99_ms,
            r.cpu.summary()
        );
        print_json(json, &r)?;
        p50.push(r.latency.p50_ms);
        p99.push(r.latency.p99_ms);
    }
    println!(
        "median: p50 {:.1} ms, p99 {:.1} ms",
        median(p50),
        median(p99)
    );
    Ok(())
}

/// `bench limiter`.
async fn limiter_runs(
    lab: &Lab,
    params: &LimiterParams,
    runs: usize,
    json: bool,
) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for run in 1..=runs {
        let r = limiter::run(lab, params).await?;
        println!(
            "run {run}: {} 429s; steady {:.1} req/min = {:.1}% of {}, {:.0} tokens/min = {:.1}% of {}; busiest 60 s {}",
            r.rate_limited,
            r.requests_per_minute,
            r.share_of_rpm * 100.0,
            r.rpm_limit,
            r.tokens_per_minute,
            r.share_of_tpm * 100.0,
            r.tpm_limit,
            r.busiest_minute
        );
        print_json(json, &r)?;
        all.push(r);
    }
    let mut section = String::new();
    let command = report::limiter_command("target/release/bench", params);
    report::limiter_section(&mut section, &all, &command);
    println!("\n{section}");
    Ok(())
}

/// `bench all`: the whole suite, written to BENCHMARKS.md and a JSON file.
async fn all(
    lab: &Lab,
    params: &SuiteParams,
    out: &Path,
    notes: &Path,
    results: &Path,
) -> anyhow::Result<()> {
    let suite = suite::run(lab, params).await?;
    if let Some(dir) = results.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(results, serde_json::to_vec_pretty(&suite)?)
        .with_context(|| format!("cannot write {}", results.display()))?;
    let notes = std::fs::read_to_string(notes).ok();
    let text = report::render(&suite, params, &Host::detect(), notes.as_deref());
    std::fs::write(out, &text).with_context(|| format!("cannot write {}", out.display()))?;
    print_summary(&text);
    eprintln!("wrote {} and {}", out.display(), results.display());
    Ok(())
}

fn print_json(json: bool, value: &impl Serialize) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(value)?);
    }
    Ok(())
}

/// The report's targets table, on the terminal.
fn print_summary(report: &str) {
    let mut inside = false;
    for line in report.lines() {
        if line.starts_with("## Targets") {
            inside = true;
        } else if inside && line.starts_with("## ") {
            break;
        }
        if inside {
            println!("{line}");
        }
    }
}
