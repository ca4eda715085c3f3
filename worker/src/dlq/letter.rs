//! A dead letter as an operator sees it — what failed, where, when, how often it
//! was replayed — and the two ways its properties are rewritten.
//!
//! Two kinds of dead letters share `{ns}.dead`:
//!
//! - **Ours** (`reroute::to_dead`): the original properties plus `hf-error`,
//!   `hf-error-class`, `hf-stage`, `hf-failed-at`. They may also carry an `x-death`
//!   (a retry tier's TTL dead-lettered the job back to `{ns}.jobs` on its way
//!   here); our headers win.
//! - **RabbitMQ's**: the jobs queue's `x-delivery-limit` was exceeded (a crash
//!   loop) and the broker dead-lettered the message itself. It has no `hf-error*`
//!   but an `x-death` array (most recent first: `count`, `exchange`, `queue`,
//!   `reason = delivery_limit`, `routing-keys`, `time`) and `x-first-death-*`.
//!
//! [`Letter::read`] never fails: a letter with no headers at all is still shown
//! (class `unknown`), because the DLQ is where unreadable things end up.
//!
//! Rewrites: [`for_replay`] (back to the jobs queue: a fresh attempt) and
//! [`for_requeue`] (back to the tail of the DLQ during a pass: the same letter).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hookfleet_common::message::{self, header_str, header_u32, put_str};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use serde::Serialize;

use crate::delivery::reroute::{COPY_HEADER, new_copy};
use crate::providers::truncate;

/// Header a replay adds: the error that sent the letter to the DLQ last time
/// (`{class}: {hf-error}`), so the history survives the removal of `hf-error`.
pub const LAST_ERROR: &str = "hf-last-error";
/// Header a replay adds: when the letter was replayed (RFC 3339).
pub const REPLAYED_AT: &str = "hf-replayed-at";
/// The broker's per-copy redelivery counter (quorum queues); never carried over.
const DELIVERY_COUNT: &str = "x-delivery-count";
/// Dead-letter headers a replay removes: they describe the failure being retried.
/// `hf-pipeline` stays: a letter of one pipeline replays as a job of that
/// pipeline alone (the event's other pipelines were settled already).
const FAILURE_HEADERS: [&str; 4] = [
    message::ERROR,
    message::ERROR_CLASS,
    message::STAGE,
    message::FAILED_AT,
];
/// `hf-last-error` is cut to this many bytes, as `hf-error` is.
const MAX_ERROR_LEN: usize = 1024;

/// Why a letter is in the DLQ (`hf-error-class`, or derived from `x-death`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// It can never succeed as it is (template error, AI 4xx, unmatched).
    Permanent,
    /// It failed transiently until the worker ran out of attempts.
    Exhausted,
    /// Not a message a worker can read (no id, not ours, body not JSON).
    Poison,
    /// RabbitMQ dead-lettered it: redelivered past the jobs queue's `x-delivery-limit`.
    DeliveryLimit,
    /// Neither our headers nor a known `x-death` reason.
    Unknown,
}

impl Class {
    /// The `hf-error-class` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Permanent => "permanent",
            Self::Exhausted => "exhausted",
            Self::Poison => "poison",
            Self::DeliveryLimit => "delivery-limit",
            Self::Unknown => "unknown",
        }
    }

    fn parse(value: &str) -> Self {
        match value {
            "permanent" => Self::Permanent,
            "exhausted" => Self::Exhausted,
            "poison" => Self::Poison,
            "delivery-limit" | "delivery_limit" => Self::DeliveryLimit,
            _ => Self::Unknown,
        }
    }
}

/// The most recent `x-death` entry: RabbitMQ's record of dead-lettering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Death {
    /// `delivery_limit`, `expired`, `rejected` or `maxlen`.
    pub reason: String,
    /// The queue it was dead-lettered from.
    pub queue: String,
    /// The exchange it had been published to.
    pub exchange: String,
    /// The routing keys it had been published with.
    pub routing_keys: Vec<String>,
    /// How many times it was dead-lettered from that queue for that reason.
    pub count: u64,
    /// When (whole seconds), if the broker said.
    #[serde(serialize_with = "serialize_time")]
    pub time: Option<SystemTime>,
}

