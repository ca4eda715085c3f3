//! What a job, a delivery or an AI call did that is both logged and counted,
//! one struct per kind: `emit` writes the log line and bumps the counter
//! together, so the two never drift apart (a counter bumped without its line,
//! a line under another label than its count), and the hot path reads as what
//! happened rather than how it is reported. Counters alone (`inflight_jobs`,
//! durations) stay where they are measured.

use std::time::Duration;

use hookfleet_common::telemetry::error_chain;

use crate::auth::AuthError;
use crate::delivery::outcome::{Failure, Outcome};
use crate::metrics::WorkerMetrics;

/// The `pipeline` label of jobs no pipeline was chosen for.
pub const NO_PIPELINE: &str = "none";

/// A pipeline's result was published: `jobs_total{pipeline, succeeded}`. Logged
/// at debug, since it is every job's line.
pub struct PipelinePublished<'a> {
    /// The event's message id.
    pub message_id: &'a str,
    /// The pipeline.
    pub pipeline: &'a str,
    /// The attempt, 1-based.
    pub attempt: u32,
}

impl PipelinePublished<'_> {
    /// Logs and counts it.
    pub fn emit(&self, metrics: &WorkerMetrics) {
        tracing::debug!(message_id = %self.message_id, pipeline = %self.pipeline, attempt = self.attempt, "Result published.");
        count_job(metrics, self.pipeline, Outcome::Ack.label());
    }
}

/// A pipeline's attempt failed: `jobs_total{pipeline, retried|dead_lettered}`.
pub struct PipelineFailed<'a> {
    /// The event's message id.
    pub message_id: &'a str,
    /// The pipeline.
    pub pipeline: &'a str,
    /// The attempt, 1-based.
    pub attempt: u32,
    /// What the failure means.
    pub outcome: &'a Outcome,
    /// The failure.
    pub failure: &'a Failure,
}

impl PipelineFailed<'_> {
    /// Logs and counts it.
    pub fn emit(&self, metrics: &WorkerMetrics) {
        let (id, pipeline, attempt) = (self.message_id, self.pipeline, self.attempt);
        let error = error_chain(self.failure);
        match self.outcome {
            Outcome::Retry { after } => tracing::warn!(message_id = %id, pipeline = %pipeline,
                attempt, retry_in = ?after, error = %error, "Job attempt failed; will retry."),
            _ => tracing::warn!(message_id = %id, pipeline = %pipeline, attempt, error = %error,
                "Job failed for good."),
        }
        count_job(metrics, pipeline, self.outcome.label());
    }
}

/// Why a pipeline was not run for a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Its result was already published.
    Done,
    /// It already failed for good and was dead-lettered.
    Failed,
}

/// A pipeline this delivery need not run: `jobs_total{pipeline, duplicate|skipped}`.
pub struct PipelineSkipped<'a> {
    /// The event's message id.
    pub message_id: &'a str,
    /// The pipeline.
    pub pipeline: &'a str,
    /// Why.
    pub reason: Skip,
}

impl PipelineSkipped<'_> {
    /// Logs and counts it.
    pub fn emit(&self, metrics: &WorkerMetrics) {
        let (id, pipeline) = (self.message_id, self.pipeline);
        let label = match self.reason {
            Skip::Failed => {
                tracing::info!(message_id = %id, pipeline = %pipeline, "Pipeline already failed for good and dead-lettered; skipping it.");
                "skipped"
            }
            Skip::Done => {
                tracing::info!(message_id = %id, pipeline = %pipeline, "Result already published; skipping the redelivered job.");
                "duplicate"
            }
        };
        count_job(metrics, pipeline, label);
    }
}

/// This very delivery was settled before (its ack lost), so it is acked:
/// `jobs_total{none, duplicate}`.
pub struct DeliveryAlreadySettled<'a> {
    /// The event's message id.
    pub message_id: &'a str,
}

