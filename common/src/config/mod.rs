//! Configuration: one `hookfleet.toml` read by every hookfleet binary.
//!
//! Layers, later wins: built-in defaults (the `Default` impls below, which double as
//! the reference) → the file (`--config` or `HOOKFLEET_CONFIG`) → environment
//! variables `HOOKFLEET__SECTION__KEY` (e.g. `HOOKFLEET__AMQP__URL`).
//!
//! Here live only the sections both services read (`namespace`, `[amqp]`,
//! `[redis]`, `[status]`, `[telemetry]`), secrets, and the loader. Each service
//! owns its own section and its `Settings` (`hookfleet_ingest::config`,
//! `hookfleet_worker::config`): it reads the shared sections and its own, skips
//! the other service's (so their secrets need not be set), and validates what it
//! read at start, naming the offending field.

mod secret;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

pub use secret::Secret;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or environment could not be read or parsed into the settings.
    #[error("invalid configuration: {0}")]
    Load(#[from] config::ConfigError),
    /// A value parsed but is not acceptable.
    #[error("invalid configuration: `{field}`: {reason}")]
    Invalid {
        /// The offending field, as a dotted path (`ingest.sources.github.secrets`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ConfigError {
    /// A value that parsed but is not acceptable, naming its field.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// What to do when a dependency (Redis) cannot be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Carry on without it, and count that we did.
    Open,
    /// Refuse (ingest: 503) or wait (worker limiter) until it returns.
    Closed,
}

/// RabbitMQ settings (`[amqp]`).
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpConfig {
    /// AMQP URI. Credentials in it are redacted in `Debug`; in Kubernetes set it
    /// from a Secret through `HOOKFLEET__AMQP__URL`. Ignored when `urls` is set.
    pub url: String,
    /// The nodes of a RabbitMQ cluster, tried in order: a service connects to the
    /// first that answers and, when that connection is lost, to the next
    /// (docs/cluster.md). Empty (the default): `url` alone. From the environment,
    /// comma-separated (`HOOKFLEET__AMQP__URLS`).
    pub urls: Vec<String>,
    /// `x-quorum-initial-group-size` of every queue: how many nodes hold a
    /// replica of it. Unset: the number of `urls` when there are several, else
    /// the broker's default (all nodes).
    pub quorum_group_size: Option<u32>,
    /// How long to wait for the TCP + AMQP handshake (`5s`).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a publish waits for the broker's confirm before it counts as
    /// failed (`5s`); ingest then answers 503.
    #[serde(with = "humantime_serde")]
    pub confirm_timeout: Duration,
    /// Confirm-mode channels a publisher spreads its publishes over (4).
    pub publisher_channels: usize,
    /// Quorum-queue `x-delivery-limit` on the jobs queue: after this many
    /// redeliveries (crash loops) RabbitMQ dead-letters the message itself (10).
    pub delivery_limit: u32,
    /// Retry delay tiers, one quorum queue each (`["1s", "10s", "1m", "10m"]`).
    #[serde(with = "humantime_serde_vec")]
    pub retry_tiers: Vec<Duration>,
    /// Optional `x-max-length` of the jobs queue; when full, publishes are
    /// rejected (`reject-publish`) and ingest answers 503 instead of dropping.
    pub jobs_max_length: Option<u64>,
    /// Optional `x-expires` on every queue: for tests and demos, so abandoned
    /// namespaces clean themselves up. Never set it in production.
    #[serde(with = "humantime_serde")]
    pub queue_expires: Option<Duration>,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            urls: Vec::new(),
            quorum_group_size: None,
            connect_timeout: Duration::from_secs(5),
            confirm_timeout: Duration::from_secs(5),
            publisher_channels: 4,
            delivery_limit: 10,
            retry_tiers: [1, 10, 60, 600].map(Duration::from_secs).to_vec(),
            jobs_max_length: None,
            queue_expires: None,
        }
    }
}

impl AmqpConfig {
    /// The broker URLs to try, in order: `urls`, or `url` when `urls` is empty.
    pub fn nodes(&self) -> Vec<&str> {
        if self.urls.is_empty() {
            vec![self.url.as_str()]
        } else {
            self.urls.iter().map(String::as_str).collect()
        }
    }

