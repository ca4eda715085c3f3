//! The worker floor, in the bench process: what a job cannot do without.
//! Consume (`lapin`), one pipelined Redis round trip before the AI call,
//! `POST` the AI (`reqwest`, mock-ai at 0 ms) and decode its answer (`serde`),
//! one round trip after it, publish the result with confirm, ack. No templates,
//! retries, task per job or metrics.
//!
//! [`Work::Bare`]: a lease and a done check before; the done marker and the
//! lease drop after; the answer's text as the result.
//!
//! [`Work::Shipped`]: what the worker keeps with its shipped defaults (response
//! cache, limiter, event status), as plain commands with no script. Before: the
//! `processing` status and its history entry, the lease, the done, failed and
//! settled checks, the cache lookup and its single-flight lock, the limiter's
//! read of the model. After, in one `MULTI`: the cache fill, the lock drop, the
//! done marker, the lease drop, the `done` status with the pipeline's summary
//! and its history entry. The result is the worker's own record (`JobResult`).
//! Plain commands cost Redis less than the scripts that make the same writes
//! safe under concurrency, so this stays a floor.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use deadpool_redis::redis;
use hookfleet_common::message::{EventMeta, now_rfc3339};
use hookfleet_common::redis::status::{EventState, PipelineSummary, Transition};
use hookfleet_worker::pipeline::sinks::JobResult;
use hookfleet_worker::providers::Usage;
use lapin::Channel;
use lapin::options::BasicQosOptions;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::Work;
use crate::bench::broker::{self, Throughput};
use crate::bench::cpu::{self, CpuMeter};
use crate::bench::procs::{self, Lab, Layout, PIPELINE};
use crate::env::TestEnv;

/// The lease's lifetime (ms).
const LEASE_MS: u64 = 120_000;
/// The done marker's lifetime (ms): the bench config's `done_ttl`.
const DONE_MS: u64 = 600_000;
/// The cache's single-flight lock and its entries (ms): the shipped defaults.
const CACHE_LOCK_MS: u64 = 15_000;
const CACHE_MS: u64 = 3_600_000;
/// A status's lifetime (ms): the shipped `status.ttl`.
const STATUS_MS: u64 = 7 * 86_400_000;
/// The bench pipeline's model.
const MODEL: &str = "gpt-4o-mini";

