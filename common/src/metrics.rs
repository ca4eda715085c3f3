//! Prometheus metrics, prefix `hookfleet_`, one registry per service instance.
//!
//! A registry per instance (not the global default) lets tests run several ingest
//! and worker instances in one process and read each one's counters. Labels stay
//! bounded: source, pipeline, provider, model, outcome — never ids.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Metric registration failed (a name registered twice: a bug).
pub type MetricsError = prometheus::Error;

/// Renders a registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut buffer = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut buffer) {
        tracing::error!(error = %e, "Cannot encode metrics.");
    }
    String::from_utf8(buffer).unwrap_or_default()
}

pub fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, MetricsError> {
    let metric = IntCounterVec::new(Opts::new(name, help).namespace("hookfleet"), labels)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

pub fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> Result<HistogramVec, MetricsError> {
    let opts = HistogramOpts::new(name, help)
        .namespace("hookfleet")
        .buckets(buckets);
    let metric = HistogramVec::new(opts, labels)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

pub fn gauge(registry: &Registry, name: &str, help: &str) -> Result<IntGauge, MetricsError> {
    let metric = IntGauge::with_opts(Opts::new(name, help).namespace("hookfleet"))?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// Latency buckets from 1 ms to 300 s: a job may wait for the limiter, then for
/// an AI call up to its timeout, then for each fallback and sink, well past 60 s.
pub fn latency_buckets() -> Vec<f64> {
    vec![
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        120.0, 300.0,
    ]
}

/// A fresh registry with the standard `process_*` metrics of this process (CPU
/// seconds, resident memory, open file descriptors, start time), under their
/// usual names so that generic dashboards and alerts find them.
fn registry_with_process_metrics() -> Result<Registry, MetricsError> {
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    Ok(registry)
}

/// The ingest service's metrics.
#[derive(Clone)]
pub struct IngestMetrics {
    /// The registry they are registered in (served at `/metrics`).
    pub registry: Registry,
    /// `ingest_requests_total{source,outcome}`; outcome is `accepted`, `duplicate`,
    /// `challenge`, or the error kind (`bad_signature`, `unavailable`, …).
    pub requests: IntCounterVec,
    /// `ingest_request_duration_seconds{source}`.
    pub request_duration: HistogramVec,
    /// `ingest_publish_duration_seconds`: publish until the broker's confirm.
    pub publish_duration: Histogram,
    /// `ingest_dedup_unavailable_total`: events accepted without a dedup check
    /// because Redis did not answer (fail-open).
    pub dedup_unavailable: IntCounterVec,
    /// `ingest_status_write_failures_total`: accepted events whose `accepted`
    /// status could not be recorded (the 202 was answered anyway).
    pub status_write_failures: IntCounter,
}

impl IngestMetrics {
    /// Registers the ingest metrics in a fresh registry.
    pub fn new() -> Result<Self, MetricsError> {
        let registry = registry_with_process_metrics()?;
        Ok(Self {
            requests: counter(
                &registry,
                "ingest_requests_total",
                "Webhook requests by source and outcome.",
                &["source", "outcome"],
            )?,
            request_duration: histogram(
                &registry,
                "ingest_request_duration_seconds",
                "Time to answer a webhook request.",
                &["source"],
                latency_buckets(),
            )?,
            publish_duration: {
                let opts = HistogramOpts::new(
                    "ingest_publish_duration_seconds",
                    "Time from publish to the broker's confirm.",
                )
                .namespace("hookfleet")
                .buckets(latency_buckets());
                let metric = Histogram::with_opts(opts)?;
                registry.register(Box::new(metric.clone()))?;
                metric
            },
            dedup_unavailable: counter(
                &registry,
                "ingest_dedup_unavailable_total",
                "Events accepted without a duplicate check because Redis was unavailable.",
                &["source"],
            )?,
            status_write_failures: plain_counter(
                &registry,
                "ingest_status_write_failures_total",
                "Accepted events whose status could not be recorded in Redis.",
            )?,
            registry,
        })
    }
}

fn plain_counter(registry: &Registry, name: &str, help: &str) -> Result<IntCounter, MetricsError> {
    let metric = IntCounter::with_opts(Opts::new(name, help).namespace("hookfleet"))?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

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
            registry,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_registries_export_process_metrics_and_buckets_reach_300_seconds() {
        let ingest = render(&IngestMetrics::new().unwrap().registry);
        let worker = WorkerMetrics::new().unwrap();
        worker.job_duration.with_label_values(&["p"]).observe(200.0);
        let worker = render(&worker.registry);
        for text in [&ingest, &worker] {
            assert!(text.contains("process_resident_memory_bytes "), "{text}");
            assert!(text.contains("process_cpu_seconds_total "), "{text}");
        }
        assert!(
            worker.contains("hookfleet_job_duration_seconds_bucket{pipeline=\"p\",le=\"300\"} 1")
        );
        assert!(
            worker.contains("hookfleet_job_duration_seconds_bucket{pipeline=\"p\",le=\"120\"} 0")
        );
    }
}
