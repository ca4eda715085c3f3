//! The job message: what ingest publishes and every later stage reads.
//!
//! The body is the webhook body exactly as received — never re-encoded — so a
//! worker, a dead-letter inspector or a replay sees the bytes the provider signed.
//! Everything else travels in AMQP properties and `hf-*` headers. Our counters never
//! use `x-` headers: RabbitMQ 4 ignores client-set `x-death`, and `x-` is the broker's.

use std::time::{SystemTime, UNIX_EPOCH};

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};

/// Header: the source name (`/hooks/{source}`).
pub const SOURCE: &str = "hf-source";
/// Header: the event type (from the scheme's default or the configured field).
pub const EVENT_TYPE: &str = "hf-event-type";
/// Header: the provider's event id, used for deduplication.
pub const EVENT_ID: &str = "hf-event-id";
/// Header: when ingest received the request (RFC 3339, UTC).
pub const RECEIVED_AT: &str = "hf-received-at";
/// Header: attempts made so far (0 when first published).
pub const ATTEMPT: &str = "hf-attempt";
/// Header: how many times an operator replayed this message from the DLQ.
pub const REPLAYS: &str = "hf-replays";
/// Header: the routing key the event was first published with.
pub const ROUTING_KEY: &str = "hf-routing-key";
/// Header: the request's `Content-Type` when it is too long for the AMQP
/// `content-type` property (a short string of 255 bytes); carried, not refused.
pub const CONTENT_TYPE: &str = "hf-content-type";
/// Header: W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
/// Prefix of forwarded provider headers (`hf-h-x-github-hook-id`).
pub const FORWARDED_PREFIX: &str = "hf-h-";
/// Dead-letter header: short reason.
pub const ERROR: &str = "hf-error";
/// Dead-letter header: `permanent`, `exhausted`, `poison` or `delivery-limit`.
pub const ERROR_CLASS: &str = "hf-error-class";
/// Dead-letter header: when the job failed for good (RFC 3339).
pub const FAILED_AT: &str = "hf-failed-at";
/// Dead-letter header: `decode`, `render`, `ai`, `output` or `sink`.
pub const STAGE: &str = "hf-stage";

/// What ingest knows about an event, besides its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMeta {
    /// The ULID ingest assigned; the message id everywhere after.
    pub message_id: String,
    /// The configured source name.
    pub source: String,
    /// The event type, `unknown` when the source has none.
    pub event_type: String,
    /// The provider's event id, when the source has one.
    pub event_id: Option<String>,
    /// When ingest received it (RFC 3339).
    pub received_at: String,
    /// `Content-Type` of the request.
    pub content_type: Option<String>,
    /// W3C `traceparent` of the request, if any.
    pub traceparent: Option<String>,
    /// Provider headers selected by `forward_headers`, lower-case names.
    pub forwarded: Vec<(String, String)>,
    /// Attempts made so far.
    pub attempt: u32,
    /// Replays from the DLQ so far.
    pub replays: u32,
}

impl EventMeta {
    /// The routing key on the events exchange: `{source}.{event_type}`.
    pub fn routing_key(&self) -> String {
        routing_key(&self.source, &self.event_type)
    }

    /// AMQP properties for publishing this event: persistent, with every header.
    pub fn to_properties(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
        put_str(&mut headers, SOURCE, &self.source);
        put_str(&mut headers, EVENT_TYPE, &self.event_type);
        if let Some(id) = &self.event_id {
            put_str(&mut headers, EVENT_ID, id);
        }
        put_str(&mut headers, RECEIVED_AT, &self.received_at);
        put_str(&mut headers, ROUTING_KEY, &self.routing_key());
        headers.insert(ATTEMPT.into(), AMQPValue::LongUInt(self.attempt));
        headers.insert(REPLAYS.into(), AMQPValue::LongUInt(self.replays));
        if let Some(tp) = &self.traceparent {
            put_str(&mut headers, TRACEPARENT, tp);
        }
        for (name, value) in &self.forwarded {
            put_str(&mut headers, &format!("{FORWARDED_PREFIX}{name}"), value);
        }
        let mut props = BasicProperties::default()
            .with_message_id(self.message_id.as_str().into())
            .with_timestamp(unix_seconds())
            // 2 = persistent: written to disk (quorum queues persist regardless, but a
            // classic queue bound later by an operator would not without it).
            .with_delivery_mode(2)
            .with_headers(headers);
        if let Some(ct) = &self.content_type {
            match ShortString::try_new(ct.as_str()) {
                Ok(short) => props = props.with_content_type(short),
                // Too long for the property: a long-string header holds it instead,
                // so a correctly signed request is never lost over its content type.
                Err(_) => {
                    let mut headers = props.headers().clone().unwrap_or_default();
                    put_str(&mut headers, CONTENT_TYPE, ct);
                    props = props.with_headers(headers);
                }
            }
        }
        props
    }

