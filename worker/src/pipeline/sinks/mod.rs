//! Sinks: where a pipeline's result goes once the AI answered.
//!
//! A job is acked only after every sink of every matching pipeline confirmed
//! delivery, so a sink must report success only once its effect is durable (the
//! AMQP sink waits for the broker's confirm, the HTTP sink for a 2xx). Sinks do
//! not retry: a failure goes to `outcome::classify` like any other, and the job
//! comes back through a retry queue.
//!
//! [`deliver_all`] delivers to a pipeline's sinks concurrently and independently:
//! every sink whose `when` holds is tried, whatever the others do, and each one
//! that succeeds is recorded in Redis (`{ns}:sent:{pipeline}:{message_id}:{sink}`,
//! see `crate::limits::markers`). The job is retried if any failed, and
//! the retry skips the sinks already delivered: a CRM outage neither blocks nor
//! duplicates the chat escalation. What remains is at-least-once: a crash between
//! a sink's 2xx and its marker repeats that sink, which its stable `webhook-id`
//! lets the receiver recognise. With Redis unavailable the marker check is
//! skipped (fail-open, counted in `worker_markers_unavailable_total`). A
//! pipeline with a single sink keeps no sink marker: the pipeline's done marker
//! (`job.rs`) already records that delivery.

pub mod amqp;
pub mod http;

use std::time::Duration;

use crate::config::{OutboundConfig, SinkConfig, UndefinedMode};
use crate::limits::markers::Markers;
use hookfleet_common::publisher::{PublishError, Publisher};
use hookfleet_common::telemetry::error_chain;
use hookfleet_common::topology::Topology;
use prometheus::IntCounter;
use serde::Serialize;

use crate::pipeline::PipelineError;
use crate::pipeline::request_template::RequestError;
use crate::providers::Usage;

/// The result of one pipeline for one event: the body the results exchange gets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobResult {
    /// The message id ingest assigned (the same for every pipeline and retry).
    pub message_id: String,
    /// The source name.
    pub source: String,
    /// The provider's event id, when the source has one.
    pub event_id: Option<String>,
    /// The event type.
    pub event_type: String,
    /// The pipeline that produced it.
    pub pipeline: String,
    /// The configured name of the provider that answered (the pipeline's
    /// `provider`, or a fallback's).
    pub provider: String,
    /// The model asked of that provider.
    pub model: String,
    /// `None` when the pipeline's primary provider/model answered, else the
    /// index of the fallback that did (in the pipeline's `fallbacks`).
    pub fallback: Option<usize>,
    /// The model that answered, as the provider reported it.
    pub model_reported: Option<String>,
    /// The model's answer, verbatim.
    pub output: String,
    /// The answer parsed, for `response_format = "json"` pipelines; else null.
    pub output_json: Option<serde_json::Value>,
    /// Tokens the provider reported.
    pub usage: Usage,
    /// Attempts this event took, this one included (1 on the first try).
    pub attempts: u32,
    /// Whether the answer came from the response cache (an identical request's
    /// stored answer, or one computed meanwhile by another job) — no provider
    /// call was made for this job.
    pub cached: bool,
    /// Duration of the AI request, in milliseconds.
    pub latency_ms: u64,
    /// When ingest received the event (RFC 3339).
    pub received_at: String,
    /// When this result was produced (RFC 3339).
    pub completed_at: String,
}

/// Why a result was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The results exchange did not confirm the result.
    #[error("the result was not confirmed by the broker")]
    Amqp(#[source] PublishError),
    /// An HTTP sink's request failed, or its templates did not render.
    #[error("sink `{sink}` failed")]
    Http {
        /// The sink's name.
        sink: String,
        /// What went wrong.
        #[source]
        error: RequestError,
    },
}

/// One result on its way to the sinks.
pub struct Delivery<'a> {
    /// The result (the AMQP sink's body, an HTTP sink's default body).
    pub result: &'a JobResult,
    /// The full template context: payload, meta, enrich, output, output_json.
    pub context: &'a minijinja::Value,
    /// The event's trace context.
    pub traceparent: Option<&'a str>,
}

/// A configured sink.
pub enum Sink {
    /// The results exchange.
    Amqp(amqp::AmqpSink),
    /// A templated HTTP request.
    Http(Box<http::HttpSink>),
}

