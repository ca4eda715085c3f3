//! `BENCHMARKS.md`: the suite's figures, each with the command that reproduces
//! it, the ratios against the targets, and the hand-written reading of them
//! (`bench/NOTES.md`) appended as is.

use std::fmt::Write as _;
use std::time::SystemTime;

use super::broker::Throughput;
use super::cpu::CpuSplit;
use super::limiter::{LimiterParams, LimiterRun};
use super::sizing;
use super::suite::{Suite, SuiteParams, median};

/// Facts about the machine and the build, for the report's header.
#[derive(Debug, Clone, Default)]
pub struct Host {
    /// `abc1234`, with ` + uncommitted changes` when the tree is dirty.
    pub commit: String,
    /// CPU model.
    pub cpu: String,
    /// Cores.
    pub cores: usize,
    /// Kernel release.
    pub kernel: String,
    /// `HOOKFLEET__…` and `RUST_LOG` variables the services inherited.
    pub overrides: Vec<String>,
}

impl Host {
    /// Reads what it can; blanks what it cannot.
    pub fn detect() -> Self {
        let git = |args: &[&str]| {
            std::process::Command::new("git")
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        };
        let mut commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
        if git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty()) {
            commit.push_str(" + uncommitted changes");
        }
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
            })
            .unwrap_or_default();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|k| k.trim().to_owned())
            .unwrap_or_default();
        let mut overrides: Vec<String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("HOOKFLEET__") || k == "RUST_LOG")
            .filter(|(k, _)| !k.contains("SECRET") && !k.contains("KEY") && !k.ends_with("URL"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        overrides.sort();
        Self {
            commit,
            cpu,
            cores: super::cpu::cores(),
            kernel,
            overrides,
        }
    }
}

/// The commands that reproduce each figure on their own.
pub struct Commands {
    /// The publish ceiling.
    pub publish: String,
    /// The consume-and-ack ceiling.
    pub consume: String,
    /// The consume-publish-ack ceiling.
    pub relay: String,
    /// Ingest.
    pub ingest: String,
    /// The load of the ingest runs, by hand against a running ingest.
    pub loadgen: String,
    /// Worker at 0 ms.
    pub worker_fast: String,
    /// Worker at the slow latency.
    pub worker_slow: String,
    /// End to end.
    pub e2e: String,
    /// The limiter's accuracy.
    pub limiter: String,
}

impl Commands {
    /// For `params`, with the bench binary at `bench`.
    pub fn new(bench: &str, params: &SuiteParams, e2e_rate: f64) -> Self {
        let runs = params.runs;
        let p = &params.publish;
        let worker = |w: &super::worker::WorkerParams| sizing::worker_command(bench, w, runs);
        let ingest_secs = params.ingest.duration.as_secs_f64();
        Self {
            publish: format!(
                "{bench} publish --messages {} --in-flight {} --channels {} --body-bytes {} --runs {runs}",
                p.messages, p.in_flight, p.channels, p.body_bytes
            ),
            consume: format!(
                "{bench} consume --messages {} --prefetch {} --runs {runs}",
                params.consume_messages, params.prefetch
            ),
            relay: format!(
                "{bench} relay --messages {} --prefetch {} --runs {runs}",
                params.relay_messages, params.prefetch
            ),
            ingest: format!(
                "{bench} ingest --concurrency {} --duration {ingest_secs}s --body-bytes {} --runs {runs}",
                params.ingest.concurrency, params.ingest.body_bytes
            ),
            loadgen: format!(
                "LOADGEN_SECRET=whsec_… target/release/loadgen run --url http://127.0.0.1:8080/hooks/support \
                 --concurrency {} --duration {ingest_secs}s --body-bytes {} --check-queue hookfleet.jobs",
                params.ingest.concurrency, params.ingest.body_bytes
            ),
            worker_fast: worker(&params.worker_fast),
            worker_slow: worker(&params.worker_slow),
            e2e: format!(
                "{bench} e2e --rate {e2e_rate:.0} --duration {}s --latency-ms {} --concurrency {} --runs {runs}",
                params.e2e_duration.as_secs_f64(),
                params.e2e_latency_ms,
                params.worker_fast.concurrency
            ),
            limiter: limiter_command(bench, &params.limiter),
        }
    }
}

