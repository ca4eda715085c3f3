//! `bench all`: every measurement, in rounds, so each ratio compares two figures
//! taken minutes apart at most rather than a whole suite apart.
//!
//! A round measures, in order: the broker publish ceiling, ingest, the consume
//! ceiling, the consume-publish-ack ceiling, the worker at 0 ms and at the slow
//! latency. The ratios are computed per round and their median is quoted (the
//! noise of a shared machine hits a ceiling and its service alike when they run
//! back to back). The end-to-end runs come last, at half the path's capacity,
//! which end-to-end runs search for from the rounds' estimate (`capacity`).
//! Then the sweeps of how cost grows ([`growth`](super::growth)), in rounds of
//! their own. The limiter's accuracy runs once, last: the limit paces it.

use std::time::Duration;

use serde::Serialize;

use super::broker::{self, PublishParams, Throughput};
use super::e2e::{self, E2eParams, E2eRun};
use super::growth::{self, Growth, GrowthParams};
use super::ingest::{self, IngestParams, IngestRun};
use super::limiter::{self, LimiterParams, LimiterRun};
use super::procs::Lab;
use super::worker::{self, WorkerParams, WorkerRun};

/// What the suite runs.
#[derive(Debug, Clone)]
pub struct SuiteParams {
    /// Rounds (and end-to-end runs).
    pub runs: usize,
    /// The publish ceiling.
    pub publish: PublishParams,
    /// Jobs of the consume ceiling.
    pub consume_messages: u64,
    /// Jobs of the consume-publish-ack ceiling.
    pub relay_messages: u64,
    /// Prefetch of both consume ceilings (the worker's concurrency).
    pub prefetch: u16,
    /// The ingest load.
    pub ingest: IngestParams,
    /// The worker with an instant AI.
    pub worker_fast: WorkerParams,
    /// The worker with a slow AI.
    pub worker_slow: WorkerParams,
    /// Length of each end-to-end run.
    pub e2e_duration: Duration,
    /// mock-ai latency in the end-to-end runs.
    pub e2e_latency_ms: u64,
    /// Fraction of the measured capacity the end-to-end runs send at.
    pub e2e_load: f64,
    /// Halvings of the capacity's search (after the run at the estimate).
    pub capacity_steps: usize,
    /// The sweeps of how cost grows (`runs` = 0 skips them).
    pub growth: GrowthParams,
    /// The limiter's accuracy (one run: it is paced by the limit, minutes long).
    pub limiter: LimiterParams,
}

impl SuiteParams {
    /// What `make bench` runs (about three minutes on two cores, plus the sweeps'
    /// 2½ minutes a round).
    pub fn standard(runs: usize) -> Self {
        let concurrency = 64;
        Self {
            runs,
            publish: PublishParams {
                messages: 40_000,
                in_flight: 64,
                channels: 1,
                body_bytes: 1024,
            },
            consume_messages: 40_000,
            relay_messages: 20_000,
            prefetch: concurrency,
            ingest: IngestParams {
                concurrency: usize::from(concurrency),
                duration: Duration::from_secs(8),
                body_bytes: 1024,
            },
            worker_fast: WorkerParams {
                jobs: 15_000,
                concurrency,
                latency_ms: 0,
                body_bytes: 1024,
                processes: 1,
            },
            worker_slow: WorkerParams {
                // Thirty waves of 64: about six seconds at the ideal rate.
                jobs: 30 * u64::from(concurrency),
                concurrency,
                latency_ms: 200,
                body_bytes: 1024,
                processes: 1,
            },
            e2e_duration: Duration::from_secs(8),
            e2e_latency_ms: 0,
            e2e_load: 0.5,
            capacity_steps: 3,
            growth: GrowthParams::standard(runs),
            // 2,000 jobs at 600 a minute: about three and a half minutes.
            limiter: LimiterParams {
                jobs: 2_000,
                workers: 4,
                concurrency: 16,
                rpm: 600,
                latency_ms: 20,
            },
        }
    }

    /// A few seconds of everything, for the test suite: counts, not timings.
    pub fn smoke() -> Self {
        let mut params = Self::standard(1);
        params.publish.messages = 300;
        params.consume_messages = 300;
        params.relay_messages = 200;
        params.ingest.concurrency = 16;
        params.ingest.duration = Duration::from_millis(700);
        params.worker_fast.jobs = 200;
        params.worker_slow.jobs = 64;
        params.worker_slow.latency_ms = 50;
        params.e2e_duration = Duration::from_millis(700);
        params.capacity_steps = 1;
        params.limiter.jobs = 40;
        params.limiter.workers = 2;
        params.limiter.rpm = 60_000;
        params.growth = GrowthParams::smoke();
        params
    }
}

