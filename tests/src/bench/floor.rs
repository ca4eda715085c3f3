//! Floors: what the required crates alone spend on one webhook and one job,
//! with no hookfleet code — the least any implementation of the same promise
//! built on them can spend, measured in the same rounds as the broker's
//! ceilings so the ratios compare with the targets'.
//!
//! - [`ingest`]: a bare HTTP server (axum on hyper) in a process of its own
//!   (`bench floor-server`, from the lab's binaries), under the same closed loop of signed requests as
//!   ingest: read the body, check its Standard Webhooks HMAC (`hmac`), claim the
//!   delivery id in Redis (`SET NX PX`, one round trip), publish with confirm
//!   (`lapin`), answer 202. No config, limits, dedup by body, status or metrics.
//! - [`worker`]: in this process, what a job cannot do without: consume
//!   (`lapin`), take a lease and check a done marker (one pipelined round trip),
//!   `POST` the AI (`reqwest`, mock-ai at 0 ms) and decode its answer
//!   (`serde`), set the done marker and drop the lease (one round trip), publish
//!   the answer with confirm, ack. No templates, cache, limiter, status, retries
//!   or metrics.
//!
//! Each is checked as the real runs are: every 202 landed, one result per job.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use bytes::Bytes;
use deadpool_redis::redis;
use hmac::{Hmac, KeyInit, Mac};
use lapin::options::BasicQosOptions;
use lapin::{Channel, Connection, ConnectionProperties};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::broker::{self, Throughput};
use super::cpu::{self, CpuMeter, CpuSplit};
use super::ingest::IngestParams;
use super::procs::{self, Lab, Layout, Service};
use crate::env::TestEnv;
use crate::fleet;
use crate::loadgen;
use crate::webhook;

/// One run of the ingest floor.
#[derive(Debug, Clone, Serialize)]
pub struct IngestFloorRun {
    /// What loadgen saw.
    pub load: loadgen::Report,
    /// Where the CPU went (the server is "floor").
    pub cpu: CpuSplit,
}

/// Starts `bench floor-server` in a fresh namespace, loads it as `bench ingest`
/// loads ingest, checks that every 202 landed, stops it.
pub async fn ingest(lab: &Lab, params: &IngestParams) -> anyhow::Result<IngestFloorRun> {
    super::in_fresh_namespace(async |env| measure_ingest(lab, env, params).await).await
}

async fn measure_ingest(
    lab: &Lab,
    env: &TestEnv,
    params: &IngestParams,
) -> anyhow::Result<IngestFloorRun> {
    let layout = Layout::new(64)?;
    let secret = webhook::standard_secret();
    let server = start_server(lab, env, &layout, &secret).await?;
    let (load, cpu) = super::ingest::closed_load(&server, &layout, secret, params).await;
    server.stop().await?;
    super::ingest::landed(env, &load).await?;
    Ok(IngestFloorRun { load, cpu })
}

async fn start_server(
    lab: &Lab,
    env: &TestEnv,
    layout: &Layout,
    secret: &str,
) -> anyhow::Result<Service> {
    let args = [
        "floor-server".to_string(),
        "--listen".into(),
        format!("127.0.0.1:{}", layout.ingest_port),
        "--amqp-url".into(),
        env.settings.amqp.url.clone(),
        "--redis-url".into(),
        env.settings.redis.url.clone(),
        "--exchange".into(),
        env.topology().events_exchange(),
        "--namespace".into(),
        env.namespace.clone(),
    ];
    let envs = [("FLOOR_SECRET", secret.to_owned())];
    let mut server = Service::spawn(lab, "floor", "bench", &args, &envs)?;
    let ready = format!("http://127.0.0.1:{}/readyz", layout.ingest_port);
    server.wait_ready(&ready, Duration::from_secs(20)).await?;
    Ok(server)
}

/// What `bench floor-server` needs.
#[derive(Debug, Clone)]
pub struct ServerParams {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// RabbitMQ.
    pub amqp_url: String,
    /// Redis.
    pub redis_url: String,
    /// The events exchange to publish to.
    pub exchange: String,
    /// Prefix of its Redis keys.
    pub namespace: String,
    /// The Standard Webhooks secret (`whsec_…`).
    pub secret: String,
}

