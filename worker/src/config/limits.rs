//! Settings of the fleet-wide AI rate limiter (`[worker.limits]`) and of a
//! pipeline's response cache (`cache = …` in `[[worker.pipelines]]`).
//!
//! Only the settings live here; the Redis primitives that use them are the
//! worker's `limits::limiter` and `limits::cache`. Validation names the
//! offending field, with the prefix the caller passes (where the section sits).

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use hookfleet_common::config::{ConfigError, FailMode};

/// The limiter's settings (`[worker.limits]`).
///
/// ```toml
/// [worker.limits]
/// redis_failure = "closed"
/// max_wait = "30s"
/// [[worker.limits.models]]
/// provider = "openai"
/// model = "gpt-4o-mini"
/// rpm = 600
/// tpm = 200000
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// What a job does when Redis cannot be asked: `closed` (default) waits and
    /// retries until Redis answers or `max_wait` is spent, then the job goes to a
    /// retry tier; `open` calls the provider without limiting (and counts it).
    /// Open risks the provider's 429s — which pause the fleet — so it suits
    /// providers with generous limits only.
    pub redis_failure: FailMode,
    /// Longest a job waits for capacity before giving up, charging nothing and
    /// going to a retry tier instead (`30s`). Keep it well under
    /// `worker.lease_ttl` minus the provider's `timeout`: a job still waiting when
    /// its lease runs out may be run a second time by a redelivered copy.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// The longest wait a provider's or endpoint's `retry-after` /
    /// `retry-after-ms` is taken for (`10m`); a longer one (a daily quota's
    /// `21600`) is cut to it, for the job's retry and for the fleet pause alike.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
    /// Limits per provider and model (`[[worker.limits.models]]`). A model not
    /// listed is not limited, but a fleet pause (after a 429) still holds it.
    pub models: Vec<ModelLimits>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            redis_failure: FailMode::Closed,
            max_wait: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(600),
            models: Vec::new(),
        }
    }
}

/// The limits of one model at one provider (`[[worker.limits.models]]`).
///
/// Each limit is a token bucket that refills continuously at its per-minute rate
/// and holds at most its burst. A request may start when both buckets can pay
/// for it; one larger than a bucket's burst starts when that bucket is full and
/// leaves it in debt.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelLimits {
    /// The provider's name in `[worker.providers]` (two entries with different
    /// API keys have separate limits, as the provider counts them).
    pub provider: String,
    /// The model, as pipelines name it (`gpt-4o-mini`).
    pub model: String,
    /// Requests per minute; unset means requests are not limited.
    #[serde(default)]
    pub rpm: Option<u32>,
    /// Tokens per minute (prompt estimate + `max_tokens` reserved up front,
    /// reconciled with the reported usage afterwards); unset means not limited.
    #[serde(default)]
    pub tpm: Option<u32>,
    /// Requests that may start at once after an idle spell; default one second's
    /// worth of `rpm` (at least 1). Providers often enforce a per-minute limit per
    /// second (docs/broker-notes.md): a small burst avoids their 429s.
    #[serde(default)]
    pub burst_requests: Option<u32>,
    /// Tokens that may be spent at once after an idle spell; default one second's
    /// worth of `tpm` (at least 1). A request needing more still runs, when the
    /// bucket is full.
    #[serde(default)]
    pub burst_tokens: Option<u32>,
    /// Whether tokens reserved but not used (the answer was shorter than
    /// `max_tokens`) go back to the bucket (`true`). Set `false` for a provider
    /// that charges the reservation itself and never refunds it — OpenAI counts
    /// `max_tokens` at admission — or the fleet would overshoot its TPM. Usage
    /// above the reservation is always charged, as debt.
    #[serde(default = "yes")]
    pub refund_unused: bool,
}

fn yes() -> bool {
    true
}

impl ModelLimits {
    /// The request burst in force: configured, or one second of `rpm` (≥ 1).
    pub fn request_burst(&self) -> Option<u32> {
        self.rpm
            .map(|rpm| self.burst_requests.unwrap_or(rpm.div_ceil(60).max(1)))
    }

