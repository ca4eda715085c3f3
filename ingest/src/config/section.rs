//! The `[ingest]` section: the HTTP listener and one table per webhook source.
//!
//! Each source names its signature scheme, its secrets (several during a rotation),
//! and where the event id and event type come from. Scheme defaults follow the
//! providers' documentation so a Stripe or GitHub source needs only its secret.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use hookfleet_common::config::{ConfigError, FailMode, Secret};
use hookfleet_common::signature::{HmacParams, SchemeConfig, SchemeKind};

/// The ingest service's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Address the HTTP server binds (`0.0.0.0:8080`).
    pub listen: SocketAddr,
    /// How long a seen event id is remembered for deduplication (`24h`).
    #[serde(with = "humantime_serde")]
    pub dedup_ttl: Duration,
    /// What to do when Redis cannot be asked about duplicates: `open` accepts the
    /// event (counted as `dedup_unavailable`), `closed` answers 503.
    pub redis_failure: FailMode,
    /// The `Retry-After` sent with a 503 when the broker is unavailable (`5s`).
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// After SIGTERM, how long readiness answers 503 while requests are still
    /// served, so the load balancer stops routing here before the listener closes
    /// (`5s`; Kubernetes needs a few seconds to update its endpoints).
    #[serde(with = "humantime_serde")]
    pub drain_delay: Duration,
    /// Then, how long in-flight requests may take to finish (`20s`).
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// The webhook sources, by the name used in `POST /hooks/{source}`.
    pub sources: BTreeMap<String, SourceConfig>,
    /// Address of the admin listener: `/metrics`, `/healthz`, `/readyz` and, with
    /// `status_listener = "admin"`, the status API (`0.0.0.0:9091`). Keep this port
    /// off the internet; the public listener serves only `/hooks/*`, `/healthz` and
    /// `/readyz`.
    pub admin_listen: SocketAddr,
    /// The bearer token of the status API (`GET /events/…`). Unset (the default)
    /// disables the API: 404 on both listeners.
    pub status_token: Option<Secret>,
    /// Which listener serves the status API: `admin` (default) or `public`.
    pub status_listener: Listener,
    /// How long a client may take to send a request's headers; past it the
    /// connection is closed (`10s`).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long a client may take to send a request body once its headers arrived;
    /// past it the answer is 408 (`30s`).
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Largest request head (request line and headers) in bytes; larger ones are
    /// answered 431 (`65536`, at least 8192).
    pub max_header_bytes: usize,
    /// Most `/hooks/*` requests handled at once; above it the answer is 503 with
    /// `Retry-After` (`512`).
    pub max_in_flight: usize,
    /// Proxies (CIDR ranges or addresses) whose forwarding header names the
    /// client; empty (the default) trusts none, so the client is the TCP peer.
    pub trusted_proxies: Vec<String>,
    /// The forwarding header trusted proxies write: `x-forwarded-for` (default)
    /// or `forwarded` (RFC 7239). Only this one is read.
    pub client_ip_header: ClientIpHeader,
}

/// One of ingest's two listeners.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Listener {
    /// `ingest.listen`, the one facing senders.
    Public,
    /// `ingest.admin_listen`.
    #[default]
    Admin,
}

/// The header a trusted proxy names the client in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientIpHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            dedup_ttl: Duration::from_secs(24 * 3600),
            redis_failure: FailMode::Open,
            retry_after: Duration::from_secs(5),
            drain_delay: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(20),
            sources: BTreeMap::new(),
            admin_listen: SocketAddr::from(([0, 0, 0, 0], 9091)),
            status_token: None,
            status_listener: Listener::Admin,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            max_in_flight: 512,
            trusted_proxies: Vec::new(),
            client_ip_header: ClientIpHeader::XForwardedFor,
        }
    }
}

impl IngestConfig {
    /// The parsed `trusted_proxies` ranges (validated at load, so none are dropped).
    pub fn trusted_networks(&self) -> Vec<ipnet::IpNet> {
        self.trusted_proxies
            .iter()
            .filter_map(|c| parse_ip_range(c))
            .collect()
    }

    /// Checks the listener settings (sources are checked one by one).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, reason: &str| ConfigError::Invalid {
            field: format!("ingest.{field}"),
            reason: reason.to_owned(),
        };
        if self.admin_listen == self.listen && self.listen.port() != 0 {
            return Err(invalid("admin_listen", "must differ from ingest.listen"));
        }
        if self.header_read_timeout.is_zero() || self.body_read_timeout.is_zero() {
            return Err(invalid(
                "header_read_timeout",
                "read timeouts must be greater than 0",
            ));
        }
        // hyper refuses a read buffer under 8 KiB.
        if self.max_header_bytes < 8192 {
            return Err(invalid("max_header_bytes", "must be at least 8192"));
        }
        if self.max_in_flight == 0 {
            return Err(invalid("max_in_flight", "must be at least 1"));
        }
        for (i, cidr) in self.trusted_proxies.iter().enumerate() {
            if parse_ip_range(cidr).is_none() {
                return Err(ConfigError::Invalid {
                    field: format!("ingest.trusted_proxies[{i}]"),
                    reason: format!("{cidr:?} is not an IP address or CIDR range"),
                });
            }
        }
        Ok(())
    }
}