struct Floor {
    key: Vec<u8>,
    redis: redis::aio::MultiplexedConnection,
    channel: Channel,
    exchange: String,
    prefix: String,
}

/// The ingest floor's server (module docs); runs until killed.
pub async fn serve(params: ServerParams) -> anyhow::Result<()> {
    let encoded = params.secret.trim_start_matches("whsec_");
    let key = base64::engine::general_purpose::STANDARD.decode(encoded)?;
    let redis = redis::Client::open(params.redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let connection = Connection::connect(&params.amqp_url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await?;
    let floor = Arc::new(Floor {
        key,
        redis,
        channel,
        exchange: params.exchange,
        prefix: format!("{}:floor", params.namespace),
    });
    let app = axum::Router::new()
        .route("/hooks/{source}", axum::routing::post(accept))
        .route("/readyz", axum::routing::get(|| async { "ok" }))
        .with_state(floor);
    let listener = tokio::net::TcpListener::bind(params.listen).await?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            terminate.recv().await;
        })
        .await?;
    Ok(())
}

async fn accept(State(floor): State<Arc<Floor>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    match accept_inner(&floor, &headers, &body).await {
        Ok(status) => status,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn accept_inner(
    floor: &Floor,
    headers: &HeaderMap,
    body: &[u8],
) -> anyhow::Result<StatusCode> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(ts), Some(signature)) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    ) else {
        return Ok(StatusCode::BAD_REQUEST);
    };
    if !signed(&floor.key, id, ts, body, signature) {
        return Ok(StatusCode::UNAUTHORIZED);
    }
    let claimed: Option<String> = redis::cmd("SET")
        .arg(format!("{}:{id}", floor.prefix))
        .arg(1)
        .arg("NX")
        .arg("PX")
        .arg(86_400_000)
        .query_async(&mut floor.redis.clone())
        .await?;
    if claimed.is_none() {
        return Ok(StatusCode::OK);
    }
    let meta = fleet::event("support", "ticket.created");
    let confirm = floor
        .channel
        .basic_publish(
            floor.exchange.as_str().into(),
            meta.routing_key().into(),
            broker::mandatory(),
            body,
            meta.to_properties(),
        )
        .await?;
    broker::expect_ack(confirm.await?)?;
    Ok(StatusCode::ACCEPTED)
}

/// Whether one `v1,` signature of `signature` is the HMAC of `{id}.{ts}.{body}`.
fn signed(key: &[u8], id: &str, ts: &str, body: &[u8], signature: &str) -> bool {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return false;
    };
    for part in [id.as_bytes(), b".", ts.as_bytes(), b".", body] {
        mac.update(part);
    }
    let tag = mac.finalize().into_bytes();
    signature.split(' ').any(|s| {
        s.strip_prefix("v1,")
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .is_some_and(|sent| sent.as_slice() == tag.as_slice())
    })
}

/// The worker floor over a pre-filled backlog of `jobs` (module docs).
pub async fn worker(
    lab: &Lab,
    jobs: u64,
    prefetch: u16,
    body_bytes: usize,
) -> anyhow::Result<Throughput> {
    super::in_fresh_namespace(async |env| {
        measure_worker(lab, env, jobs, prefetch, body_bytes).await
    })
    .await
}

/// The clients a floor job uses.
#[derive(Clone)]
struct Clients {
    redis: redis::aio::MultiplexedConnection,
    http: reqwest::Client,
    url: Arc<str>,
    results: Channel,
    exchange: Arc<str>,
    prefix: Arc<str>,
}

