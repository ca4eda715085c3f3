//! One delivery → one [`Decision`]: decode, match, and run every matching pipeline
//! (claim → render → call → check → deliver → mark done).
//!
//! This module never acks, rejects or publishes retries: it returns the decision
//! and `consumer.rs` carries it out. It does publish results (through the
//! pipelines' sinks), because a result is the job's effect, not its settlement.
//!
//! Redelivery safety: before calling the AI, a pipeline claims
//! `{ns}:lease:{pipeline}:{message_id}` and checks `{ns}:done:…` (see
//! `crate::limits::markers`). A done pipeline is skipped; a pipeline
//! another run is still working on (a copy redelivered while the first one's
//! channel was dead) is waited for, then skipped if that run published. The
//! run renews its lease while it lasts, so however slow it is, its copy waits. If Redis
//! does not answer, the pipeline runs anyway (fail-open, counted): at-least-once
//! still holds, only the "no second AI call" promise is suspended.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::UnmatchedPolicy;
use crate::limits::cache::{Cache, CacheError, PendingFill};
use crate::limits::limiter::Limiter;
use crate::limits::markers::{Claim, ClaimReply, DeliveryId, Markers};
use crate::metrics::WorkerMetrics;
use hookfleet_common::message::{self, EventMeta};
use hookfleet_common::redis::RedisError;
use hookfleet_common::redis::chain::{Call, Chain, ChainReply};
use hookfleet_common::redis::status::{Cause, Statuses};
use hookfleet_common::telemetry::error_chain;
use lapin::BasicProperties;

use crate::delivery::outcome::{
    Decision, Failure, Outcome, PipelineLetter, RetryPolicy, cause, classify,
};
use crate::delivery::reroute::{self, FIRST_COPY};
use crate::delivery::status;
use crate::events::{
    DeliveryAlreadySettled, JobRefused, JobUnmatched, MarkersUnavailable, PipelineFailed,
    PipelinePublished, PipelineSkipped, Skip,
};
use crate::pipeline::completion::{self, Admission, CallContext, Prefetch, check_output};
use crate::pipeline::sinks::amqp::PIPELINE_HEADER;
use crate::pipeline::sinks::{self, Delivery, JobResult, SentMarkers};
use crate::pipeline::templates;
use crate::pipeline::{Candidate, Pipeline, Pipelines};
use crate::providers::AiRequest;

pub use crate::events::NO_PIPELINE;

/// Everything a job needs, shared by all of a worker's jobs.
pub struct JobContext {
    /// The compiled pipelines.
    pub pipelines: Pipelines,
    /// Done markers and leases.
    pub markers: Markers,
    /// The fleet-wide rate limiter.
    pub limiter: Limiter,
    /// The AI response cache.
    pub cache: Cache,
    /// Attempts and backoff.
    pub policy: RetryPolicy,
    /// What to do with unmatched events.
    pub unmatched: UnmatchedPolicy,
    /// The worker's metrics.
    pub metrics: WorkerMetrics,
    /// This worker's identity, the value of the leases it holds.
    pub owner: String,
    /// How long a lease lasts.
    pub lease_ttl: Duration,
    /// How long a done marker lasts.
    pub done_ttl: Duration,
    /// Event status, written by `consumer.rs` (see `crate::delivery::status`).
    pub statuses: Statuses,
}

impl JobContext {
    /// What the AI call path (`completion`) uses of it.
    pub fn calls(&self) -> CallContext<'_> {
        CallContext {
            limiter: &self.limiter,
            cache: &self.cache,
            markers: &self.markers,
            metrics: &self.metrics,
        }
    }
}

impl Decision {
    fn acked(meta: EventMeta, attempt: u32, copy: String) -> Self {
        Self {
            outcome: Outcome::Ack,
            meta: Some(meta),
            attempt,
            pipeline: None,
            results: Vec::new(),
            letters: Vec::new(),
            held: Vec::new(),
            copy,
            status_recorded: false,
            cause: None,
        }
    }

