//! The worker's metrics, in a registry of its own (served at the admin port's
//! `/metrics`); docs/operations.md lists them.

use hookfleet_common::metrics::{
    MetricsError, counter, gauge, histogram, latency_buckets, plain_counter,
    registry_with_process_metrics,
};
use prometheus::{HistogramVec, IntCounter, IntCounterVec, IntGauge, Registry};

/// The worker's metrics (docs/operations.md lists them).
#[derive(Clone)]
pub struct WorkerMetrics {
    /// The registry they are registered in (served at `/metrics`).
    pub registry: Registry,
    /// `jobs_total{pipeline,outcome}`: one per pipeline per attempt; outcome is
    /// `succeeded`, `retried`, `dead_lettered`, `duplicate` (a redelivery whose
    /// result was already published), or `unmatched` (pipeline `none`).
    pub jobs: IntCounterVec,
    /// `job_duration_seconds{pipeline}`: one pipeline's attempt, claim to result.
    pub job_duration: HistogramVec,
    /// `ai_requests_total{provider,model,status}`; status is the HTTP status, or
    /// `timeout` / `connect` / `transport` when there was none.
    pub ai_requests: IntCounterVec,
    /// `ai_request_duration_seconds{provider,model}`.
    pub ai_request_duration: HistogramVec,
    /// `ai_tokens_total{provider,model,kind}`; kind is `input` or `output`.
    pub ai_tokens: IntCounterVec,
    /// `ai_usage_missing_total{provider,model}`: answers without a readable
    /// `usage`; their limiter reservation is kept as the charge.
    pub ai_usage_missing: IntCounterVec,
    /// `cache_requests_total{result}`: `hit`, `miss` or `coalesced`.
    pub cache_requests: IntCounterVec,
    /// `ratelimit_wait_seconds{provider,model}`: time spent waiting for the limiter.
    pub ratelimit_wait: HistogramVec,
    /// `ai_fallbacks_total{provider,model,reason}`: a pipeline moved on from this
    /// provider/model to its next fallback; reason is `error` (a transient
    /// failure) or `limiter` (paused or saturated).
    pub ai_fallbacks: IntCounterVec,
    /// `inflight_jobs`: deliveries being processed right now.
    pub inflight: IntGauge,
    /// `deliveries_settled_total{outcome}`: deliveries acked off the jobs queue;
    /// outcome is `completed`, `dead_lettered`, or `retried` (moved to a retry
    /// tier: it comes back, so it is not throughput).
    pub deliveries_settled: IntCounterVec,
    /// `dead_letters_total{reason}`: dead letters confirmed into `{ns}.dead`;
    /// reason is a bounded code (`ai_http_401`, `template_error`, …).
    pub dead_letters: IntCounterVec,
    /// `worker_markers_unavailable_total`: pipelines run without the redelivery
    /// check because Redis did not answer (they may repeat an AI call).
    pub markers_unavailable: IntCounter,
    /// `worker_broker_reconnects_total`: consumer connections re-established.
    pub broker_reconnects: IntCounter,
    /// `worker_status_write_failures_total`: event status updates that could
    /// not be recorded in Redis (the job went on regardless).
    pub status_write_failures: IntCounter,
    /// `amqp_connections_total{name,node}`: RabbitMQ connections opened by the
    /// consumer and the publisher, by node.
    pub amqp_connections: IntCounterVec,
}

impl WorkerMetrics {
    /// Registers the worker metrics in a fresh registry.
    pub fn new() -> Result<Self, MetricsError> {
        let registry = registry_with_process_metrics()?;
        Ok(Self {
            jobs: counter(
                &registry,
                "jobs_total",
                "Job attempts by pipeline and outcome.",
                &["pipeline", "outcome"],
            )?,
            job_duration: histogram(
                &registry,
                "job_duration_seconds",
                "Time to process one pipeline of a job.",
                &["pipeline"],
                latency_buckets(),
            )?,
            ai_requests: counter(
                &registry,
                "ai_requests_total",
                "AI requests by provider, model and response status.",
                &["provider", "model", "status"],
            )?,
            ai_request_duration: histogram(
                &registry,
                "ai_request_duration_seconds",
                "Duration of one AI request.",
                &["provider", "model"],
                latency_buckets(),
            )?,
            ai_tokens: counter(
                &registry,
                "ai_tokens_total",
                "Tokens reported by AI providers.",
                &["provider", "model", "kind"],
            )?,
            ai_usage_missing: counter(
                &registry,
                "ai_usage_missing_total",
                "AI answers without a readable usage, charged their reservation.",
                &["provider", "model"],
            )?,
            cache_requests: counter(
                &registry,
                "cache_requests_total",
                "AI response cache lookups by result.",
                &["result"],
            )?,
            ratelimit_wait: histogram(
                &registry,
                "ratelimit_wait_seconds",
                "Time spent waiting for the fleet-wide rate limiter.",
                &["provider", "model"],
                latency_buckets(),
            )?,
            ai_fallbacks: counter(
                &registry,
                "ai_fallbacks_total",
                "AI candidates given up for the pipeline's next fallback, by reason.",
                &["provider", "model", "reason"],
            )?,
            inflight: gauge(&registry, "inflight_jobs", "Deliveries being processed.")?,
            deliveries_settled: counter(
                &registry,
                "deliveries_settled_total",
                "Deliveries acked off the jobs queue, by outcome.",
                &["outcome"],
            )?,
            dead_letters: counter(
                &registry,
                "dead_letters_total",
                "Jobs confirmed into the dead-letter queue, by reason.",
                &["reason"],
            )?,
            markers_unavailable: plain_counter(
                &registry,
                "worker_markers_unavailable_total",
                "Pipelines run without the redelivery check because Redis was unavailable.",
            )?,
            broker_reconnects: plain_counter(
                &registry,
                "worker_broker_reconnects_total",
                "Consumer connections to RabbitMQ re-established after a loss.",
            )?,
            status_write_failures: plain_counter(
                &registry,
                "worker_status_write_failures_total",
                "Event status updates that could not be recorded in Redis.",
            )?,
            amqp_connections: hookfleet_common::broker::connections_counter(&registry)?,
            registry,
        })
    }
}