    /// Reads the metadata back from a delivery's properties. `None` when the
    /// message lacks a message id or source: not one of ours (poison).
    pub fn from_properties(props: &BasicProperties) -> Option<Self> {
        let message_id = props.message_id().as_ref()?.to_string();
        let headers = props.headers().as_ref();
        let get = |name: &str| headers.and_then(|h| header_str(h, name));
        let source = get(SOURCE)?;
        let forwarded = headers
            .map(|h| {
                h.inner()
                    .iter()
                    .filter_map(|(k, v)| {
                        let name = k.as_str().strip_prefix(FORWARDED_PREFIX)?;
                        Some((name.to_owned(), value_str(v)?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(Self {
            message_id,
            source,
            event_type: get(EVENT_TYPE).unwrap_or_else(|| "unknown".into()),
            event_id: get(EVENT_ID),
            received_at: get(RECEIVED_AT).unwrap_or_default(),
            content_type: props
                .content_type()
                .as_ref()
                .map(ToString::to_string)
                .or_else(|| get(CONTENT_TYPE)),
            traceparent: get(TRACEPARENT),
            forwarded,
            attempt: headers.and_then(|h| header_u32(h, ATTEMPT)).unwrap_or(0),
            replays: headers.and_then(|h| header_u32(h, REPLAYS)).unwrap_or(0),
        })
    }
}

/// `{source}.{event_type}`.
pub fn routing_key(source: &str, event_type: &str) -> String {
    // AMQP short strings hold 255 bytes; cut on a char boundary rather than fail.
    truncate(&format!("{source}.{event_type}"), 255).to_owned()
}

/// `text` cut to at most `limit` bytes, on a character boundary: for header
/// values, error details and stored summaries that must stay bounded.
pub fn truncate(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Sets a string header. A name over 255 bytes cannot be an AMQP table key and
/// is skipped (callers' names are constants or checked when the config loads).
pub fn put_str(headers: &mut FieldTable, name: &str, value: &str) {
    if let Ok(name) = ShortString::try_new(name) {
        headers.insert(name, AMQPValue::LongString(value.into()));
    }
}

/// A header as a string, whatever string or number type it was sent as.
pub fn header_str(headers: &FieldTable, name: &str) -> Option<String> {
    headers.inner().get(name).and_then(value_str)
}

/// A header as an unsigned number, whatever integer type it was sent as.
pub fn header_u32(headers: &FieldTable, name: &str) -> Option<u32> {
    match headers.inner().get(name)? {
        AMQPValue::ShortShortUInt(v) => Some((*v).into()),
        AMQPValue::ShortUInt(v) => Some((*v).into()),
        AMQPValue::LongUInt(v) => Some(*v),
        AMQPValue::ShortShortInt(v) => u32::try_from(*v).ok(),
        AMQPValue::ShortInt(v) => u32::try_from(*v).ok(),
        AMQPValue::LongInt(v) => u32::try_from(*v).ok(),
        AMQPValue::LongLongInt(v) => u32::try_from(*v).ok(),
        other => value_str(other)?.parse().ok(),
    }
}

fn value_str(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        AMQPValue::LongInt(v) => Some(v.to_string()),
        AMQPValue::LongUInt(v) => Some(v.to_string()),
        AMQPValue::LongLongInt(v) => Some(v.to_string()),
        _ => None,
    }
}

/// Now as RFC 3339 with milliseconds, UTC.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_survives_a_round_trip_through_properties() {
        let meta = EventMeta {
            message_id: ulid::Ulid::new().to_string(),
            source: "stripe".into(),
            event_type: "invoice.paid".into(),
            event_id: Some("evt_1".into()),
            received_at: now_rfc3339(),
            content_type: Some("application/json".into()),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            forwarded: vec![("x-github-hook-id".into(), "42".into())],
            attempt: 2,
            replays: 1,
        };
        let props = meta.to_properties();
        assert_eq!(props.delivery_mode(), &Some(2));
        assert_eq!(EventMeta::from_properties(&props), Some(meta));
    }

    #[test]
    fn a_content_type_too_long_for_the_property_travels_in_a_header() {
        let meta = EventMeta {
            message_id: ulid::Ulid::new().to_string(),
            source: "std".into(),
            event_type: "unknown".into(),
            event_id: None,
            received_at: now_rfc3339(),
            content_type: Some(format!("application/json; x={}", "a".repeat(300))),
            traceparent: None,
            forwarded: vec![("x-long".into(), "v".repeat(1000))],
            attempt: 0,
            replays: 0,
        };
        let props = meta.to_properties();
        assert_eq!(props.content_type(), &None);
        assert_eq!(EventMeta::from_properties(&props), Some(meta));
    }

    #[test]
    fn a_header_name_too_long_for_a_table_key_is_skipped_not_a_panic() {
        let mut headers = FieldTable::default();
        put_str(&mut headers, &"n".repeat(256), "v");
        assert!(headers.inner().is_empty());
    }

    #[test]
    fn a_message_without_our_headers_is_not_ours() {
        assert_eq!(
            EventMeta::from_properties(&BasicProperties::default()),
            None
        );
    }

    #[test]
    fn routing_keys_fit_in_a_short_string() {
        let long = "é".repeat(300);
        let key = routing_key("src", &long);
        assert!(key.len() <= 255 && key.starts_with("src."));
    }
}
