//! The `[worker]` section: consumer sizing, retry policy, providers and pipelines.
//!
//! Only what types and plain checks can validate lives here. Globs and prompt
//! templates are compiled by the worker at start (`hookfleet_worker::pipeline`),
//! which reports a bad one with its field path, so an invalid pipeline still fails
//! at start, never on the first matching event.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::http::{self, EnrichStepConfig, HttpSinkConfig, OutboundConfig};
use super::{CacheConfig, ConfigError, LimitsConfig, Secret};

/// The worker fleet's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Address of the admin server (`/healthz`, `/readyz`, `/metrics`), `0.0.0.0:9090`.
    pub admin_listen: SocketAddr,
    /// Jobs processed at once by one worker; also the AMQP prefetch (16).
    pub concurrency: u16,
    /// How long in-flight jobs may take to finish after SIGTERM (`90s`: the limiter's
    /// `max_wait` plus a provider's default `timeout`). Jobs still running then are
    /// abandoned; the broker redelivers them and their AI calls are paid twice, so
    /// keep it at least [`WorkerConfig::longest_job`] (a warning at start says when
    /// it is not) and the pod's `terminationGracePeriodSeconds` above it.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Attempts per job, the first included (5). A transient failure on the last
    /// attempt dead-letters the job with class `exhausted`.
    pub max_attempts: u32,
    /// What to do with an event no pipeline matches: `ack` (count it in
    /// `hookfleet_jobs_total{outcome="unmatched"}` and drop it) or `dead-letter`.
    pub unmatched: UnmatchedPolicy,
    /// How long a "done" marker (`{ns}:done:{pipeline}:{message_id}`) is kept after
    /// a result was published, so a redelivery within that time neither calls the AI
    /// again nor publishes a second result (`24h`).
    #[serde(with = "humantime_serde")]
    pub done_ttl: Duration,
    /// How long a worker's claim on a job (`{ns}:lease:{pipeline}:{message_id}`)
    /// lasts without renewal. The running job renews it every third of this, so
    /// a redelivered copy waits for however long the job takes; after a crash,
    /// copies wait at most this long (`2m`). Kept above every provider's
    /// `timeout` (checked), though renewal no longer depends on it.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// First pause before reconnecting to RabbitMQ after the connection is lost;
    /// doubles on each failure, with jitter (`200ms`).
    #[serde(with = "humantime_serde")]
    pub reconnect_min_delay: Duration,
    /// Longest pause between reconnection attempts (`30s`).
    #[serde(with = "humantime_serde")]
    pub reconnect_max_delay: Duration,
    /// When a retry or dead letter cannot be published (broker trouble), the job is
    /// returned to the queue after this pause, so a failing broker is not hammered
    /// in a tight loop (`1s`). The queue's `x-delivery-limit` ends a loop for good.
    #[serde(with = "humantime_serde")]
    pub requeue_delay: Duration,
    /// AI providers by name, referenced by pipelines (`[worker.providers.NAME]`).
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Pipelines (`[[worker.pipelines]]`). Every pipeline that matches an event
    /// runs, in order; each one's result is published on its own.
    pub pipelines: Vec<PipelineConfig>,
    /// The fleet-wide rate limits per provider and model (`[worker.limits]`).
    pub limits: LimitsConfig,
    /// Where enrichment steps and HTTP sinks may connect (`[worker.outbound]`).
    pub outbound: OutboundConfig,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            admin_listen: SocketAddr::from(([0, 0, 0, 0], 9090)),
            concurrency: 16,
            shutdown_grace: Duration::from_secs(90),
            max_attempts: 5,
            unmatched: UnmatchedPolicy::Ack,
            done_ttl: Duration::from_secs(24 * 3600),
            lease_ttl: Duration::from_secs(120),
            reconnect_min_delay: Duration::from_millis(200),
            reconnect_max_delay: Duration::from_secs(30),
            requeue_delay: Duration::from_secs(1),
            providers: BTreeMap::new(),
            pipelines: Vec::new(),
            limits: LimitsConfig::default(),
            outbound: OutboundConfig::default(),
        }
    }
}

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

pub(super) fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

