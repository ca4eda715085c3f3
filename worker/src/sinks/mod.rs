//! Sinks: where a pipeline's result goes once the AI answered.
//!
//! A job is acked only after every sink of every matching pipeline confirmed
//! delivery, so a sink must report success only once its effect is durable (the
//! AMQP sink waits for the broker's confirm). Sinks do not retry: a failure goes
//! to `outcome::classify` like any other, and the job comes back through a retry
//! queue. The `http` sink (issue 8) is another variant of [`Sink`].

pub mod amqp;

use hookfleet_common::config::SinkConfig;
use hookfleet_common::publisher::{PublishError, Publisher};
use hookfleet_common::topology::Topology;
use serde::Serialize;

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
}

/// A configured sink.
#[derive(Clone)]
pub enum Sink {
    /// The results exchange.
    Amqp(amqp::AmqpSink),
}

impl Sink {
    /// Builds the sink `config` describes.
    pub fn build(config: &SinkConfig, publisher: &Publisher, topology: &Topology) -> Self {
        match config {
            SinkConfig::Amqp => Self::Amqp(amqp::AmqpSink::new(publisher.clone(), topology)),
        }
    }

    /// `amqp`, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Amqp(_) => "amqp",
        }
    }

    /// Delivers `result`, returning once its effect is durable.
    pub async fn deliver(
        &self,
        result: &JobResult,
        traceparent: Option<&str>,
    ) -> Result<(), SinkError> {
        match self {
            Self::Amqp(sink) => sink.deliver(result, traceparent).await,
        }
    }
}
