//! Ingest under closed-loop load: `hookfleet-ingest` as its own process, `loadgen`
//! (in this process) keeping `concurrency` signed requests in flight, then the
//! accounting: every 202 must have landed in the jobs queue.

use std::time::Duration;

use anyhow::ensure;
use serde::Serialize;

use super::cpu::{self, CpuMeter, CpuSplit};
use super::procs::{self, Lab, Layout, Service};
use crate::env::TestEnv;
use crate::loadgen::{self, Mode, Stop};
use crate::webhook;

/// How to load ingest.
#[derive(Debug, Clone, Copy)]
pub struct IngestParams {
    /// Requests in flight.
    pub concurrency: usize,
    /// Length of the run.
    pub duration: Duration,
    /// Body size.
    pub body_bytes: usize,
}

/// One run.
#[derive(Debug, Clone, Serialize)]
pub struct IngestRun {
    /// What loadgen saw.
    pub load: loadgen::Report,
    /// Messages in the jobs queue afterwards (must equal the 202s).
    pub landed: u64,
    /// Ingest's peak resident memory, KiB.
    pub peak_rss_kib: u64,
    /// Mean time ingest spent on a request (its own histogram), ms.
    pub server_ms: f64,
    /// Of which waiting for the broker's confirm (its publish histogram), ms.
    pub publish_ms: f64,
    /// Where the CPU went during the load.
    pub cpu: CpuSplit,
}

/// Starts ingest in a fresh namespace, loads it, checks the accounting, stops it.
pub async fn run(lab: &Lab, params: &IngestParams) -> anyhow::Result<IngestRun> {
    super::in_fresh_namespace(async |env| measure(lab, env, params).await).await
}

async fn measure(lab: &Lab, env: &TestEnv, params: &IngestParams) -> anyhow::Result<IngestRun> {
    let layout = Layout::new(64)?;
    let config = procs::config_path(lab, env, &layout)?;
    let secret = webhook::standard_secret();
    let ingest = procs::start_ingest(lab, &config, &layout, &secret).await?;
    let (load, cpu) = closed_load(&ingest, &layout, secret, params).await;
    let metrics = format!("http://127.0.0.1:{}/metrics", layout.ingest_admin_port);
    let server_ms = procs::mean_ms(&metrics, "hookfleet_ingest_request_duration_seconds")
        .await
        .unwrap_or(0.0);
    let publish_ms = procs::mean_ms(&metrics, "hookfleet_ingest_publish_duration_seconds")
        .await
        .unwrap_or(0.0);
    let peak_rss_kib = ingest.peak_rss_kib();
    ingest.stop().await?;
    let landed = landed(env, &load).await?;
    Ok(IngestRun {
        load,
        landed,
        peak_rss_kib,
        server_ms,
        publish_ms,
        cpu,
    })
}

/// The messages in `env`'s jobs queue, checked to be one per 202 of `load`.
pub(crate) async fn landed(env: &TestEnv, load: &loadgen::Report) -> anyhow::Result<u64> {
    let landed = u64::from(env.ready_count(&env.topology().jobs_queue()).await);
    ensure!(load.accepted > 0, "no request was accepted: {load:?}");
    ensure!(
        landed == load.accepted,
        "{landed} messages landed for {} 202s",
        load.accepted
    );
    Ok(landed)
}

/// `params`' closed loop of signed requests against `server` (ingest or a
/// stand-in on ingest's port), with the CPU of it, this process (the load),
/// RabbitMQ and Redis meanwhile.
pub(crate) async fn closed_load(
    server: &Service,
    layout: &Layout,
    secret: String,
    params: &IngestParams,
) -> (loadgen::Report, CpuSplit) {
    let processes = vec![server.cpu_entry(), cpu::this_process("loadgen")];
    let meter = CpuMeter::start(&processes);
    let target = layout.hook_target(secret, params.body_bytes);
    let mode = Mode::Closed {
        concurrency: params.concurrency,
    };
    let load = loadgen::run(target, mode, Stop::After(params.duration)).await;
    (load, meter.finish())
}