/// Everything one suite measured.
#[derive(Debug, Clone, Serialize)]
pub struct Suite {
    /// Publish ceiling, one per round.
    pub publish: Vec<Throughput>,
    /// Consume-and-ack ceiling, one per round.
    pub consume: Vec<Throughput>,
    /// Consume-publish-ack ceiling, one per round.
    pub relay: Vec<Throughput>,
    /// Ingest, one per round.
    pub ingest: Vec<IngestRun>,
    /// Worker at 0 ms, one per round.
    pub worker_fast: Vec<WorkerRun>,
    /// Worker at the slow latency, one per round.
    pub worker_slow: Vec<WorkerRun>,
    /// The path's capacity estimated from the rounds, req/s:
    /// `1/(1/ingest + 1/worker)`.
    pub capacity_estimate: f64,
    /// The end-to-end runs that searched for the capacity, in order.
    pub capacity_probes: Vec<E2eRun>,
    /// The path's capacity on this machine, req/s: the highest probe's rate
    /// it kept up with (see `capacity`). The end-to-end rate is a fraction of
    /// it.
    pub capacity: f64,
    /// End-to-end runs.
    pub e2e: Vec<E2eRun>,
    /// The sweeps.
    pub growth: Growth,
    /// The limiter's accuracy.
    pub limiter: Vec<LimiterRun>,
}

/// Whether a run's path carried its rate: results came out, while the load
/// ran, at no less than 97% of it (else a backlog was growing).
pub fn kept_up(run: &E2eRun) -> bool {
    run.delivered_per_second >= 0.97 * run.rate
}

/// Measures the path's capacity into `suite` and returns the end-to-end runs'
/// parameters.
///
/// The rounds estimate it at 1/(1/ingest + 1/worker): both stages share the
/// cores, so a request costs the machine the share of each. (On separate
/// machines it would be the lower of the two.) The estimate leaves out work
/// only the whole path has, such as its results consumed and acked, so it is
/// run: if the path keeps up, it is the capacity. If not, the next run offers
/// what that one delivered (ingest took more than its share of the cores then),
/// and once a run keeps up the rest halve between the highest rate kept up
/// with and the lowest not. The capacity is the highest rate kept up with; if
/// none did in `capacity_steps` more runs, the last one's delivered rate.
async fn capacity(lab: &Lab, params: &SuiteParams, suite: &mut Suite) -> anyhow::Result<E2eParams> {
    let ingest = median(suite.ingest.iter().map(|r| r.load.rps));
    let worker = median(suite.worker_fast.iter().map(|r| r.per_second));
    suite.capacity_estimate = 1.0 / (1.0 / ingest.max(1e-9) + 1.0 / worker.max(1e-9));
    let mut e2e_params = E2eParams {
        rate: suite.capacity_estimate.max(1.0).round(),
        duration: params.e2e_duration,
        concurrency: params.worker_fast.concurrency,
        latency_ms: params.e2e_latency_ms,
        body_bytes: params.ingest.body_bytes,
    };
    suite.capacity = search(lab, &mut e2e_params, params.capacity_steps, suite).await?;
    e2e_params.rate = (suite.capacity * params.e2e_load).max(1.0).round();
    Ok(e2e_params)
}

/// The search of [`capacity`], from `e2e.rate`; each run is kept in `suite`.
async fn search(
    lab: &Lab,
    e2e: &mut E2eParams,
    steps: usize,
    suite: &mut Suite,
) -> anyhow::Result<f64> {
    let (mut kept, mut behind) = (None::<f64>, e2e.rate);
    let mut delivered = e2e.rate;
    for step in 0..=steps {
        let probe = e2e::run(lab, e2e).await?;
        let carried = kept_up(&probe);
        eprintln!(
            "[e2e capacity] {:.0} req/s offered: {:.0} results/s delivered ({}), p99 {:.1} ms",
            probe.rate,
            probe.delivered_per_second,
            if carried { "kept up" } else { "fell behind" },
            probe.latency.p99_ms
        );
        if carried {
            kept = Some(probe.rate);
        } else {
            behind = probe.rate;
            delivered = probe.delivered_per_second.min(probe.rate);
        }
        suite.capacity_probes.push(probe);
        if carried && step == 0 {
            break;
        }
        e2e.rate = match kept {
            Some(low) => (low + behind) / 2.0,
            None => delivered,
        }
        .max(1.0)
        .round();
    }
    Ok(kept.unwrap_or(delivered))
}