async fn measure_worker(
    lab: &Lab,
    env: &TestEnv,
    jobs: u64,
    prefetch: u16,
    body_bytes: usize,
) -> anyhow::Result<Throughput> {
    let topology = env.topology();
    broker::prefill(env, jobs, body_bytes).await?;
    let layout = Layout::new(prefetch)?;
    let mock = procs::start_mock(lab, &layout, 0).await?;
    let consuming = broker::connect(env).await?;
    let publishing = broker::connect(env).await?;
    let channel = consuming.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions { global: false })
        .await?;
    let clients = Clients {
        redis: redis::Client::open(env.settings.redis.url.as_str())?
            .get_multiplexed_async_connection()
            .await?,
        http: reqwest::Client::new(),
        url: format!("http://127.0.0.1:{}/v1/chat/completions", layout.mock_port).into(),
        results: broker::confirm_channel(&publishing).await?,
        exchange: topology.results_exchange().into(),
        prefix: format!("{}:floor", env.namespace).into(),
    };
    let processes = vec![cpu::this_process("floor"), mock.cpu_entry()];
    let meter = CpuMeter::start(&processes);
    let started = Instant::now();
    broker::drain(&channel, &topology.jobs_queue(), jobs, |delivery| {
        job(clients.clone(), delivery)
    })
    .await?;
    let elapsed = started.elapsed();
    let cpu = meter.finish();
    broker::close(&consuming, &channel).await;
    let _ = publishing.close(200, "done".into()).await;
    mock.stop().await?;
    let results = env.ready_count(&topology.results_queue()).await;
    ensure!(
        u64::from(results) == jobs,
        "{results} results for {jobs} jobs"
    );
    Ok(Throughput::new(jobs, elapsed, cpu))
}

#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
}

#[derive(Deserialize)]
struct Message {
    content: String,
}

/// One floor job: lease + done check, the AI call, done + lease drop, the
/// result published with confirm, the ack.
async fn job(mut c: Clients, delivery: lapin::message::Delivery) -> anyhow::Result<()> {
    let id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|s| s.to_string())
        .context("a job without a message id")?;
    let (lease, done) = (
        format!("{}:lease:{id}", c.prefix),
        format!("{}:done:{id}", c.prefix),
    );
    let (taken, finished): (Option<String>, Option<String>) = redis::pipe()
        .cmd("SET")
        .arg(&lease)
        .arg("floor")
        .arg("NX")
        .arg("PX")
        .arg(120_000)
        .cmd("GET")
        .arg(&done)
        .query_async(&mut c.redis)
        .await?;
    ensure!(taken.is_some() && finished.is_none(), "a job ran twice");
    let prompt = String::from_utf8_lossy(&delivery.data);
    let request = serde_json::json!({
        "model": "gpt-4o-mini",
        "temperature": 0,
        "max_tokens": 128,
        "messages": [{ "role": "user", "content": prompt }],
    });
    let answer: Completion = c
        .http
        .post(&*c.url)
        .bearer_auth("sk-bench")
        .json(&request)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let text = answer
        .choices
        .into_iter()
        .next()
        .context("an answer without a choice")?
        .message
        .content;
    redis::pipe()
        .cmd("SET")
        .arg(&done)
        .arg(1)
        .arg("PX")
        .arg(600_000)
        .ignore()
        .cmd("DEL")
        .arg(&lease)
        .ignore()
        .query_async::<()>(&mut c.redis)
        .await?;
    broker::answer(&c.results, &c.exchange, text.as_bytes(), &delivery).await
}