    /// The token burst in force: configured, or one second of `tpm` (≥ 1).
    pub fn token_burst(&self) -> Option<u32> {
        self.tpm
            .map(|tpm| self.burst_tokens.unwrap_or(tpm.div_ceil(60).max(1)))
    }
}

impl LimitsConfig {
    /// The limits of `provider`/`model`, if configured.
    pub fn model(&self, provider: &str, model: &str) -> Option<&ModelLimits> {
        self.models
            .iter()
            .find(|m| m.provider == provider && m.model == model)
    }

    /// Checks the section found at `field` (`worker.limits`); `provider_exists`
    /// says whether a provider name is configured.
    pub fn validate(
        &self,
        field: &str,
        provider_exists: impl Fn(&str) -> bool,
    ) -> Result<(), ConfigError> {
        if self.max_wait.is_zero() {
            return Err(ConfigError::invalid(
                format!("{field}.max_wait"),
                "must be greater than 0",
            ));
        }
        if self.max_retry_after.is_zero() {
            return Err(ConfigError::invalid(
                format!("{field}.max_retry_after"),
                "must be greater than 0",
            ));
        }
        let mut seen = HashSet::new();
        for (i, m) in self.models.iter().enumerate() {
            let at = format!("{field}.models[{i}]");
            if !provider_exists(&m.provider) {
                return Err(ConfigError::invalid(
                    format!("{at}.provider"),
                    format!("no provider `{}` in [worker.providers]", m.provider),
                ));
            }
            if !seen.insert((m.provider.as_str(), m.model.as_str())) {
                return Err(ConfigError::invalid(
                    format!("{at}.model"),
                    format!("`{}` of `{}` is limited twice", m.model, m.provider),
                ));
            }
            m.validate(&at)?;
        }
        Ok(())
    }
}

impl ModelLimits {
    /// Checks one model's limits, found at `at` (`worker.limits.models[0]`).
    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let invalid =
            |name: &str, reason: &str| Err(ConfigError::invalid(format!("{at}.{name}"), reason));
        if self.model.trim().is_empty() {
            return invalid("model", "must not be empty");
        }
        if self.rpm.is_none() && self.tpm.is_none() {
            return invalid(
                "rpm",
                "set rpm, tpm or both (an unlisted model is not limited)",
            );
        }
        for (name, value) in [
            ("rpm", self.rpm),
            ("tpm", self.tpm),
            ("burst_requests", self.burst_requests),
            ("burst_tokens", self.burst_tokens),
        ] {
            if value == Some(0) {
                return invalid(name, "must be at least 1");
            }
        }
        if self.burst_requests.is_some() && self.rpm.is_none() {
            return invalid("burst_requests", "needs rpm");
        }
        if self.burst_tokens.is_some() && self.tpm.is_none() {
            return invalid("burst_tokens", "needs tpm");
        }
        Ok(())
    }
}

/// A pipeline's response cache: `cache = "off"`, `cache = "on"` (defaults), or
/// `cache = { ttl = "1h", namespace = "tenant-a", nondeterministic = false }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheConfig {
    /// Never read or write the cache.
    Off,
    /// Cache deterministic requests (and others if `nondeterministic`).
    On(CacheSettings),
}

impl Default for CacheConfig {
    /// On, with [`CacheSettings::default`]: only temperature-0 requests are
    /// cached, so the default never changes what a sampling pipeline answers.
    fn default() -> Self {
        Self::On(CacheSettings::default())
    }
}

impl CacheConfig {
    /// The settings when the cache is on.
    pub fn settings(&self) -> Option<&CacheSettings> {
        match self {
            Self::Off => None,
            Self::On(settings) => Some(settings),
        }
    }

    /// Checks the value found at `field` (`worker.pipelines[0].cache`).
    pub fn validate(&self, field: &str) -> Result<(), ConfigError> {
        match self {
            Self::Off => Ok(()),
            Self::On(settings) => settings.validate(field),
        }
    }
}