/// The command reproducing the limiter's accuracy on its own.
pub fn limiter_command(bench: &str, p: &LimiterParams) -> String {
    format!(
        "{bench} limiter --jobs {} --workers {} --concurrency {} --rpm {} --latency-ms {} --runs 1",
        p.jobs, p.workers, p.concurrency, p.rpm, p.latency_ms
    )
}

/// The ratios the targets are about, per round.
pub struct Ratios {
    /// Ingest req/s ÷ publish ceiling.
    pub ingest: Vec<f64>,
    /// Worker (0 ms) ÷ consume ceiling.
    pub worker_fast: Vec<f64>,
    /// Worker (0 ms) ÷ consume-publish-ack ceiling.
    pub worker_relay: Vec<f64>,
    /// Worker (slow) ÷ concurrency/latency.
    pub worker_slow: Vec<f64>,
}

impl Ratios {
    /// From a suite.
    pub fn of(suite: &Suite, params: &SuiteParams) -> Self {
        let pair = |a: Vec<f64>, b: Vec<f64>| -> Vec<f64> {
            a.iter().zip(&b).map(|(a, b)| a / b.max(1e-9)).collect()
        };
        let ideal = params.worker_slow.ideal_per_second().unwrap_or(f64::NAN);
        Self {
            ingest: pair(
                suite.ingest.iter().map(|r| r.load.rps).collect(),
                per_second(&suite.publish),
            ),
            worker_fast: pair(
                suite.worker_fast.iter().map(|r| r.per_second).collect(),
                per_second(&suite.consume),
            ),
            worker_relay: pair(
                suite.worker_fast.iter().map(|r| r.per_second).collect(),
                per_second(&suite.relay),
            ),
            worker_slow: suite
                .worker_slow
                .iter()
                .map(|r| r.per_second / ideal)
                .collect(),
        }
    }
}

fn per_second(runs: &[Throughput]) -> Vec<f64> {
    runs.iter().map(|r| r.per_second).collect()
}

/// What every section of the report reads.
struct Ctx<'a> {
    suite: &'a Suite,
    params: &'a SuiteParams,
    commands: Commands,
    ratios: Ratios,
    e2e_rate: f64,
    ingest_rss: u64,
    worker_rss: u64,
}

