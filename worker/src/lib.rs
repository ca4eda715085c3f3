//! hookfleet-worker: consumes jobs from `{ns}.jobs`, runs the matching pipelines
//! (prompt → AI provider → sinks) and acks, retries or dead-letters each one.
//!
//! The folders are the layers, top to bottom:
//!
//! - [`app`]: `Application` — build, bind the admin port, run until stopped.
//! - [`config`]: the worker's settings (`[worker]` and the shared sections).
//! - [`delivery`]: one message's lifecycle — consume, decide, settle (the only acks).
//! - [`pipeline`]: the stages of one event — enrich, render, complete, deliver.
//! - [`providers`]: OpenAI-compatible and Anthropic clients.
//! - [`auth`]: outbound credentials (OAuth 2.0 shared by the fleet, JWT,
//!   API keys) and TLS client identities.
//! - [`outbound`]: the HTTP client of enrichment and sinks: destination policy,
//!   no redirects, URLs kept out of errors (providers share the last two).
//! - [`limits`]: the fleet-wide limiter, the response cache, redelivery markers.
//! - [`dlq`]: the `dlq` commands.
//! - [`events`]: what jobs and AI calls did, each logged and counted together.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`heartbeat`]: each worker's heartbeat in Redis, which the console sums.
//! - [`console`]: the web console under `/console` on the admin listener.
//! - [`cli`]: the command line (`run`, `dlq …`, `health`).

pub mod admin;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod console;
pub mod delivery;
pub mod dlq;
pub mod events;
pub mod heartbeat;
pub mod limits;
pub mod metrics;
pub mod outbound;
pub mod pipeline;
pub mod providers;

pub use app::Application;