    fn without_pipeline(ctx: &JobContext, failure: &Failure, meta: Option<EventMeta>) -> Self {
        let attempt = meta.as_ref().map_or(1, |m| m.attempt.saturating_add(1));
        let outcome = classify(failure, attempt, &ctx.policy);
        JobRefused {
            message_id: meta.as_ref().map_or("", |m| m.message_id.as_str()),
            outcome: &outcome,
            failure,
        }
        .emit(&ctx.metrics);
        let cause = (!matches!(outcome, Outcome::Ack)).then(|| cause(failure, None));
        Self {
            outcome,
            meta,
            attempt,
            pipeline: None,
            results: Vec::new(),
            letters: Vec::new(),
            held: Vec::new(),
            copy: FIRST_COPY.to_owned(),
            status_recorded: false,
            cause,
        }
    }
}

/// Processes one delivery's properties and body into a decision.
pub async fn process_one(ctx: &JobContext, properties: &BasicProperties, body: &[u8]) -> Decision {
    if properties.message_id().is_none() {
        return Decision::without_pipeline(ctx, &Failure::NoMessageId, None);
    }
    let Some(meta) = EventMeta::from_properties(properties) else {
        return Decision::without_pipeline(ctx, &Failure::NotOurs, None);
    };
    let attempt = meta.attempt.saturating_add(1);
    let copy = reroute::copy_of(properties);
    let pipelines = only_tagged(
        ctx.pipelines.matching(&meta.source, &meta.event_type),
        properties,
    );
    if pipelines.is_empty() && ctx.unmatched == UnmatchedPolicy::Ack {
        JobUnmatched {
            message_id: &meta.message_id,
            source: &meta.source,
            event_type: &meta.event_type,
        }
        .emit(&ctx.metrics);
        return Decision::acked(meta, attempt, copy);
    }
    let failure = if pipelines.is_empty() {
        Failure::Unmatched {
            event_source: meta.source.clone(),
            event_type: meta.event_type.clone(),
        }
    } else {
        match serde_json::from_slice::<serde_json::Value>(body) {
            // Each pipeline's claim checks the settlement itself.
            Ok(payload) => return run_all(ctx, &pipelines, &payload, meta, attempt, copy).await,
            Err(e) => Failure::Undecodable(e),
        }
    };
    if already_settled(ctx, &meta, &copy).await {
        return Decision::acked(meta, attempt, copy);
    }
    Decision {
        copy,
        ..Decision::without_pipeline(ctx, &failure, Some(meta))
    }
}

/// Every pipeline of the event in turn, combined into one decision.
async fn run_all(
    ctx: &JobContext,
    pipelines: &[Arc<Pipeline>],
    payload: &serde_json::Value,
    meta: EventMeta,
    attempt: u32,
    copy: String,
) -> Decision {
    let mut decision = Decision::acked(meta, attempt, copy);
    let mut counted = false;
    let last = pipelines.len().saturating_sub(1);
    for (i, pipeline) in pipelines.iter().enumerate() {
        let place = Place {
            first: i == 0,
            last: i == last,
        };
        let run = run_pipeline(ctx, pipeline, payload, &decision, attempt, place).await;
        decision.results.extend(run.published);
        decision.status_recorded |= run.status_recorded;
        if run.held {
            decision.held.push(pipeline.name.clone());
        }
        if run.settled {
            // This very delivery was settled by a run whose ack was lost.
            DeliveryAlreadySettled {
                message_id: decision.meta.as_ref().map_or("", |m| m.message_id.as_str()),
            }
            .emit(&ctx.metrics);
            decision.outcome = Outcome::Ack;
            decision.letters.clear();
            decision.pipeline = None;
            return decision;
        }
        if matches!(run.outcome, Outcome::DeadLetter { .. }) {
            decision
                .pipeline
                .get_or_insert_with(|| pipeline.name.clone());
            decision.letters.push(PipelineLetter {
                pipeline: pipeline.name.clone(),
                outcome: run.outcome.clone(),
            });
        }
        counted |= !matches!(run.outcome, Outcome::Ack) && !run.deferred;
        // A retry wins the combined outcome, so its cause wins the history's.
        let retry = matches!(run.outcome, Outcome::Retry { .. });
        let had_retry = matches!(decision.outcome, Outcome::Retry { .. });
        if run.cause.is_some() && (decision.cause.is_none() || (retry && !had_retry)) {
            decision.cause = run.cause;
        }
        decision.outcome = decision.outcome.combine(run.outcome);
    }
    // A retry caused only by the limiter (no permit) does not use up an attempt.
    if !counted && matches!(decision.outcome, Outcome::Retry { .. }) {
        decision.attempt = decision.meta.as_ref().map_or(attempt, |m| m.attempt);
    }
    decision
}

