//! The report's "How cost grows" tables (section g): one per sweep of
//! [`growth`](super::growth), each row a point with its medians, its ratio
//! against the ceiling measured in the same rounds, and the CPU per message of
//! its median run — the figures a deployment is sized from.

use std::fmt::Write as _;

use super::broker::Throughput;
use super::cpu::CpuSplit;
use super::growth::{Growth, GrowthParams};
use super::ingest::IngestRun;
use super::suite::median;
use super::worker::{WorkerParams, WorkerRun};

/// The command reproducing one worker run.
pub fn worker_command(bench: &str, w: &WorkerParams, runs: usize) -> String {
    let mut command = format!(
        "{bench} worker --jobs {} --concurrency {} --latency-ms {} --runs {runs}",
        w.jobs, w.concurrency, w.latency_ms
    );
    if w.body_bytes != 1024 {
        let _ = write!(command, " --body-bytes {}", w.body_bytes);
    }
    if w.processes != 1 {
        let _ = write!(command, " --processes {}", w.processes);
    }
    command
}

/// Per-round ratios `a[i] ÷ b[i]`.
pub fn ratios(a: impl IntoIterator<Item = f64>, b: impl IntoIterator<Item = f64>) -> Vec<f64> {
    a.into_iter().zip(b).map(|(a, b)| a / b.max(1e-9)).collect()
}

/// `0.52 (0.50, 0.52, 0.55)`: the median ratio and each round's.
fn ratio_cell(ratios: &[f64]) -> String {
    let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    format!(
        "**{:.2}** ({})",
        median(ratios.iter().copied()),
        each.join(", ")
    )
}

fn rates(runs: &[Throughput]) -> Vec<f64> {
    runs.iter().map(|r| r.per_second).collect()
}

fn ingest_rates(runs: &[IngestRun]) -> Vec<f64> {
    runs.iter().map(|r| r.load.rps).collect()
}

fn worker_rates(runs: &[WorkerRun]) -> Vec<f64> {
    runs.iter().map(|r| r.per_second).collect()
}

/// The CPU split of the run whose rate is nearest the median, with that rate.
pub fn median_cpu<'a, T>(
    runs: &'a [T],
    rate: impl Fn(&T) -> f64,
    cpu: impl Fn(&'a T) -> &'a CpuSplit,
) -> Option<(f64, &'a CpuSplit)> {
    let middle = median(runs.iter().map(&rate));
    let run = runs.iter().min_by(|a, b| {
        (rate(a) - middle)
            .abs()
            .total_cmp(&(rate(b) - middle).abs())
    })?;
    Some((rate(run), cpu(run)))
}

/// `a 80 + b 40 µs`: µs per message of each named process group in `split`.
fn micros(split: Option<(f64, &CpuSplit)>, names: &[&str]) -> String {
    let Some((rate, cpu)) = split else {
        return String::new();
    };
    let parts: Vec<String> = names
        .iter()
        .map(|name| format!("{name} {:.0}", cpu.micros(name, rate)))
        .collect();
    format!("{} µs", parts.join(" + "))
}

/// Section g, when the sweeps ran.
pub fn section(w: &mut String, growth: &Growth, params: &GrowthParams, bench: &str) {
    if growth.fleet.is_empty() && growth.depths.is_empty() && growth.sizes.is_empty() {
        return;
    }
    let _ = writeln!(w, "## g. How cost grows\n");
    let _ = writeln!(
        w,
        "Sweeps along one axis at a time, {} round(s) each; within a round every ceiling runs \
         right before the service it bounds, and each ratio is the median of the per-round ratios \
         (listed after it). CPU per message is the median run's. Message counts shrink for larger \
         bodies: at most {} MiB of bodies per ceiling or worker run.\n",
        params.runs,
        params.bytes_per_run / (1024 * 1024)
    );
    fleet_table(w, growth, params, bench);
    depth_table(w, growth, params, bench);
    size_table(w, growth, params, bench);
}

fn fleet_table(w: &mut String, growth: &Growth, params: &GrowthParams, bench: &str) {
    let Some(one) = growth.fleet.iter().find(|p| p.processes == 1) else {
        return;
    };
    let _ = writeln!(w, "### Worker processes against one broker\n");
    let _ = writeln!(
        w,
        "```sh\n{}\n```\n",
        worker_command(bench, &params.worker(2, 1024), params.runs)
    );
    let _ = writeln!(
        w,
        "`--processes N` workers, each with prefetch {}, started together on one backlog of 1 KiB \
         jobs, mock-ai at 0 ms. \"÷ 1 process\" is the fleet's rate over one worker's in the same \
         round: below 1.0 means the fleet costs more than it brings on these cores.\n",
        params.concurrency
    );
    let _ = writeln!(
        w,
        "| processes | jobs/s | ÷ 1 process | CPU per job | largest worker peak RSS |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|");
    let base = worker_rates(&one.runs);
    for point in &growth.fleet {
        let fleet = worker_rates(&point.runs);
        let cpu = median_cpu(&point.runs, |r| r.per_second, |r| &r.cpu);
        let rss = point.runs.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0);
        let _ = writeln!(
            w,
            "| {} | {:.0} | {} | {} | {:.1} MiB |",
            point.processes,
            median(fleet.iter().copied()),
            ratio_cell(&ratios(fleet, base.iter().copied())),
            micros(cpu, &["worker", "mock-ai", "rabbitmq", "redis"]),
            rss as f64 / 1024.0
        );
    }
    let _ = writeln!(w);
}

