//! Prometheus metrics: the helpers both services register theirs with (prefix
//! `hookfleet_`, the process metrics, the latency buckets). Each service owns its
//! metrics struct (`hookfleet_ingest::metrics`, `hookfleet_worker::metrics`), in a
//! registry per instance (not the global default), so tests can run several
//! instances in one process and read each one's counters. Labels stay bounded.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
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

/// One metric's name (without the `hookfleet_` prefix), help and labels,
/// declared once as a constant next to the struct field it fills.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// The name, with its unit suffix (`jobs_total`).
    pub name: &'static str,
    /// The `# HELP` text.
    pub help: &'static str,
    /// Label names (bounded values only).
    pub labels: &'static [&'static str],
}

impl Spec {
    /// Registers it as a labelled counter.
    pub fn counter(&self, registry: &Registry) -> Result<IntCounterVec, MetricsError> {
        counter(registry, self.name, self.help, self.labels)
    }

    /// Registers it as a labelled histogram with [`latency_buckets`].
    pub fn histogram(&self, registry: &Registry) -> Result<HistogramVec, MetricsError> {
        histogram(
            registry,
            self.name,
            self.help,
            self.labels,
            latency_buckets(),
        )
    }

    /// Registers it as an unlabelled counter.
    pub fn plain_counter(&self, registry: &Registry) -> Result<IntCounter, MetricsError> {
        plain_counter(registry, self.name, self.help)
    }

    /// Registers it as a gauge.
    pub fn gauge(&self, registry: &Registry) -> Result<IntGauge, MetricsError> {
        gauge(registry, self.name, self.help)
    }
}

/// Registers a labelled counter, `hookfleet_`-prefixed.
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

/// Registers a labelled histogram, `hookfleet_`-prefixed.
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

/// Registers a gauge, `hookfleet_`-prefixed.
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
pub fn registry_with_process_metrics() -> Result<Registry, MetricsError> {
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    Ok(registry)
}

/// An unlabelled counter, `hookfleet_`-prefixed.
pub fn plain_counter(
    registry: &Registry,
    name: &str,
    help: &str,
) -> Result<IntCounter, MetricsError> {
    let metric = IntCounter::with_opts(Opts::new(name, help).namespace("hookfleet"))?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_export_process_metrics_and_buckets_reach_300_seconds() {
        let registry = registry_with_process_metrics().unwrap();
        let h = histogram(&registry, "t_seconds", "t", &["p"], latency_buckets()).unwrap();
        h.with_label_values(&["p"]).observe(200.0);
        let text = render(&registry);
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(text.contains("process_cpu_seconds_total "), "{text}");
        assert!(text.contains("hookfleet_t_seconds_bucket{p=\"p\",le=\"300\"} 1"));
        assert!(text.contains("hookfleet_t_seconds_bucket{p=\"p\",le=\"120\"} 0"));
    }
}
