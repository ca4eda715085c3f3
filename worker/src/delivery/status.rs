//! What the worker records of an event's progress for `GET /events/{id}`
//! (`hookfleet_common::redis::status`): `processing` when a job starts, then
//! `retrying`, `dead` or `done` once `consumer.rs` has settled the delivery.
//! The writes on a job's common path ride on its other Redis work (`job.rs`):
//! `processing` goes with the first pipeline's claim, and `done`, when every
//! pipeline published, with the last one's done marker — before the ack, as
//! nothing is left to publish by then.
//!
//! Only settled outcomes are recorded: a delivery returned to the queue (its
//! retry or dead letter could not be published) stays `processing` until its
//! copy runs. A failed write is logged and counted
//! (`worker_status_write_failures_total`) and never changes what happens to the
//! job. Messages without our headers have no status: ingest never gave out
//! their id.

use std::time::{Duration, SystemTime};

use hookfleet_common::message::truncate;
use hookfleet_common::message::{EventMeta, now_rfc3339};
use hookfleet_common::redis::chain::Call;
use hookfleet_common::redis::status::{EventState, PipelineSummary, Update};
use hookfleet_common::telemetry::error_chain;

use crate::delivery::outcome::Decision;
use crate::delivery::outcome::Outcome;
use crate::metrics::WorkerMetrics;
use crate::pipeline::sinks::JobResult;
use hookfleet_common::redis::status::Statuses;

/// Longest error detail kept in a `dead` status.
const MAX_ERROR_BYTES: usize = 500;

/// The write recording that a job for this event starts, to send with the
/// job's claim (`job.rs`); `None` when statuses are off.
pub fn started_call(statuses: &Statuses, meta: &EventMeta) -> Option<Call> {
    let attempt = meta.attempt.saturating_add(1);
    let update = Update {
        event: meta,
        attempt,
        state: EventState::Processing {
            attempt,
            started_at: now_rfc3339(),
        },
        pipelines: Vec::new(),
        cause: None,
    };
    statuses.record_call(&update)
}

/// The write recording that every pipeline of the event published (`results`,
/// in `attempts` attempts), to send with the last pipeline's done marker
/// (`job.rs`): the delivery is then acked with nothing left to publish, so
/// `done` holds before the ack. `None` when statuses are off.
pub fn done_call(
    statuses: &Statuses,
    meta: &EventMeta,
    attempts: u32,
    results: &[&JobResult],
) -> Option<Call> {
    let limit = statuses.max_output_bytes();
    let update = Update {
        event: meta,
        attempt: meta.attempt.saturating_add(1),
        state: EventState::Done {
            attempts,
            completed_at: now_rfc3339(),
        },
        pipelines: results.iter().map(|r| summary(r, limit)).collect(),
        cause: None,
    };
    statuses.record_call(&update)
}

/// Records a settled decision. `next_in` is the retry tier's delay, for a retry.
pub async fn settled(
    statuses: &Statuses,
    metrics: &WorkerMetrics,
    decision: &Decision,
    next_in: Option<Duration>,
) {
    if !statuses.enabled() {
        return;
    }
    let Some(meta) = &decision.meta else {
        return;
    };
    let limit = statuses.max_output_bytes();
    let pipelines = decision.results.iter().map(|r| summary(r, limit)).collect();
    let state = match &decision.outcome {
        Outcome::Ack => EventState::Done {
            attempts: decision.attempt,
            completed_at: now_rfc3339(),
        },
        Outcome::Retry { after } => EventState::Retrying {
            attempt: decision.attempt,
            next_attempt_at: humantime::format_rfc3339_millis(
                SystemTime::now() + next_in.unwrap_or(*after),
            )
            .to_string(),
        },
        Outcome::DeadLetter {
            reason,
            detail,
            class,
            stage,
        } => EventState::Dead {
            class: class.as_str().to_owned(),
            reason: reason.clone(),
            stage: stage.as_str().to_owned(),
            pipeline: decision.pipeline.clone(),
            error: truncate(detail, MAX_ERROR_BYTES).to_owned(),
            attempts: decision.attempt,
            failed_at: now_rfc3339(),
        },
    };
    // The rank is the attempt this run made, whether or not it was counted.
    let update = Update {
        event: meta,
        attempt: meta.attempt.saturating_add(1),
        state,
        pipelines,
        cause: match decision.outcome {
            Outcome::Ack => None,
            _ => decision.cause.clone(),
        },
    };
    record(statuses, metrics, &update).await;
}

fn summary(result: &JobResult, limit: usize) -> PipelineSummary {
    PipelineSummary {
        pipeline: result.pipeline.clone(),
        provider: result.provider.clone(),
        model: result.model.clone(),
        fallback: result.fallback,
        cached: result.cached,
        output_json: None,
        output: None,
        truncated: false,
        completed_at: result.completed_at.clone(),
    }
    .with_output(&result.output, result.output_json.as_ref(), limit)
}

async fn record(statuses: &Statuses, metrics: &WorkerMetrics, update: &Update<'_>) {
    let meta = update.event;
    match statuses.record(update).await {
        Ok(true) => {}
        Ok(false) => tracing::debug!(message_id = %meta.message_id,
            "A later status is already recorded; this one is dropped."),
        Err(e) => {
            metrics.status_write_failures.inc();
            tracing::warn!(message_id = %meta.message_id, error = %error_chain(&e),
                "Cannot record the event's status.");
        }
    }
}
