//! Pipelines: what the worker does with one event, stage by stage.
//!
//! - [`pipelines`]: `[[worker.pipelines]]` compiled at start (globs, templates,
//!   providers, sinks); a bad config fails there with its field named.
//! - [`templates`]: the template context each stage renders with.
//! - [`request_template`]: templated HTTP requests, for [`enrich`] (before the
//!   prompt) and the HTTP [`sinks`] (after the answer).
//! - [`completion`]: the AI call through the response cache and the limiter.
//! - [`sinks`]: where a result goes, each sink at most once per event.

pub mod completion;
pub mod enrich;
pub mod pipelines;
pub mod request_template;
pub mod sinks;
pub mod templates;

pub use pipelines::{Candidate, Fallback, Pipeline, PipelineError, Pipelines, Prompt};