/// Where a pipeline stands among the event's pipelines: the first one's claim
/// carries the `processing` status, the last one's done marker the `done` one.
#[derive(Debug, Clone, Copy)]
struct Place {
    first: bool,
    last: bool,
}

/// Whether this delivered copy was settled already (its ack lost). Redis
/// trouble answers no: the run goes ahead (fail-open, counted).
async fn already_settled(ctx: &JobContext, meta: &EventMeta, copy: &str) -> bool {
    let delivery = DeliveryId {
        message_id: &meta.message_id,
        replays: meta.replays,
        copy,
    };
    match ctx.markers.is_settled(&delivery).await {
        Ok(settled) => {
            if settled {
                DeliveryAlreadySettled {
                    message_id: &meta.message_id,
                }
                .emit(&ctx.metrics);
            }
            settled
        }
        Err(e) => {
            MarkersUnavailable {
                message_id: &meta.message_id,
                pipeline: None,
                consequence: "Redis unavailable; running without the settlement check.",
                error: &e,
            }
            .emit(&ctx.metrics);
            false
        }
    }
}

/// The pipelines a job runs: all that match, or only the one its `hf-pipeline`
/// names (a replayed pipeline letter; its retries keep the header).
fn only_tagged(
    mut pipelines: Vec<Arc<Pipeline>>,
    properties: &BasicProperties,
) -> Vec<Arc<Pipeline>> {
    let tagged = properties
        .headers()
        .as_ref()
        .and_then(|h| message::header_str(h, PIPELINE_HEADER));
    if let Some(name) = tagged {
        pipelines.retain(|p| p.name == name);
    }
    pipelines
}

/// Releases every lease this worker may hold for the message: its run was
/// abandoned mid-way (shutdown grace over), and the redelivered copy should not
/// wait out `lease_ttl`. Releasing a lease held by someone else is a no-op.
pub async fn release_claims(ctx: &JobContext, properties: &BasicProperties) {
    let Some(meta) = EventMeta::from_properties(properties) else {
        return;
    };
    for pipeline in ctx.pipelines.matching(&meta.source, &meta.event_type) {
        if let Err(e) = ctx
            .markers
            .release(&pipeline.name, &meta.message_id, &ctx.owner)
            .await
        {
            tracing::warn!(message_id = %meta.message_id, error = %error_chain(&e), "Cannot release an abandoned job's lease; its copy waits for it to expire.");
        }
    }
}

/// Releases the leases a settled decision still holds (see [`Decision::held`]).
pub async fn release_held(ctx: &JobContext, decision: &Decision) {
    let Some(meta) = &decision.meta else {
        return;
    };
    for pipeline in &decision.held {
        if let Err(e) = ctx
            .markers
            .release(pipeline, &meta.message_id, &ctx.owner)
            .await
        {
            tracing::warn!(message_id = %meta.message_id, pipeline = %pipeline, error = %error_chain(&e), "Cannot release a job's lease; its copy waits for it to expire.");
        }
    }
}