    /// The replica count to declare queues with, if any (see `quorum_group_size`).
    pub fn initial_group_size(&self) -> Option<u32> {
        self.quorum_group_size.or_else(|| {
            (self.urls.len() > 1).then(|| u32::try_from(self.urls.len()).unwrap_or(u32::MAX))
        })
    }
}

impl std::fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpConfig")
            .field("url", &redact_url(&self.url))
            .field(
                "urls",
                &self.urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>(),
            )
            .field("quorum_group_size", &self.quorum_group_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("confirm_timeout", &self.confirm_timeout)
            .field("publisher_channels", &self.publisher_channels)
            .field("delivery_limit", &self.delivery_limit)
            .field("retry_tiers", &self.retry_tiers)
            .field("jobs_max_length", &self.jobs_max_length)
            .field("queue_expires", &self.queue_expires)
            .finish()
    }
}

/// Redis settings (`[redis]`).
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Redis URL. A password in it is redacted in `Debug`.
    pub url: String,
    /// Connections in the pool (16).
    pub pool_size: usize,
    /// Timeout of one Redis operation, including taking a connection (`1s`).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            pool_size: 16,
            timeout: Duration::from_secs(1),
        }
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Event status (`[status]`): what became of each accepted event, kept in Redis
/// (`{ns}:status:{message_id}`) and served by ingest at `GET /events/{id}`.
/// Read by both services, so they agree on it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatusConfig {
    /// Whether ingest and workers record status and ingest serves it (`true`).
    /// Off saves Redis work (no round trips: the writes ride on others).
    pub enabled: bool,
    /// How long a status is kept after its last change (`7d`); then
    /// `GET /events/{id}` answers 404.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// The most of each pipeline's output a `done` status keeps, in bytes
    /// (2048): the parsed JSON if it fits, else the text cut to this length.
    pub max_output_bytes: usize,
}

impl Default for StatusConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl: Duration::from_secs(7 * 24 * 3600),
            max_output_bytes: 2048,
        }
    }
}

/// Log output (`[telemetry]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `json` (one object per line, for log shippers) or `pretty` (humans).
    pub log_format: LogFormat,
    /// A `tracing` filter (`info`, `hookfleet_worker=debug,info`); `RUST_LOG` wins.
    pub log_level: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Json,
            log_level: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON lines.
    Json,
    /// Human-readable.
    Pretty,
}

/// Where settings come from; every field optional.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// The config file. Without it, `HOOKFLEET_CONFIG` names one, if set.
    pub file: Option<PathBuf>,
    /// TOML text layered where the file would be (tests).
    pub toml: Option<String>,
    /// Environment variables to use instead of the process environment (tests).
    pub env: Option<HashMap<String, String>>,
}

/// Checks `namespace`: it prefixes every queue, exchange and Redis key.
pub fn validate_namespace(ns: &str) -> Result<(), ConfigError> {
    let valid = !ns.is_empty()
        && ns.len() <= 100
        && ns
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    match valid {
        true => Ok(()),
        false => Err(ConfigError::invalid(
            "namespace",
            "must be 1-100 characters of [A-Za-z0-9_-]",
        )),
    }
}

impl AmqpConfig {
    /// Checks `[amqp]`, naming the offending field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let amqp_scheme = |u: &str| u.starts_with("amqp://") || u.starts_with("amqps://");
        if !amqp_scheme(&self.url) {
            return Err(ConfigError::invalid(
                "amqp.url",
                "must start with amqp:// or amqps://",
            ));
        }
        if let Some(i) = self.urls.iter().position(|u| !amqp_scheme(u)) {
            return Err(ConfigError::invalid(
                format!("amqp.urls[{i}]"),
                "must start with amqp:// or amqps://",
            ));
        }
        if self.quorum_group_size == Some(0) {
            return Err(ConfigError::invalid(
                "amqp.quorum_group_size",
                "must be at least 1",
            ));
        }
        if self.publisher_channels == 0 {
            return Err(ConfigError::invalid(
                "amqp.publisher_channels",
                "must be at least 1",
            ));
        }
        if self.retry_tiers.is_empty() {
            return Err(ConfigError::invalid(
                "amqp.retry_tiers",
                "at least one tier is required",
            ));
        }
        if self.retry_tiers.iter().any(|t| t.as_millis() == 0) {
            return Err(ConfigError::invalid(
                "amqp.retry_tiers",
                "every tier must be at least 1ms",
            ));
        }
        Ok(())
    }
}