/// What an operator needs to know about one dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letter {
    /// The ULID ingest assigned; `None` for poison without one.
    pub message_id: Option<String>,
    /// `hf-source`.
    pub source: Option<String>,
    /// `hf-event-type`.
    pub event_type: Option<String>,
    /// `hf-event-id`, the provider's id.
    pub event_id: Option<String>,
    /// Why it is here.
    pub class: Class,
    /// `hf-error` (`ai_http_500: …`), or a description of the `x-death` reason.
    pub error: String,
    /// `hf-stage`, when the worker dead-lettered it.
    pub stage: Option<String>,
    /// `hf-failed-at`, or the `x-death` time.
    pub failed_at: Option<SystemTime>,
    /// `hf-received-at`, as ingest wrote it.
    pub received_at: Option<String>,
    /// `hf-attempt`: attempts made when it failed.
    pub attempts: Option<u32>,
    /// `hf-replays`: how many times it was already replayed from the DLQ.
    pub replays: u32,
    /// `hf-routing-key`: the key it was first published with.
    pub routing_key: Option<String>,
    /// The latest `x-death` entry, if RabbitMQ ever dead-lettered it.
    pub death: Option<Death>,
    /// Body size in bytes.
    pub body_bytes: usize,
}

impl Letter {
    /// Reads a dead letter's view from its properties.
    pub fn read(properties: &BasicProperties, body_bytes: usize) -> Self {
        let empty = FieldTable::default();
        let headers = properties.headers().as_ref().unwrap_or(&empty);
        let get = |name: &str| header_str(headers, name);
        let death = read_death(headers);
        let hf_class = get(message::ERROR_CLASS);
        let (class, error) = match (&hf_class, &death) {
            (Some(class), _) => (Class::parse(class), get(message::ERROR).unwrap_or_default()),
            (None, Some(death)) => (
                if death.reason == "delivery_limit" {
                    Class::DeliveryLimit
                } else {
                    Class::Unknown
                },
                describe_death(death),
            ),
            (None, None) => (Class::Unknown, get(message::ERROR).unwrap_or_default()),
        };
        let failed_at = get(message::FAILED_AT)
            .and_then(|t| humantime::parse_rfc3339_weak(&t).ok())
            .or_else(|| death.as_ref().and_then(|d| d.time));
        Self {
            message_id: properties.message_id().as_ref().map(ToString::to_string),
            source: get(message::SOURCE),
            event_type: get(message::EVENT_TYPE),
            event_id: get(message::EVENT_ID),
            class,
            error,
            stage: get(message::STAGE),
            failed_at,
            received_at: get(message::RECEIVED_AT),
            attempts: header_u32(headers, message::ATTEMPT),
            replays: header_u32(headers, message::REPLAYS).unwrap_or(0),
            routing_key: get(message::ROUTING_KEY),
            death,
            body_bytes,
        }
    }

    /// The bounded reason code: `hf-error` up to its first `:` (`ai_http_500`,
    /// `delivery_limit`), the metric label the worker counted it under.
    pub fn reason(&self) -> &str {
        let code = self.error.split(':').next().unwrap_or_default().trim();
        if code.is_empty() { "-" } else { code }
    }

    /// How long ago it failed, if known.
    pub fn age(&self, now: SystemTime) -> Option<Duration> {
        self.failed_at
            .map(|at| now.duration_since(at).unwrap_or(Duration::ZERO))
    }
}

/// The properties of a replayed copy: a fresh job with the same message id, body
/// and original headers — `hf-attempt` 0, `hf-replays` + 1, the failure headers
/// replaced by `hf-last-error` and `hf-replayed-at`, a fresh `hf-copy`, `hf-pipeline`
/// kept (the job runs that pipeline only), and no `x-` headers (they are
/// the broker's, describe the copy being retired, and an `x-death` carried into
/// the jobs queue would be extended, not restarted, by the next dead-lettering).
pub fn for_replay(properties: &BasicProperties, letter: &Letter) -> BasicProperties {
    let mut headers = header_map(properties);
    headers.retain(|name, _| {
        !name.as_str().starts_with("x-") && !FAILURE_HEADERS.contains(&name.as_str())
    });
    let mut headers = FieldTable::from(headers);
    headers.insert(message::ATTEMPT.into(), AMQPValue::LongUInt(0));
    headers.insert(
        message::REPLAYS.into(),
        AMQPValue::LongUInt(letter.replays.saturating_add(1)),
    );
    put_str(
        &mut headers,
        LAST_ERROR,
        &truncate(
            &format!("{}: {}", letter.class.as_str(), letter.error),
            MAX_ERROR_LEN,
        ),
    );
    put_str(&mut headers, REPLAYED_AT, &message::now_rfc3339());
    // A new copy of the event: its settlement is its own.
    put_str(&mut headers, COPY_HEADER, &new_copy());
    properties
        .clone()
        .with_headers(headers)
        // Persistent whatever the original said: it is a job again.
        .with_delivery_mode(2)
}