impl Sink {
    /// Builds the sink configured at `field` (`worker.pipelines[0].sinks[1]`),
    /// compiling its templates.
    pub fn build(
        field: &str,
        config: &SinkConfig,
        undefined: UndefinedMode,
        outbound: &OutboundConfig,
        tokens: &crate::auth::TokenStore,
        publisher: &Publisher,
        topology: &Topology,
    ) -> Result<Self, PipelineError> {
        Ok(match config {
            SinkConfig::Amqp => Self::Amqp(amqp::AmqpSink::new(publisher.clone(), topology)),
            SinkConfig::Http(http) => Self::Http(Box::new(http::HttpSink::build(
                field, http, undefined, outbound, tokens,
            )?)),
        })
    }

    /// `amqp` or `http`, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Amqp(_) => "amqp",
            Self::Http(_) => "http",
        }
    }

    /// The sink's name: `amqp`, or an HTTP sink's `name`.
    pub fn name(&self) -> &str {
        match self {
            Self::Amqp(_) => "amqp",
            Self::Http(sink) => sink.name(),
        }
    }

    /// Whether this result goes to this sink (an HTTP sink's `when`).
    pub fn wanted(&self, delivery: &Delivery<'_>) -> Result<bool, SinkError> {
        match self {
            Self::Amqp(_) => Ok(true),
            Self::Http(sink) => sink.wanted(delivery),
        }
    }

    /// Delivers the result, returning once its effect is durable.
    pub async fn deliver(&self, delivery: &Delivery<'_>) -> Result<(), SinkError> {
        match self {
            Self::Amqp(sink) => sink.deliver(delivery.result, delivery.traceparent).await,
            Self::Http(sink) => sink.deliver(delivery).await,
        }
    }
}

/// Where delivery markers are kept, and for how long.
pub struct SentMarkers<'a> {
    /// The Redis markers.
    pub markers: &'a Markers,
    /// How long a delivery is remembered (`worker.done_ttl`).
    pub ttl: Duration,
    /// Counted when Redis does not answer.
    pub unavailable: &'a IntCounter,
}

/// Delivers `delivery` to every sink that wants it and has not had it yet, all at
/// once; returns the failures (empty when every sink has the result).
pub async fn deliver_all(
    sinks: &[Sink],
    delivery: &Delivery<'_>,
    sent: &SentMarkers<'_>,
) -> Vec<SinkError> {
    if let [only] = sinks {
        // One sink: the pipeline's done marker already stands for its delivery
        // (a retry only follows its failure), so two Redis round trips per job
        // are saved.
        return match deliver_unmarked(only, delivery).await {
            Ok(()) => Vec::new(),
            Err(e) => vec![e],
        };
    }
    let results =
        futures::future::join_all(sinks.iter().map(|sink| deliver_once(sink, delivery, sent)))
            .await;
    results.into_iter().filter_map(Result::err).collect()
}

/// One sink, when it wants the result, without a delivery marker.
async fn deliver_unmarked(sink: &Sink, delivery: &Delivery<'_>) -> Result<(), SinkError> {
    if !sink.wanted(delivery)? {
        tracing::debug!(message_id = %delivery.result.message_id, sink = sink.name(), "Sink condition is false; skipped.");
        return Ok(());
    }
    sink.deliver(delivery).await
}

/// One sink, at most once per message (module docs).
async fn deliver_once(
    sink: &Sink,
    delivery: &Delivery<'_>,
    sent: &SentMarkers<'_>,
) -> Result<(), SinkError> {
    let (pipeline, id, name) = (
        delivery.result.pipeline.as_str(),
        delivery.result.message_id.as_str(),
        sink.name(),
    );
    if !sink.wanted(delivery)? {
        tracing::debug!(message_id = %id, pipeline, sink = name, "Sink condition is false; skipped.");
        return Ok(());
    }
    match sent.markers.is_sent(pipeline, id, name).await {
        Ok(true) => {
            tracing::info!(message_id = %id, pipeline, sink = name, "Already delivered by an earlier attempt; skipped.");
            return Ok(());
        }
        Ok(false) => {}
        Err(e) => {
            sent.unavailable.inc();
            tracing::warn!(message_id = %id, pipeline, sink = name, error = %error_chain(&e), "Redis unavailable; delivering without the delivery check.");
        }
    }
    sink.deliver(delivery).await?;
    if let Err(e) = sent.markers.mark_sent(pipeline, id, name, sent.ttl).await {
        // Delivered all the same; only a retry of the job would repeat it.
        sent.unavailable.inc();
        tracing::warn!(message_id = %id, pipeline, sink = name, error = %error_chain(&e), "Cannot record the delivery in Redis.");
    }
    Ok(())
}
