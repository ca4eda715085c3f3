//! hookfleet-common: what every hookfleet service shares.
//!
//! - [`config`]: `hookfleet.toml` + `HOOKFLEET__…` environment, secrets, validation.
//! - [`topology`]: every exchange, queue and Redis key name, and their declaration.
//! - [`message`]: the job message's properties and `hf-*` headers.
//! - [`broker`]: connecting to RabbitMQ.
//! - [`publisher`]: publishing with confirms, mandatory routing and reconnection.
//! - [`signature`]: the webhook signature schemes ingest verifies.
//! - [`redis`]: the pool and the Redis-backed primitives (dedup, limiter, cache).
//! - [`metrics`], [`telemetry`], [`shutdown`]: observability and lifecycle.
//! - [`health`]: the probe behind the binaries' `health` subcommands.

pub mod broker;
pub mod config;
pub mod health;
pub mod message;
pub mod metrics;
pub mod publisher;
pub mod redis;
pub mod shutdown;
pub mod signature;
pub mod telemetry;
pub mod topology;