impl DeliveryAlreadySettled<'_> {
    /// Logs and counts it.
    pub fn emit(&self, metrics: &WorkerMetrics) {
        tracing::info!(message_id = %self.message_id, "This delivery was already settled (its ack was lost); acking it.");
        count_job(metrics, NO_PIPELINE, "duplicate");
    }
}

/// No pipeline matches and unmatched events are acked: `jobs_total{none, unmatched}`.
pub struct JobUnmatched<'a> {
    /// The event's message id.
    pub message_id: &'a str,
    /// Its source.
    pub source: &'a str,
    /// Its type.
    pub event_type: &'a str,
}

impl JobUnmatched<'_> {
    /// Logs and counts it.
    pub fn emit(&self, metrics: &WorkerMetrics) {
        tracing::debug!(message_id = %self.message_id, source = %self.source, event_type = %self.event_type, "No pipeline matches; acked.");
        count_job(metrics, NO_PIPELINE, "unmatched");
    }
}

/// A job no pipeline can run (not ours, undecodable, unmatched):
/// `jobs_total{none, outcome}`.
pub struct JobRefused<'a> {
    /// The event's message id, when it has one.
    pub message_id: &'a str,
    /// What it means.
    pub outcome: &'a Outcome,
    /// Why.
    pub failure: &'a Failure,
}

impl JobRefused<'_> {
    /// Logs and counts it.
    pub fn emit(&self, metrics: &WorkerMetrics) {
        tracing::warn!(message_id = %self.message_id, error = %error_chain(self.failure), "Job cannot be processed.");
        count_job(metrics, NO_PIPELINE, self.outcome.label());
    }
}

/// Redis did not answer a marker's read or write: `markers_unavailable_total`.
pub struct MarkersUnavailable<'a, E: std::error::Error + 'static> {
    /// The event's message id.
    pub message_id: &'a str,
    /// The pipeline, when the marker is one pipeline's.
    pub pipeline: Option<&'a str>,
    /// What the worker does without it (the log line).
    pub consequence: &'static str,
    /// The error.
    pub error: &'a E,
}

impl<E: std::error::Error + 'static> MarkersUnavailable<'_, E> {
    /// Logs and counts it.
    pub fn emit(&self, metrics: &WorkerMetrics) {
        tracing::warn!(message_id = %self.message_id, pipeline = self.pipeline.unwrap_or(""),
            error = %error_chain(self.error), "{}", self.consequence);
        metrics.markers_unavailable.inc();
    }
}

/// A dead letter was confirmed: `dead_letters_total{reason}`.
pub struct DeadLettered<'a> {
    /// The bounded reason code.
    pub reason: &'a str,
    /// `permanent`, `exhausted` or `poison`.
    pub class: &'a str,
    /// Where it failed.
    pub stage: &'a str,
    /// The pipeline, if one failed.
    pub pipeline: Option<&'a str>,
}

impl DeadLettered<'_> {
    /// Logs and counts it.
    pub fn emit(&self, metrics: &WorkerMetrics) {
        tracing::info!(reason = %self.reason, class = self.class, stage = self.stage,
            pipeline = self.pipeline.unwrap_or(""), "Job dead-lettered.");
        metrics.dead_letters.with_label_values(&[self.reason]).inc();
    }
}

/// A candidate failed and the next fallback is tried: `ai_fallbacks_total`.
pub struct FallingThrough<'a> {
    /// The pipeline.
    pub pipeline: &'a str,
    /// The candidate's provider.
    pub provider: &'a str,
    /// The candidate's model.
    pub model: &'a str,
    /// `limiter` (a deferral) or `error`.
    pub reason: &'static str,
    /// The failure.
    pub failure: &'a Failure,
}

