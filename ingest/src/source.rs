//! A configured webhook source, compiled for the request path: its verifier, its
//! rate limiter, its IP allow-list, and how to find the event id and type.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use hookfleet_common::config::{FieldSource, SchemeKind, SourceConfig};
use hookfleet_common::signature::{SignatureError, Verifier};
use http::HeaderMap;
use ipnet::IpNet;

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
            verifier: Verifier::from_config(config)?,
            limiter,
            allowed: config.allowed_networks(),
            event_id: config.event_id_source(),
            event_type: config.event_type_source(),
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
    /// `Err(where)` when it has one and the request lacks it.
    pub fn event_id(
        &self,
        headers: &HeaderMap,
        json: Option<&serde_json::Value>,
    ) -> Result<Option<String>, String> {
        match &self.event_id {
            None => Ok(None),
            Some(field) => lookup(field, headers, json)
                .map(Some)
                .ok_or_else(|| describe(field)),
        }
    }

    /// The event type, `unknown` when absent.
    pub fn event_type(&self, headers: &HeaderMap, json: Option<&serde_json::Value>) -> String {
        self.event_type
            .as_ref()
            .and_then(|field| lookup(field, headers, json))
            .unwrap_or_else(|| "unknown".to_owned())
    }
}

fn lookup(
    field: &FieldSource,
    headers: &HeaderMap,
    json: Option<&serde_json::Value>,
) -> Option<String> {
    let value = match field {
        FieldSource::Header(name) => headers.get(name.as_str())?.to_str().ok()?.to_owned(),
        FieldSource::JsonPointer(pointer) => match json?.pointer(pointer)? {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => return None,
        },
    };
    let value = value.trim().to_owned();
    // Ids and types become Redis keys and routing keys: keep them short and sane.
    (!value.is_empty() && value.len() <= 200 && !value.chars().any(char::is_control))
        .then_some(value)
}

fn describe(field: &FieldSource) -> String {
    match field {
        FieldSource::Header(name) => format!("header {name}"),
        FieldSource::JsonPointer(pointer) => format!("JSON pointer {pointer}"),
    }
}
