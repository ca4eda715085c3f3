//! The AMQP sink: results to `{ns}.results`, routing key
//! `{pipeline}.{source}.{event_type}`, through the confirming publisher.
//!
//! The publish is `mandatory` and awaits the broker's confirm (the publisher's
//! contract), so "delivered" means "in a durable queue". The results message keeps
//! the event's message id, so consumers can deduplicate across pipelines and the
//! rare repeated result (a crash between confirm and marker).

use hookfleet_common::message::{self, put_str};
use hookfleet_common::publisher::Publisher;
use hookfleet_common::topology::Topology;
use lapin::BasicProperties;
use lapin::types::FieldTable;

use super::{JobResult, SinkError};

/// Header on results and dead letters: the pipeline they belong to.
pub const PIPELINE_HEADER: &str = "hf-pipeline";

/// Publishes results to the results exchange.
#[derive(Clone)]
pub struct AmqpSink {
    publisher: Publisher,
    exchange: String,
}

impl AmqpSink {
    /// A sink publishing through `publisher` to `topology`'s results exchange.
    pub fn new(publisher: Publisher, topology: &Topology) -> Self {
        Self {
            publisher,
            exchange: topology.results_exchange(),
        }
    }

    /// Publishes `result` and waits for the broker's confirm.
    pub async fn deliver(
        &self,
        result: &JobResult,
        traceparent: Option<&str>,
    ) -> Result<(), SinkError> {
        let body = match serde_json::to_vec(result) {
            Ok(body) => body,
            // Serializing plain strings and numbers cannot fail; stay total anyway.
            Err(e) => format!("{{\"error\":\"cannot encode result: {e}\"}}").into_bytes(),
        };
        self.publisher
            .publish(
                &self.exchange,
                &routing_key(result),
                &body,
                properties(result, traceparent),
            )
            .await
            .map_err(SinkError::Amqp)
    }
}

/// `{pipeline}.{source}.{event_type}`, cut to fit an AMQP short string.
pub fn routing_key(result: &JobResult) -> String {
    message::routing_key(
        &result.pipeline,
        &format!("{}.{}", result.source, result.event_type),
    )
}

fn properties(result: &JobResult, traceparent: Option<&str>) -> BasicProperties {
    let mut headers = FieldTable::default();
    put_str(&mut headers, message::SOURCE, &result.source);
    put_str(&mut headers, message::EVENT_TYPE, &result.event_type);
    if let Some(id) = &result.event_id {
        put_str(&mut headers, message::EVENT_ID, id);
    }
    put_str(&mut headers, PIPELINE_HEADER, &result.pipeline);
    if let Some(tp) = traceparent {
        put_str(&mut headers, message::TRACEPARENT, tp);
    }
    BasicProperties::default()
        .with_message_id(result.message_id.as_str().into())
        .with_content_type("application/json".into())
        // Persistent, like every message we publish.
        .with_delivery_mode(2)
        .with_timestamp(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        )
        .with_headers(headers)
}
