//! The worker's metrics, in a registry of its own (served at the admin port's
//! `/metrics`); docs/operations.md lists them.

use hookfleet_common::metrics::{MetricsError, Spec, registry_with_process_metrics};
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
    /// `worker_heartbeat_failures_total`: heartbeats that could not be written
    /// to Redis (the console's fleet view missed this worker meanwhile).
    pub heartbeat_failures: IntCounter,
    /// `oauth_token_requests_total{outcome}`: requests to OAuth 2.0 token
    /// endpoints; outcome is `issued` or `failed`. About one per token lifetime
    /// for the whole fleet while the single flight works.
    pub oauth_token_requests: IntCounterVec,
    /// `amqp_connections_total{name,node}`: RabbitMQ connections opened by the
    /// consumer and the publisher, by node.
    pub amqp_connections: IntCounterVec,
    /// `amqp_channels_reopened_total{name}`: publisher channels replaced after a nack.
    pub amqp_channels_reopened: IntCounterVec,
}

/// Declares one metric's [`Spec`].
const fn spec(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Spec {
    Spec { name, help, labels }
}

const JOBS: Spec = spec(
    "jobs_total",
    "Job attempts by pipeline and outcome.",
    &["pipeline", "outcome"],
);
const JOB_DURATION: Spec = spec(
    "job_duration_seconds",
    "Time to process one pipeline of a job.",
    &["pipeline"],
);
const AI_REQUESTS: Spec = spec(
    "ai_requests_total",
    "AI requests by provider, model and response status.",
    &["provider", "model", "status"],
);
const AI_REQUEST_DURATION: Spec = spec(
    "ai_request_duration_seconds",
    "Duration of one AI request.",
    &["provider", "model"],
);
const AI_TOKENS: Spec = spec(
    "ai_tokens_total",
    "Tokens reported by AI providers.",
    &["provider", "model", "kind"],
);
const AI_USAGE_MISSING: Spec = spec(
    "ai_usage_missing_total",
    "AI answers without a readable usage, charged their reservation.",
    &["provider", "model"],
);
const CACHE_REQUESTS: Spec = spec(
    "cache_requests_total",
    "AI response cache lookups by result.",
    &["result"],
);
const RATELIMIT_WAIT: Spec = spec(
    "ratelimit_wait_seconds",
    "Time spent waiting for the fleet-wide rate limiter.",
    &["provider", "model"],
);
const AI_FALLBACKS: Spec = spec(
    "ai_fallbacks_total",
    "AI candidates given up for the pipeline's next fallback, by reason.",
    &["provider", "model", "reason"],
);
const INFLIGHT: Spec = spec("inflight_jobs", "Deliveries being processed.", &[]);
const DELIVERIES_SETTLED: Spec = spec(
    "deliveries_settled_total",
    "Deliveries acked off the jobs queue, by outcome.",
    &["outcome"],
);
const DEAD_LETTERS: Spec = spec(
    "dead_letters_total",
    "Jobs confirmed into the dead-letter queue, by reason.",
    &["reason"],
);
const MARKERS_UNAVAILABLE: Spec = spec(
    "worker_markers_unavailable_total",
    "Pipelines run without the redelivery check because Redis was unavailable.",
    &[],
);
const BROKER_RECONNECTS: Spec = spec(
    "worker_broker_reconnects_total",
    "Consumer connections to RabbitMQ re-established after a loss.",
    &[],
);
const STATUS_WRITE_FAILURES: Spec = spec(
    "worker_status_write_failures_total",
    "Event status updates that could not be recorded in Redis.",
    &[],
);

const HEARTBEAT_FAILURES: Spec = spec(
    "worker_heartbeat_failures_total",
    "Heartbeats that could not be written to Redis.",
    &[],
);

const OAUTH_TOKEN_REQUESTS: Spec = spec(
    "oauth_token_requests_total",
    "Requests to OAuth 2.0 token endpoints, by outcome (issued, failed).",
    &["outcome"],
);

impl WorkerMetrics {
    /// Registers the worker metrics in a fresh registry.
    pub fn new() -> Result<Self, MetricsError> {
        let r = registry_with_process_metrics()?;
        Ok(Self {
            jobs: JOBS.counter(&r)?,
            job_duration: JOB_DURATION.histogram(&r)?,
            ai_requests: AI_REQUESTS.counter(&r)?,
            ai_request_duration: AI_REQUEST_DURATION.histogram(&r)?,
            ai_tokens: AI_TOKENS.counter(&r)?,
            ai_usage_missing: AI_USAGE_MISSING.counter(&r)?,
            cache_requests: CACHE_REQUESTS.counter(&r)?,
            ratelimit_wait: RATELIMIT_WAIT.histogram(&r)?,
            ai_fallbacks: AI_FALLBACKS.counter(&r)?,
            inflight: INFLIGHT.gauge(&r)?,
            deliveries_settled: DELIVERIES_SETTLED.counter(&r)?,
            dead_letters: DEAD_LETTERS.counter(&r)?,
            markers_unavailable: MARKERS_UNAVAILABLE.plain_counter(&r)?,
            broker_reconnects: BROKER_RECONNECTS.plain_counter(&r)?,
            status_write_failures: STATUS_WRITE_FAILURES.plain_counter(&r)?,
            heartbeat_failures: HEARTBEAT_FAILURES.plain_counter(&r)?,
            oauth_token_requests: OAUTH_TOKEN_REQUESTS.counter(&r)?,
            amqp_connections: hookfleet_common::broker::connections_counter(&r)?,
            amqp_channels_reopened: hookfleet_common::publisher::channels_reopened_counter(&r)?,
            registry: r,
        })
    }
}
