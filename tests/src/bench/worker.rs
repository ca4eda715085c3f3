//! The worker draining a backlog: the jobs queue pre-filled as ingest fills it,
//! `mock-ai` answering after a fixed latency, `processes` × `hookfleet-worker run`
//! each as its own process with prefetch `concurrency`. The clock runs from the
//! moment the first worker reports itself consuming (`/readyz`; they are started
//! together) to the moment the results queue holds one result per job.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use serde::Serialize;

use super::broker;
use super::cpu::{self, CpuMeter, CpuSplit};
use super::procs::{self, Lab, Layout};
use crate::env::TestEnv;
use crate::webhook;

/// How to run the worker.
#[derive(Debug, Clone, Copy)]
pub struct WorkerParams {
    /// Jobs in the backlog.
    pub jobs: u64,
    /// `worker.concurrency` (prefetch).
    pub concurrency: u16,
    /// mock-ai's answer latency.
    pub latency_ms: u64,
    /// Job body size.
    pub body_bytes: usize,
    /// Worker processes sharing the queue (each with `concurrency`).
    pub processes: u16,
}

impl WorkerParams {
    /// `concurrency / latency`: jobs per second if only the AI took time.
    pub fn ideal_per_second(&self) -> Option<f64> {
        (self.latency_ms > 0).then(|| f64::from(self.concurrency) * 1000.0 / self.latency_ms as f64)
    }
}

/// One run.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerRun {
    /// Jobs processed (one result each, verified).
    pub jobs: u64,
    /// Worker processes.
    pub processes: u16,
    /// From consuming to the last result, seconds.
    pub seconds: f64,
    /// `jobs / seconds`.
    pub per_second: f64,
    /// The largest worker's peak resident memory, KiB.
    pub peak_rss_kib: u64,
    /// mock-ai's peak resident memory, KiB.
    pub mock_peak_rss_kib: u64,
    /// Mean time of a job from lease to done marker (the first worker's histogram), ms.
    pub job_ms: f64,
    /// Of which the AI call, ms.
    pub ai_ms: f64,
    /// Where the CPU went.
    pub cpu: CpuSplit,
}

/// Pre-fills a fresh namespace, starts mock-ai and a worker, waits for every
/// result, checks the accounting, stops both.
pub async fn run(lab: &Lab, params: &WorkerParams) -> anyhow::Result<WorkerRun> {
    super::in_fresh_namespace(async |env| measure(lab, env, params).await).await
}

async fn measure(lab: &Lab, env: &TestEnv, params: &WorkerParams) -> anyhow::Result<WorkerRun> {
    let topology = env.topology();
    broker::prefill(env, params.jobs, params.body_bytes).await?;
    let layout = Layout::new(params.concurrency)?;
    let config = procs::config_path(lab, env, &layout)?;
    let mock = procs::start_mock(lab, &layout, params.latency_ms).await?;
    let fleet = procs::start_workers(
        lab,
        &config,
        &layout,
        &webhook::standard_secret(),
        params.processes,
    )
    .await?;
    let consuming = fleet.consuming;
    let mut processes: Vec<(String, u32)> = fleet.workers.iter().map(|w| w.cpu_entry()).collect();
    processes.extend([mock.cpu_entry(), cpu::this_process("bench")]);
    let meter = CpuMeter::start(&processes);
    // Generous: a tenth of the ideal rate, plus start-up (half a minute: enough
    // for a worker under valgrind, `bench/callgrind.sh`).
    let per_second = params.ideal_per_second().unwrap_or(1000.0).min(1000.0);
    let deadline = Duration::from_secs_f64(30.0 + params.jobs as f64 / per_second * 10.0);
    let results = topology.results_queue();
    let finished = loop {
        let count = u64::from(env.ready_count(&results).await);
        if count >= params.jobs {
            break Instant::now();
        }
        if consuming.elapsed() > deadline {
            bail!(
                "{count} of {} results within {deadline:?}; see {}",
                params.jobs,
                lab.file("worker.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let cpu = meter.finish();
    let metrics = format!("http://127.0.0.1:{}/metrics", layout.admin_port);
    let job_ms = procs::mean_ms(&metrics, "hookfleet_job_duration_seconds")
        .await
        .unwrap_or(0.0);
    let ai_ms = procs::mean_ms(&metrics, "hookfleet_ai_request_duration_seconds")
        .await
        .unwrap_or(0.0);
    let peak_rss_kib = fleet
        .workers
        .iter()
        .map(|w| w.peak_rss_kib())
        .max()
        .unwrap_or(0);
    let mock_peak_rss_kib = mock.peak_rss_kib();
    for worker in fleet.workers {
        worker.stop().await?;
    }
    mock.stop().await?;
    let results = u64::from(env.ready_count(&results).await);
    let left = env.ready_count(&topology.jobs_queue()).await;
    let dead = env.ready_count(&topology.dead_queue()).await;
    ensure!(
        results == params.jobs && left == 0 && dead == 0,
        "{} jobs: {results} results, {left} left, {dead} dead letters",
        params.jobs
    );
    let seconds = (finished - consuming).as_secs_f64().max(1e-9);
    Ok(WorkerRun {
        jobs: params.jobs,
        processes: params.processes,
        seconds,
        per_second: params.jobs as f64 / seconds,
        peak_rss_kib,
        mock_peak_rss_kib,
        job_ms,
        ai_ms,
        cpu,
    })
}
