//! Providers and pipelines (`[worker.providers.NAME]`, `[[worker.pipelines]]`):
//! which events, which prompt, which model, where the result goes.

use std::time::Duration;

use hookfleet_common::config::{ConfigError, Secret};
use serde::Deserialize;

use super::http::{EnrichStepConfig, HttpSinkConfig};
use super::is_name;
use super::limits::CacheConfig;

/// What happens to an event no pipeline matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnmatchedPolicy {
    /// Ack it and count it (`outcome="unmatched"`).
    Ack,
    /// Send it to the dead-letter queue (`hf-stage = match`).
    DeadLetter,
}

/// The API dialect a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Any OpenAI-compatible `POST {base_url}/chat/completions` endpoint.
    Openai,
    /// Anthropic's `POST {base_url}/messages`.
    Anthropic,
}

impl ProviderKind {
    /// `openai` or `anthropic`, as in the config and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::Anthropic => "anthropic",
        }
    }
}

/// One AI provider (`[worker.providers.NAME]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// `openai` (any OpenAI-compatible chat-completions API) or `anthropic`.
    pub kind: ProviderKind,
    /// API base URL, up to and including the version segment. Defaults to
    /// `https://api.openai.com/v1` or `https://api.anthropic.com/v1` by `kind`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The API key, by reference (`{ secret_env = "OPENAI_API_KEY" }`). Sent as
    /// `Authorization: Bearer` (openai) or `x-api-key` (anthropic). Optional for
    /// local endpoints.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// Timeout of one request, connection to last byte (`60s`). A timeout is a
    /// transient failure: the job is retried.
    #[serde(default = "default_provider_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The `anthropic-version` header (`2023-06-01`); anthropic only.
    #[serde(default = "default_anthropic_version")]
    pub anthropic_version: String,
    /// The header `api_key` is sent in as is, instead of the dialect's own
    /// (`api-key` for Azure OpenAI).
    #[serde(default)]
    pub api_key_header: Option<String>,
    /// Credentials other than `api_key` (OAuth 2.0 for an enterprise gateway),
    /// as for enrichment steps (docs/pipelines.md).
    #[serde(default)]
    pub auth: Option<super::HttpAuth>,
    /// A client certificate and extra CA, as for enrichment steps.
    #[serde(default)]
    pub tls: Option<super::TlsConfig>,
}

impl ProviderConfig {
    /// Checks one provider: its name, URL and timeout (below `lease_ttl`, or a
    /// slow call's redelivered copy would run a second time).
    pub(super) fn validate(
        &self,
        field: &str,
        name: &str,
        lease_ttl: Duration,
    ) -> Result<(), ConfigError> {
        if !is_name(name) {
            return Err(ConfigError::invalid(
                field,
                "provider names must be [A-Za-z0-9_-]",
            ));
        }
        let url = self.base_url();
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return Err(ConfigError::invalid(
                format!("{field}.base_url"),
                "must start with http:// or https://",
            ));
        }
        super::auth::validate_provider(field, self)?;
        if self.timeout.is_zero() {
            return Err(ConfigError::invalid(
                format!("{field}.timeout"),
                "must be greater than 0",
            ));
        }
        if self.timeout >= lease_ttl {
            return Err(ConfigError::invalid(
                format!("{field}.timeout"),
                format!(
                    "must be shorter than worker.lease_ttl ({lease_ttl:?}), or a slow call's \
                     redelivered copy would run a second time"
                ),
            ));
        }
        Ok(())
    }
}

fn default_provider_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_anthropic_version() -> String {
    "2023-06-01".to_owned()
}

impl ProviderConfig {
    /// The configured base URL or the provider's public API, without a trailing `/`.
    pub fn base_url(&self) -> String {
        let url = self.base_url.clone().unwrap_or_else(|| match self.kind {
            ProviderKind::Openai => "https://api.openai.com/v1".to_owned(),
            ProviderKind::Anthropic => "https://api.anthropic.com/v1".to_owned(),
        });
        url.trim_end_matches('/').to_owned()
    }
}

/// The shape the model is asked to answer in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseFormat {
    /// Free text (default).
    #[default]
    Text,
    /// A JSON object: OpenAI's `response_format = json_object`; for both kinds the
    /// output must parse as JSON, or the attempt fails at stage `output`.
    Json,
}

/// How templates treat a variable the event does not have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UndefinedMode {
    /// Printing or iterating a missing value is an error; `{% if payload.x %}` is
    /// allowed (default). A template error dead-letters the job.
    #[default]
    SemiStrict,
    /// Any use of a missing value, `if` included, is an error.
    Strict,
    /// Missing values print as empty; a missing value's attribute is an error.
    Lenient,
    /// Missing values and their attributes print as empty.
    Chainable,
}

/// Where a pipeline's result goes (`sinks = [{ kind = "amqp" }]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SinkConfig {
    /// The results exchange `{ns}.results`, routing key
    /// `{pipeline}.{source}.{event_type}`, published with confirm.
    Amqp,
    /// A templated HTTP request (a CRM update, a chat message), signed with the
    /// Standard Webhooks scheme when a `signing_secret` is set.
    Http(Box<HttpSinkConfig>),
}