impl WorkerConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.concurrency == 0 {
            return Err(ConfigError::invalid(
                "worker.concurrency",
                "must be at least 1",
            ));
        }
        if self.max_attempts == 0 {
            return Err(ConfigError::invalid(
                "worker.max_attempts",
                "must be at least 1",
            ));
        }
        if self.done_ttl.as_millis() == 0 {
            return Err(ConfigError::invalid(
                "worker.done_ttl",
                "must be at least 1ms",
            ));
        }
        if self.reconnect_min_delay.is_zero() || self.reconnect_max_delay < self.reconnect_min_delay
        {
            return Err(ConfigError::invalid(
                "worker.reconnect_max_delay",
                "need 0 < reconnect_min_delay <= reconnect_max_delay",
            ));
        }
        for (name, provider) in &self.providers {
            let field = format!("worker.providers.{name}");
            if !is_name(name) {
                return Err(ConfigError::invalid(
                    field,
                    "provider names must be [A-Za-z0-9_-]",
                ));
            }
            let url = provider.base_url();
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(ConfigError::invalid(
                    format!("{field}.base_url"),
                    "must start with http:// or https://",
                ));
            }
            super::auth::validate_provider(&field, provider)?;
            if provider.timeout.is_zero() {
                return Err(ConfigError::invalid(
                    format!("{field}.timeout"),
                    "must be greater than 0",
                ));
            }
            if provider.timeout >= self.lease_ttl {
                return Err(ConfigError::invalid(
                    format!("{field}.timeout"),
                    format!(
                        "must be shorter than worker.lease_ttl ({:?}), or a slow call's \
                         redelivered copy would run a second time",
                        self.lease_ttl
                    ),
                ));
            }
        }
        let mut names = HashSet::new();
        for (i, pipeline) in self.pipelines.iter().enumerate() {
            let field = format!("worker.pipelines[{i}]");
            if !is_name(&pipeline.name) {
                return Err(ConfigError::invalid(
                    format!("{field}.name"),
                    "must be 1-100 characters of [A-Za-z0-9_-]",
                ));
            }
            if !names.insert(pipeline.name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{field}.name"),
                    format!("pipeline `{}` is defined twice", pipeline.name),
                ));
            }
            if !self.providers.contains_key(&pipeline.provider) {
                return Err(ConfigError::invalid(
                    format!("{field}.provider"),
                    format!("no provider `{}` in [worker.providers]", pipeline.provider),
                ));
            }
            if pipeline.model.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("{field}.model"),
                    "must not be empty",
                ));
            }
            if pipeline.sources.is_empty() || pipeline.event_types.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{field}.sources"),
                    "sources and event_types need at least one glob each",
                ));
            }
            if let Some(t) = pipeline.temperature
                && !(0.0..=2.0).contains(&t)
            {
                return Err(ConfigError::invalid(
                    format!("{field}.temperature"),
                    "must be between 0 and 2",
                ));
            }
            if pipeline.max_tokens == Some(0) {
                return Err(ConfigError::invalid(
                    format!("{field}.max_tokens"),
                    "must be at least 1",
                ));
            }
            if pipeline.user.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("{field}.user"),
                    "must not be empty",
                ));
            }
            if pipeline.sinks.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{field}.sinks"),
                    "at least one sink is required",
                ));
            }
            pipeline.cache.validate(&format!("{field}.cache"))?;
            self.validate_http_steps(&field, pipeline)?;
            self.validate_fallbacks(pipeline, &field)?;
        }
        self.limits
            .validate("worker.limits", |p| self.providers.contains_key(p))?;
        let slowest = self.providers.values().map(|p| p.timeout).max();
        if let Some(timeout) = slowest
            && self.limits.max_wait + timeout >= self.lease_ttl
        {
            return Err(ConfigError::invalid(
                "worker.limits.max_wait",
                format!(
                    "max_wait plus the slowest provider timeout ({timeout:?}) must be shorter \
                     than worker.lease_ttl ({:?}), or a job still waiting when its lease \
                     expires may run twice",
                    self.lease_ttl
                ),
            ));
        }
        Ok(())
    }
}

impl WorkerConfig {
    /// The longest one delivery's slowest pipeline may run, the measure for
    /// `shutdown_grace`: every enrichment step in turn, then each AI candidate in
    /// turn (its limiter wait — `fallback_wait`, the last one `limits.max_wait` —
    /// plus its provider's `timeout`), then the slowest sink (sinks run
    /// concurrently). deploy/validate/checks.py applies the same model to the
    /// manifests.
    pub fn longest_job(&self) -> Duration {
        self.pipelines
            .iter()
            .map(|p| self.longest_pipeline(p))
            .max()
            .unwrap_or(Duration::ZERO)
    }

