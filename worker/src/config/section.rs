//! The `[worker]` section: consumer sizing, retry policy, and the checks that
//! span providers and pipelines (a job's slowest path must end before its lease).
//!
//! Only what types and plain checks can validate lives here. Globs and prompt
//! templates are compiled by the worker at start ([`crate::pipeline`]), which
//! reports a bad one with its field path, so an invalid pipeline still fails at
//! start, never on the first matching event.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use hookfleet_common::config::ConfigError;
use serde::Deserialize;

use super::console::ConsoleConfig;
use super::http::{self, OutboundConfig};
use super::limits::LimitsConfig;
use super::pipelines::{PipelineConfig, ProviderConfig, SinkConfig, UnmatchedPolicy};

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
    /// How often the worker writes its heartbeat to Redis (`{ns}:fleet:{name}`:
    /// jobs in flight, prefetch, start time, version), which the console's
    /// overview sums over the fleet; a heartbeat lasts three times this (`5s`).
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// AI providers by name, referenced by pipelines (`[worker.providers.NAME]`).
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Pipelines (`[[worker.pipelines]]`). Every pipeline that matches an event
    /// runs, in order; each one's result is published on its own.
    pub pipelines: Vec<PipelineConfig>,
    /// The fleet-wide rate limits per provider and model (`[worker.limits]`).
    pub limits: LimitsConfig,
    /// Where enrichment steps and HTTP sinks may connect (`[worker.outbound]`).
    pub outbound: OutboundConfig,
    /// The web console under `/console` on the admin listener (`[worker.console]`).
    pub console: ConsoleConfig,
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
            heartbeat_interval: Duration::from_secs(5),
            providers: BTreeMap::new(),
            pipelines: Vec::new(),
            limits: LimitsConfig::default(),
            outbound: OutboundConfig::default(),
            console: ConsoleConfig::default(),
        }
    }
}

impl WorkerConfig {
    /// Checks the section, naming the offending field.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.validate_sizing()?;
        for (name, provider) in &self.providers {
            provider.validate(&format!("worker.providers.{name}"), name, self.lease_ttl)?;
        }
        let mut names = HashSet::new();
        for (i, pipeline) in self.pipelines.iter().enumerate() {
            let field = format!("worker.pipelines[{i}]");
            pipeline.validate(&field, |p| self.providers.contains_key(p))?;
            if !names.insert(pipeline.name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{field}.name"),
                    format!("pipeline `{}` is defined twice", pipeline.name),
                ));
            }
            self.validate_http_steps(&field, pipeline)?;
            self.validate_fallbacks(pipeline, &field)?;
        }
        self.limits
            .validate("worker.limits", |p| self.providers.contains_key(p))?;
        self.console.validate("worker.console")?;
        self.validate_max_wait()
    }

    /// Counts, durations and the reconnect range.
    fn validate_sizing(&self) -> Result<(), ConfigError> {
        if self.concurrency == 0 {
            return Err(ConfigError::invalid(
                "worker.concurrency",
                "must be at least 1",
            ));
        }
        if self.heartbeat_interval < Duration::from_millis(100) {
            return Err(ConfigError::invalid(
                "worker.heartbeat_interval",
                "must be at least 100ms",
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
        Ok(())
    }

    /// A job still waiting for the limiter when its lease expires could run twice.
    fn validate_max_wait(&self) -> Result<(), ConfigError> {
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
    use crate::config::{ResponseFormat, Settings, UndefinedMode};
    use hookfleet_common::config::Sources;

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
