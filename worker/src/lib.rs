//! hookfleet-worker: consumes jobs from `{ns}.jobs`, runs the matching pipelines
//! (prompt → AI provider → sinks) and acks, retries or dead-letters each one.
//!
//! - [`app`]: `Application` — build, bind the admin port, run until stopped.
//! - [`consumer`]: the consumer loop, reconnection, shutdown; the only acks.
//! - [`job`]: one delivery → one decision (`process_one`), redelivery safety.
//! - [`enrich`]: HTTP requests before the prompt (`enrich.<step>` in templates).
//! - [`completion`]: cache (single flight) → limiter → provider.
//! - [`outcome`]: `classify` — what every failure means.
//! - [`reroute`]: publishing retry and dead-letter copies.
//! - [`pipeline`]: config → compiled pipelines (globs, minijinja templates).
//! - [`templates`]: the template context, stage by stage.
//! - [`request_template`]: templated HTTP requests (enrichment and HTTP sinks).
//! - [`providers`]: OpenAI-compatible and Anthropic clients.
//! - [`sinks`]: where results go (the results exchange, HTTP endpoints), each
//!   at most once per event.
//! - [`status`]: what the worker records of each event's progress.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`cli`]: the command line (`run`, `dlq …`, `health`).

pub mod admin;
pub mod app;
pub mod cli;
pub mod completion;
pub mod consumer;
pub mod dlq;
pub mod enrich;
pub mod job;
pub mod outcome;
pub mod pipeline;
pub mod providers;
pub mod request_template;
pub mod reroute;
pub mod sinks;
pub mod status;
pub mod templates;

pub use app::Application;
