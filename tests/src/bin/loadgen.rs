//! `loadgen`: send signed webhooks to ingest (one, or load), and read results.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hookfleet_tests::loadgen::{self, Mode, Scheme, Stop, Target};

#[derive(Parser)]
#[command(about = "Signed webhook load for hookfleet ingest")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct TargetArgs {
    /// `http://host:port/hooks/{source}`.
    #[arg(long)]
    url: String,
    /// Signature scheme of the source.
    #[arg(long, value_enum, default_value = "standard")]
    scheme: Scheme,
    /// Environment variable holding the signing secret.
    #[arg(long, default_value = "LOADGEN_SECRET")]
    secret_env: String,
}

impl TargetArgs {
    fn target(&self, body_bytes: usize) -> anyhow::Result<Target> {
        let secret = std::env::var(&self.secret_env)
            .with_context(|| format!("environment variable {} is not set", self.secret_env))?;
        Ok(Target {
            url: self.url.clone(),
            scheme: self.scheme,
            secret,
            body_bytes,
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Load: closed loop (--concurrency) or open loop (--rate).
    Run {
        #[command(flatten)]
        target: TargetArgs,
        /// Closed loop: requests in flight.
        #[arg(long, conflicts_with = "rate")]
        concurrency: Option<usize>,
        /// Open loop: requests per second.
        #[arg(long)]
        rate: Option<f64>,
        /// Open loop: bound on outstanding requests.
        #[arg(long, default_value_t = 1024)]
        max_in_flight: usize,
        /// Stop after this long (e.g. `10s`).
        #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "count")]
        duration: Option<Duration>,
        /// Stop after this many requests.
        #[arg(long)]
        count: Option<u64>,
        /// Body size in bytes.
        #[arg(long, default_value_t = 1024)]
        body_bytes: usize,
        /// After the run, check that this queue holds exactly the 202s.
        #[arg(long)]
        check_queue: Option<String>,
        /// Broker for --check-queue.
        #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
        amqp_url: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Send one signed webhook with the body of a file; print the answer.
    Send {
        #[command(flatten)]
        target: TargetArgs,
        /// The body.
        #[arg(long)]
        body_file: PathBuf,
        /// The event id (`webhook-id`); a ULID by default.
        #[arg(long)]
        event_id: Option<String>,
    },
    /// Take messages from a queue (acking them) and print them as JSON lines.
    Take {
        /// Queue name, e.g. `hookfleet.results`.
        #[arg(long)]
        queue: String,
        /// How many.
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// Give up after.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
        timeout: Duration,
        /// Broker.
        #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
        amqp_url: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Run {
            target,
            concurrency,
            rate,
            max_in_flight,
            duration,
            count,
            body_bytes,
            check_queue,
            amqp_url,
            json,
        } => {
            let mode = match (concurrency, rate) {
                (_, Some(rate)) => Mode::Open {
                    rate,
                    max_in_flight,
                },
                (c, None) => Mode::Closed {
                    concurrency: c.unwrap_or(64),
                },
            };
            let stop = match (duration, count) {
                (_, Some(n)) => Stop::Count(n),
                (d, None) => Stop::After(d.unwrap_or(Duration::from_secs(10))),
            };
            let report = loadgen::run(target.target(body_bytes)?, mode, stop).await;
            let landed = match &check_queue {
                Some(queue) => Some(loadgen::queue_depth(&amqp_url, queue).await?),
                None => None,
            };
            if json {
                let mut value = serde_json::to_value(&report)?;
                value["landed"] = serde_json::json!(landed);
                println!("{value}");
            } else {
                println!(
                    "sent {} in {:.1}s: {:.0} req/s; statuses {:?}; errors {}",
                    report.sent, report.seconds, report.rps, report.statuses, report.errors
                );
                println!(
                    "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}",
                    report.p50_ms, report.p90_ms, report.p99_ms, report.p999_ms
                );
                if let Some(landed) = landed {
                    println!("landed {landed} messages for {} accepted", report.accepted);
                }
            }
            if let Some(landed) = landed
                && u64::from(landed) != report.accepted
            {
                anyhow::bail!("{landed} messages landed for {} 202s", report.accepted);
            }
        }
        Command::Send {
            target,
            body_file,
            event_id,
        } => {
            let body = std::fs::read(&body_file)
                .with_context(|| format!("cannot read {}", body_file.display()))?;
            let event_id = event_id.unwrap_or_else(|| ulid::Ulid::new().to_string());
            let client = reqwest::Client::new();
            let response = loadgen::signed_request(&client, &target.target(0)?, &event_id, &body)?
                .send()
                .await?;
            let status = response.status();
            println!("{} {}", status.as_u16(), response.text().await?);
            if !status.is_success() {
                anyhow::bail!("ingest answered {status}");
            }
        }
        Command::Take {
            queue,
            count,
            timeout,
            amqp_url,
        } => {
            let messages = loadgen::take_messages(&amqp_url, &queue, count, timeout).await?;
            for message in &messages {
                println!("{}", serde_json::to_string_pretty(message)?);
            }
            if messages.len() < count {
                anyhow::bail!(
                    "only {} of {count} messages within {timeout:?}",
                    messages.len()
                );
            }
        }
    }
    Ok(())
}
