//! Ingest's settings: the sections shared with the worker (`namespace`,
//! `[amqp]`, `[redis]`, `[status]`, `[telemetry]`) and its own `[ingest]`.
//!
//! The file is the one every hookfleet binary reads. `[worker]` is skipped
//! unread, so ingest needs none of the worker's secrets, and an invalid
//! `[ingest]` fails ingest at start naming the field — never the worker.

mod section;

use std::path::Path;

use hookfleet_common::config::{
    self, AmqpConfig, ConfigError, RedisConfig, Sources, StatusConfig, TelemetryConfig,
};
use serde::Deserialize;
use serde::de::IgnoredAny;

pub use section::{
    ClientIpHeader, FieldSource, IngestConfig, Listener, MAX_FORWARDED_HEADERS, MAX_FORWARDED_NAME,
    RateLimit, SourceConfig,
};

/// Ingest's own keys whose environment value is a comma-separated list.
const LIST_KEYS: &[&str] = &["ingest.trusted_proxies"];

/// Everything ingest reads from `hookfleet.toml` and `HOOKFLEET__…`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Prefix of every exchange, queue and Redis key (`hookfleet`).
    pub namespace: String,
    /// The RabbitMQ connection and topology.
    pub amqp: AmqpConfig,
    /// The Redis connection (dedup, event status).
    pub redis: RedisConfig,
    /// Event status kept for `GET /events/{id}`.
    pub status: StatusConfig,
    /// Logging.
    pub telemetry: TelemetryConfig,
    /// The ingest service.
    pub ingest: IngestConfig,
    /// The worker's section, skipped: not ingest's to read or check.
    worker: Option<IgnoredAny>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespace: "hookfleet".into(),
            amqp: AmqpConfig::default(),
            redis: RedisConfig::default(),
            status: StatusConfig::default(),
            telemetry: TelemetryConfig::default(),
            ingest: IngestConfig::default(),
            worker: None,
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
        let settings: Settings = config::read(sources, LIST_KEYS)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what types alone cannot, naming the offending field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        config::validate_namespace(&self.namespace)?;
        self.amqp.validate()?;
        self.redis.validate()?;
        self.status.validate()?;
        self.ingest.validate()?;
        for (name, source) in &self.ingest.sources {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            {
                return Err(ConfigError::invalid(
                    format!("ingest.sources.{name}"),
                    "source names must be [A-Za-z0-9_-]",
                ));
            }
            source.validate(&format!("ingest.sources.{name}"))?;
        }
        Ok(())
    }
}