/// How a pipeline caches (the table form of `cache`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    /// How long an answer is kept (`1h`).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Entries are shared only between pipelines with the same namespace, so
    /// tenants never see each other's answers; default the pipeline's name.
    pub namespace: Option<String>,
    /// Also cache requests with a temperature above 0 (or unset, the provider's
    /// default), whose answers vary by design (`false`).
    pub nondeterministic: bool,
    /// How long the one worker computing an answer holds its claim before others
    /// may take over (`15s`). It renews the claim while it works, so this bounds
    /// how long a crashed worker holds others up, not how long a call may take.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Longest a job waits for another worker's identical call before giving up
    /// on the cache and calling the provider itself (`2m`).
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(3600),
            namespace: None,
            nondeterministic: false,
            lease: Duration::from_secs(15),
            max_wait: Duration::from_secs(120),
        }
    }
}

impl CacheSettings {
    /// Whether a request at `temperature` is cached under these settings
    /// ([`cacheable`]).
    pub fn caches(&self, temperature: Option<f32>) -> bool {
        cacheable(temperature, self.nondeterministic)
    }

    /// The cache namespace: the configured one, or `pipeline`'s name.
    pub fn namespace_for<'a>(&'a self, pipeline: &'a str) -> &'a str {
        self.namespace.as_deref().unwrap_or(pipeline)
    }

    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if self.ttl.as_millis() == 0 {
            return Err(ConfigError::invalid(
                format!("{field}.ttl"),
                "must be at least 1ms",
            ));
        }
        if self.lease < Duration::from_millis(100) {
            return Err(ConfigError::invalid(
                format!("{field}.lease"),
                "must be at least 100ms",
            ));
        }
        if self.max_wait.is_zero() {
            return Err(ConfigError::invalid(
                format!("{field}.max_wait"),
                "must be greater than 0",
            ));
        }
        if let Some(ns) = &self.namespace
            && (ns.is_empty()
                || ns.len() > 100
                || !ns
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(ConfigError::invalid(
                format!("{field}.namespace"),
                "must be 1-100 characters of [A-Za-z0-9_.-]",
            ));
        }
        Ok(())
    }
}

// `"off"`, `"on"` or a table: a hand-written visitor rather than an untagged
// enum, so a typo gets a message that says what is accepted.
impl<'de> Deserialize<'de> for CacheConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CacheVisitor;

        impl<'de> Visitor<'de> for CacheVisitor {
            type Value = CacheConfig;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#""off", "on" or a table { ttl, namespace, nondeterministic }"#)
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<CacheConfig, E> {
                match value {
                    "off" => Ok(CacheConfig::Off),
                    "on" => Ok(CacheConfig::default()),
                    other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
                }
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<CacheConfig, A::Error> {
                CacheSettings::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(CacheConfig::On)
            }
        }

        deserializer.deserialize_any(CacheVisitor)
    }
}

