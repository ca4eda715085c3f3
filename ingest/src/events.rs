//! What a webhook request did that is both logged and counted, one struct per
//! kind: `emit` writes the log line (when there is one) and bumps the counter
//! together, so the two never drift apart and the handler reads as what
//! happened rather than how it is reported.

use std::time::Duration;

use hookfleet_common::telemetry::error_chain;

use crate::metrics::IngestMetrics;

/// A `/hooks/{source}` request was answered: `requests_total{source, outcome}`
/// and its duration. Not logged (every request is one; errors log themselves).
pub struct RequestAnswered<'a> {
    /// The source's name, or `unknown`.
    pub source: &'a str,
    /// The outcome label (`accepted`, `duplicate`, an error's).
    pub outcome: &'a str,
    /// How long it took; `None` when it was shed before the handler.
    pub elapsed: Option<Duration>,
}

impl RequestAnswered<'_> {
    /// Counts it.
    pub fn emit(&self, metrics: &IngestMetrics) {
        metrics
            .requests
            .with_label_values(&[self.source, self.outcome])
            .inc();
        if let Some(elapsed) = self.elapsed {
            metrics
                .request_duration
                .with_label_values(&[self.source])
                .observe(elapsed.as_secs_f64());
        }
    }
}

/// Redis did not answer the dedup claim and ingest fails open:
/// `dedup_unavailable_total{source}`.
pub struct DedupBypassed<'a, E: std::error::Error + 'static> {
    /// The source's name.
    pub source: &'a str,
    /// Why.
    pub error: &'a E,
}

impl<E: std::error::Error + 'static> DedupBypassed<'_, E> {
    /// Logs and counts it.
    pub fn emit(&self, metrics: &IngestMetrics) {
        tracing::warn!(source = self.source, error = %error_chain(self.error),
            "Redis unavailable; accepting without a duplicate check.");
        metrics
            .dedup_unavailable
            .with_label_values(&[self.source])
            .inc();
    }
}

/// The `accepted` status could not be written: `status_write_failures_total`.
pub struct StatusWriteFailed<'a> {
    /// The event's message id.
    pub message_id: &'a str,
    /// Why (the error chain).
    pub error: &'a str,
}

impl StatusWriteFailed<'_> {
    /// Logs and counts it.
    pub fn emit(&self, metrics: &IngestMetrics) {
        tracing::warn!(message_id = %self.message_id, error = %self.error,
            "Cannot record the accepted event's status.");
        metrics.status_write_failures.inc();
    }
}