/// Whether this run may go ahead.
enum Lease {
    /// We hold the lease.
    Held,
    /// No: the pipeline was done, failed for good, or the delivery settled.
    Handled(Claim),
    /// Redis did not answer; run without a lease.
    Unavailable,
}

/// One pipeline's part in a decision.
struct PipelineRun {
    /// What the pipeline's attempt means.
    outcome: Outcome,
    /// The failure was only a deferral by the limiter.
    deferred: bool,
    /// The result it published, if it did.
    published: Option<JobResult>,
    /// It failed and this run still holds its lease.
    held: bool,
    /// The delivery turned out to be settled already.
    settled: bool,
    /// The event's `done` status went with this run's done marker.
    status_recorded: bool,
    /// Why it failed, for the event's history.
    cause: Option<Cause>,
}

impl PipelineRun {
    fn skipped(settled: bool) -> Self {
        Self {
            outcome: Outcome::Ack,
            deferred: false,
            published: None,
            held: false,
            settled,
            status_recorded: false,
            cause: None,
        }
    }
}

/// One pipeline for one event, classified: claim (with the cache lookup and
/// the limiter booking, when the request is known before enrichment), attempt,
/// finish. A failed run keeps its lease for the settlement (see
/// [`Decision::held`]).
async fn run_pipeline(
    ctx: &JobContext,
    pipeline: &Arc<Pipeline>,
    payload: &serde_json::Value,
    decision: &Decision,
    attempt: u32,
    place: Place,
) -> PipelineRun {
    let started = Instant::now();
    let name = pipeline.name.as_str();
    let (Some(meta), Some(delivery)) = (&decision.meta, decision.delivery()) else {
        return PipelineRun::skipped(false);
    };
    let id = meta.message_id.as_str();
    let prepared = prepare(pipeline, payload, meta, attempt);
    let admitted = admit(ctx, pipeline, &delivery, meta, place.first, prepared).await;
    if let Lease::Handled(handled) = admitted.lease {
        return skip(ctx, name, id, handled);
    }
    let held = matches!(admitted.lease, Lease::Held);
    let attempt_run = attempt_pipeline(ctx, pipeline, payload, meta, attempt, admitted.prepared);
    let tried = if held {
        let leases = [name];
        tokio::select! {
            biased;
            tried = attempt_run => tried,
            never = keep_leases(ctx, &leases, id) => match never {},
        }
    } else {
        attempt_run.await
    };
    let cause = tried
        .result
        .as_ref()
        .err()
        .map(|f| cause(f, Some(pipeline)));
    let finishing = place.last.then_some(decision);
    let status_recorded = finish(
        ctx,
        name,
        meta,
        attempt,
        finishing,
        tried.fill,
        &tried.result,
    )
    .await;
    ctx.metrics
        .job_duration
        .with_label_values(&[name])
        .observe(started.elapsed().as_secs_f64());
    PipelineRun {
        status_recorded,
        cause,
        ..classified(ctx, name, id, attempt, tried.result, held)
    }
}

/// A pipeline's attempt as an outcome, logged and counted.
fn classified(
    ctx: &JobContext,
    name: &str,
    id: &str,
    attempt: u32,
    result: Result<JobResult, Failure>,
    held: bool,
) -> PipelineRun {
    let deferred = matches!(&result, Err(f) if f.is_deferred());
    let failed = result.is_err();
    let (outcome, published) = match result {
        Ok(published) => {
            PipelinePublished {
                message_id: id,
                pipeline: name,
                attempt,
            }
            .emit(&ctx.metrics);
            (Outcome::Ack, Some(published))
        }
        Err(failure) => {
            let outcome = classify(&failure, attempt, &ctx.policy);
            PipelineFailed {
                message_id: id,
                pipeline: name,
                attempt,
                outcome: &outcome,
                failure: &failure,
            }
            .emit(&ctx.metrics);
            (outcome, None)
        }
    };
    PipelineRun {
        outcome,
        deferred,
        published,
        held: held && failed,
        settled: false,
        status_recorded: false,
        cause: None,
    }
}