/// Where a value (event id, event type) is read from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum FieldSource {
    /// A request header, by name (case-insensitive).
    Header(String),
    /// A JSON pointer into the body (RFC 6901), e.g. `/data/id`.
    JsonPointer(String),
}

/// A per-source request rate limit, kept per ingest replica.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Requests allowed in a burst above the sustained rate.
    pub burst: u32,
}

/// One webhook source (`[ingest.sources.NAME]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The signature scheme.
    pub scheme: SchemeKind,
    /// Active signing secrets; any one of them verifies (several during rotation).
    pub secrets: Vec<Secret>,
    /// Parameters of the generic `hmac` scheme (required when `scheme = "hmac"`).
    #[serde(default)]
    pub hmac: Option<HmacParams>,
    /// How far a signed timestamp may be from now, either way (`5m`).
    #[serde(default = "default_tolerance", with = "humantime_serde")]
    pub tolerance: Duration,
    /// Largest accepted body in bytes (1 MiB); larger bodies get 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Where the provider's event id comes from (deduplication). Defaults per scheme.
    #[serde(default)]
    pub event_id: Option<FieldSource>,
    /// Where the event type comes from (routing key). Defaults per scheme.
    #[serde(default)]
    pub event_type: Option<FieldSource>,
    /// Whether the body must be JSON (400 otherwise). Default true.
    #[serde(default = "default_true")]
    pub require_json: bool,
    /// Client IP ranges allowed to post (CIDR); empty allows all.
    #[serde(default)]
    pub allow_ips: Vec<String>,
    /// Optional request rate limit (429 with `Retry-After` above it).
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// Request headers copied onto the message as `hf-h-{name}` headers.
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// Also deduplicate on the SHA-256 of the body (per source, for `dedup_ttl`):
    /// replay protection for schemes that sign no timestamp, whose delivery-id
    /// header an attacker can change. Default: true for `github`, `shopify` and
    /// `hmac`, false for the others. A sender that re-sends identical bytes as a
    /// new event is then taken for a duplicate.
    #[serde(default)]
    pub dedup_body: Option<bool>,
}

/// The most `forward_headers` a source may list: with each value bounded by ingest,
/// a message's headers stay far below RabbitMQ's 128 KiB frame.
pub const MAX_FORWARDED_HEADERS: usize = 16;

/// The longest `forward_headers` name: `hf-h-{name}` must fit an AMQP short string.
pub const MAX_FORWARDED_NAME: usize = 200;

fn default_tolerance() -> Duration {
    Duration::from_secs(300)
}
fn default_max_body() -> usize {
    1024 * 1024
}
fn default_true() -> bool {
    true
}

impl SourceConfig {
    /// What the source's signature verifier is built from.
    pub fn scheme_config(&self) -> SchemeConfig {
        SchemeConfig {
            scheme: self.scheme,
            secrets: self.secrets.clone(),
            hmac: self.hmac.clone(),
            tolerance: self.tolerance,
        }
    }

    /// Where the event id comes from: configured, or the scheme's provider default.
    pub fn event_id_source(&self) -> Option<FieldSource> {
        self.event_id.clone().or_else(|| match self.scheme {
            SchemeKind::Stripe => Some(FieldSource::JsonPointer("/id".into())),
            SchemeKind::Github => Some(FieldSource::Header("x-github-delivery".into())),
            SchemeKind::Shopify => Some(FieldSource::Header("x-shopify-webhook-id".into())),
            SchemeKind::Slack => Some(FieldSource::JsonPointer("/event_id".into())),
            SchemeKind::Standard => Some(FieldSource::Header("webhook-id".into())),
            SchemeKind::Hmac => None,
        })
    }

    /// Whether the body's hash is a deduplication key too: configured, or true for
    /// the schemes that sign no timestamp.
    pub fn dedups_body(&self) -> bool {
        self.dedup_body.unwrap_or(matches!(
            self.scheme,
            SchemeKind::Github | SchemeKind::Shopify | SchemeKind::Hmac
        ))
    }