impl RedisConfig {
    /// Checks `[redis]`, naming the offending field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.url.starts_with("redis://") && !self.url.starts_with("rediss://") {
            return Err(ConfigError::invalid(
                "redis.url",
                "must start with redis:// or rediss://",
            ));
        }
        if self.pool_size == 0 {
            return Err(ConfigError::invalid(
                "redis.pool_size",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl StatusConfig {
    /// Checks `[status]`, naming the offending field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.ttl.as_millis() == 0 {
            return Err(ConfigError::invalid("status.ttl", "must be at least 1ms"));
        }
        Ok(())
    }
}

/// Shared keys whose environment value is a comma-separated list
/// (`HOOKFLEET__AMQP__RETRY_TIERS=1s,10s`); a service adds its own to [`read`].
const SHARED_LIST_KEYS: &[&str] = &["amqp.retry_tiers", "amqp.urls"];

/// Reads `T` (a service's settings, or a part of them) from the layered sources:
/// the file, then the environment. `T` decides which keys are read: secrets
/// are resolved only in the parts it holds. `list_keys` are the service's own
/// keys whose environment value is a comma-separated list.
pub fn read<T: serde::de::DeserializeOwned>(
    sources: Sources,
    list_keys: &[&str],
) -> Result<T, ConfigError> {
    let file = sources
        .file
        .or_else(|| std::env::var_os("HOOKFLEET_CONFIG").map(PathBuf::from));
    let mut builder = config::Config::builder();
    if let Some(path) = file {
        builder = builder.add_source(
            config::File::from(path)
                .format(config::FileFormat::Toml)
                .required(true),
        );
    }
    if let Some(text) = sources.toml {
        builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
    }
    let env = config::Environment::with_prefix("HOOKFLEET")
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
        .list_separator(",");
    let env = SHARED_LIST_KEYS
        .iter()
        .chain(list_keys)
        .fold(env, |env, key| env.with_list_parse_key(key))
        .source(sources.env);
    builder
        .add_source(env)
        .build()
        .and_then(config::Config::try_deserialize)
        .map_err(|e| ConfigError::Load(dotted_key(e)))
}

/// The `config` crate writes a field after a list index without its dot
/// (`worker.pipelines[2]sinks[0]`); errors name it `worker.pipelines[2].sinks[0]`.
fn dotted_key(error: config::ConfigError) -> config::ConfigError {
    use config::ConfigError as E;
    match error {
        E::Type {
            origin,
            unexpected,
            expected,
            key,
        } => E::Type {
            origin,
            unexpected,
            expected,
            key: key.map(|k| dotted(&k)),
        },
        E::At { error, origin, key } => E::At {
            error,
            origin,
            key: key.map(|k| dotted(&k)),
        },
        E::NotFound(key) => E::NotFound(dotted(&key)),
        other => other,
    }
}

/// `a[2]b[0]` → `a[2].b[0]`.
fn dotted(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    let mut after_index = false;
    for c in key.chars() {
        if after_index && c != '.' && c != '[' {
            out.push('.');
        }
        after_index = c == ']';
        out.push(c);
    }
    out
}

/// `user:password@` in a URL becomes `user:***@`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// `humantime_serde` for a list of durations, accepting a TOML array or, from the
/// environment, a comma-separated string.
mod humantime_serde_vec {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "humantime_serde")] Duration);
        let items = Vec::<Wrapped>::deserialize(d)?;
        Ok(items.into_iter().map(|w| w.0).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_after_a_list_index_gets_its_dot() {
        assert_eq!(dotted("a[2]b[0]c.d[1][3]"), "a[2].b[0].c.d[1][3]");
    }

    #[test]
    fn a_url_password_is_redacted() {
        assert_eq!(
            redact_url("amqp://user:hunter2@rabbit:5672/%2f"),
            "amqp://user:***@rabbit:5672/%2f"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