    fn longest_pipeline(&self, pipeline: &PipelineConfig) -> Duration {
        let timeout = |name: &str| {
            self.providers
                .get(name)
                .map_or(Duration::ZERO, |p| p.timeout)
        };
        let candidates = std::iter::once(pipeline.provider.as_str())
            .chain(pipeline.fallbacks.iter().map(|f| f.provider.as_str()));
        let last = pipeline.fallbacks.len();
        let ai: Duration = candidates
            .enumerate()
            .map(|(i, provider)| {
                let wait = if i == last {
                    self.limits.max_wait
                } else {
                    pipeline.fallback_wait
                };
                wait + timeout(provider)
            })
            .sum();
        let enrich: Duration = pipeline.enrich.iter().map(|s| s.timeout).sum();
        let sinks = pipeline
            .sinks
            .iter()
            .filter_map(SinkConfig::timeout)
            .max()
            .unwrap_or(Duration::ZERO);
        enrich + ai + sinks
    }

    /// Enrichment steps and HTTP sinks: their fields, unique names, and that a
    /// job's slowest path (every step in turn, the AI call, the slowest sink)
    /// ends before its lease does.
    fn validate_http_steps(
        &self,
        field: &str,
        pipeline: &PipelineConfig,
    ) -> Result<(), ConfigError> {
        for (i, step) in pipeline.enrich.iter().enumerate() {
            step.validate(&format!("{field}.enrich[{i}]"))?;
        }
        for (i, sink) in pipeline.sinks.iter().enumerate() {
            if let SinkConfig::Http(http) = sink {
                http.validate(&format!("{field}.sinks[{i}]"))?;
            }
        }
        http::unique(
            &format!("{field}.enrich"),
            pipeline.enrich.iter().map(|s| s.name.as_str()),
        )?;
        http::unique(
            &format!("{field}.sinks"),
            pipeline.sinks.iter().map(SinkConfig::name),
        )?;
        let provider = self
            .providers
            .get(&pipeline.provider)
            .map_or(Duration::ZERO, |p| p.timeout);
        let enrich: Duration = pipeline.enrich.iter().map(|s| s.timeout).sum();
        // Sinks are delivered concurrently: the slowest one counts.
        let sinks = pipeline
            .sinks
            .iter()
            .filter_map(SinkConfig::timeout)
            .max()
            .unwrap_or(Duration::ZERO);
        if enrich + provider + sinks >= self.lease_ttl {
            return Err(ConfigError::invalid(
                format!("{field}.enrich"),
                format!(
                    "the enrichment timeouts ({enrich:?}), the provider timeout ({provider:?}) \
                     and the slowest sink timeout ({sinks:?}) together must be shorter than \
                     worker.lease_ttl ({:?}), or a slow job's redelivered copy would run a \
                     second time",
                    self.lease_ttl
                ),
            ));
        }
        Ok(())
    }

