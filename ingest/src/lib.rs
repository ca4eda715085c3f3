//! hookfleet-ingest: the HTTP edge. It verifies webhooks and publishes them
//! durably to RabbitMQ, answering 2xx only once the broker confirmed the message.
//!
//! - [`app`]: `Application` — build, bind, run until stopped.
//! - [`config`]: ingest's settings (`[ingest]` and the shared sections).
//! - [`routes`]: `POST /hooks/{source}`, `GET /events/{id}`, `/healthz`, `/readyz`,
//!   `/metrics`.
//! - [`serve`]: the accept loop with connection limits (header read timeout, head size).
//! - [`client`]: the client's address behind trusted proxies.
//! - [`source`]: a configured source compiled for the request path.
//! - [`error`]: the request path's one error type and its responses.
//! - [`events`]: what a request did, logged and counted together.
//! - [`cli`]: the command line (run, `health`).

pub mod app;
pub mod cli;
pub mod client;
pub mod config;
pub mod dedupe;
pub mod error;
pub mod events;
pub mod metrics;
pub mod routes;
pub mod serve;
pub mod source;

pub use app::Application;