/// Sizes of one round of [`rounds`].
#[derive(Debug, Clone, Copy)]
pub struct FloorParams {
    /// Ingest floor: requests in flight (and the publish ceiling's depth).
    pub concurrency: usize,
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

/// One round: each floor right after the ceiling it is compared with.
#[derive(Debug, Clone, Serialize)]
pub struct FloorRound {
    /// Publish ceiling at `concurrency` in flight.
    pub publish: Throughput,
    /// The ingest floor.
    pub ingest: IngestFloorRun,
    /// Consume-publish-ack ceiling (c′).
    pub relay: Throughput,
    /// The worker floor.
    pub worker: Throughput,
}

/// `runs` rounds of ceiling, floor, ceiling, floor.
pub async fn rounds(
    lab: &Lab,
    params: &FloorParams,
    runs: usize,
) -> anyhow::Result<Vec<FloorRound>> {
    let publish = broker::PublishParams {
        messages: params.publish_messages,
        in_flight: params.concurrency,
        channels: 1,
        body_bytes: params.body_bytes,
    };
    lab.check()?;
    let mut out = Vec::new();
    for round in 1..=runs {
        let ceiling = super::suite::publish(&publish).await?;
        let load = IngestParams {
            concurrency: params.concurrency,
            duration: params.duration,
            body_bytes: params.body_bytes,
        };
        let floor = ingest(lab, &load).await?;
        let relay = super::suite::relay(params.jobs, params.prefetch, &publish).await?;
        let job_floor = worker(lab, params.jobs, params.prefetch, params.body_bytes).await?;
        eprintln!(
            "floor round {round}: publish {:.0}/s, ingest floor {:.0}/s; relay {:.0}/s, worker floor {:.0}/s",
            ceiling.per_second, floor.load.rps, relay.per_second, job_floor.per_second
        );
        out.push(FloorRound {
            publish: ceiling,
            ingest: floor,
            relay,
            worker: job_floor,
        });
    }
    Ok(out)
}

/// The report's section on the floors: each round's rates, ratios and CPU per
/// message, and their medians.
pub fn section(rounds: &[FloorRound], params: &FloorParams, command: &str) -> String {
    use std::fmt::Write as _;
    let median = |f: &dyn Fn(&FloorRound) -> f64| super::suite::median(rounds.iter().map(f));
    let mut w = String::new();
    let _ = writeln!(w, "```sh\n{command}\n```\n");
    let _ = writeln!(
        w,
        "| round | publish ceiling | ingest floor | ÷ ceiling | floor + Redis per request | relay ceiling (c′) | worker floor | ÷ c′ | floor + Redis per job |\n|---|---|---|---|---|---|---|---|---|"
    );
    for (i, r) in rounds.iter().enumerate() {
        let _ = writeln!(
            w,
            "| {} | {:.0}/s | {:.0}/s | {:.2} | {:.0} + {:.0} µs | {:.0}/s | {:.0}/s | {:.2} | {:.0} + {:.0} µs |",
            i + 1,
            r.publish.per_second,
            r.ingest.load.rps,
            ingest_ratio(r),
            r.ingest.cpu.micros("floor", r.ingest.load.rps),
            r.ingest.cpu.micros("redis", r.ingest.load.rps),
            r.relay.per_second,
            r.worker.per_second,
            worker_ratio(r),
            r.worker.cpu.micros("floor", r.worker.per_second),
            r.worker.cpu.micros("redis", r.worker.per_second),
        );
    }
    let _ = writeln!(
        w,
        "| **median** | | | **{:.2}** | **{:.0} + {:.0} µs** | | | **{:.2}** | **{:.0} + {:.0} µs** |\n",
        median(&ingest_ratio),
        median(&|r| r.ingest.cpu.micros("floor", r.ingest.load.rps)),
        median(&|r| r.ingest.cpu.micros("redis", r.ingest.load.rps)),
        median(&worker_ratio),
        median(&|r| r.worker.cpu.micros("floor", r.worker.per_second)),
        median(&|r| r.worker.cpu.micros("redis", r.worker.per_second)),
    );
    if let Some(r) = rounds.get(rounds.len() / 2) {
        let _ = writeln!(
            w,
            "CPU per message in round {}: ingest floor {}; worker floor {}.\n",
            rounds.len() / 2 + 1,
            r.ingest.cpu.per_message(r.ingest.load.rps),
            r.worker.cpu.per_message(r.worker.per_second)
        );
    }
    let _ = writeln!(
        w,
        "{} requests in flight and {} s per ingest floor run, {} jobs per worker floor run at prefetch {}, {} B bodies.",
        params.concurrency,
        params.duration.as_secs(),
        params.jobs,
        params.prefetch,
        params.body_bytes
    );
    w
}

fn ingest_ratio(r: &FloorRound) -> f64 {
    r.ingest.load.rps / r.publish.per_second.max(1e-9)
}

fn worker_ratio(r: &FloorRound) -> f64 {
    r.worker.per_second / r.relay.per_second.max(1e-9)
}