/// The worker floor over a pre-filled backlog of `jobs` (module docs).
pub async fn run(
    lab: &Lab,
    jobs: u64,
    prefetch: u16,
    body_bytes: usize,
    work: Work,
) -> anyhow::Result<Throughput> {
    crate::bench::in_fresh_namespace(async |env| {
        measure(lab, env, jobs, prefetch, body_bytes, work).await
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

async fn measure(
    lab: &Lab,
    env: &TestEnv,
    jobs: u64,
    prefetch: u16,
    body_bytes: usize,
    work: Work,
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
        let clients = clients.clone();
        async move {
            match work {
                Work::Bare => bare(clients, delivery).await,
                Work::Shipped => shipped(clients, delivery).await,
            }
        }
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
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<OpenAiUsage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
}

#[derive(Deserialize)]
struct Message {
    content: String,
}

#[derive(Deserialize)]
struct OpenAiUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
}

/// The AI's answer to `request` (JSON bytes).
async fn ask(c: &Clients, request: Vec<u8>) -> anyhow::Result<Completion> {
    Ok(c.http
        .post(&*c.url)
        .bearer_auth("sk-bench")
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(request)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// Its first choice's text, with the model and usage the provider reported.
fn first_choice(
    answer: Completion,
) -> anyhow::Result<(String, Option<String>, Option<OpenAiUsage>)> {
    let choice = answer
        .choices
        .into_iter()
        .next()
        .context("an answer without a choice")?;
    Ok((choice.message.content, answer.model, answer.usage))
}

fn message_id(delivery: &lapin::message::Delivery) -> anyhow::Result<String> {
    delivery
        .properties
        .message_id()
        .as_ref()
        .map(|s| s.to_string())
        .context("a job without a message id")
}

/// A bare floor job: lease + done check, the AI call, done + lease drop, the
/// answer published with confirm, the ack.
async fn bare(mut c: Clients, delivery: lapin::message::Delivery) -> anyhow::Result<()> {
    let id = message_id(&delivery)?;
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
        .arg(LEASE_MS)
        .cmd("GET")
        .arg(&done)
        .query_async(&mut c.redis)
        .await?;
    ensure!(taken.is_some() && finished.is_none(), "a job ran twice");
    let prompt = String::from_utf8_lossy(&delivery.data);
    let request = serde_json::json!({
        "model": MODEL,
        "temperature": 0,
        "max_tokens": 128,
        "messages": [{ "role": "user", "content": prompt }],
    });
    let (text, _, _) = first_choice(ask(&c, serde_json::to_vec(&request)?).await?)?;
    redis::pipe()
        .cmd("SET")
        .arg(&done)
        .arg(1)
        .arg("PX")
        .arg(DONE_MS)
        .ignore()
        .cmd("DEL")
        .arg(&lease)
        .ignore()
        .query_async::<()>(&mut c.redis)
        .await?;
    broker::answer(&c.results, &c.exchange, text.as_bytes(), &delivery).await
}

/// The Redis keys of one shipped floor job.
struct Keys {
    status: String,
    history: String,
    lease: String,
    done: String,
    failed: String,
    settled: String,
    cache: String,
    lock: String,
    model: String,
}

impl Keys {
    fn new(prefix: &str, id: &str, request: &[u8]) -> Self {
        let digest = hex::encode(Sha256::digest(request));
        Self {
            status: format!("{prefix}:status:{id}"),
            history: format!("{prefix}:history:{id}"),
            lease: format!("{prefix}:lease:{PIPELINE}:{id}"),
            done: format!("{prefix}:done:{PIPELINE}:{id}"),
            failed: format!("{prefix}:failed:{PIPELINE}:{id}:0"),
            settled: format!("{prefix}:settled:{id}:0"),
            cache: format!("{prefix}:cache:{digest}"),
            lock: format!("{prefix}:cache-lock:{digest}"),
            model: format!("{prefix}:limit:mock:{MODEL}"),
        }
    }
}

/// The bench pipeline's request for one event, as JSON bytes.
fn request(meta: &EventMeta, data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let payload: serde_json::Value = serde_json::from_slice(data)?;
    let user = format!(
        "Ticket {} from {}: {}",
        meta.message_id,
        payload["customer"]["name"].as_str().unwrap_or_default(),
        payload["ticket"]["body"].as_str().unwrap_or_default()
    );
    Ok(serde_json::to_vec(&serde_json::json!({
        "model": MODEL,
        "temperature": 0.0,
        "max_tokens": 128,
        "response_format": { "type": "json_object" },
        "messages": [
            { "role": "system", "content": "You triage support tickets. Answer in JSON." },
            { "role": "user", "content": user },
        ],
    }))?)
}

/// The worker's result record for `answer`, asked `latency` ago.
fn result(meta: &EventMeta, answer: Completion, latency: Duration) -> anyhow::Result<JobResult> {
    let (output, model, usage) = first_choice(answer)?;
    Ok(JobResult {
        message_id: meta.message_id.clone(),
        source: meta.source.clone(),
        event_id: meta.event_id.clone(),
        event_type: meta.event_type.clone(),
        pipeline: PIPELINE.into(),
        provider: "mock".into(),
        model: MODEL.into(),
        fallback: None,
        model_reported: model,
        output_json: serde_json::from_str(&output).ok(),
        output,
        usage: usage.map_or(Usage::default(), |u| Usage {
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
        }),
        attempts: 1,
        cached: false,
        latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
        received_at: meta.received_at.clone(),
        completed_at: now_rfc3339(),
    })
}

/// A shipped floor job (module docs).
async fn shipped(c: Clients, delivery: lapin::message::Delivery) -> anyhow::Result<()> {
    let meta = EventMeta::from_properties(&delivery.properties).context("a job without meta")?;
    let request = request(&meta, &delivery.data)?;
    let keys = Keys::new(&c.prefix, &meta.message_id, &request);
    before(&c, &keys, &meta).await?;
    let started = Instant::now();
    let answer = ask(&c, request).await?;
    let result = result(&meta, answer, started.elapsed())?;
    after(&c, &keys, &meta, &result).await?;
    let body = serde_json::to_vec(&result)?;
    broker::answer(&c.results, &c.exchange, &body, &delivery).await
}

/// The status write of `state` (with `pipelines`) on `pipe`.
fn status(
    pipe: &mut redis::Pipeline,
    keys: &Keys,
    attempt: u32,
    state: EventState,
    pipelines: Vec<PipelineSummary>,
) -> anyhow::Result<()> {
    let mut fields = vec![
        ("attempt".to_string(), attempt.to_string()),
        ("state".into(), serde_json::to_string(&state)?),
    ];
    for p in &pipelines {
        fields.push((
            format!("pipeline:{}", p.pipeline),
            serde_json::to_string(p)?,
        ));
    }
    // The history keeps the summaries without their output (the hash has it).
    let transition = Transition {
        at: now_rfc3339(),
        replays: 0,
        attempt,
        state,
        cause: None,
        pipelines: pipelines
            .into_iter()
            .map(|p| PipelineSummary {
                output: None,
                output_json: None,
                ..p
            })
            .collect(),
    };
    pipe.hset_multiple(&keys.status, &fields)
        .ignore()
        .rpush(&keys.history, serde_json::to_string(&transition)?)
        .ignore()
        .pexpire(&keys.history, STATUS_MS as i64)
        .ignore()
        .pexpire(&keys.status, STATUS_MS as i64)
        .ignore();
    Ok(())
}

/// Before the AI call, one round trip: `processing`, the lease, the handled
/// checks, the cache lookup and lock, the limiter's read.
async fn before(c: &Clients, keys: &Keys, meta: &EventMeta) -> anyhow::Result<()> {
    let mut pipe = redis::pipe();
    let processing = EventState::Processing {
        attempt: 1,
        started_at: now_rfc3339(),
    };
    status(&mut pipe, keys, 1, processing, Vec::new())?;
    pipe.cmd("SET")
        .arg(&keys.lease)
        .arg(&meta.message_id)
        .arg("NX")
        .arg("PX")
        .arg(LEASE_MS)
        .mget(&[&keys.settled, &keys.done, &keys.failed])
        .get(&keys.cache)
        .cmd("SET")
        .arg(&keys.lock)
        .arg(&meta.message_id)
        .arg("NX")
        .arg("PX")
        .arg(CACHE_LOCK_MS)
        .cmd("HMGET")
        .arg(&keys.model)
        .arg(&["last", "pause", "shift"]);
    type Reply = (
        Option<String>,
        Vec<Option<String>>,
        Option<String>,
        Option<String>,
        Vec<Option<String>>,
    );
    let (lease, handled, cached, lock, _limits): Reply =
        pipe.query_async(&mut c.redis.clone()).await?;
    ensure!(
        lease.is_some()
            && lock.is_some()
            && cached.is_none()
            && handled.iter().all(Option::is_none),
        "a job ran twice"
    );
    Ok(())
}

/// After the AI call, one transaction: the cache fill, the done marker, the
/// lease and lock drops, `done` with the summary.
async fn after(
    c: &Clients,
    keys: &Keys,
    meta: &EventMeta,
    result: &JobResult,
) -> anyhow::Result<()> {
    let cached = serde_json::json!({
        "text": result.output,
        "usage": result.usage,
        "model": result.model_reported,
    });
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("SET")
        .arg(&keys.cache)
        .arg(serde_json::to_string(&cached)?)
        .arg("PX")
        .arg(CACHE_MS)
        .ignore()
        .del(&keys.lock)
        .ignore()
        .cmd("SET")
        .arg(&keys.done)
        .arg(&meta.message_id)
        .arg("PX")
        .arg(DONE_MS)
        .ignore()
        .del(&keys.lease)
        .ignore();
    let summary = PipelineSummary {
        pipeline: result.pipeline.clone(),
        provider: result.provider.clone(),
        model: result.model.clone(),
        fallback: None,
        cached: false,
        output_json: None,
        output: None,
        truncated: false,
        completed_at: result.completed_at.clone(),
    }
    .with_output(&result.output, result.output_json.as_ref(), 2048);
    let done = EventState::Done {
        attempts: 1,
        completed_at: result.completed_at.clone(),
    };
    status(&mut pipe, keys, 1, done, vec![summary])?;
    pipe.query_async::<()>(&mut c.redis.clone()).await?;
    Ok(())
}