    fn validate_fallbacks(
        &self,
        pipeline: &PipelineConfig,
        field: &str,
    ) -> Result<(), ConfigError> {
        let mut seen = HashSet::from([(pipeline.provider.as_str(), pipeline.model.as_str())]);
        for (j, fallback) in pipeline.fallbacks.iter().enumerate() {
            let field = format!("{field}.fallbacks[{j}]");
            if !self.providers.contains_key(&fallback.provider) {
                return Err(ConfigError::invalid(
                    format!("{field}.provider"),
                    format!("no provider `{}` in [worker.providers]", fallback.provider),
                ));
            }
            if fallback.model.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("{field}.model"),
                    "must not be empty",
                ));
            }
            if !seen.insert((fallback.provider.as_str(), fallback.model.as_str())) {
                return Err(ConfigError::invalid(
                    field,
                    format!(
                        "`{}`/`{}` is already tried before it",
                        fallback.provider, fallback.model
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Settings, Sources};

    fn load(toml: &str) -> Result<Settings, ConfigError> {
        Settings::load_from(Sources {
            file: None,
            toml: Some(toml.to_owned()),
            env: Some(Default::default()),
        })
    }

    const SAMPLE: &str = r#"
[worker]
concurrency = 8
max_attempts = 3
unmatched = "dead-letter"
[worker.providers.mock]
kind = "openai"
base_url = "http://127.0.0.1:8090/v1/"
timeout = "5s"
[worker.providers.claude]
kind = "anthropic"
[[worker.pipelines]]
name = "support-triage"
sources = ["support", "zendesk*"]
event_types = ["ticket.*"]
provider = "mock"
model = "gpt-4o-mini"
temperature = 0.0
max_tokens = 256
response_format = "json"
system = "You triage support tickets."
user = "Ticket: {{ payload.ticket.body }}"
"#;

    #[test]
    fn a_pipeline_section_loads_with_defaults_filled_in() {
        let s = load(SAMPLE).unwrap();
        let w = &s.worker;
        assert_eq!(w.unmatched, UnmatchedPolicy::DeadLetter);
        assert_eq!(w.providers["mock"].base_url(), "http://127.0.0.1:8090/v1");
        assert_eq!(
            w.providers["claude"].base_url(),
            "https://api.anthropic.com/v1"
        );
        assert_eq!(w.providers["claude"].anthropic_version, "2023-06-01");
        let p = &w.pipelines[0];
        assert_eq!(p.response_format, ResponseFormat::Json);
        assert!(matches!(p.sinks[..], [SinkConfig::Amqp]));
        assert_eq!(p.undefined, UndefinedMode::SemiStrict);
    }

    #[test]
    fn the_longest_job_adds_enrichment_each_candidate_and_the_slowest_sink() {
        let toml = format!(
            "{SAMPLE}fallbacks = [{{ provider = \"claude\", model = \"haiku\" }}]\n\
             fallback_wait = \"1s\"\n\
             enrich = [{{ name = \"crm\", url = \"https://crm.example/x\", timeout = \"2s\" }}]\n\
             sinks = [{{ kind = \"amqp\" }}, {{ kind = \"http\", name = \"a\", url = \"https://a.example/\", timeout = \"3s\" }}, \
             {{ kind = \"http\", name = \"b\", url = \"https://b.example/\", timeout = \"4s\" }}]\n\
             [worker.limits]\nmax_wait = \"20s\"\n"
        );
        let s = load(&toml).unwrap();
        // enrich 2s + (fallback_wait 1s + mock 5s) + (max_wait 20s + claude 60s) + slowest sink 4s
        assert_eq!(s.worker.longest_job(), Duration::from_secs(92));
        assert_eq!(
            WorkerConfig::default().shutdown_grace,
            Duration::from_secs(90)
        );
    }

    #[test]
    fn a_pipeline_naming_an_unknown_provider_is_refused_with_its_field() {
        let toml = SAMPLE.replace("provider = \"mock\"", "provider = \"nope\"");
        let err = load(&toml).unwrap_err().to_string();
        assert!(err.contains("worker.pipelines[0].provider"), "{err}");
    }

    #[test]
    fn a_provider_timeout_longer_than_the_lease_is_refused() {
        let toml = SAMPLE.replace("timeout = \"5s\"", "timeout = \"5m\"");
        let err = load(&toml).unwrap_err().to_string();
        assert!(err.contains("worker.providers.mock.timeout"), "{err}");
    }

    #[test]
    fn limits_and_caches_are_checked_with_their_field() {
        let toml = format!("{SAMPLE}\n[worker.limits]\nmax_wait = \"2m\"\n");
        let err = load(&toml).unwrap_err().to_string();
        assert!(err.contains("worker.limits.max_wait"), "{err}");
        let toml = format!(
            "{SAMPLE}\n[[worker.limits.models]]\nprovider = \"nope\"\nmodel = \"m\"\nrpm = 1\n"
        );
        let err = load(&toml).unwrap_err().to_string();
        assert!(err.contains("worker.limits.models[0].provider"), "{err}");
        let toml = format!("{SAMPLE}cache = {{ ttl = \"0s\" }}\n");
        let err = load(&toml).unwrap_err().to_string();
        assert!(err.contains("worker.pipelines[0].cache.ttl"), "{err}");
        let toml = format!("{SAMPLE}cache = \"off\"\n");
        assert!(
            load(&toml).unwrap().worker.pipelines[0]
                .cache
                .settings()
                .is_none()
        );
    }

    const HTTP_STEPS: &str = r#"
enrich = [{ name = "crm", url = "http://crm/{{ payload.customer.id }}", auth = { kind = "basic", username = "svc", password = { secret_file = "/dev/null/none" } } }]
sinks = [
  { kind = "amqp" },
  { kind = "http", name = "chat", url = "http://chat/", when = "output_json.sentiment == 'negative'", timeout = "3s" },
]
"#;

    #[test]
    fn enrichment_steps_and_http_sinks_load_and_are_checked_with_their_field() {
        let toml = format!("{SAMPLE}{}", HTTP_STEPS.replace("auth = { kind = \"basic\", username = \"svc\", password = { secret_file = \"/dev/null/none\" } } ", ""));
        let s = load(&toml).unwrap();
        let p = &s.worker.pipelines[0];
        assert_eq!(p.enrich[0].name, "crm");
        assert_eq!(p.enrich[0].method, "GET");
        assert_eq!(p.enrich[0].timeout, Duration::from_secs(10));
        let SinkConfig::Http(chat) = &p.sinks[1] else {
            panic!("an http sink")
        };
        assert_eq!(
            (chat.method.as_str(), chat.timeout),
            ("POST", Duration::from_secs(3))
        );
        assert_eq!(p.sinks[1].name(), "chat");

        // A secret that cannot be read names its field's path.
        let err = load(&format!("{SAMPLE}{HTTP_STEPS}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/dev/null/none"), "{err}");

        let bad_name = toml.replace("name = \"crm\"", "name = \"c-r-m\"");
        let err = load(&bad_name).unwrap_err().to_string();
        assert!(err.contains("worker.pipelines[0].enrich[0].name"), "{err}");
        let twice = toml.replace("name = \"chat\"", "name = \"amqp\"");
        let err = load(&twice).unwrap_err().to_string();
        assert!(err.contains("worker.pipelines[0].sinks[1].name"), "{err}");
        let bad_secret = toml.replace(
            "timeout = \"3s\"",
            "signing_secret = { secret_file = \"/proc/self/cmdline\" }",
        );
        let err = load(&bad_secret).unwrap_err().to_string();
        assert!(
            err.contains("worker.pipelines[0].sinks[1].signing_secret"),
            "{err}"
        );
        let slow = toml.replace("timeout = \"3s\"", "timeout = \"2m\"");
        let err = load(&slow).unwrap_err().to_string();
        assert!(err.contains("worker.lease_ttl"), "{err}");
    }

    #[test]
    fn fallbacks_are_checked_with_their_field() {
        let ok = format!(
            "{SAMPLE}fallbacks = [{{ provider = \"claude\", model = \"claude-3-5-haiku\" }}]\n"
        );
        let p = &load(&ok).unwrap().worker.pipelines[0];
        assert_eq!(p.fallbacks[0].provider, "claude");
        assert_eq!(p.fallback_wait, Duration::from_millis(250));
        let toml = format!(
            "{SAMPLE}fallbacks = [{{ provider = \"claude\", model = \"c\" }}, \
             {{ provider = \"nope\", model = \"m\" }}]\n"
        );
        let err = load(&toml).unwrap_err().to_string();
        assert!(
            err.contains("worker.pipelines[0].fallbacks[1].provider"),
            "{err}"
        );
        let toml = format!("{SAMPLE}fallbacks = [{{ provider = \"claude\", model = \" \" }}]\n");
        let err = load(&toml).unwrap_err().to_string();
        assert!(
            err.contains("worker.pipelines[0].fallbacks[0].model"),
            "{err}"
        );
        let toml =
            format!("{SAMPLE}fallbacks = [{{ provider = \"mock\", model = \"gpt-4o-mini\" }}]\n");
        let err = load(&toml).unwrap_err().to_string();
        assert!(err.contains("worker.pipelines[0].fallbacks[0]"), "{err}");
    }

    #[test]
    fn duplicate_pipeline_names_are_refused() {
        let second = SAMPLE.split("[[worker.pipelines]]").nth(1).unwrap();
        let toml = format!("{SAMPLE}\n[[worker.pipelines]]{second}");
        let err = load(&toml).unwrap_err().to_string();
        assert!(err.contains("worker.pipelines[1].name"), "{err}");
    }
}