    /// Where the event type comes from: configured, or the scheme's provider default.
    pub fn event_type_source(&self) -> Option<FieldSource> {
        self.event_type.clone().or_else(|| match self.scheme {
            SchemeKind::Stripe | SchemeKind::Standard => {
                Some(FieldSource::JsonPointer("/type".into()))
            }
            SchemeKind::Github => Some(FieldSource::Header("x-github-event".into())),
            SchemeKind::Shopify => Some(FieldSource::Header("x-shopify-topic".into())),
            SchemeKind::Slack => Some(FieldSource::JsonPointer("/event/type".into())),
            SchemeKind::Hmac => None,
        })
    }

    /// The parsed `allow_ips` ranges (validated at load, so none are dropped).
    pub fn allowed_networks(&self) -> Vec<ipnet::IpNet> {
        self.allow_ips
            .iter()
            .filter_map(|c| parse_ip_range(c))
            .collect()
    }

    /// Checks one source, naming the offending field under `field`.
    pub(super) fn validate(&self, field: &str) -> Result<(), ConfigError> {
        let invalid = |suffix: &str, reason: String| ConfigError::Invalid {
            field: format!("{field}.{suffix}"),
            reason,
        };
        if self.secrets.is_empty() {
            return Err(invalid("secrets", "at least one secret is required".into()));
        }
        match (self.scheme, &self.hmac) {
            (SchemeKind::Hmac, None) => {
                return Err(invalid("hmac", "required when scheme = \"hmac\"".into()));
            }
            (SchemeKind::Hmac, Some(p)) if p.header.trim().is_empty() => {
                return Err(invalid("hmac.header", "must not be empty".into()));
            }
            (SchemeKind::Hmac, Some(_)) | (_, None) => {}
            (_, Some(_)) => {
                return Err(invalid("hmac", "only valid with scheme = \"hmac\"".into()));
            }
        }
        self.validate_reading(field)?;
        self.validate_forwarding(field)
    }

    /// The body limit, window, pointers and rate limit.
    fn validate_reading(&self, field: &str) -> Result<(), ConfigError> {
        let invalid = |suffix: &str, reason: String| ConfigError::Invalid {
            field: format!("{field}.{suffix}"),
            reason,
        };
        if self.max_body_bytes == 0 {
            return Err(invalid("max_body_bytes", "must be greater than 0".into()));
        }
        if self.tolerance.is_zero() {
            return Err(invalid("tolerance", "must be greater than 0".into()));
        }
        for (i, pointer) in [&self.event_id, &self.event_type].into_iter().enumerate() {
            if let Some(FieldSource::JsonPointer(p)) = pointer
                && !(p.is_empty() || p.starts_with('/'))
            {
                let name = if i == 0 { "event_id" } else { "event_type" };
                return Err(invalid(
                    name,
                    format!("JSON pointer {p:?} must start with '/'"),
                ));
            }
        }
        if let Some(limit) = self.rate_limit
            && (limit.per_second == 0 || limit.burst == 0)
        {
            return Err(invalid(
                "rate_limit",
                "per_second and burst must be > 0".into(),
            ));
        }
        Ok(())
    }

    /// The forwarded headers (they become AMQP table keys) and the allowed ranges.
    fn validate_forwarding(&self, field: &str) -> Result<(), ConfigError> {
        let invalid = |suffix: &str, reason: String| ConfigError::Invalid {
            field: format!("{field}.{suffix}"),
            reason,
        };
        if self.forward_headers.len() > MAX_FORWARDED_HEADERS {
            return Err(invalid(
                "forward_headers",
                format!("at most {MAX_FORWARDED_HEADERS} headers"),
            ));
        }
        for (i, name) in self.forward_headers.iter().enumerate() {
            // `hf-h-{name}` is an AMQP table key: a short string of 255 bytes.
            if name.is_empty()
                || name.len() > MAX_FORWARDED_NAME
                || http::HeaderName::from_bytes(name.as_bytes()).is_err()
            {
                return Err(invalid(
                    &format!("forward_headers[{i}]"),
                    format!("{name:?} is not a header name of at most {MAX_FORWARDED_NAME} bytes"),
                ));
            }
        }
        for (i, cidr) in self.allow_ips.iter().enumerate() {
            if parse_ip_range(cidr).is_none() {
                return Err(invalid(
                    &format!("allow_ips[{i}]"),
                    format!("{cidr:?} is not an IP address or CIDR range"),
                ));
            }
        }
        Ok(())
    }
}

/// A CIDR range, or a single address taken as its own /32 or /128.
fn parse_ip_range(text: &str) -> Option<ipnet::IpNet> {
    text.parse::<ipnet::IpNet>().ok().or_else(|| {
        text.parse::<std::net::IpAddr>()
            .ok()
            .map(ipnet::IpNet::from)
    })
}