fn depth_table(w: &mut String, growth: &Growth, params: &GrowthParams, bench: &str) {
    let Some(first) = growth.depths.first() else {
        return;
    };
    let ingest = params.ingest(first.depth, 1024);
    let publish = params.publish(first.depth, 1024);
    let _ = writeln!(w, "### Ingest by connections\n");
    let _ = writeln!(
        w,
        "```sh\n{bench} ingest --concurrency N --duration {}s --runs {}\n\
         {bench} publish --messages {} --in-flight N --channels 1 --runs {}\n```\n",
        ingest.duration.as_secs_f64(),
        params.runs,
        publish.messages,
        params.runs
    );
    let _ = writeln!(
        w,
        "Ingest with N connections of `loadgen`'s closed loop (1 KiB bodies), beside the publish \
         ceiling with N publishes awaiting their confirm on one channel.\n"
    );
    let _ = writeln!(
        w,
        "| connections | ingest req/s | ingest p99 ms | publish ceiling msg/s | ratio | CPU per request |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|");
    for point in &growth.depths {
        let ingest = ingest_rates(&point.ingest);
        let cpu = median_cpu(&point.ingest, |r| r.load.rps, |r| &r.cpu);
        let _ = writeln!(
            w,
            "| {} | {:.0} | {:.1} | {:.0} | {} | {} |",
            point.depth,
            median(ingest.iter().copied()),
            median(point.ingest.iter().map(|r| r.load.p99_ms)),
            median(rates(&point.ceiling)),
            ratio_cell(&ratios(ingest, rates(&point.ceiling))),
            micros(cpu, &["ingest", "loadgen", "rabbitmq", "redis"]),
        );
    }
    let _ = writeln!(w);
}

fn size_table(w: &mut String, growth: &Growth, params: &GrowthParams, bench: &str) {
    if growth.sizes.is_empty() {
        return;
    }
    let depth = usize::from(params.concurrency);
    let _ = writeln!(w, "### Message size\n");
    let _ = writeln!(
        w,
        "```sh\n{bench} ingest --concurrency {depth} --duration {}s --body-bytes B --runs {r}\n\
         {bench} publish --in-flight {depth} --channels 1 --body-bytes B --messages M --runs {r}\n\
         {bench} worker --concurrency {} --latency-ms 0 --body-bytes B --jobs M --runs {r}\n\
         {bench} relay --prefetch {} --body-bytes B --messages M --runs {r}\n```\n",
        params.ingest_duration.as_secs_f64(),
        params.concurrency,
        params.concurrency,
        r = params.runs,
    );
    let _ = writeln!(
        w,
        "Ingest at {depth} connections beside the publish ceiling at {depth} in flight, and the \
         worker (prefetch {}, mock-ai at 0 ms) beside the consume-publish-ack ceiling, with bodies \
         of B bytes; M messages per ceiling or worker run. The prompt is the same at every size \
         (the padding is a field the template does not use), so the worker's growth is parsing, \
         copying and moving the body.\n",
        params.concurrency
    );
    let _ = writeln!(
        w,
        "| body | M | ingest req/s | publish ceiling | ratio | ingest CPU per request | worker jobs/s | consume-publish-ack ceiling | ratio | worker CPU per job |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|---|");
    for point in &growth.sizes {
        let ingest = ingest_rates(&point.ingest);
        let worker = worker_rates(&point.worker);
        let ingest_cpu = median_cpu(&point.ingest, |r| r.load.rps, |r| &r.cpu);
        let worker_cpu = median_cpu(&point.worker, |r| r.per_second, |r| &r.cpu);
        let _ = writeln!(
            w,
            "| {} KiB | {} | {:.0} | {:.0} | {} | {} | {:.0} | {:.0} | {} | {} |",
            point.bytes / 1024,
            params.messages_at(point.bytes),
            median(ingest.iter().copied()),
            median(rates(&point.publish)),
            ratio_cell(&ratios(ingest, rates(&point.publish))),
            micros(ingest_cpu, &["ingest", "rabbitmq", "redis"]),
            median(worker.iter().copied()),
            median(rates(&point.relay)),
            ratio_cell(&ratios(worker, rates(&point.relay))),
            micros(worker_cpu, &["worker", "rabbitmq", "redis"]),
        );
    }
    let _ = writeln!(w);
}
