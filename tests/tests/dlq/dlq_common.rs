//! Helpers shared by the `dlq_*` tests: dead letters shaped like the worker's,
//! published in a known order, and the `dlq` commands run in-process.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use futures::future::join_all;
use hookfleet_common::message::{self, put_str};
use hookfleet_tests::env::TestEnv;
use hookfleet_tests::fleet::event;
use hookfleet_tests::settings::Settings;
use hookfleet_worker::dlq::{self, DlqCommand, DlqError, Summary};
use lapin::message::BasicGetMessage;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::AMQPValue;
use lapin::{BasicProperties, Confirmation};
use tokio_util::sync::CancellationToken;

/// A dead letter to publish.
#[derive(Debug, Clone)]
pub struct Spec {
    pub source: &'static str,
    pub event_type: &'static str,
    pub class: &'static str,
    pub error: &'static str,
    pub stage: &'static str,
    pub failed_ago: Duration,
    pub replays: u32,
}

impl Spec {
    /// An `exhausted` AI 500 from `source`, failed a minute ago.
    pub fn exhausted(source: &'static str) -> Self {
        Self {
            source,
            event_type: "ticket.created",
            class: "exhausted",
            error: "ai_http_500: upstream error",
            stage: "ai",
            failed_ago: Duration::from_secs(60),
            replays: 0,
        }
    }
}

/// A published dead letter: its id and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub id: String,
    pub source: String,
    pub body: Vec<u8>,
}

/// Properties and body of a dead letter as `reroute::to_dead` makes them.
pub fn dead_letter(spec: &Spec, n: usize) -> (BasicProperties, Vec<u8>) {
    let mut meta = event(spec.source, spec.event_type);
    meta.attempt = 3;
    meta.replays = spec.replays;
    let properties = meta.to_properties();
    let mut headers = properties.headers().clone().unwrap_or_default();
    put_str(&mut headers, message::ERROR, spec.error);
    put_str(&mut headers, message::ERROR_CLASS, spec.class);
    put_str(&mut headers, message::STAGE, spec.stage);
    let failed_at = SystemTime::now() - spec.failed_ago;
    put_str(
        &mut headers,
        message::FAILED_AT,
        &humantime::format_rfc3339_millis(failed_at).to_string(),
    );
    let body = format!(
        r#"{{"n":{n},"source":"{}","text":"caf\u00e9 \u2615 {n}"}}"#,
        spec.source
    )
    .into_bytes();
    (properties.with_headers(headers), body)
}

/// Publishes dead letters to `{ns}.dead` in this order (one channel, every
/// publish issued before any confirm is awaited), and returns them in order.
pub async fn publish_letters(
    env: &TestEnv,
    letters: Vec<(BasicProperties, Vec<u8>)>,
) -> Vec<Published> {
    let channel = env.channel();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    let exchange = env.topology().dead_exchange();
    let mut published = Vec::with_capacity(letters.len());
    for chunk in letters.chunks(1024) {
        let mut confirms = Vec::with_capacity(chunk.len());
        for (properties, body) in chunk {
            let confirm = channel
                .basic_publish(
                    exchange.as_str().into(),
                    "dead".into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    body,
                    properties.clone(),
                )
                .await
                .expect("publish");
            confirms.push(confirm);
            published.push(Published {
                id: properties
                    .message_id()
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                source: properties
                    .headers()
                    .as_ref()
                    .and_then(|h| message::header_str(h, message::SOURCE))
                    .unwrap_or_default(),
                body: body.clone(),
            });
        }
        for confirm in join_all(confirms).await {
            assert!(
                matches!(confirm.expect("confirm"), Confirmation::Ack(None)),
                "the DLQ took the letter"
            );
        }
    }
    published
}

/// Publishes `specs` as dead letters, in order.
pub async fn publish_specs(env: &TestEnv, specs: &[Spec]) -> Vec<Published> {
    let letters = specs
        .iter()
        .enumerate()
        .map(|(n, spec)| dead_letter(spec, n))
        .collect();
    publish_letters(env, letters).await
}

/// Runs `hookfleet-worker dlq <args>` in-process; returns what it returned and printed.
pub async fn dlq(settings: &Settings, args: &[&str]) -> (Result<Summary, DlqError>, String) {
    dlq_with(settings, args, CancellationToken::new()).await
}

/// As [`dlq`], with a cancellation token.
pub async fn dlq_with(
    settings: &Settings,
    args: &[&str],
    cancel: CancellationToken,
) -> (Result<Summary, DlqError>, String) {
    let command = DlqCommand::try_parse_from(args).expect("valid dlq arguments");
    let mut out = Vec::new();
    let result = dlq::run(&settings.for_worker(), command, cancel, &mut out).await;
    (result, String::from_utf8(out).expect("UTF-8 output"))
}

/// A message's message id.
pub fn id(message: &BasicGetMessage) -> String {
    message
        .delivery
        .properties
        .message_id()
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default()
}

/// A header of a message, as the worker reads it.
pub fn header(message: &BasicGetMessage, name: &str) -> Option<AMQPValue> {
    message
        .delivery
        .properties
        .headers()
        .as_ref()?
        .inner()
        .get(name)
        .cloned()
}

/// A header as an unsigned number.
pub fn header_u32(message: &BasicGetMessage, name: &str) -> Option<u32> {
    message::header_u32(message.delivery.properties.headers().as_ref()?, name)
}

/// Message ids of `messages`, in order.
pub fn ids(messages: &[BasicGetMessage]) -> Vec<String> {
    messages.iter().map(id).collect()
}

/// The ids of `published` whose source is (not) `source`, in order.
pub fn ids_of(published: &[Published], keep: impl Fn(&Published) -> bool) -> Vec<String> {
    published
        .iter()
        .filter(|p| keep(p))
        .map(|p| p.id.clone())
        .collect()
}

/// Asserts that `ids` has no duplicates and returns them as a set.
pub fn distinct(ids: &[String]) -> BTreeSet<String> {
    let set: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(set.len(), ids.len(), "no message id appears twice: {ids:?}");
    set
}

/// Whether `actual` is `expected` rotated (same cyclic order).
pub fn is_rotation(expected: &[String], actual: &[String]) -> bool {
    if expected.len() != actual.len() {
        return false;
    }
    if expected.is_empty() {
        return true;
    }
    let Some(start) = actual.iter().position(|id| *id == expected[0]) else {
        return false;
    };
    actual[start..]
        .iter()
        .chain(&actual[..start])
        .eq(expected.iter())
}
