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
//! channel was dead) is waited for, then skipped if that run published. If Redis
//! does not answer, the pipeline runs anyway (fail-open, counted): at-least-once
//! still holds, only the "no second AI call" promise is suspended.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::limits::cache::Cache;
use crate::limits::limiter::Limiter;
use crate::limits::markers::{Claim, Markers};
use hookfleet_common::config::{ResponseFormat, UnmatchedPolicy};
use hookfleet_common::message::{self, EventMeta};
use hookfleet_common::metrics::WorkerMetrics;
use hookfleet_common::redis::status::Statuses;
use hookfleet_common::telemetry::error_chain;
use lapin::BasicProperties;

use crate::completion;
use crate::outcome::{Failure, Outcome, RetryPolicy, classify};
use crate::pipeline::{Pipeline, Pipelines};
use crate::sinks::{self, Delivery, JobResult, SentMarkers};
use crate::templates;

/// The `pipeline` label of jobs no pipeline was chosen for.
pub const NO_PIPELINE: &str = "none";

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
    /// Event status, written by `consumer.rs` (see `crate::status`).
    pub statuses: Statuses,
}

/// What processing decided, with what settling it needs.
#[derive(Debug)]
pub struct Decision {
    /// Ack, retry or dead-letter.
    pub outcome: Outcome,
    /// The event's metadata, when the message had it.
    pub meta: Option<EventMeta>,
    /// This attempt, 1-based (what a retry records in `hf-attempt`).
    pub attempt: u32,
    /// The pipeline a dead letter belongs to, if one failed.
    pub pipeline: Option<String>,
    /// The results this run published (for the event's status).
    pub results: Vec<JobResult>,
}