/// Whether a request's answer may be cached: deterministic requests
/// (temperature exactly 0) always, others only when the pipeline opts in
/// (`nondeterministic = true`). An unset temperature is the provider's default,
/// which samples (1.0 at OpenAI), so it is not deterministic.
pub fn cacheable(temperature: Option<f32>, opt_in: bool) -> bool {
    opt_in || temperature == Some(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Pipeline {
        #[serde(default)]
        cache: CacheConfig,
    }

    #[derive(Debug, Deserialize)]
    struct Worker {
        #[serde(default)]
        limits: LimitsConfig,
    }

    /// Parses `toml` as loading `hookfleet.toml` does.
    fn parse<T: serde::de::DeserializeOwned>(toml: &str) -> Result<T, ConfigError> {
        let sources = hookfleet_common::config::Sources {
            file: None,
            toml: Some(toml.to_owned()),
            env: Some(Default::default()),
        };
        hookfleet_common::config::read(sources, &[])
    }

    fn cache(toml: &str) -> Result<CacheConfig, ConfigError> {
        parse::<Pipeline>(toml).map(|p| p.cache)
    }

    #[test]
    fn cache_accepts_off_on_a_table_and_defaults_to_on() {
        assert_eq!(cache("").unwrap(), CacheConfig::default());
        assert_eq!(cache(r#"cache = "off""#).unwrap(), CacheConfig::Off);
        assert_eq!(cache(r#"cache = "on""#).unwrap(), CacheConfig::default());
        let table = cache(r#"cache = { ttl = "10m", namespace = "tenant-a" }"#).unwrap();
        let settings = table.settings().unwrap();
        assert_eq!(settings.ttl, Duration::from_secs(600));
        assert_eq!(settings.namespace_for("triage"), "tenant-a");
        assert!(!settings.nondeterministic);
        assert_eq!(
            CacheSettings::default().namespace_for("triage"),
            "triage",
            "the pipeline's own name by default"
        );
    }

    #[test]
    fn a_misspelt_cache_value_says_what_is_accepted() {
        let err = cache(r#"cache = "of""#).unwrap_err().to_string();
        assert!(err.contains(r#""off", "on""#), "{err}");
        let err = cache(r#"cache = { tll = "1h" }"#).unwrap_err().to_string();
        assert!(err.contains("tll"), "{err}");
    }

    #[test]
    fn by_default_only_deterministic_requests_are_cached() {
        let settings = CacheSettings::default();
        assert!(settings.caches(Some(0.0)));
        assert!(!settings.caches(Some(0.2)));
        let opted_in = CacheSettings {
            nondeterministic: true,
            ..CacheSettings::default()
        };
        assert!(opted_in.caches(None));
    }

    #[test]
    fn a_bad_cache_namespace_is_refused_with_its_field() {
        let config = cache(r#"cache = { namespace = "a b" }"#).unwrap();
        let err = config.validate("worker.pipelines[2].cache").unwrap_err();
        assert!(
            err.to_string()
                .contains("worker.pipelines[2].cache.namespace"),
            "{err}"
        );
    }

    const LIMITS: &str = r#"
[limits]
redis_failure = "open"
max_wait = "30s"
[[limits.models]]
provider = "openai"
model = "gpt-4o-mini"
rpm = 600
tpm = 200000
[[limits.models]]
provider = "claude"
model = "claude-haiku"
tpm = 50000
burst_tokens = 20000
refund_unused = false
"#;

    fn limits(toml: &str) -> LimitsConfig {
        parse::<Worker>(toml).unwrap().limits
    }

    #[test]
    fn limits_load_with_one_second_bursts_by_default() {
        let l = limits(LIMITS);
        assert_eq!(l.redis_failure, FailMode::Open);
        assert_eq!(l.max_wait, Duration::from_secs(30));
        let mini = l.model("openai", "gpt-4o-mini").unwrap();
        assert_eq!(mini.request_burst(), Some(10));
        assert_eq!(mini.token_burst(), Some(3334));
        assert!(mini.refund_unused);
        let haiku = l.model("claude", "claude-haiku").unwrap();
        assert_eq!(haiku.request_burst(), None);
        assert_eq!(haiku.token_burst(), Some(20000));
        assert!(!haiku.refund_unused);
        assert!(l.validate("worker.limits", |_| true).is_ok());
        assert_eq!(LimitsConfig::default().redis_failure, FailMode::Closed);
    }

    #[test]
    fn invalid_limits_name_their_field() {
        let check = |toml: &str, exists: bool| {
            limits(toml)
                .validate("worker.limits", |_| exists)
                .unwrap_err()
                .to_string()
        };
        assert!(check(LIMITS, false).contains("worker.limits.models[0].provider"));
        let zero = LIMITS.replace("rpm = 600", "rpm = 0");
        assert!(check(&zero, true).contains("worker.limits.models[0].rpm"));
        let none = LIMITS.replace("tpm = 50000", "");
        let err = check(&none.replace("burst_tokens = 20000", ""), true);
        assert!(err.contains("worker.limits.models[1].rpm"), "{err}");
        let twice = LIMITS
            .replace("claude-haiku", "gpt-4o-mini")
            .replace("\"claude\"", "\"openai\"");
        assert!(check(&twice, true).contains("worker.limits.models[1].model"));
    }
}