impl SinkConfig {
    /// The sink's name: its delivery marker and `webhook-id` part (`amqp` for
    /// the results exchange).
    pub fn name(&self) -> &str {
        match self {
            Self::Amqp => "amqp",
            Self::Http(http) => &http.name,
        }
    }

    /// The longest one delivery may take, when the sink has its own timeout.
    pub fn timeout(&self) -> Option<Duration> {
        match self {
            Self::Amqp => None,
            Self::Http(http) => Some(http.timeout),
        }
    }
}

/// One pipeline (`[[worker.pipelines]]`): which events, which prompt, which model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Unique name, `[A-Za-z0-9_-]`: the first segment of the result routing key
    /// and a metric label.
    pub name: String,
    /// Source-name globs (`["support", "zendesk*"]`); default `["*"]`.
    #[serde(default = "match_all")]
    pub sources: Vec<String>,
    /// Event-type globs (`["ticket.*"]`); default `["*"]`. `*` also matches `.`.
    #[serde(default = "match_all")]
    pub event_types: Vec<String>,
    /// The provider's name in `[worker.providers]`.
    pub provider: String,
    /// The model, as the provider names it (`gpt-4o-mini`).
    pub model: String,
    /// Sampling temperature, 0–2; the provider's default when unset.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Output token limit; the provider's default when unset (anthropic, which
    /// requires one, gets 1024).
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// `text` (default) or `json`.
    #[serde(default)]
    pub response_format: ResponseFormat,
    /// The system prompt, a minijinja template (optional). Context: `payload` (the
    /// JSON body), `meta` (`message_id`, `source`, `event_type`, `event_id`,
    /// `received_at`, `attempt`, `replays`, `headers`), `pipeline` (its name),
    /// `enrich` (the enrichment steps' answers by step name).
    #[serde(default)]
    pub system: Option<String>,
    /// The user prompt, a minijinja template with the same context.
    pub user: String,
    /// How templates treat missing values (`semi-strict`).
    #[serde(default)]
    pub undefined: UndefinedMode,
    /// Where results go; default the results exchange (`[{ kind = "amqp" }]`).
    #[serde(default = "default_sinks")]
    pub sinks: Vec<SinkConfig>,
    /// The response cache: `"on"` (default: temperature-0 requests only, 1h),
    /// `"off"`, or `{ ttl, namespace, nondeterministic, lease, max_wait }`.
    #[serde(default)]
    pub cache: CacheConfig,
    /// Enrichment steps, run in order before the prompt is rendered; each one's
    /// JSON answer is `enrich.<name>` in every later template (none by default).
    #[serde(default)]
    pub enrich: Vec<EnrichStepConfig>,
    /// Provider/model pairs tried in order when the one before fails transiently
    /// (5xx, 408/409/425/429, timeout, connection error, unreadable answer) or is
    /// paused or saturated by the limiter (`fallbacks = [{ provider = "claude",
    /// model = "claude-3-5-haiku" }]`); default none. A permanent error (other
    /// 4xx) never falls through. Each candidate has its own cache entries and
    /// rate limits; the result names the one that answered.
    #[serde(default)]
    pub fallbacks: Vec<FallbackConfig>,
    /// How long a candidate that has a fallback after it waits for the limiter
    /// before the next candidate is tried (`250ms`); the last candidate waits up
    /// to `worker.limits.max_wait`. Short, so a model paused by a 429 falls
    /// through at once instead of holding the job for the pause.
    #[serde(default = "default_fallback_wait", with = "humantime_serde")]
    pub fallback_wait: Duration,
}

/// One fallback of a pipeline: another provider and model to ask.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    /// The provider's name in `[worker.providers]`.
    pub provider: String,
    /// The model, as that provider names it (`claude-3-5-haiku-latest`).
    pub model: String,
}

fn default_fallback_wait() -> Duration {
    Duration::from_millis(250)
}

fn match_all() -> Vec<String> {
    vec!["*".to_owned()]
}

fn default_sinks() -> Vec<SinkConfig> {
    vec![SinkConfig::Amqp]
}

impl PipelineConfig {
    /// Checks one pipeline's own fields; `has_provider` says whether a provider
    /// name is configured.
    pub(super) fn validate(
        &self,
        field: &str,
        has_provider: impl Fn(&str) -> bool,
    ) -> Result<(), ConfigError> {
        let invalid = |name: &str, reason: String| {
            Err(ConfigError::invalid(format!("{field}.{name}"), reason))
        };
        if !is_name(&self.name) {
            return invalid("name", "must be 1-100 characters of [A-Za-z0-9_-]".into());
        }
        if !has_provider(&self.provider) {
            let reason = format!("no provider `{}` in [worker.providers]", self.provider);
            return invalid("provider", reason);
        }
        if self.model.trim().is_empty() {
            return invalid("model", "must not be empty".into());
        }
        if self.sources.is_empty() || self.event_types.is_empty() {
            return invalid(
                "sources",
                "sources and event_types need at least one glob each".into(),
            );
        }
        if self.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
            return invalid("temperature", "must be between 0 and 2".into());
        }
        if self.max_tokens == Some(0) {
            return invalid("max_tokens", "must be at least 1".into());
        }
        if self.user.trim().is_empty() {
            return invalid("user", "must not be empty".into());
        }
        if self.sinks.is_empty() {
            return invalid("sinks", "at least one sink is required".into());
        }
        self.cache.validate(&format!("{field}.cache"))
    }
}
