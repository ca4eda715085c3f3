//! [`Settings`]: one test's settings for every process it starts.
//!
//! Each service reads only its own section of `hookfleet.toml` (plus the shared
//! ones); a test configures ingest and the workers together, as one file would.
//! [`Settings::for_ingest`] and [`Settings::for_worker`] hand each service its
//! part, and [`Settings::load_from`] loads a whole file as both services would,
//! so a config either service refuses fails here too.

use hookfleet_common::config::{
    AmqpConfig, ConfigError, RedisConfig, Sources, StatusConfig, TelemetryConfig,
};
use hookfleet_ingest::config::{IngestConfig, Settings as IngestSettings};
use hookfleet_worker::config::{Settings as WorkerSettings, WorkerConfig};

/// Every section of `hookfleet.toml`; see the module docs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Prefix of every exchange, queue and Redis key.
    pub namespace: String,
    /// `[amqp]`.
    pub amqp: AmqpConfig,
    /// `[redis]`.
    pub redis: RedisConfig,
    /// `[status]`.
    pub status: StatusConfig,
    /// `[telemetry]`.
    pub telemetry: TelemetryConfig,
    /// `[ingest]`.
    pub ingest: IngestConfig,
    /// `[worker]`.
    pub worker: WorkerConfig,
}

impl Default for Settings {
    fn default() -> Self {
        Self::defaults()
    }
}

impl Settings {
    /// The defaults of both services.
    pub fn defaults() -> Self {
        Self::combine(IngestSettings::default(), WorkerSettings::default())
    }

    /// Loads the sources as ingest and as the worker would, each validating
    /// its own sections.
    pub fn load_from(sources: Sources) -> Result<Self, ConfigError> {
        let ingest = IngestSettings::load_from(sources.clone())?;
        let worker = WorkerSettings::load_from(sources)?;
        Ok(Self::combine(ingest, worker))
    }

    /// Ingest's part.
    pub fn for_ingest(&self) -> IngestSettings {
        let mut settings = IngestSettings::default();
        settings.namespace = self.namespace.clone();
        settings.amqp = self.amqp.clone();
        settings.redis = self.redis.clone();
        settings.status = self.status.clone();
        settings.telemetry = self.telemetry.clone();
        settings.ingest = self.ingest.clone();
        settings
    }

    /// The worker's part.
    pub fn for_worker(&self) -> WorkerSettings {
        let mut settings = WorkerSettings::default();
        settings.namespace = self.namespace.clone();
        settings.amqp = self.amqp.clone();
        settings.redis = self.redis.clone();
        settings.status = self.status.clone();
        settings.telemetry = self.telemetry.clone();
        settings.worker = self.worker.clone();
        settings
    }

    fn combine(ingest: IngestSettings, worker: WorkerSettings) -> Self {
        Self {
            namespace: worker.namespace,
            amqp: worker.amqp,
            redis: worker.redis,
            status: worker.status,
            telemetry: worker.telemetry,
            ingest: ingest.ingest,
            worker: worker.worker,
        }
    }
}