/// The run's Redis work after the call, in one round trip: the cache fill
/// (when this run computed the answer), the done marker that drops the lease
/// (when it published), and — for the event's last pipeline (`finishing`)
/// when every pipeline published — the `done` status. Returns whether the
/// status went out. A failure only means a later redelivery repeats the work
/// (the result is already confirmed).
async fn finish(
    ctx: &JobContext,
    name: &str,
    meta: &EventMeta,
    attempt: u32,
    finishing: Option<&Decision>,
    fill: Option<PendingFill>,
    result: &Result<JobResult, Failure>,
) -> bool {
    let mut chain = Chain::new();
    if let Some(call) = fill.and_then(PendingFill::call) {
        chain.push(call);
    }
    let mut status = false;
    if let Ok(published) = result {
        chain.push(
            ctx.markers
                .complete_call(name, &meta.message_id, &ctx.owner, ctx.done_ttl),
        );
        if let Some(decision) = finishing.filter(|d| matches!(d.outcome, Outcome::Ack)) {
            let results: Vec<&JobResult> = decision.results.iter().chain([published]).collect();
            if let Some(call) = status::done_call(&ctx.statuses, meta, attempt, &results) {
                chain.push(call);
                status = true;
            }
        }
    }
    if chain.is_empty() {
        return false;
    }
    match ctx.markers.run_chain(&chain).await {
        Ok(_) => status,
        Err(e) => {
            tracing::warn!(message_id = %meta.message_id, pipeline = %name, error = %error_chain(&e), "Cannot update the job's marker in Redis.");
            false
        }
    }
}

/// A pipeline this delivery need not run, counted and logged.
fn skip(ctx: &JobContext, name: &str, id: &str, handled: Claim) -> PipelineRun {
    let reason = match handled {
        Claim::Failed => Skip::Failed,
        // Counted once for the delivery (`run_all`).
        Claim::Settled => return PipelineRun::skipped(true),
        _ => Skip::Done,
    };
    PipelineSkipped {
        message_id: id,
        pipeline: name,
        reason,
    }
    .emit(&ctx.metrics);
    PipelineRun::skipped(false)
}

/// Renews `pipelines`' leases of the message every third of `lease_ttl` for as
/// long as it is polled (raced against the work they cover: the run, then the
/// settlement), so a redelivered copy keeps waiting for a slow run — fallbacks,
/// enrichment, sinks and confirms included — instead of running beside it.
/// Never returns.
pub async fn keep_leases(
    ctx: &JobContext,
    pipelines: &[&str],
    message_id: &str,
) -> std::convert::Infallible {
    let mut ticks = tokio::time::interval(ctx.lease_ttl / 3);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut held: Vec<&str> = pipelines.to_vec();
    loop {
        ticks.tick().await;
        let mut still = Vec::with_capacity(held.len());
        for pipeline in held {
            match ctx
                .markers
                .renew(pipeline, message_id, &ctx.owner, ctx.lease_ttl)
                .await
            {
                Ok(true) => still.push(pipeline),
                Ok(false) => {
                    tracing::warn!(
                        message_id,
                        pipeline,
                        "Lost the job's lease (it lapsed); a redelivered copy may run beside this one."
                    );
                }
                Err(e) => {
                    still.push(pipeline);
                    tracing::warn!(message_id, pipeline, error = %error_chain(&e), "Cannot renew the job's lease; trying again.");
                }
            }
        }
        held = still;
    }
}

/// What [`admit`] came to.
struct Admitted {
    /// Whether the run may go ahead.
    lease: Lease,
    /// The request, with what its admission found, when it was prepared.
    prepared: Option<Prepared>,
}

