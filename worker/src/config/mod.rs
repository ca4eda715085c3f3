//! The worker's settings: the sections shared with ingest (`namespace`,
//! `[amqp]`, `[redis]`, `[status]`, `[telemetry]`) and its own `[worker]`.
//!
//! The file is the one every hookfleet binary reads. `[ingest]` is skipped
//! unread, so the worker needs none of ingest's secrets, and an invalid
//! `[worker]` fails the worker at start naming the field — never ingest.

mod auth;
mod console;
mod http;
mod limits;
mod pipelines;
mod section;

use std::path::Path;

use hookfleet_common::config::{
    self, AmqpConfig, ConfigError, RedisConfig, Sources, StatusConfig, TelemetryConfig,
};
use serde::Deserialize;
use serde::de::IgnoredAny;

pub use auth::{ClientAuth, JwtAlgorithm, JwtAuth, OAuth2ClientCredentials, TlsConfig};
pub use console::ConsoleConfig;
pub use http::{EnrichStepConfig, HttpAuth, HttpSinkConfig, OutboundConfig};
pub use limits::{CacheConfig, CacheSettings, LimitsConfig, ModelLimits, cacheable};
pub use pipelines::{
    FallbackConfig, PipelineConfig, ProviderConfig, ProviderKind, ResponseFormat, SinkConfig,
    UndefinedMode, UnmatchedPolicy,
};
pub use section::WorkerConfig;

/// Everything the worker reads from `hookfleet.toml` and `HOOKFLEET__…`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Prefix of every exchange, queue and Redis key (`hookfleet`).
    pub namespace: String,
    /// The RabbitMQ connection and topology.
    pub amqp: AmqpConfig,
    /// The Redis connection (limiter, cache, markers, event status).
    pub redis: RedisConfig,
    /// Event status, written as jobs progress.
    pub status: StatusConfig,
    /// Logging.
    pub telemetry: TelemetryConfig,
    /// The worker fleet.
    pub worker: WorkerConfig,
    /// Ingest's section, skipped: not the worker's to read or check.
    ingest: Option<IgnoredAny>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespace: "hookfleet".into(),
            amqp: AmqpConfig::default(),
            redis: RedisConfig::default(),
            status: StatusConfig::default(),
            telemetry: TelemetryConfig::default(),
            worker: WorkerConfig::default(),
            ingest: None,
        }
    }
}

impl Settings {
    /// Loads settings from a file (or `HOOKFLEET_CONFIG`) and the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(Sources {
            file: file.map(Path::to_path_buf),
            ..Sources::default()
        })
    }

    /// Loads settings from explicit sources, then validates them.
    pub fn load_from(sources: Sources) -> Result<Self, ConfigError> {
        let settings: Settings = config::read(sources, &[])?;
        settings.validate()?;
        Ok(settings)
    }

    /// Loads only what commands that talk to the broker and Redis use
    /// (`namespace`, `[amqp]`, `[redis]`, `[status]`, `[telemetry]`), for the
    /// `dlq` commands. `[worker]` is not read: its defaults stand in, so its
    /// secrets need not be set and its fields are not checked. Never run the
    /// worker on these settings.
    pub fn load_broker(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_broker_from(Sources {
            file: file.map(Path::to_path_buf),
            ..Sources::default()
        })
    }

    /// [`Settings::load_broker`] from explicit sources.
    pub fn load_broker_from(sources: Sources) -> Result<Self, ConfigError> {
        let part: BrokerPart = config::read(sources, &[])?;
        let settings = Settings {
            namespace: part.namespace,
            amqp: part.amqp,
            redis: part.redis,
            status: part.status,
            telemetry: part.telemetry,
            ..Settings::default()
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what types alone cannot, naming the offending field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        config::validate_namespace(&self.namespace)?;
        self.amqp.validate()?;
        self.redis.validate()?;
        self.status.validate()?;
        self.worker.validate()
    }
}

/// Whether `name` may name a provider, pipeline, step or sink: 1-100 characters
/// of `[A-Za-z0-9_-]` (they end up in metric labels, routing keys and Redis keys).
pub(crate) fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

/// The parts of [`Settings`] [`Settings::load_broker`] reads; unknown keys
/// (the services' sections) are ignored, so nothing in them is resolved.
#[derive(Deserialize)]
#[serde(default)]
struct BrokerPart {
    namespace: String,
    amqp: AmqpConfig,
    redis: RedisConfig,
    status: StatusConfig,
    telemetry: TelemetryConfig,
}

impl Default for BrokerPart {
    fn default() -> Self {
        let all = Settings::default();
        Self {
            namespace: all.namespace,
            amqp: all.amqp,
            redis: all.redis,
            status: all.status,
            telemetry: all.telemetry,
        }
    }
}