/// Runs the suite, reporting progress on stderr.
pub async fn run(lab: &Lab, params: &SuiteParams) -> anyhow::Result<Suite> {
    lab.check()?;
    let mut suite = Suite {
        publish: Vec::new(),
        consume: Vec::new(),
        relay: Vec::new(),
        ingest: Vec::new(),
        worker_fast: Vec::new(),
        worker_slow: Vec::new(),
        capacity_estimate: 0.0,
        capacity_probes: Vec::new(),
        capacity: 0.0,
        e2e: Vec::new(),
        growth: Growth::default(),
        limiter: Vec::new(),
    };
    let runs = params.runs.max(1);
    for round in 1..=runs {
        let tag = format!("[round {round}/{runs}]");
        let run = publish(&params.publish).await?;
        eprintln!("{tag} broker publish ceiling: {:.0} msg/s", run.per_second);
        suite.publish.push(run);

        let run = ingest::run(lab, &params.ingest).await?;
        eprintln!(
            "{tag} ingest: {:.0} req/s, p50 {:.1} ms, p99 {:.1} ms, peak RSS {} KiB",
            run.load.rps, run.load.p50_ms, run.load.p99_ms, run.peak_rss_kib
        );
        suite.ingest.push(run);

        let run = consume(params.consume_messages, params.prefetch, &params.publish).await?;
        eprintln!("{tag} broker consume ceiling: {:.0} msg/s", run.per_second);
        suite.consume.push(run);

        let run = relay(params.relay_messages, params.prefetch, &params.publish).await?;
        eprintln!(
            "{tag} broker consume-publish-ack ceiling: {:.0} msg/s",
            run.per_second
        );
        suite.relay.push(run);

        for (params, runs) in [
            (&params.worker_fast, &mut suite.worker_fast),
            (&params.worker_slow, &mut suite.worker_slow),
        ] {
            let run = worker::run(lab, params).await?;
            eprintln!(
                "{tag} worker at {} ms: {:.0} jobs/s, peak RSS {} KiB",
                params.latency_ms, run.per_second, run.peak_rss_kib
            );
            runs.push(run);
        }
    }
    let e2e_params = capacity(lab, params, &mut suite).await?;
    for run in 1..=runs {
        let result = e2e::run(lab, &e2e_params).await?;
        eprintln!(
            "[e2e {run}/{runs}] {:.0} req/s: POST→result p50 {:.1} ms, p99 {:.1} ms",
            e2e_params.rate, result.latency.p50_ms, result.latency.p99_ms
        );
        suite.e2e.push(result);
    }
    suite.growth = growth::run(lab, &params.growth).await?;
    let run = limiter::run(lab, &params.limiter).await?;
    eprintln!(
        "[limiter] {} workers, {} jobs: {:.0} req/min = {:.1}% of {}, {} 429s",
        run.workers,
        run.jobs,
        run.requests_per_minute,
        run.share_of_rpm * 100.0,
        run.rpm_limit,
        run.rate_limited
    );
    suite.limiter.push(run);
    Ok(suite)
}

/// The publish ceiling in a fresh namespace.
pub async fn publish(params: &PublishParams) -> anyhow::Result<Throughput> {
    super::in_fresh_namespace(async |env| broker::publish(env, params).await).await
}

/// The consume-and-ack ceiling on a fresh, pre-filled namespace.
pub async fn consume(
    messages: u64,
    prefetch: u16,
    publish: &PublishParams,
) -> anyhow::Result<Throughput> {
    super::in_fresh_namespace(async |env| {
        broker::prefill(env, messages, publish.body_bytes).await?;
        broker::consume(env, messages, prefetch).await
    })
    .await
}

/// The consume-publish-ack ceiling on a fresh, pre-filled namespace.
pub async fn relay(
    messages: u64,
    prefetch: u16,
    publish: &PublishParams,
) -> anyhow::Result<Throughput> {
    super::in_fresh_namespace(async |env| {
        broker::prefill(env, messages, publish.body_bytes).await?;
        broker::relay(env, messages, prefetch).await
    })
    .await
}

/// The median (the mean of the middle two for an even count); 0 for none.
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}
