//! Publishing a job somewhere else before its delivery is acked: a copy to a
//! retry tier, or to the dead-letter exchange.
//!
//! Both go through the confirming publisher; the caller (`consumer.rs`) acks the
//! original only once the copy is confirmed, and requeues it otherwise.
//!
//! - **Retry**: via the default exchange `""` with routing key = the tier's queue
//!   name (the default exchange routes by queue name; `mandatory` catches a missing
//!   queue). The tier's queue-wide TTL then dead-letters it back to `{ns}.jobs`.
//!   `hf-attempt` records the attempts made; `x-` headers are dropped, because
//!   they are the broker's (`x-death`, `x-delivery-count`) and belong to the copy
//!   we are retiring.
//!   Each copy gets a fresh `hf-copy` id: what tells the copy apart from a
//!   redelivery of the original, whose settlement is recorded under its own id
//!   (`{ns}:settled:{message_id}:{copy}`, see `crate::limits::markers`).
//! - **Dead letter**: to `{ns}.dead` (fanout) with routing key = the event's
//!   original routing key, keeping every original header (the broker's too: they
//!   help the investigation) and adding `hf-error`, `hf-error-class`, `hf-stage`,
//!   `hf-failed-at`, `hf-routing-key` and, when one pipeline failed, `hf-pipeline`.

use std::collections::BTreeMap;
use std::time::Duration;

use hookfleet_common::message::{self, put_str};
use hookfleet_common::publisher::{PublishError, Publisher};
use hookfleet_common::topology::Topology;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};

use crate::delivery::outcome::{ErrorClass, Stage};
use crate::pipeline::sinks::amqp::PIPELINE_HEADER;
use crate::providers::truncate;

/// Which copy of the event a delivery is: a fresh id on every retry and replay
/// copy, absent on the one ingest published (read as [`FIRST_COPY`]).
pub const COPY_HEADER: &str = "hf-copy";

/// The `hf-copy` of the copy ingest published.
pub const FIRST_COPY: &str = "0";

/// The delivery's `hf-copy`.
pub fn copy_of(properties: &BasicProperties) -> String {
    properties
        .headers()
        .as_ref()
        .and_then(|h| message::header_str(h, COPY_HEADER))
        .unwrap_or_else(|| FIRST_COPY.to_owned())
}

/// A fresh `hf-copy` id.
pub fn new_copy() -> String {
    ulid::Ulid::new().to_string()
}

/// `hf-error` is cut to this many bytes: a reason, not a log.
const MAX_ERROR_LEN: usize = 1024;

/// A dead letter's description.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetter<'a> {
    /// Bounded code (`ai_http_401`).
    pub reason: &'a str,
    /// The error chain.
    pub detail: &'a str,
    /// `permanent`, `exhausted`, `poison`.
    pub class: ErrorClass,
    /// Where it failed.
    pub stage: Stage,
    /// The pipeline that failed, if one did.
    pub pipeline: Option<&'a str>,
    /// Attempts made, this one included.
    pub attempts: u32,
}

/// Publishes a copy of the job to the retry tier covering `after`, recording
/// `attempts` made. Returns the queue it went to.
pub async fn to_retry(
    publisher: &Publisher,
    topology: &Topology,
    properties: &BasicProperties,
    body: &[u8],
    attempts: u32,
    after: Duration,
) -> Result<String, PublishError> {
    let (queue, _tier) = topology.retry_queue_for(after);
    let mut headers: BTreeMap<ShortString, AMQPValue> = properties
        .headers()
        .as_ref()
        .map(|h| {
            h.inner()
                .iter()
                .filter(|(k, _)| !k.as_str().starts_with("x-"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    headers.insert(message::ATTEMPT.into(), AMQPValue::LongUInt(attempts));
    headers.insert(COPY_HEADER.into(), AMQPValue::LongString(new_copy().into()));
    let properties = properties
        .clone()
        .with_headers(FieldTable::from(headers))
        // Persistent whatever the original said: it is ours now.
        .with_delivery_mode(2);
    publisher.publish("", &queue, body, properties).await?;
    Ok(queue)
}

/// Publishes a copy of the job to the dead-letter exchange.
pub async fn to_dead(
    publisher: &Publisher,
    topology: &Topology,
    properties: &BasicProperties,
    body: &[u8],
    delivery_routing_key: &str,
    dead: DeadLetter<'_>,
) -> Result<(), PublishError> {
    let mut headers = properties.headers().clone().unwrap_or_default();
    // Ingest set hf-routing-key; a message without it (poison) keeps the key it
    // was delivered with.
    let routing_key = message::header_str(&headers, message::ROUTING_KEY)
        .unwrap_or_else(|| delivery_routing_key.to_owned());
    // A foreign message's header may be longer than an AMQP short string's 255
    // bytes, which no publish can carry: cut it on a char boundary.
    let routing_key = message::truncate(&routing_key, 255).to_owned();
    put_str(&mut headers, message::ROUTING_KEY, &routing_key);
    put_str(
        &mut headers,
        message::ERROR,
        &truncate(&format!("{}: {}", dead.reason, dead.detail), MAX_ERROR_LEN),
    );
    put_str(&mut headers, message::ERROR_CLASS, dead.class.as_str());
    put_str(&mut headers, message::STAGE, dead.stage.as_str());
    put_str(&mut headers, message::FAILED_AT, &message::now_rfc3339());
    if let Some(pipeline) = dead.pipeline {
        put_str(&mut headers, PIPELINE_HEADER, pipeline);
    }
    if dead.class != ErrorClass::Poison {
        headers.insert(message::ATTEMPT.into(), AMQPValue::LongUInt(dead.attempts));
    }
    let properties = properties
        .clone()
        .with_headers(headers)
        .with_delivery_mode(2);
    publisher
        .publish(&topology.dead_exchange(), &routing_key, body, properties)
        .await
}
