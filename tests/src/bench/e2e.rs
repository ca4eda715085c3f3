//! The whole path at a fixed rate: signed POSTs (open loop) → ingest → RabbitMQ →
//! worker → mock-ai → result on `{ns}.results`, read by a consumer in this
//! process. A result's latency runs from its request's *intended* send time
//! (loadgen's schedule) to the moment the consumer sees it, matched by event id;
//! the server-side share (`received_at` → `completed_at` in the result) is
//! reported beside it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures::StreamExt;
use hdrhistogram::Histogram;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde::Serialize;

use super::cpu::{self, CpuMeter, CpuSplit};
use super::procs::{self, Lab, Layout};
use crate::env::TestEnv;
use crate::loadgen::{self, Mode, SendObserver, Stop};
use crate::webhook;

/// How to drive the path.
#[derive(Debug, Clone, Copy)]
pub struct E2eParams {
    /// Requests per second (open loop).
    pub rate: f64,
    /// Length of the load.
    pub duration: Duration,
    /// `worker.concurrency`.
    pub concurrency: u16,
    /// mock-ai's answer latency.
    pub latency_ms: u64,
    /// Body size.
    pub body_bytes: usize,
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Percentiles {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Percentiles {
    fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
        Self {
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: histogram.max() as f64 / 1000.0,
        }
    }
}

/// One run.
#[derive(Debug, Clone, Serialize)]
pub struct E2eRun {
    /// The rate asked for.
    pub rate: f64,
    /// What loadgen saw (the 202 latency).
    pub load: loadgen::Report,
    /// Results seen (must equal the 202s).
    pub results: u64,
    /// Results seen per second while the load ran (after its first eighth):
    /// the path's throughput when the rate is more than it can carry.
    pub delivered_per_second: f64,
    /// POST (intended send time) → result seen.
    pub latency: Percentiles,
    /// `received_at` → `completed_at` from the results (millisecond stamps).
    pub server: Percentiles,
    /// Ingest's peak resident memory, KiB.
    pub ingest_peak_rss_kib: u64,
    /// The worker's peak resident memory, KiB.
    pub worker_peak_rss_kib: u64,
    /// Where the CPU went during the load.
    pub cpu: CpuSplit,
}

/// A result as the consumer saw it.
struct Seen {
    event_id: String,
    at: Instant,
    server_ms: Option<f64>,
}

/// Starts mock-ai, ingest and a worker in a fresh namespace, drives them, matches
/// every result to its request, stops everything.
pub async fn run(lab: &Lab, params: &E2eParams) -> anyhow::Result<E2eRun> {
    super::in_fresh_namespace(async |env| measure(lab, env, params).await).await
}

async fn measure(lab: &Lab, env: &TestEnv, params: &E2eParams) -> anyhow::Result<E2eRun> {
    let topology = env.topology();
    let layout = Layout::new(params.concurrency)?;
    let config = procs::config_path(lab, env, &layout)?;
    let secret = webhook::standard_secret();
    let mock = procs::start_mock(lab, &layout, params.latency_ms).await?;
    let ingest = procs::start_ingest(lab, &config, &layout, &secret).await?;
    let (worker, _) = procs::start_worker(lab, &config, &layout, &secret).await?;

    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let connection =
        Connection::connect(&env.settings.amqp.url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(1000, BasicQosOptions { global: false })
        .await?;
    let mut deliveries = channel
        .basic_consume(
            topology.results_queue().into(),
            "bench-results".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let collector = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = deliveries.next().await {
                let at = Instant::now();
                let body: serde_json::Value =
                    serde_json::from_slice(&delivery.data).unwrap_or_default();
                let stamp = |key: &str| {
                    humantime::parse_rfc3339(body[key].as_str().unwrap_or_default()).ok()
                };
                let server_ms = match (stamp("received_at"), stamp("completed_at")) {
                    (Some(from), Some(to)) => to
                        .duration_since(from)
                        .ok()
                        .map(|d| d.as_secs_f64() * 1000.0),
                    _ => None,
                };
                let event_id = body["event_id"].as_str().unwrap_or_default().to_owned();
                lock(&seen).push(Seen {
                    event_id,
                    at,
                    server_ms,
                });
                let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            }
        })
    };

    let sent = Arc::new(Mutex::new(HashMap::<String, Instant>::new()));
    let observer: SendObserver = {
        let sent = sent.clone();
        Arc::new(move |event_id: &str, at: Instant| {
            lock(&sent).insert(event_id.to_owned(), at);
        })
    };
    let processes = vec![
        ingest.cpu_entry(),
        worker.cpu_entry(),
        mock.cpu_entry(),
        cpu::this_process("loadgen"),
    ];
    let meter = CpuMeter::start(&processes);
    let started = Instant::now();
    let target = layout.hook_target(secret, params.body_bytes);
    let mode = Mode::Open {
        rate: params.rate,
        max_in_flight: 1024,
    };
    let load =
        loadgen::run_observed(target, mode, Stop::After(params.duration), Some(observer)).await;
    let cpu = meter.finish();
    let ended = Instant::now();
    ensure!(load.accepted > 0, "no request was accepted: {load:?}");

    let deadline = Instant::now() + Duration::from_secs(30);
    while (lock(&seen).len() as u64) < load.accepted {
        if Instant::now() > deadline {
            bail!(
                "{} results for {} 202s within 30 s; see {}",
                lock(&seen).len(),
                load.accepted,
                lab.file("worker.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    collector.abort();
    super::broker::close(&connection, &channel).await;
    let ingest_peak_rss_kib = ingest.peak_rss_kib();
    let worker_peak_rss_kib = worker.peak_rss_kib();
    ingest.stop().await?;
    worker.stop().await?;
    mock.stop().await?;

    let seen = std::mem::take(&mut *lock(&seen));
    let sent = std::mem::take(&mut *lock(&sent));
    let delivered_per_second = delivered(&seen, started + params.duration / 8, ended);
    let mut latency = new_histogram();
    let mut server = new_histogram();
    for result in &seen {
        let at = sent
            .get(&result.event_id)
            .with_context(|| format!("a result for an unknown event `{}`", result.event_id))?;
        let micros =
            u64::try_from(result.at.saturating_duration_since(*at).as_micros()).unwrap_or(u64::MAX);
        latency.saturating_record(micros.max(1));
        if let Some(ms) = result.server_ms {
            server.saturating_record(((ms * 1000.0) as u64).max(1));
        }
    }
    let dead = env.ready_count(&topology.dead_queue()).await;
    ensure!(
        seen.len() as u64 == load.accepted && dead == 0,
        "{} results and {dead} dead letters for {} 202s",
        seen.len(),
        load.accepted
    );
    Ok(E2eRun {
        rate: params.rate,
        results: seen.len() as u64,
        delivered_per_second,
        load,
        latency: Percentiles::of(&latency),
        server: Percentiles::of(&server),
        ingest_peak_rss_kib,
        worker_peak_rss_kib,
        cpu,
    })
}

/// Results seen per second between `from` and `to`.
fn delivered(seen: &[Seen], from: Instant, to: Instant) -> f64 {
    let count = seen.iter().filter(|s| s.at >= from && s.at <= to).count();
    count as f64 / to.saturating_duration_since(from).as_secs_f64().max(1e-9)
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