impl FallingThrough<'_> {
    /// Logs and counts it.
    pub fn emit(&self, metrics: &WorkerMetrics) {
        tracing::warn!(pipeline = %self.pipeline, provider = %self.provider, model = self.model,
            error = %error_chain(self.failure), "AI candidate failed; trying the next fallback.");
        metrics
            .ai_fallbacks
            .with_label_values(&[self.provider, self.model, self.reason])
            .inc();
    }
}

/// The response cache could not be used: `cache_requests_total{bypassed}`.
pub struct CacheBypassed<'a, E: std::error::Error + 'static> {
    /// The pipeline.
    pub pipeline: &'a str,
    /// Why.
    pub error: &'a E,
}

impl<E: std::error::Error + 'static> CacheBypassed<'_, E> {
    /// Logs and counts it.
    pub fn emit(&self, metrics: &WorkerMetrics) {
        tracing::warn!(pipeline = %self.pipeline, error = %error_chain(self.error),
            "Response cache unavailable; calling the provider without it.");
        metrics
            .cache_requests
            .with_label_values(&["bypassed"])
            .inc();
    }
}

/// An answer without a readable usage: `ai_usage_missing_total`.
pub struct UsageMissing<'a> {
    /// The provider.
    pub provider: &'a str,
    /// The model.
    pub model: &'a str,
}

impl UsageMissing<'_> {
    /// Logs and counts it.
    pub fn emit(&self, metrics: &WorkerMetrics) {
        tracing::warn!(provider = %self.provider, model = %self.model,
            "Provider answered without a readable usage; the reservation is kept.");
        metrics
            .ai_usage_missing
            .with_label_values(&[self.provider, self.model])
            .inc();
    }
}

/// One provider call: `ai_requests_total{status}`, its duration, and the
/// tokens it reported. Not logged (every job makes one).
pub struct AiCalled<'a> {
    /// The provider.
    pub provider: &'a str,
    /// The model.
    pub model: &'a str,
    /// `200`, or the error's status label.
    pub status: &'a str,
    /// How long it took.
    pub latency: Duration,
    /// Input and output tokens, for an answer.
    pub tokens: Option<(u64, u64)>,
}

impl AiCalled<'_> {
    /// Counts it.
    pub fn emit(&self, metrics: &WorkerMetrics) {
        let labels = [self.provider, self.model];
        metrics
            .ai_requests
            .with_label_values(&[self.provider, self.model, self.status])
            .inc();
        metrics
            .ai_request_duration
            .with_label_values(&labels)
            .observe(self.latency.as_secs_f64());
        if let Some((input, output)) = self.tokens {
            let tokens = &metrics.ai_tokens;
            tokens
                .with_label_values(&[self.provider, self.model, "input"])
                .inc_by(input);
            tokens
                .with_label_values(&[self.provider, self.model, "output"])
                .inc_by(output);
        }
    }
}

/// A request to an OAuth 2.0 token endpoint: `oauth_token_requests_total{outcome}`.
/// Logged at info when issued (about once per token lifetime for the fleet).
pub struct TokenRequested<'a> {
    /// The grant's client id (not a secret).
    pub client_id: &'a str,
    /// How long the token is shared, or why there is none.
    pub outcome: Result<Duration, &'a AuthError>,
}

impl TokenRequested<'_> {
    /// Logs and counts it.
    pub fn emit(&self, metrics: &WorkerMetrics) {
        let outcome = match self.outcome {
            Ok(keep) => {
                tracing::info!(client_id = %self.client_id, shared_for = ?keep, "OAuth token issued.");
                "issued"
            }
            Err(error) => {
                tracing::warn!(client_id = %self.client_id, error = %error_chain(error),
                    "OAuth token request failed.");
                "failed"
            }
        };
        metrics
            .oauth_token_requests
            .with_label_values(&[outcome])
            .inc();
    }
}

fn count_job(metrics: &WorkerMetrics, pipeline: &str, outcome: &str) {
    metrics.jobs.with_label_values(&[pipeline, outcome]).inc();
}
