//! Pipelines compiled from `[[worker.pipelines]]`: globs that pick events, prompt
//! templates that turn an event into a request, the provider and the sinks.
//!
//! Everything that can be wrong in a pipeline's config (a glob, a template's
//! syntax, an unknown provider) fails [`Pipelines::build`] with the field named,
//! so a bad config stops the worker at start. Rendering can still fail per event
//! (a missing field in `semi-strict` mode): that is a permanent `render` failure.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{CacheSettings, OutboundConfig, PipelineConfig, ResponseFormat, WorkerConfig};
use globset::{Glob, GlobSet, GlobSetBuilder};
use minijinja::Environment;

use crate::auth::TokenStore;
use crate::pipeline::enrich::Enrichment;
use crate::pipeline::sinks::Sink;
use crate::pipeline::templates;
use crate::providers::{AiRequest, Provider};

/// A pipeline could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A glob does not parse.
    #[error("invalid configuration: `{field}`: invalid glob")]
    Glob {
        /// e.g. `worker.pipelines[0].sources[1]`.
        field: String,
        /// The parser's complaint.
        #[source]
        source: globset::Error,
    },
    /// A template does not parse.
    #[error("invalid configuration: `{field}`: invalid template")]
    Template {
        /// e.g. `worker.pipelines[0].user`.
        field: String,
        /// The parser's complaint, with line and column.
        #[source]
        source: minijinja::Error,
    },
    /// A template is well-formed but its fixed value is not (a method, a URL).
    #[error("invalid configuration: `{field}`: {reason}")]
    Invalid {
        /// e.g. `worker.pipelines[0].sinks[1].method`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// An HTTP client could not be built (TLS initialisation).
    #[error("cannot build the HTTP client of `{field}`")]
    Client {
        /// e.g. `worker.pipelines[0].enrich[0]`.
        field: String,
        /// The builder's complaint.
        #[source]
        source: reqwest::Error,
    },
    /// The pipeline names a provider that is not configured.
    #[error("invalid configuration: `{field}`: no provider `{name}`")]
    UnknownProvider {
        /// e.g. `worker.pipelines[0].provider`.
        field: String,
        /// The missing name.
        name: String,
    },
}

/// The rendered prompts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// The system prompt, when the pipeline has one.
    pub system: Option<String>,
    /// The user prompt.
    pub user: String,
}

/// One compiled pipeline.
pub struct Pipeline {
    /// Its unique name.
    pub name: String,
    sources: GlobSet,
    event_types: GlobSet,
    templates: Environment<'static>,
    has_system: bool,
    /// The provider it calls.
    pub provider: Arc<Provider>,
    /// The model it asks for.
    pub model: String,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Output token limit.
    pub max_tokens: Option<u32>,
    /// Text or JSON.
    pub response_format: ResponseFormat,
    /// Where results go, in order.
    pub sinks: Vec<Sink>,
    /// How answers are cached; `None` when the cache is off.
    pub cache: Option<CacheSettings>,
    /// The HTTP requests run before the prompt is rendered.
    pub enrichment: Enrichment,
    /// Who to ask, in order, when the one before fails transiently or is held
    /// by the limiter (`completion::answer`).
    pub fallbacks: Vec<Fallback>,
    /// The limiter wait of a candidate that has a fallback after it.
    pub fallback_wait: Duration,
}

/// One fallback: another provider and model.
#[derive(Clone)]
pub struct Fallback {
    /// The provider it calls.
    pub provider: Arc<Provider>,
    /// The model it asks for.
    pub model: String,
}