/// Claims the pipeline's run, waiting while another run holds it, in one
/// round trip per try: the `processing` status (`first` pipeline), the claim,
/// and — when the request is `prepared` — the primary candidate's cache
/// lookup and limiter booking (`completion::Admission`).
async fn admit(
    ctx: &JobContext,
    pipeline: &Pipeline,
    delivery: &DeliveryId<'_>,
    meta: &EventMeta,
    first: bool,
    mut prepared: Option<Prepared>,
) -> Admitted {
    let name = pipeline.name.as_str();
    let message_id = delivery.message_id;
    let mut started = first
        .then(|| status::started_call(&ctx.statuses, meta))
        .flatten();
    loop {
        let recording = started.is_some();
        let tried = claim_once(ctx, pipeline, delivery, started.take(), prepared.as_ref()).await;
        let (claim, reply, admission) = match tried {
            Ok(claimed) => claimed,
            Err(e) => {
                if recording {
                    ctx.metrics.status_write_failures.inc();
                }
                MarkersUnavailable {
                    message_id,
                    pipeline: Some(name),
                    consequence: "Redis unavailable; running without the redelivery check.",
                    error: &e,
                }
                .emit(&ctx.metrics);
                if let Some(p) = prepared.as_mut() {
                    p.prefetch = Prefetch::Failed(CacheError::Redis(e));
                }
                let lease = Lease::Unavailable;
                return Admitted { lease, prepared };
            }
        };
        match claim {
            Claim::Claimed => {
                if let (Some(p), Some(admission)) = (prepared.as_mut(), admission) {
                    p.prefetch = admission.read(&ctx.calls(), &reply).await;
                }
                let lease = Lease::Held;
                return Admitted { lease, prepared };
            }
            Claim::Busy(left) => {
                tracing::debug!(
                    message_id,
                    pipeline = name,
                    ?left,
                    "Another run holds this job; waiting for it."
                );
                let pause = left.clamp(Duration::from_millis(50), Duration::from_millis(500));
                tokio::time::sleep(pause).await;
            }
            handled => {
                let lease = Lease::Handled(handled);
                return Admitted {
                    lease,
                    prepared: None,
                };
            }
        }
    }
}

/// One try of [`admit`]: one round trip.
async fn claim_once(
    ctx: &JobContext,
    pipeline: &Pipeline,
    delivery: &DeliveryId<'_>,
    started: Option<Call>,
    prepared: Option<&Prepared>,
) -> Result<(Claim, ChainReply, Option<Admission>), RedisError> {
    let mut chain = Chain::new();
    if let Some(call) = started {
        chain.push(call);
    }
    let claim = ctx
        .markers
        .claim_call(&pipeline.name, delivery, &ctx.owner, ctx.lease_ttl);
    let claim_at = chain.push(claim);
    let admission = prepared.map(|p| {
        let calls = ctx.calls();
        let max_wait = completion::max_wait(&calls, pipeline, 0);
        Admission::push(
            &calls,
            pipeline,
            primary(pipeline),
            &p.request,
            max_wait,
            &mut chain,
        )
    });
    let reply = ctx.markers.run_chain(&chain).await?;
    // The claim always runs (nothing before it stops the chain).
    let claim = reply
        .get::<ClaimReply>(claim_at)?
        .map_or(Claim::Busy(Duration::ZERO), Claim::from);
    Ok((claim, reply, admission))
}

/// The pipeline's primary provider and model.
fn primary(pipeline: &Pipeline) -> Candidate<'_> {
    Candidate {
        fallback: None,
        provider: &pipeline.provider,
        model: &pipeline.model,
    }
}

/// A pipeline's rendered request and the context it was rendered from.
struct Prepared {
    /// The template context (the sinks render with it).
    context: minijinja::Value,
    /// The request for the primary candidate.
    request: AiRequest,
    /// What the request's admission found.
    prefetch: Prefetch,
}