/// The properties of a letter put back at the tail of the DLQ: unchanged, except
/// that the broker's `x-delivery-count` (about the copy being acked) is dropped,
/// and that a letter RabbitMQ dead-lettered gets the `hf-error*` headers its
/// `x-death` implies. RabbitMQ 4 no longer maintains client-published `x-death`
/// headers, so the letter keeps its classification whichever broker reads it next.
pub fn for_requeue(properties: &BasicProperties, letter: &Letter) -> BasicProperties {
    let mut map = header_map(properties);
    map.remove(DELIVERY_COUNT);
    let mut headers = FieldTable::from(map);
    let ours = headers.contains_key(message::ERROR_CLASS);
    if !ours && letter.death.is_some() {
        put_str(&mut headers, message::ERROR_CLASS, letter.class.as_str());
        put_str(&mut headers, message::ERROR, &letter.error);
        if let Some(at) = letter.failed_at {
            put_str(
                &mut headers,
                message::FAILED_AT,
                &humantime::format_rfc3339_millis(at).to_string(),
            );
        }
    }
    properties
        .clone()
        .with_headers(headers)
        .with_delivery_mode(2)
}

/// An AMQP header value as JSON, for `show --json`.
pub fn value_json(value: &AMQPValue) -> serde_json::Value {
    use serde_json::Value;
    match value {
        AMQPValue::Boolean(v) => Value::from(*v),
        AMQPValue::ShortShortInt(v) => Value::from(*v),
        AMQPValue::ShortShortUInt(v) => Value::from(*v),
        AMQPValue::ShortInt(v) => Value::from(*v),
        AMQPValue::ShortUInt(v) => Value::from(*v),
        AMQPValue::LongInt(v) => Value::from(*v),
        AMQPValue::LongUInt(v) => Value::from(*v),
        AMQPValue::LongLongInt(v) => Value::from(*v),
        AMQPValue::Float(v) => Value::from(*v),
        AMQPValue::Double(v) => Value::from(*v),
        AMQPValue::DecimalValue(v) => Value::from(format!("{}e-{}", v.value, v.scale)),
        AMQPValue::ShortString(v) => Value::from(v.as_str()),
        AMQPValue::LongString(v) => Value::from(String::from_utf8_lossy(v.as_bytes())),
        AMQPValue::FieldArray(v) => Value::Array(v.as_slice().iter().map(value_json).collect()),
        AMQPValue::Timestamp(v) => Value::from(rfc3339_secs(*v)),
        AMQPValue::FieldTable(v) => table_json(v),
        AMQPValue::ByteArray(v) => Value::from(hex(v.as_slice())),
        AMQPValue::Void => Value::Null,
    }
}

/// A header table as a JSON object.
pub fn table_json(table: &FieldTable) -> serde_json::Value {
    serde_json::Value::Object(
        table
            .inner()
            .iter()
            .map(|(k, v)| (k.to_string(), value_json(v)))
            .collect(),
    )
}

/// Lower-case hex of `bytes` (bodies that are not UTF-8).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// `time` as RFC 3339 (for JSON), `None` as null.
pub fn serialize_time<S: serde::Serializer>(
    time: &Option<SystemTime>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match time {
        Some(t) => serializer.serialize_str(&humantime::format_rfc3339_millis(*t).to_string()),
        None => serializer.serialize_none(),
    }
}

fn header_map(properties: &BasicProperties) -> BTreeMap<ShortString, AMQPValue> {
    properties
        .headers()
        .as_ref()
        .map(|h| h.inner().clone())
        .unwrap_or_default()
}