/// One provider/model a pipeline may ask: the primary or a fallback.
#[derive(Clone, Copy)]
pub struct Candidate<'a> {
    /// `None` for the primary, else the index in the pipeline's `fallbacks`.
    pub fallback: Option<usize>,
    /// The provider.
    pub provider: &'a Arc<Provider>,
    /// The model.
    pub model: &'a str,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("name", &self.name)
            .field("provider", &self.provider.name())
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Compiles the `index`-th pipeline.
    pub fn build(
        index: usize,
        config: &PipelineConfig,
        providers: &HashMap<String, Arc<Provider>>,
        sinks: Vec<Sink>,
        outbound: &OutboundConfig,
        tokens: &TokenStore,
    ) -> Result<Self, PipelineError> {
        let field = format!("worker.pipelines[{index}]");
        let provider = providers.get(&config.provider).cloned().ok_or_else(|| {
            PipelineError::UnknownProvider {
                field: format!("{field}.provider"),
                name: config.provider.clone(),
            }
        })?;
        let mut templates = templates::environment(config.undefined);
        if let Some(system) = &config.system {
            templates::compile(&mut templates, "system", system, &format!("{field}.system"))?;
        }
        templates::compile(
            &mut templates,
            "user",
            &config.user,
            &format!("{field}.user"),
        )?;
        let enrichment =
            Enrichment::build(&field, &config.enrich, config.undefined, outbound, tokens)?;
        Ok(Self {
            name: config.name.clone(),
            sources: globs(&config.sources, &format!("{field}.sources"))?,
            event_types: globs(&config.event_types, &format!("{field}.event_types"))?,
            templates,
            has_system: config.system.is_some(),
            provider,
            model: config.model.clone(),
            temperature: config.temperature,
            max_tokens: config.max_tokens,
            response_format: config.response_format,
            sinks,
            cache: config.cache.settings().cloned(),
            enrichment,
            fallbacks: fallbacks(config, providers, &field)?,
            fallback_wait: config.fallback_wait,
        })
    }

    /// The primary, then every fallback, in order.
    pub fn candidates(&self) -> impl Iterator<Item = Candidate<'_>> {
        let primary = Candidate {
            fallback: None,
            provider: &self.provider,
            model: &self.model,
        };
        std::iter::once(primary).chain(self.fallbacks.iter().enumerate().map(|(i, f)| Candidate {
            fallback: Some(i),
            provider: &f.provider,
            model: &f.model,
        }))
    }

    /// Whether this pipeline takes events of `source` and `event_type`.
    pub fn matches(&self, source: &str, event_type: &str) -> bool {
        self.sources.is_match(source) && self.event_types.is_match(event_type)
    }

    /// Renders the prompts for one event from its template context
    /// (`templates::base`, plus `enrich` when the pipeline has steps).
    pub fn render(&self, context: &minijinja::Value) -> Result<Prompt, minijinja::Error> {
        let system = if self.has_system {
            Some(self.templates.get_template("system")?.render(context)?)
        } else {
            None
        };
        let user = self.templates.get_template("user")?.render(context)?;
        Ok(Prompt { system, user })
    }

    /// The AI request for rendered prompts.
    pub fn request(&self, prompt: Prompt) -> AiRequest {
        AiRequest {
            model: self.model.clone(),
            system: prompt.system,
            user: prompt.user,
            temperature: self.temperature,
            max_tokens: self.max_tokens,
            json: self.response_format == ResponseFormat::Json,
        }
    }
}

fn fallbacks(
    config: &PipelineConfig,
    providers: &HashMap<String, Arc<Provider>>,
    field: &str,
) -> Result<Vec<Fallback>, PipelineError> {
    config
        .fallbacks
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let provider = providers.get(&f.provider).cloned().ok_or_else(|| {
                PipelineError::UnknownProvider {
                    field: format!("{field}.fallbacks[{i}].provider"),
                    name: f.provider.clone(),
                }
            })?;
            Ok(Fallback {
                provider,
                model: f.model.clone(),
            })
        })
        .collect()
}

fn globs(patterns: &[String], field: &str) -> Result<GlobSet, PipelineError> {
    let mut set = GlobSetBuilder::new();
    for (i, pattern) in patterns.iter().enumerate() {
        let glob = Glob::new(pattern).map_err(|source| PipelineError::Glob {
            field: format!("{field}[{i}]"),
            source,
        })?;
        set.add(glob);
    }
    set.build().map_err(|source| PipelineError::Glob {
        field: field.to_owned(),
        source,
    })
}

/// All pipelines, in configuration order.
#[derive(Debug, Default)]
pub struct Pipelines {
    pipelines: Vec<Arc<Pipeline>>,
}

