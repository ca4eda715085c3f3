//! A configured webhook source, compiled for the request path: its verifier, its
//! rate limiter, its IP allow-list, and how to find the event id and type.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use crate::config::{FieldSource, SourceConfig};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use hookfleet_common::signature::SchemeKind;
use hookfleet_common::signature::{SignatureError, Verifier, standard};
use http::HeaderMap;
use ipnet::IpNet;

/// The longest event id accepted, in bytes: it becomes part of a Redis key and
/// an AMQP header. Longer ids are refused (400) rather than cut, since two ids
/// sharing a prefix are different events.
pub const MAX_EVENT_ID_BYTES: usize = 256;

/// Why a request's event id cannot be used (all answered 400).
#[derive(Debug, thiserror::Error)]
pub enum EventIdError {
    /// The source expects an id and the request has none there.
    #[error("event id not found ({0})")]
    Missing(String),
    /// The id is longer than [`MAX_EVENT_ID_BYTES`].
    #[error("event id ({0}) is longer than the limit of {MAX_EVENT_ID_BYTES} bytes")]
    TooLong(String),
    /// The id is not text, or holds control characters.
    #[error("event id ({0}) must be visible text without control characters")]
    Invalid(String),
}

/// One source, ready to check requests.
pub struct Source {
    /// The name in `/hooks/{name}`.
    pub name: String,
    /// The source's settings.
    pub config: SourceConfig,
    /// Its signature verifier (secrets decoded once, at start).
    pub verifier: Verifier,
    limiter: Option<DefaultDirectRateLimiter>,
    allowed: Vec<IpNet>,
    event_id: Option<FieldSource>,
    event_type: Option<FieldSource>,
    /// Standard Webhooks' default id: `webhook-id`, or `svix-id` for a request
    /// signed with Svix's header names (the same header the signature covers).
    svix_names: bool,
}

impl Source {
    /// Compiles a source; fails for a secret that cannot be decoded.
    pub fn build(name: &str, config: &SourceConfig) -> Result<Self, SignatureError> {
        let limiter = config.rate_limit.and_then(|limit| {
            let rate = NonZeroU32::new(limit.per_second)?;
            let burst = NonZeroU32::new(limit.burst)?;
            Some(RateLimiter::direct(
                Quota::per_second(rate).allow_burst(burst),
            ))
        });
        Ok(Self {
            name: name.to_owned(),
            verifier: Verifier::new(&config.scheme_config())?,
            limiter,
            allowed: config.allowed_networks(),
            event_id: config.event_id_source(),
            event_type: config.event_type_source(),
            svix_names: config.scheme == SchemeKind::Standard && config.event_id.is_none(),
            config: config.clone(),
        })
    }

    /// Whether `ip` may post to this source.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allowed.is_empty() || self.allowed.iter().any(|net| net.contains(&ip))
    }

    /// `Err(wait)` when the source's rate limit is exceeded.
    pub fn check_rate(&self) -> Result<(), Duration> {
        match &self.limiter {
            None => Ok(()),
            Some(limiter) => limiter
                .check()
                .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now())),
        }
    }

    /// Whether the body is needed as JSON (required, or a field lives in it).
    pub fn needs_json(&self) -> bool {
        self.config.require_json
            || self.config.scheme == SchemeKind::Slack
            || matches!(self.event_id, Some(FieldSource::JsonPointer(_)))
            || matches!(self.event_type, Some(FieldSource::JsonPointer(_)))
    }

    /// The provider's event id: `Ok(None)` when the source has none configured,
    /// an error naming where it was looked for when it is absent or unusable.
    pub fn event_id(
        &self,
        headers: &HeaderMap,
        json: Option<&serde_json::Value>,
    ) -> Result<Option<String>, EventIdError> {
        let svix;
        let field = match &self.event_id {
            None => return Ok(None),
            Some(_) if self.svix_names => {
                svix = FieldSource::Header(standard::header_names(headers)[0].to_owned());
                &svix
            }
            Some(field) => field,
        };
        let value = match read(field, headers, json) {
            Err(()) => return Err(EventIdError::Invalid(describe(field))),
            Ok(None) => return Err(EventIdError::Missing(describe(field))),
            Ok(Some(value)) => value.trim().to_owned(),
        };
        if value.is_empty() {
            Err(EventIdError::Missing(describe(field)))
        } else if value.len() > MAX_EVENT_ID_BYTES {
            Err(EventIdError::TooLong(describe(field)))
        } else if value.chars().any(char::is_control) {
            Err(EventIdError::Invalid(describe(field)))
        } else {
            Ok(Some(value))
        }
    }

    /// The event type, `unknown` when absent.
    pub fn event_type(&self, headers: &HeaderMap, json: Option<&serde_json::Value>) -> String {
        self.event_type
            .as_ref()
            .and_then(|field| read(field, headers, json).ok().flatten())
            .map(|value| value.trim().to_owned())
            // The type becomes a routing key: keep it short and sane.
            .filter(|value| {
                !value.is_empty() && value.len() <= 200 && !value.chars().any(char::is_control)
            })
            .unwrap_or_else(|| "unknown".to_owned())
    }
}

/// The raw value of `field`: `Ok(None)` when absent, `Err` for a header that is
/// not visible ASCII.
fn read(
    field: &FieldSource,
    headers: &HeaderMap,
    json: Option<&serde_json::Value>,
) -> Result<Option<String>, ()> {
    Ok(match field {
        FieldSource::Header(name) => match headers.get(name.as_str()) {
            None => None,
            Some(value) => Some(value.to_str().map_err(drop)?.to_owned()),
        },
        FieldSource::JsonPointer(pointer) => match json.and_then(|j| j.pointer(pointer)) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        },
    })
}

fn describe(field: &FieldSource) -> String {
    match field {
        FieldSource::Header(name) => format!("header {name}"),
        FieldSource::JsonPointer(pointer) => format!("JSON pointer {pointer}"),
    }
}