fn read_death(headers: &FieldTable) -> Option<Death> {
    let entry = match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(entries)) => entries.as_slice().iter().find_map(|e| match e {
            AMQPValue::FieldTable(t) => Some(t),
            _ => None,
        }),
        _ => None,
    };
    match entry {
        Some(entry) => Some(Death {
            reason: header_str(entry, "reason").unwrap_or_default(),
            queue: header_str(entry, "queue").unwrap_or_default(),
            exchange: header_str(entry, "exchange").unwrap_or_default(),
            routing_keys: match entry.inner().get("routing-keys") {
                Some(AMQPValue::FieldArray(keys)) => keys
                    .as_slice()
                    .iter()
                    .filter_map(|k| match k {
                        AMQPValue::LongString(s) => {
                            Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                        }
                        AMQPValue::ShortString(s) => Some(s.to_string()),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            },
            count: match entry.inner().get("count") {
                Some(AMQPValue::LongLongInt(n)) => u64::try_from(*n).unwrap_or(0),
                Some(AMQPValue::LongInt(n)) => u64::try_from(*n).unwrap_or(0),
                Some(AMQPValue::LongUInt(n)) => (*n).into(),
                _ => 0,
            },
            time: match entry.inner().get("time") {
                Some(AMQPValue::Timestamp(secs)) => epoch_secs(*secs),
                _ => None,
            },
        }),
        // Without the array, the summary headers still say what happened first.
        None => header_str(headers, "x-first-death-reason").map(|reason| Death {
            reason,
            queue: header_str(headers, "x-first-death-queue").unwrap_or_default(),
            exchange: header_str(headers, "x-first-death-exchange").unwrap_or_default(),
            routing_keys: Vec::new(),
            count: 1,
            time: None,
        }),
    }
}

fn describe_death(death: &Death) -> String {
    match death.reason.as_str() {
        "delivery_limit" => format!(
            "delivery_limit: RabbitMQ dead-lettered it from {} after too many redeliveries (x-delivery-limit; a worker crashed or requeued it each time)",
            death.queue
        ),
        reason => format!("{reason}: RabbitMQ dead-lettered it from {}", death.queue),
    }
}

fn rfc3339_secs(secs: u64) -> String {
    epoch_secs(secs).map_or_else(
        || format!("{secs} (not a valid time)"),
        |at| humantime::format_rfc3339_seconds(at).to_string(),
    )
}

/// The last second RFC 3339 can write: 9999-12-31T23:59:59Z.
const LATEST_SECS: u64 = 253_402_300_799;

/// An AMQP timestamp (seconds since the epoch) as a time, or none when it is
/// past what RFC 3339 can write: a foreign message may carry any 64-bit value,
/// and adding it to the epoch, or printing it, would panic.
pub fn epoch_secs(secs: u64) -> Option<SystemTime> {
    (secs <= LATEST_SECS).then(|| UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookfleet_common::message::EventMeta;
    use lapin::types::FieldArray;

    fn job() -> BasicProperties {
        EventMeta {
            message_id: "01JOB".into(),
            source: "github".into(),
            event_type: "issues".into(),
            event_id: Some("d-1".into()),
            received_at: "2025-01-01T00:00:00Z".into(),
            content_type: Some("application/json".into()),
            traceparent: None,
            forwarded: Vec::new(),
            attempt: 3,
            replays: 1,
        }
        .to_properties()
    }

    fn with(properties: BasicProperties, extra: &[(&str, AMQPValue)]) -> BasicProperties {
        let mut headers = properties.headers().clone().unwrap_or_default();
        for (name, value) in extra {
            headers.insert((*name).into(), value.clone());
        }
        properties.with_headers(headers)
    }

    fn text(s: &str) -> AMQPValue {
        AMQPValue::LongString(s.into())
    }

    fn ours() -> BasicProperties {
        with(
            job(),
            &[
                (message::ERROR, text("ai_http_500: upstream said no")),
                (message::ERROR_CLASS, text("exhausted")),
                (message::STAGE, text("ai")),
                (message::FAILED_AT, text("2025-01-01T01:00:00.000Z")),
            ],
        )
    }

    fn x_death(reason: &str) -> AMQPValue {
        let mut entry = FieldTable::default();
        entry.insert("count".into(), AMQPValue::LongLongInt(1));
        entry.insert("reason".into(), text(reason));
        entry.insert("queue".into(), text("ns.jobs"));
        entry.insert("exchange".into(), text("ns.events"));
        entry.insert(
            "routing-keys".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![text("github.issues")])),
        );
        entry.insert("time".into(), AMQPValue::Timestamp(1_735_693_200));
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(entry)]))
    }

    #[test]
    fn our_headers_say_why_where_and_when() {
        let letter = Letter::read(&ours(), 12);
        assert_eq!(letter.message_id.as_deref(), Some("01JOB"));
        assert_eq!(letter.source.as_deref(), Some("github"));
        assert_eq!(letter.class, Class::Exhausted);
        assert_eq!(letter.reason(), "ai_http_500");
        assert_eq!(letter.stage.as_deref(), Some("ai"));
        assert_eq!(letter.attempts, Some(3));
        assert_eq!(letter.replays, 1);
        assert_eq!(
            letter.failed_at,
            Some(UNIX_EPOCH + Duration::from_secs(1_735_693_200))
        );
    }

    #[test]
    fn a_letter_rabbitmq_dead_lettered_is_read_from_x_death() {
        let letter = Letter::read(&with(job(), &[("x-death", x_death("delivery_limit"))]), 2);
        assert_eq!(letter.class, Class::DeliveryLimit);
        assert_eq!(letter.reason(), "delivery_limit");
        assert!(letter.error.contains("ns.jobs"), "{}", letter.error);
        assert_eq!(
            letter.failed_at,
            Some(UNIX_EPOCH + Duration::from_secs(1_735_693_200))
        );
        let death = letter.death.expect("x-death");
        assert_eq!(death.routing_keys, ["github.issues"]);
        assert_eq!(death.count, 1);
    }

    #[test]
    fn our_headers_win_over_an_x_death_left_by_a_retry_tier() {
        let letter = Letter::read(&with(ours(), &[("x-death", x_death("expired"))]), 2);
        assert_eq!(letter.class, Class::Exhausted);
        assert_eq!(letter.reason(), "ai_http_500");
    }

    #[test]
    fn a_letter_without_any_headers_is_still_shown() {
        let letter = Letter::read(&BasicProperties::default(), 0);
        assert_eq!(letter.class, Class::Unknown);
        assert_eq!(letter.reason(), "-");
        assert_eq!(letter.failed_at, None);
    }

    #[test]
    fn a_replay_is_a_fresh_attempt_that_remembers_its_last_error() {
        let original = with(ours(), &[("x-death", x_death("expired"))]);
        let letter = Letter::read(&original, 2);
        let replayed = for_replay(&original, &letter);
        let headers = replayed.headers().clone().expect("headers");
        assert_eq!(header_u32(&headers, message::ATTEMPT), Some(0));
        assert_eq!(header_u32(&headers, message::REPLAYS), Some(2));
        for gone in FAILURE_HEADERS.iter().chain(&["x-death"]) {
            assert!(!headers.contains_key(gone), "{gone} removed");
        }
        assert_eq!(
            header_str(&headers, LAST_ERROR).as_deref(),
            Some("exhausted: ai_http_500: upstream said no")
        );
        assert_eq!(replayed.message_id(), original.message_id());
        assert_eq!(
            header_str(&headers, message::ROUTING_KEY).as_deref(),
            Some("github.issues")
        );
    }

    #[test]
    fn a_requeued_letter_keeps_its_classification_without_x_death() {
        let original = with(
            job(),
            &[
                ("x-death", x_death("delivery_limit")),
                (DELIVERY_COUNT, AMQPValue::LongLongInt(4)),
            ],
        );
        let letter = Letter::read(&original, 2);
        let requeued = for_requeue(&original, &letter);
        let headers = requeued.headers().clone().expect("headers");
        assert!(!headers.contains_key(DELIVERY_COUNT));
        assert!(
            headers.contains_key("x-death"),
            "the broker's record is kept"
        );
        let mut without_x_death: BTreeMap<_, _> = headers.inner().clone();
        without_x_death.remove("x-death");
        let again = Letter::read(&requeued.clone().with_headers(without_x_death.into()), 2);
        assert_eq!(again.class, Class::DeliveryLimit);
        assert_eq!(again.reason(), "delivery_limit");
        assert_eq!(again.failed_at, letter.failed_at);
    }

    #[test]
    fn header_values_become_plain_json() {
        let json = value_json(&x_death("delivery_limit"));
        assert_eq!(json[0]["reason"], "delivery_limit");
        assert_eq!(json[0]["time"], "2025-01-01T01:00:00Z");
        assert_eq!(json[0]["routing-keys"][0], "github.issues");
    }
}