impl Pipelines {
    /// Compiles every pipeline of `config`; `sinks` builds the sinks of the
    /// `i`-th pipeline.
    pub fn build(
        config: &WorkerConfig,
        providers: &HashMap<String, Arc<Provider>>,
        tokens: &TokenStore,
        sinks: impl Fn(usize, &PipelineConfig) -> Result<Vec<Sink>, PipelineError>,
    ) -> Result<Self, PipelineError> {
        let pipelines = config
            .pipelines
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Pipeline::build(i, p, providers, sinks(i, p)?, &config.outbound, tokens)
                    .map(Arc::new)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { pipelines })
    }

    /// The pipelines that take this event, in configuration order.
    pub fn matching(&self, source: &str, event_type: &str) -> Vec<Arc<Pipeline>> {
        self.pipelines
            .iter()
            .filter(|p| p.matches(source, event_type))
            .cloned()
            .collect()
    }

    /// How many pipelines there are.
    pub fn len(&self) -> usize {
        self.pipelines.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.pipelines.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ProviderConfig, ProviderKind, UndefinedMode};
    use hookfleet_common::message::EventMeta;
    use serde_json::json;

    fn providers() -> HashMap<String, Arc<Provider>> {
        let config = ProviderConfig {
            kind: ProviderKind::Openai,
            base_url: Some("http://127.0.0.1:1/v1".into()),
            api_key: None,
            timeout: std::time::Duration::from_secs(1),
            anthropic_version: "2023-06-01".into(),
            api_key_header: None,
            auth: None,
            tls: None,
        };
        let provider =
            Provider::build("mock", &config, &crate::auth::tokens::tests::store()).unwrap();
        HashMap::from([("mock".to_owned(), Arc::new(provider))])
    }

    fn config(user: &str) -> PipelineConfig {
        PipelineConfig {
            name: "support-triage".into(),
            sources: vec!["support".into(), "zendesk*".into()],
            event_types: vec!["ticket.*".into()],
            provider: "mock".into(),
            model: "gpt-4o-mini".into(),
            temperature: Some(0.0),
            max_tokens: Some(256),
            response_format: ResponseFormat::Json,
            system: Some("You triage tickets for {{ meta.source }}.".into()),
            user: user.into(),
            undefined: UndefinedMode::SemiStrict,
            sinks: vec![],
            cache: Default::default(),
            enrich: vec![],
            fallbacks: vec![],
            fallback_wait: Duration::from_millis(250),
        }
    }

    fn meta() -> EventMeta {
        EventMeta {
            message_id: "01J0000000000000000000000".into(),
            source: "zendesk-eu".into(),
            event_type: "ticket.created".into(),
            event_id: Some("evt_1".into()),
            received_at: "2025-01-01T00:00:00.000Z".into(),
            content_type: Some("application/json".into()),
            traceparent: None,
            forwarded: vec![("x-zendesk-webhook-id".into(), "wh_9".into())],
            attempt: 1,
            replays: 0,
        }
    }

    fn pipeline(user: &str) -> Pipeline {
        Pipeline::build(
            0,
            &config(user),
            &providers(),
            vec![],
            &OutboundConfig::default(),
            &crate::auth::tokens::tests::store(),
        )
        .unwrap()
    }

    #[test]
    fn globs_match_source_and_event_type() {
        let p = pipeline("x");
        assert!(p.matches("support", "ticket.created"));
        assert!(p.matches("zendesk-eu", "ticket.updated"));
        assert!(!p.matches("support", "invoice.paid"));
        assert!(!p.matches("stripe", "ticket.created"));
    }

    #[test]
    fn prompts_render_from_the_payload_and_the_metadata() {
        let p = pipeline(
            "Ticket {{ meta.event_id }} (attempt {{ meta.attempt }}, {{ pipeline }}) from \
             {{ payload.customer.name }} via {{ meta.headers['x-zendesk-webhook-id'] }}: \
             {{ payload.ticket.body }}{% if payload.vip %} [VIP]{% endif %} {{ payload | tojson }}",
        );
        let payload = json!({ "customer": { "name": "Ada" }, "ticket": { "body": "<b>help</b>" } });
        let context = templates::base(&payload, &meta(), 2, &p.name);
        let prompt = p.render(&context).unwrap();
        assert_eq!(
            prompt.system.as_deref(),
            Some("You triage tickets for zendesk-eu.")
        );
        assert!(
            prompt.user.starts_with(
                "Ticket evt_1 (attempt 2, support-triage) from Ada via wh_9: <b>help</b> {"
            ),
            "{}",
            prompt.user
        );
        let request = p.request(prompt);
        assert!(request.json);
        assert_eq!(request.max_tokens, Some(256));
    }

    #[test]
    fn a_missing_field_is_a_render_error_in_semi_strict_mode() {
        let p = pipeline("{{ payload.customer.name }}");
        let context = templates::base(&json!({ "ticket": {} }), &meta(), 1, &p.name);
        let err = p.render(&context).unwrap_err();
        assert_eq!(err.kind(), minijinja::ErrorKind::UndefinedError);
    }

    #[test]
    fn bad_globs_and_templates_fail_at_build_with_their_field() {
        let err = Pipeline::build(
            3,
            &config("{{ payload.x "),
            &providers(),
            vec![],
            &OutboundConfig::default(),
            &crate::auth::tokens::tests::store(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("worker.pipelines[3].user"),
            "{err}"
        );
        let mut bad_glob = config("x");
        bad_glob.event_types = vec!["ok".into(), "ticket.[".into()];
        let err = Pipeline::build(
            0,
            &bad_glob,
            &providers(),
            vec![],
            &OutboundConfig::default(),
            &crate::auth::tokens::tests::store(),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("worker.pipelines[0].event_types[1]"),
            "{err}"
        );
    }
}