impl Decision {
    fn without_pipeline(ctx: &JobContext, failure: &Failure, meta: Option<EventMeta>) -> Self {
        let attempt = meta.as_ref().map_or(1, |m| m.attempt.saturating_add(1));
        let outcome = classify(failure, attempt, &ctx.policy);
        ctx.metrics
            .jobs
            .with_label_values(&[NO_PIPELINE, outcome.label()])
            .inc();
        tracing::warn!(
            message_id = meta.as_ref().map_or("", |m| m.message_id.as_str()),
            error = %error_chain(failure),
            "Job cannot be processed."
        );
        Self {
            outcome,
            meta,
            attempt,
            pipeline: None,
            results: Vec::new(),
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
    let pipelines = ctx.pipelines.matching(&meta.source, &meta.event_type);
    if pipelines.is_empty() {
        if ctx.unmatched == UnmatchedPolicy::Ack {
            ctx.metrics
                .jobs
                .with_label_values(&[NO_PIPELINE, "unmatched"])
                .inc();
            tracing::debug!(message_id = %meta.message_id, source = %meta.source, event_type = %meta.event_type, "No pipeline matches; acked.");
            return Decision {
                outcome: Outcome::Ack,
                meta: Some(meta),
                attempt,
                pipeline: None,
                results: Vec::new(),
            };
        }
        let failure = Failure::Unmatched {
            event_source: meta.source.clone(),
            event_type: meta.event_type.clone(),
        };
        return Decision::without_pipeline(ctx, &failure, Some(meta));
    }
    let payload: serde_json::Value = match serde_json::from_slice(body) {
        Ok(payload) => payload,
        Err(e) => return Decision::without_pipeline(ctx, &Failure::Undecodable(e), Some(meta)),
    };
    let mut outcome = Outcome::Ack;
    let mut failed = None;
    let mut counted = false;
    let mut results = Vec::new();
    for pipeline in pipelines {
        let (result, deferred, published) =
            run_pipeline(ctx, &pipeline, &payload, &meta, attempt).await;
        results.extend(published);
        if failed.is_none() && matches!(result, Outcome::DeadLetter { .. }) {
            failed = Some(pipeline.name.clone());
        }
        counted |= !matches!(result, Outcome::Ack) && !deferred;
        outcome = outcome.combine(result);
    }
    // A retry caused only by the limiter (no permit) does not use up an attempt.
    let attempt = if counted || !matches!(outcome, Outcome::Retry { .. }) {
        attempt
    } else {
        meta.attempt
    };
    Decision {
        outcome,
        meta: Some(meta),
        attempt,
        pipeline: failed,
        results,
    }
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

/// Whether this run may go ahead.
enum Lease {
    /// We hold the lease.
    Held,
    /// The pipeline's result was already published.
    Done,
    /// Redis did not answer; run without a lease.
    Unavailable,
}

/// One pipeline for one event, classified; whether a failure was only a
/// deferral by the limiter; the result it published, if it did.
async fn run_pipeline(
    ctx: &JobContext,
    pipeline: &Arc<Pipeline>,
    payload: &serde_json::Value,
    meta: &EventMeta,
    attempt: u32,
) -> (Outcome, bool, Option<JobResult>) {
    let started = Instant::now();
    let name = pipeline.name.as_str();
    let id = meta.message_id.as_str();
    let lease = claim(ctx, name, id).await;
    if let Lease::Done = lease {
        ctx.metrics
            .jobs
            .with_label_values(&[name, "duplicate"])
            .inc();
        tracing::info!(message_id = %id, pipeline = %name, "Result already published; skipping the redelivered job.");
        return (Outcome::Ack, false, None);
    }
    let result = attempt_pipeline(ctx, pipeline, payload, meta, attempt).await;
    let marked = match (&result, &lease) {
        (Ok(_), _) => {
            ctx.markers
                .complete(name, id, &ctx.owner, ctx.done_ttl)
                .await
        }
        (Err(_), Lease::Held) => ctx.markers.release(name, id, &ctx.owner).await,
        (Err(_), _) => Ok(()),
    };
    if let Err(e) = marked {
        // The result (if any) is already confirmed; a lost marker only means a
        // later redelivery repeats the work.
        tracing::warn!(message_id = %id, pipeline = %name, error = %error_chain(&e), "Cannot update the job's marker in Redis.");
    }
    ctx.metrics
        .job_duration
        .with_label_values(&[name])
        .observe(started.elapsed().as_secs_f64());
    let deferred = matches!(&result, Err(f) if f.is_deferred());
    let (outcome, published) = match result {
        Ok(published) => {
            tracing::info!(message_id = %id, pipeline = %name, attempt, "Result published.");
            (Outcome::Ack, Some(published))
        }
        Err(failure) => {
            let outcome = classify(&failure, attempt, &ctx.policy);
            match &outcome {
                Outcome::Retry { after } => tracing::warn!(
                    message_id = %id, pipeline = %name, attempt, retry_in = ?after,
                    error = %error_chain(&failure), "Job attempt failed; will retry."
                ),
                _ => tracing::warn!(
                    message_id = %id, pipeline = %name, attempt,
                    error = %error_chain(&failure), "Job failed for good."
                ),
            }
            (outcome, None)
        }
    };
    ctx.metrics
        .jobs
        .with_label_values(&[name, outcome.label()])
        .inc();
    (outcome, deferred, published)
}

/// Claims the pipeline's run, waiting while another run holds it.
async fn claim(ctx: &JobContext, pipeline: &str, message_id: &str) -> Lease {
    loop {
        match ctx
            .markers
            .claim(pipeline, message_id, &ctx.owner, ctx.lease_ttl)
            .await
        {
            Ok(Claim::Claimed) => return Lease::Held,
            Ok(Claim::Done) => return Lease::Done,
            Ok(Claim::Busy(left)) => {
                tracing::debug!(
                    message_id,
                    pipeline,
                    ?left,
                    "Another run holds this job; waiting for it."
                );
                let pause = left.clamp(Duration::from_millis(50), Duration::from_millis(500));
                tokio::time::sleep(pause).await;
            }
            Err(e) => {
                ctx.metrics.markers_unavailable.inc();
                tracing::warn!(message_id, pipeline, error = %error_chain(&e), "Redis unavailable; running without the redelivery check.");
                return Lease::Unavailable;
            }
        }
    }
}

/// Enrich → render → call → check → deliver; the result delivered.
async fn attempt_pipeline(
    ctx: &JobContext,
    pipeline: &Pipeline,
    payload: &serde_json::Value,
    meta: &EventMeta,
    attempt: u32,
) -> Result<JobResult, Failure> {
    let context = templates::base(payload, meta, attempt, &pipeline.name);
    let context = pipeline
        .enrichment
        .run(&context)
        .await
        .map_err(Failure::Enrich)?;
    let prompt = pipeline.render(&context).map_err(Failure::Render)?;
    let request = pipeline.request(prompt);
    let answer = completion::answer(ctx, pipeline, &request).await?;
    let response = answer.response;
    let output_json = match pipeline.response_format {
        ResponseFormat::Json => Some(parse_json_output(&response.text).map_err(Failure::Output)?),
        ResponseFormat::Text => None,
    };
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
    let context = templates::with_output(&context, &result.output, result.output_json.as_ref());
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

/// The answer as JSON, also when the model wrapped it in a Markdown code fence
/// (```json … ```), which models without a JSON mode often do.
pub fn parse_json_output(text: &str) -> Result<serde_json::Value, serde_json::Error> {
    let first = match serde_json::from_str(text) {
        Ok(value) => return Ok(value),
        Err(e) => e,
    };
    let trimmed = text.trim();
    let fenced = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|rest| rest.strip_suffix("```"));
    match fenced {
        Some(inner) => serde_json::from_str(inner.trim()).map_err(|_| first),
        None => Err(first),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_output_parses_bare_or_fenced() {
        assert_eq!(parse_json_output(r#"{"a":1}"#).unwrap(), json!({"a": 1}));
        assert_eq!(
            parse_json_output("```json\n{\"a\":1}\n```").unwrap(),
            json!({"a": 1})
        );
        assert_eq!(parse_json_output("```\n[1]\n```").unwrap(), json!([1]));
        assert!(parse_json_output("Sure! Here is the JSON: {").is_err());
        assert!(parse_json_output("```json\nnope\n```").is_err());
    }
}