/// The request rendered before the claim, so the claim's round trip carries
/// its cache lookup and limiter booking — for a pipeline without enrichment
/// (enrichment calls out, and a done job should not). `None` also when
/// rendering fails: the run then fails after its claim, as any other.
fn prepare(
    pipeline: &Pipeline,
    payload: &serde_json::Value,
    meta: &EventMeta,
    attempt: u32,
) -> Option<Prepared> {
    if !pipeline.enrichment.is_empty() {
        return None;
    }
    let context = templates::base(payload, meta, attempt, &pipeline.name);
    let prompt = pipeline.render(&context).ok()?;
    Some(Prepared {
        context,
        request: pipeline.request(prompt),
        prefetch: Prefetch::Nothing,
    })
}

/// What one attempt came to, with the cache fill it leaves to [`finish`].
struct Tried {
    result: Result<JobResult, Failure>,
    fill: Option<PendingFill>,
}

impl Tried {
    fn failed(failure: Failure) -> Self {
        Self {
            result: Err(failure),
            fill: None,
        }
    }
}

/// Enrich → render (unless `prepared`) → call → check → deliver.
async fn attempt_pipeline(
    ctx: &JobContext,
    pipeline: &Pipeline,
    payload: &serde_json::Value,
    meta: &EventMeta,
    attempt: u32,
    prepared: Option<Prepared>,
) -> Tried {
    let prepared = match prepared {
        Some(prepared) => prepared,
        None => match compose(pipeline, payload, meta, attempt).await {
            Ok(prepared) => prepared,
            Err(failure) => return Tried::failed(failure),
        },
    };
    let Prepared {
        context,
        request,
        prefetch,
    } = prepared;
    let mut answer = match completion::answer(&ctx.calls(), pipeline, &request, prefetch).await {
        Ok(answer) => answer,
        Err(failure) => return Tried::failed(failure),
    };
    let fill = answer.fill.take();
    let result = deliver(ctx, pipeline, meta, attempt, &context, answer).await;
    Tried { result, fill }
}

/// Enrich → render: the request of a pipeline with enrichment.
async fn compose(
    pipeline: &Pipeline,
    payload: &serde_json::Value,
    meta: &EventMeta,
    attempt: u32,
) -> Result<Prepared, Failure> {
    let context = templates::base(payload, meta, attempt, &pipeline.name);
    let context = pipeline
        .enrichment
        .run(&context)
        .await
        .map_err(Failure::Enrich)?;
    let prompt = pipeline.render(&context).map_err(Failure::Render)?;
    Ok(Prepared {
        context,
        request: pipeline.request(prompt),
        prefetch: Prefetch::Nothing,
    })
}

/// Check → deliver: the answer as a result, through the pipeline's sinks.
async fn deliver(
    ctx: &JobContext,
    pipeline: &Pipeline,
    meta: &EventMeta,
    attempt: u32,
    context: &minijinja::Value,
    answer: completion::Answer,
) -> Result<JobResult, Failure> {
    let response = answer.response;
    let output_json = check_output(pipeline, &response.text)?;
    let result = JobResult {
        message_id: meta.message_id.clone(),
        source: meta.source.clone(),
        event_id: meta.event_id.clone(),
        event_type: meta.event_type.clone(),
        pipeline: pipeline.name.clone(),
        provider: answer.provider,
        model: answer.model,
        fallback: answer.fallback,
        model_reported: response.model,
        output: response.text,
        output_json,
        usage: response.usage,
        attempts: attempt,
        cached: answer.cached,
        latency_ms: u64::try_from(answer.latency.as_millis()).unwrap_or(u64::MAX),
        received_at: meta.received_at.clone(),
        completed_at: message::now_rfc3339(),
    };
    let context = templates::with_output(context, &result.output, result.output_json.as_ref());
    let delivery = Delivery {
        result: &result,
        context: &context,
        traceparent: meta.traceparent.as_deref(),
    };
    let sent = SentMarkers {
        markers: &ctx.markers,
        ttl: ctx.done_ttl,
        unavailable: &ctx.metrics.markers_unavailable,
    };
    let failures = sinks::deliver_all(&pipeline.sinks, &delivery, &sent).await;
    Failure::from_sinks(failures).map_or(Ok(result), Err)
}
