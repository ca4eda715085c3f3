//! What a pipeline's templates see, stage by stage, and how they are compiled.
//!
//! Every template of a pipeline (enrichment requests, prompts, sink requests and
//! `when` conditions) renders against one context that grows as the job goes on:
//!
//! | variable | what | seen by |
//! |---|---|---|
//! | `payload` | the webhook body, parsed JSON | all |
//! | `meta` | `message_id`, `source`, `event_type`, `event_id`, `received_at`, `attempt`, `replays`, `headers` | all |
//! | `pipeline` | the pipeline's name | all |
//! | `enrich.<step>` | an enrichment step's JSON answer | later steps, prompts, sinks |
//! | `output` | the AI's answer, verbatim text | sinks |
//! | `output_json` | the answer parsed (`response_format = "json"`), else none | sinks |
//!
//! A variable a stage does not have yet is undefined, so a prompt that reads
//! `output` fails by the pipeline's `undefined` mode like any missing value.
//! Templates are not HTML: nothing is escaped; a JSON body should use `| tojson`.

use std::collections::HashMap;

use crate::config::UndefinedMode;
use hookfleet_common::message::EventMeta;
use minijinja::{Environment, UndefinedBehavior, Value, context};
use serde::Serialize;

use crate::pipeline::PipelineError;

/// A template environment for a pipeline's `undefined` mode: no auto-escaping,
/// trailing newlines kept.
pub fn environment(mode: UndefinedMode) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(match mode {
        UndefinedMode::SemiStrict => UndefinedBehavior::SemiStrict,
        UndefinedMode::Strict => UndefinedBehavior::Strict,
        UndefinedMode::Lenient => UndefinedBehavior::Lenient,
        UndefinedMode::Chainable => UndefinedBehavior::Chainable,
    });
    // Prompts and request bodies are not HTML: never escape.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    // Keep a trailing newline the author wrote.
    env.set_keep_trailing_newline(true);
    env
}

/// Adds template `name` to `env`, or names `field` in the error.
pub fn compile(
    env: &mut Environment<'static>,
    name: &str,
    source: &str,
    field: &str,
) -> Result<(), PipelineError> {
    env.add_template_owned(name.to_owned(), source.to_owned())
        .map_err(|source| PipelineError::Template {
            field: field.to_owned(),
            source,
        })
}

/// What templates see as `meta`.
#[derive(Debug, Serialize)]
struct MetaContext<'a> {
    message_id: &'a str,
    source: &'a str,
    event_type: &'a str,
    event_id: Option<&'a str>,
    received_at: &'a str,
    /// This attempt, 1-based.
    attempt: u32,
    replays: u32,
    /// Forwarded provider headers, by lower-case name.
    headers: HashMap<&'a str, &'a str>,
}

/// `payload`, `meta` and `pipeline`: the context every template starts from.
/// `attempt` is 1-based.
pub fn base(payload: &serde_json::Value, meta: &EventMeta, attempt: u32, pipeline: &str) -> Value {
    let meta = MetaContext {
        message_id: &meta.message_id,
        source: &meta.source,
        event_type: &meta.event_type,
        event_id: meta.event_id.as_deref(),
        received_at: &meta.received_at,
        attempt,
        replays: meta.replays,
        headers: meta
            .forwarded
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
    };
    context! {
        payload => Value::from_serialize(payload),
        meta => Value::from_serialize(&meta),
        pipeline => pipeline,
    }
}

/// `context` plus `enrich` (the answers of the steps run so far).
pub fn with_enrich(context: &Value, enrich: &serde_json::Map<String, serde_json::Value>) -> Value {
    context! { enrich => Value::from_serialize(enrich), ..context.clone() }
}

/// `context` plus the AI's `output` and `output_json` (none for text pipelines).
pub fn with_output(
    context: &Value,
    output: &str,
    output_json: Option<&serde_json::Value>,
) -> Value {
    context! {
        output => output,
        output_json => Value::from_serialize(output_json),
        ..context.clone()
    }
}
