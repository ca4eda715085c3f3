//! Ingest's metrics, in a registry of its own (served on the admin listener).

use hookfleet_common::metrics::{
    MetricsError, counter, histogram, latency_buckets, plain_counter, registry_with_process_metrics,
};
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Registry};

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
    /// `amqp_connections_total{name,node}`: RabbitMQ connections opened, by node.
    pub amqp_connections: IntCounterVec,
    /// `amqp_channels_reopened_total{name}`: publisher channels replaced after a nack.
    pub amqp_channels_reopened: IntCounterVec,
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
            amqp_connections: hookfleet_common::broker::connections_counter(&registry)?,
            amqp_channels_reopened: hookfleet_common::publisher::channels_reopened_counter(
                &registry,
            )?,
            registry,
        })
    }
}