impl<'a> Ctx<'a> {
    fn new(suite: &'a Suite, params: &'a SuiteParams, bench: &str) -> Self {
        let e2e_rate = suite.e2e.first().map_or(0.0, |r| r.rate);
        let ingest_rss = suite.ingest.iter().map(|r| r.peak_rss_kib).max();
        let worker_rss = suite
            .worker_fast
            .iter()
            .chain(&suite.worker_slow)
            .map(|r| r.peak_rss_kib)
            .max();
        Self {
            suite,
            params,
            commands: Commands::new(bench, params, e2e_rate),
            ratios: Ratios::of(suite, params),
            e2e_rate,
            ingest_rss: ingest_rss.unwrap_or(0),
            worker_rss: worker_rss.unwrap_or(0),
        }
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

/// The whole report.
pub fn render(suite: &Suite, params: &SuiteParams, host: &Host, notes: Option<&str>) -> String {
    let bench = "target/release/bench";
    let c = Ctx::new(suite, params, bench);
    let mut out = String::new();
    let w = &mut out;
    header(w, params, host, bench);
    targets(w, &c);
    publish_section(w, &c);
    ingest_section(w, &c);
    worker_section(w, &c);
    e2e_section(w, &c);
    memory_section(w, &c);
    if !suite.limiter.is_empty() {
        limiter_section(w, &suite.limiter, &c.commands.limiter);
    }
    sizing::section(w, &suite.growth, &params.growth, bench);
    if let Some(notes) = notes {
        let _ = writeln!(w, "{}", notes.trim_end());
    }
    out
}

/// The title, the machine and how to read the figures.
fn header(w: &mut String, params: &SuiteParams, host: &Host, bench: &str) {
    let runs = params.runs;
    let _ = writeln!(w, "# hookfleet benchmarks\n");
    let _ = writeln!(
        w,
        "Written by `make bench` (`bash bench/run.sh`: release build, then `{bench} all`) on {} \
         at commit {}. Do not edit by hand: the notes section comes from `bench/NOTES.md`, the floors section from `bench floor`, the DLQ section from `bench/dlq.sh`.\n",
        humantime::format_rfc3339_seconds(SystemTime::now()),
        host.commit
    );
    let _ = writeln!(
        w,
        "Machine: {} cores ({}), Linux {}; RabbitMQ and Redis local (`deploy/local/start.sh`), \
         every process on the same cores. Overrides in effect: {}.\n",
        host.cores,
        if host.cpu.is_empty() {
            "unknown CPU"
        } else {
            &host.cpu
        },
        host.kernel,
        if host.overrides.is_empty() {
            "none".to_owned()
        } else {
            format!("`{}`", host.overrides.join("`, `"))
        }
    );
    let _ = writeln!(
        w,
        "Each figure is the median of {runs} runs. A ceiling and the service it bounds run back to \
         back in the same round, and each ratio is the median of the {runs} per-round ratios, so \
         background load on the machine moves both sides of a ratio together. Absolute figures \
         move with the machine; the ratios are the result. CPU is in percent of one core \
         ({}% = every core busy); \"other\" is busy time outside the listed processes (kernel \
         network work, and anything else running on the machine).\n",
        host.cores * 100
    );
}

/// The targets table.
fn targets(w: &mut String, c: &Ctx) {
    let suite = c.suite;
    let params = c.params;
    let ratios = &c.ratios;
    let ideal = params.worker_slow.ideal_per_second().unwrap_or(f64::NAN);
    let (ingest_rss, worker_rss) = (c.ingest_rss, c.worker_rss);
    let _ = writeln!(w, "## Targets\n");
    let _ = writeln!(w, "| target | measured (medians) | ratio | goal | |");
    let _ = writeln!(w, "|---|---|---|---|---|");
    let r_ingest = median(ratios.ingest.iter().copied());
    let _ = writeln!(
        w,
        "| b/a: ingest at {} connections vs broker publish ceiling | {:.0} req/s vs {:.0} msg/s | {:.2} | ≥ 0.80 | {} |",
        params.ingest.concurrency,
        median(suite.ingest.iter().map(|r| r.load.rps)),
        median(per_second(&suite.publish)),
        r_ingest,
        verdict(r_ingest >= 0.8)
    );
    deep_ingest_target(w, c);
    let r_fast = median(ratios.worker_fast.iter().copied());
    let _ = writeln!(
        w,
        "| c: worker, mock-ai 0 ms, vs consume-and-ack ceiling | {:.0} vs {:.0} jobs/s | {:.2} | ≥ 0.80 | {} |",
        median(suite.worker_fast.iter().map(|r| r.per_second)),
        median(per_second(&suite.consume)),
        r_fast,
        verdict(r_fast >= 0.8)
    );
    let r_relay = median(ratios.worker_relay.iter().copied());
    let _ = writeln!(
        w,
        "| c′: the same worker vs consume-publish-ack ceiling | {:.0} vs {:.0} jobs/s | {:.2} | ≥ 0.60 | {} |",
        median(suite.worker_fast.iter().map(|r| r.per_second)),
        median(per_second(&suite.relay)),
        r_relay,
        verdict(r_relay >= 0.6)
    );
    cpu_targets(w, c);
    let r_slow = median(ratios.worker_slow.iter().copied());
    let _ = writeln!(
        w,
        "| c: worker, mock-ai {} ms, vs concurrency ÷ latency | {:.0} vs {:.0} jobs/s | {:.2} | 0.90–1.10 | {} |",
        params.worker_slow.latency_ms,
        median(suite.worker_slow.iter().map(|r| r.per_second)),
        ideal,
        r_slow,
        verdict((0.9..=1.1).contains(&r_slow))
    );
    let _ = writeln!(
        w,
        "| b: ingest peak RSS (largest run) | {:.1} MiB | | < 64 MiB | {} |",
        mib(ingest_rss),
        verdict(mib(ingest_rss) < 64.0)
    );
    let _ = writeln!(
        w,
        "| e: worker peak RSS at prefetch {} (largest run) | {:.1} MiB | | < 64 MiB | {} |",
        params.worker_fast.concurrency,
        mib(worker_rss),
        verdict(mib(worker_rss) < 64.0)
    );
    e2e_target(w, suite);
    if let Some(run) = suite.limiter.first() {
        let ok = run.rate_limited == 0 && run.share_of_rpm.min(run.share_of_tpm) >= 0.95;
        let _ = writeln!(
            w,
            "| f: {} workers under mock-ai's {} req/min and {} tokens/min: 429s, steady throughput | {} 429s, {:.0} req/min | {:.3} | 0 and ≥ 0.95 | {} |",
            run.workers,
            run.rpm_limit,
            run.tpm_limit,
            run.rate_limited,
            run.requests_per_minute,
            run.share_of_rpm.min(run.share_of_tpm),
            verdict(ok)
        );
    }
    let _ = writeln!(w);
}

/// Ingest at the deepest point of the depth sweep against the ceiling there.
fn deep_ingest_target(w: &mut String, c: &Ctx) {
    let Some(point) = c.suite.growth.depths.iter().max_by_key(|p| p.depth) else {
        return;
    };
    let rates: Vec<f64> = point.ingest.iter().map(|r| r.load.rps).collect();
    let ratio = median(sizing::ratios(
        rates.iter().copied(),
        per_second(&point.ceiling),
    ));
    let _ = writeln!(
        w,
        "| g: ingest at {d} connections vs publish ceiling at {d} in flight | {:.0} req/s vs {:.0} msg/s | {ratio:.2} | ≥ 0.80 | {} |",
        median(rates),
        median(per_second(&point.ceiling)),
        verdict(ratio >= 0.8),
        d = point.depth,
    );
}

/// CPU per request and per job of the service and Redis, from the median runs.
fn cpu_targets(w: &mut String, c: &Ctx) {
    let suite = c.suite;
    if let Some((rate, cpu)) = sizing::median_cpu(&suite.ingest, |r| r.load.rps, |r| &r.cpu) {
        let (own, redis) = (cpu.micros("ingest", rate), cpu.micros("redis", rate));
        let _ = writeln!(
            w,
            "| b: ingest CPU per request, ingest + Redis (median run) | {own:.0} + {redis:.0} µs | | ≤ 60 µs | {} |",
            verdict(own + redis <= 60.0)
        );
    }
    if let Some((rate, cpu)) = sizing::median_cpu(&suite.worker_fast, |r| r.per_second, |r| &r.cpu)
    {
        let (own, redis) = (cpu.micros("worker", rate), cpu.micros("redis", rate));
        let _ = writeln!(
            w,
            "| c: worker CPU per job at 0 ms, worker + Redis (median run) | {own:.0} + {redis:.0} µs | | ≤ 150 µs | {} |",
            verdict(own + redis <= 150.0)
        );
    }
}

/// The end-to-end tail: the median p99 and the worst run's against it.
fn e2e_target(w: &mut String, suite: &Suite) {
    let Some((rate, _, p99)) = median_e2e(suite) else {
        return;
    };
    let worst = suite
        .e2e
        .iter()
        .map(|r| r.latency.p99_ms)
        .fold(0.0, f64::max);
    let _ = writeln!(
        w,
        "| d: end to end at {rate:.0} req/s (half of the path's measured {:.0}): POST → result p99, median and worst of {} runs | {p99:.1} ms, worst {worst:.1} ms | {:.2} | ≤ 30 ms, worst ≤ 2× median | {} |",
        suite.capacity,
        suite.e2e.len(),
        worst / p99.max(1e-9),
        verdict(p99 <= 30.0 && worst <= 2.0 * p99)
    );
}

/// Section a: the broker's publish ceiling.
fn publish_section(w: &mut String, c: &Ctx) {
    let suite = c.suite;
    let params = c.params;
    let commands = &c.commands;
    let _ = writeln!(w, "## a. Broker ceiling: publish with confirms\n");
    let _ = writeln!(w, "```sh\n{}\n```\n", commands.publish);
    let _ = writeln!(
        w,
        "Bare lapin, no hookfleet code: {} confirm channel(s), {} publishes awaiting their confirm \
         at all times, {} B persistent `mandatory` messages with ingest's properties, to `{{ns}}.events` \
         → quorum `{{ns}}.jobs` declared by `Topology`. Every message is checked to have landed.\n",
        params.publish.channels, params.publish.in_flight, params.publish.body_bytes
    );
    throughput_table(w, &suite.publish, "msg/s");
}

/// Section b: ingest.
fn ingest_section(w: &mut String, c: &Ctx) {
    let params = c.params;
    let commands = &c.commands;
    let _ = writeln!(
        w,
        "## b. Ingest at {} connections\n",
        params.ingest.concurrency
    );
    let _ = writeln!(w, "```sh\n{}\n```\n", commands.ingest);
    let _ = writeln!(
        w,
        "`hookfleet-ingest` (release, shipped defaults) as its own process; `loadgen`'s closed loop \
         in the bench process keeps {} signed Standard Webhooks requests ({} B, unique ids) in flight \
         for {:.0} s. Afterwards the jobs queue must hold exactly one message per 202. The load on \
         its own, against a running ingest:\n",
        params.ingest.concurrency,
        params.ingest.body_bytes,
        params.ingest.duration.as_secs_f64()
    );
    let _ = writeln!(w, "```sh\n{}\n```\n", commands.loadgen);
    ingest_runs(w, c);
}

/// Section b's table of runs, and where a request's time goes.
fn ingest_runs(w: &mut String, c: &Ctx) {
    let suite = c.suite;
    let params = c.params;
    let ratios = &c.ratios;
    let _ = writeln!(
        w,
        "| run | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | statuses | landed | peak RSS | CPU |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|---|");
    for (i, r) in suite.ingest.iter().enumerate() {
        let _ = writeln!(
            w,
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {:.1} MiB | {} |",
            i + 1,
            r.load.rps,
            r.load.p50_ms,
            r.load.p90_ms,
            r.load.p99_ms,
            r.load.p999_ms,
            statuses(&r.load),
            r.landed,
            mib(r.peak_rss_kib),
            r.cpu.summary()
        );
    }
    let _ = writeln!(
        w,
        "| **median** | **{:.0}** | {:.2} | {:.2} | {:.2} | {:.2} | | | | |\n",
        median(suite.ingest.iter().map(|r| r.load.rps)),
        median(suite.ingest.iter().map(|r| r.load.p50_ms)),
        median(suite.ingest.iter().map(|r| r.load.p90_ms)),
        median(suite.ingest.iter().map(|r| r.load.p99_ms)),
        median(suite.ingest.iter().map(|r| r.load.p999_ms)),
    );
    let cpu: Vec<(f64, &CpuSplit)> = suite.ingest.iter().map(|r| (r.load.rps, &r.cpu)).collect();
    cpu_line(w, &cpu, "request");
    if let Some(run) = median_run(&suite.ingest, |r| r.load.rps) {
        let concurrency = params.ingest.concurrency as f64;
        let ceiling = median(per_second(&suite.publish));
        let _ = writeln!(
            w,
            "Where a request's time goes (the median run; Little's law and ingest's own \
             histograms): {:.1} ms per request as loadgen saw it ({concurrency:.0} ÷ req/s), \
             {:.1} ms inside ingest, of which {:.1} ms waiting for the confirm. So on average \
             {:.0} of the {concurrency:.0} requests wait at the broker, where the ceiling keeps \
             all {} waiting ({:.1} ms per confirm there).\n",
            concurrency / run.load.rps.max(1e-9) * 1000.0,
            run.server_ms,
            run.publish_ms,
            run.publish_ms * run.load.rps / 1000.0,
            params.publish.in_flight,
            params.publish.in_flight as f64 / ceiling.max(1e-9) * 1000.0,
        );
    }
    ratio_line(w, "ingest ÷ publish ceiling", &ratios.ingest);
}

/// Section c: the worker against its ceilings.
fn worker_section(w: &mut String, c: &Ctx) {
    let suite = c.suite;
    let params = c.params;
    let commands = &c.commands;
    let ratios = &c.ratios;
    let _ = writeln!(w, "## c. Worker throughput\n");
    let _ = writeln!(w, "### Consume-and-ack ceiling\n");
    let _ = writeln!(w, "```sh\n{}\n```\n", commands.consume);
    let _ = writeln!(
        w,
        "Bare lapin consumer, prefetch {}, one `basic.ack` per delivery, on a jobs queue pre-filled \
         with {} jobs (the fill is not timed).\n",
        params.prefetch, params.consume_messages
    );
    throughput_table(w, &suite.consume, "msg/s");
    let _ = writeln!(w, "### Consume-publish-ack ceiling (context)\n");
    let _ = writeln!(w, "```sh\n{}\n```\n", commands.relay);
    let _ = writeln!(
        w,
        "As above, but each delivery is first republished to `{{ns}}.results` with confirm (on a \
         second connection, as the worker's publisher) and acked after the confirm: the broker work \
         every job needs, without Redis, HTTP or the AI.\n"
    );
    throughput_table(w, &suite.relay, "msg/s");
    let rows = [
        (
            format!(
                "### Worker, mock-ai at {} ms\n",
                params.worker_fast.latency_ms
            ),
            &commands.worker_fast,
            &suite.worker_fast,
            &ratios.worker_fast,
            "worker ÷ consume-and-ack ceiling",
        ),
        (
            format!(
                "### Worker, mock-ai at {} ms\n",
                params.worker_slow.latency_ms
            ),
            &commands.worker_slow,
            &suite.worker_slow,
            &ratios.worker_slow,
            "worker ÷ (concurrency ÷ latency)",
        ),
    ];
    for (title, command, runs, ratio, against) in rows {
        worker_runs(w, c, &title, command, runs, ratio, against);
    }
    ratio_line(
        w,
        "worker (0 ms) ÷ consume-publish-ack ceiling",
        &ratios.worker_relay,
    );
}

/// One worker latency's table of runs, and where a job's time goes.
fn worker_runs(
    w: &mut String,
    c: &Ctx,
    title: &str,
    command: &str,
    runs: &[super::worker::WorkerRun],
    ratio: &[f64],
    against: &str,
) {
    let params = c.params;
    let _ = writeln!(w, "{title}");
    let _ = writeln!(w, "```sh\n{command}\n```\n");
    let _ = writeln!(
        w,
        "`hookfleet-worker run` (release, shipped defaults but `concurrency = {}`) draining a \
         backlog of {} jobs; `mock-ai` as its own process. Timed from `/readyz` turning 200 to \
         the results queue holding one result per job; afterwards the jobs and dead-letter \
         queues must be empty.\n",
        params.worker_fast.concurrency,
        runs.first().map_or(0, |r| r.jobs)
    );
    let _ = writeln!(
        w,
        "| run | jobs/s | seconds | worker peak RSS | mock-ai peak RSS | CPU |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|");
    for (i, r) in runs.iter().enumerate() {
        let _ = writeln!(
            w,
            "| {} | {:.0} | {:.2} | {:.1} MiB | {:.1} MiB | {} |",
            i + 1,
            r.per_second,
            r.seconds,
            mib(r.peak_rss_kib),
            mib(r.mock_peak_rss_kib),
            r.cpu.summary()
        );
    }
    let _ = writeln!(
        w,
        "| **median** | **{:.0}** | | | | |\n",
        median(runs.iter().map(|r| r.per_second))
    );
    let cpu: Vec<(f64, &CpuSplit)> = runs.iter().map(|r| (r.per_second, &r.cpu)).collect();
    cpu_line(w, &cpu, "job");
    if let Some(run) = median_run(runs, |r| r.per_second) {
        let slots = f64::from(params.worker_fast.concurrency);
        let _ = writeln!(
            w,
            "Where a job's time goes (the median run; Little's law and the worker's own \
             histograms): each of the {slots:.0} prefetch slots turns over every {:.1} ms; \
             a job takes {:.1} ms from lease to done marker, of which {:.1} ms is the AI \
             call; the rest of the turn is the delivery, the ack and the wait for a core.\n",
            slots / run.per_second.max(1e-9) * 1000.0,
            run.job_ms,
            run.ai_ms,
        );
    }
    ratio_line(w, against, ratio);
}

/// How the path's capacity was found: the estimate, and the runs that
/// searched for the highest rate the path keeps up with.
fn capacity_line(w: &mut String, suite: &Suite) {
    let probes = &suite.capacity_probes;
    if probes.is_empty() {
        return;
    }
    let runs: Vec<String> = probes
        .iter()
        .map(|p| {
            format!(
                "{:.0} req/s → {:.0} results/s (p99 {:.1} ms)",
                p.rate, p.delivered_per_second, p.latency.p99_ms
            )
        })
        .collect();
    let found = if probes.iter().any(|p| p.rate == suite.capacity) {
        "the highest rate the path kept up with"
    } else {
        "no run kept up, so it is what the last one delivered"
    };
    let _ = writeln!(
        w,
        "The capacity, {:.0} req/s, is measured: {found}. The medians above estimate it at \
         {:.0} req/s (1/(1/ingest + 1/worker)), which leaves out work only the whole path has \
         (its results consumed and acked), so runs of this section's kind searched from there \
         (kept up: results coming out, while the load runs, at 97% of the rate or more): {}.\n",
        suite.capacity,
        suite.capacity_estimate,
        runs.join("; ")
    );
}

/// Section d: end to end.
fn e2e_section(w: &mut String, c: &Ctx) {
    let suite = c.suite;
    let params = c.params;
    let commands = &c.commands;
    let e2e_rate = c.e2e_rate;
    let _ = writeln!(w, "## d. End to end: POST → result\n");
    let _ = writeln!(w, "```sh\n{}\n```\n", commands.e2e);
    let _ = writeln!(
        w,
        "Ingest, one worker (prefetch {}), mock-ai at {} ms, all as processes; `loadgen`'s open loop \
         at {:.0} req/s — half of the path's capacity on this machine — for {:.0} s, and a consumer of \
         `{{ns}}.results` in the bench process. Latency runs from each request's *intended* send time to its result being \
         consumed (matched by event id). \"server\" is `received_at` → `completed_at` inside the \
         result (millisecond stamps).\n",
        params.worker_fast.concurrency,
        params.e2e_latency_ms,
        e2e_rate,
        params.e2e_duration.as_secs_f64()
    );
    capacity_line(w, suite);
    let _ = writeln!(
        w,
        "| run | results | POST→result p50 | p90 | p99 | p99.9 | max | server p50 | server p99 | 202 p50 | 202 p99 | CPU |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (i, r) in suite.e2e.iter().enumerate() {
        let _ = writeln!(
            w,
            "| {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {} |",
            i + 1,
            r.results,
            r.latency.p50_ms,
            r.latency.p90_ms,
            r.latency.p99_ms,
            r.latency.p999_ms,
            r.latency.max_ms,
            r.server.p50_ms,
            r.server.p99_ms,
            r.load.p50_ms,
            r.load.p99_ms,
            r.cpu.summary()
        );
    }
    if let Some((_, p50, p99)) = median_e2e(suite) {
        let _ = writeln!(
            w,
            "| **median** | | **{p50:.1} ms** | | **{p99:.1} ms** | | | | | | | |\n"
        );
    }
}

/// Section e: peak memory.
fn memory_section(w: &mut String, c: &Ctx) {
    let suite = c.suite;
    let params = c.params;
    let (ingest_rss, worker_rss) = (c.ingest_rss, c.worker_rss);
    let _ = writeln!(w, "## e. Peak memory\n");
    let _ = writeln!(
        w,
        "`VmHWM` from `/proc/PID/status`, read just before each service is stopped.\n"
    );
    let _ = writeln!(w, "| process | largest peak RSS | runs |");
    let _ = writeln!(w, "|---|---|---|");
    let _ = writeln!(
        w,
        "| ingest, {} connections | {:.1} MiB | ingest runs |",
        params.ingest.concurrency,
        mib(ingest_rss)
    );
    let _ = writeln!(
        w,
        "| worker, prefetch {} | {:.1} MiB | worker runs, both latencies |",
        params.worker_fast.concurrency,
        mib(worker_rss)
    );
    let e2e_ingest = suite
        .e2e
        .iter()
        .map(|r| r.ingest_peak_rss_kib)
        .max()
        .unwrap_or(0);
    let e2e_worker = suite
        .e2e
        .iter()
        .map(|r| r.worker_peak_rss_kib)
        .max()
        .unwrap_or(0);
    let _ = writeln!(
        w,
        "| ingest / worker in the end-to-end runs | {:.1} / {:.1} MiB | end-to-end runs |\n",
        mib(e2e_ingest),
        mib(e2e_worker)
    );
}

/// Section f: the fleet-wide limiter's accuracy.
pub fn limiter_section(w: &mut String, runs: &[LimiterRun], command: &str) {
    let Some(first) = runs.first() else {
        return;
    };
    let _ = writeln!(
        w,
        "## f. Fleet rate limit: accuracy against the provider's limit
"
    );
    let _ = writeln!(
        w,
        "```sh
{command}
```
"
    );
    let _ = writeln!(
        w,
        "{} `hookfleet-worker run` processes drain a backlog of {} jobs against one `mock-ai` \
         enforcing {} requests and {} tokens per sliding 60 s window per model (a request costs \
         its prompt estimate plus `max_tokens`, {} tokens here, counted at admission as OpenAI \
         does); above either limit it answers 429. Each job has its own prompt of the same length, \
         so the cache absorbs nothing. The workers share one limiter in Redis, configured as the \
         docs/operations.md's sizing section advises: {} rpm and {} tpm (the key's limits less 3%), bursts of \
         two requests, `refund_unused = false`. Figures are the mock's own counts; the steady \
         window runs from a second after its first admission (the burst) to its last.\n",
        first.workers,
        first.jobs,
        first.rpm_limit,
        first.tpm_limit,
        first.tokens_per_request,
        first.configured_rpm,
        first.configured_tpm,
    );
    let _ = writeln!(
        w,
        "| run | 429s | admitted | seconds | steady req/min | % of rpm | steady tokens/min | % of tpm | busiest 60 s |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|");
    for (i, r) in runs.iter().enumerate() {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {:.1} | {:.1} | {:.1}% | {:.0} | {:.1}% | {} of {} |",
            i + 1,
            r.rate_limited,
            r.admitted,
            r.seconds,
            r.requests_per_minute,
            r.share_of_rpm * 100.0,
            r.tokens_per_minute,
            r.share_of_tpm * 100.0,
            r.busiest_minute,
            r.rpm_limit
        );
    }
    let _ = writeln!(w);
}

/// The run whose `rate` is closest to the median rate.
fn median_run<T>(runs: &[T], rate: impl Fn(&T) -> f64) -> Option<&T> {
    let middle = median(runs.iter().map(&rate));
    runs.iter().min_by(|a, b| {
        (rate(a) - middle)
            .abs()
            .total_cmp(&(rate(b) - middle).abs())
    })
}

fn median_e2e(suite: &Suite) -> Option<(f64, f64, f64)> {
    let first = suite.e2e.first()?;
    Some((
        first.rate,
        median(suite.e2e.iter().map(|r| r.latency.p50_ms)),
        median(suite.e2e.iter().map(|r| r.latency.p99_ms)),
    ))
}

fn throughput_table(w: &mut String, runs: &[Throughput], unit: &str) {
    let _ = writeln!(w, "| run | {unit} | messages | seconds | CPU |");
    let _ = writeln!(w, "|---|---|---|---|---|");
    for (i, r) in runs.iter().enumerate() {
        let _ = writeln!(
            w,
            "| {} | {:.0} | {} | {:.2} | {} |",
            i + 1,
            r.per_second,
            r.messages,
            r.seconds,
            r.cpu.summary()
        );
    }
    let _ = writeln!(
        w,
        "| **median** | **{:.0}** | | | |\n",
        median(per_second(runs))
    );
    let cpu: Vec<(f64, &CpuSplit)> = runs.iter().map(|r| (r.per_second, &r.cpu)).collect();
    cpu_line(w, &cpu, "message");
}

/// CPU per message of the run with the median rate.
fn cpu_line(w: &mut String, runs: &[(f64, &CpuSplit)], unit: &str) {
    let rate = median(runs.iter().map(|(r, _)| *r));
    if let Some((rate, cpu)) = runs
        .iter()
        .min_by(|a, b| (a.0 - rate).abs().total_cmp(&(b.0 - rate).abs()))
    {
        let _ = writeln!(
            w,
            "CPU per {unit} (the median run): {}.\n",
            cpu.per_message(*rate)
        );
    }
}

fn ratio_line(w: &mut String, what: &str, ratios: &[f64]) {
    let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    let _ = writeln!(
        w,
        "Ratio {what}, per round: {} → median **{:.2}**.\n",
        each.join(", "),
        median(ratios.iter().copied())
    );
}

fn statuses(report: &crate::loadgen::Report) -> String {
    let mut parts: Vec<String> = report
        .statuses
        .iter()
        .map(|(code, n)| format!("{code}×{n}"))
        .collect();
    if report.errors > 0 {
        parts.push(format!("errors×{}", report.errors));
    }
    parts.join(" ")
}
