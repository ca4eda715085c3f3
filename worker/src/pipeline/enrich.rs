//! Enrichment: HTTP requests a pipeline makes before rendering its prompt (the
//! customer's history from a CRM), whose JSON answers templates read as
//! `enrich.<step>`.
//!
//! Steps run in configuration order, each seeing the answers of the steps before
//! it, so a later step can use an id an earlier one returned. A step's answer must
//! be JSON (an empty body counts as `null`); anything else fails the step with
//! `RequestError::NotJson`, which `outcome::classify` treats as transient, like an
//! AI answer that should be JSON and is not: a 200 HTML page is usually a proxy or
//! maintenance page, and the job's retries end in the dead-letter queue anyway.
//! Steps are requests that read (GET) by intent: they run again on every attempt,
//! and their answers are not cached.

use crate::config::{EnrichStepConfig, OutboundConfig, UndefinedMode};
use minijinja::Value;
use serde_json::Map;

use crate::auth::TokenStore;
use crate::pipeline::PipelineError;
use crate::pipeline::request_template::{RequestError, RequestParts, RequestTemplate};
use crate::pipeline::templates;

/// An enrichment step failed; the job cannot render its prompt.
#[derive(Debug, thiserror::Error)]
#[error("enrichment step `{step}` failed")]
pub struct EnrichError {
    /// The step's name.
    pub step: String,
    /// What went wrong.
    #[source]
    pub error: RequestError,
}

/// One compiled step.
struct Step {
    name: String,
    request: RequestTemplate,
}

/// A pipeline's enrichment steps, compiled.
#[derive(Default)]
pub struct Enrichment {
    steps: Vec<Step>,
}

impl Enrichment {
    /// Compiles the steps of the pipeline at `field` (`worker.pipelines[0]`).
    pub fn build(
        field: &str,
        steps: &[EnrichStepConfig],
        undefined: UndefinedMode,
        outbound: &OutboundConfig,
        tokens: &TokenStore,
    ) -> Result<Self, PipelineError> {
        let steps = steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                let request = RequestTemplate::compile(
                    &format!("{field}.enrich[{i}]"),
                    RequestParts {
                        method: &step.method,
                        url: &step.url,
                        headers: &step.headers,
                        body: step.body.as_deref(),
                        auth: step.auth.as_ref(),
                        timeout: step.timeout,
                        follow_redirects: step.follow_redirects,
                        outbound,
                        tls: step.tls.as_ref(),
                        tokens,
                    },
                    undefined,
                )?;
                Ok(Step {
                    name: step.name.clone(),
                    request,
                })
            })
            .collect::<Result<_, PipelineError>>()?;
        Ok(Self { steps })
    }

    /// Whether there are no steps.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Runs every step in order against `context` (`templates::base`); returns
    /// `context` with `enrich` added (an empty map when there are no steps).
    pub async fn run(&self, context: &Value) -> Result<Value, EnrichError> {
        let mut answers = Map::new();
        for step in &self.steps {
            let fail = |error| EnrichError {
                step: step.name.clone(),
                error,
            };
            let request = step
                .request
                .render(&templates::with_enrich(context, &answers))
                .map_err(fail)?;
            let body = step.request.send(request).await.map_err(fail)?;
            let answer = if body.iter().all(u8::is_ascii_whitespace) {
                serde_json::Value::Null
            } else {
                serde_json::from_slice(&body).map_err(|e| fail(RequestError::NotJson(e)))?
            };
            answers.insert(step.name.clone(), answer);
        }
        Ok(templates::with_enrich(context, &answers))
    }
}
