//! What the mock does: latency, injected failures and the enforced rate limits.
//!
//! One [`MockConfig`] is in force at a time; [`super::MockAi::set_config`] and
//! `PUT /config` replace it whole, and the next request sees the new one. Failure
//! rates are drawn independently per request: the random ones share one draw, so
//! their sum is the chance of some random failure and should stay at most 1.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The behaviour of the mock provider. `MockConfig::default()` is a healthy,
/// instant, unlimited provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MockConfig {
    /// Delay before every answer to a model call (successes and injected failures;
    /// validation errors and the rate window's 429s answer at once, as real
    /// providers do). JSON: milliseconds.
    #[serde(with = "millis")]
    pub latency: Duration,
    /// Extra delay drawn uniformly from `0..=latency_jitter` per request. JSON: ms.
    #[serde(with = "millis")]
    pub latency_jitter: Duration,
    /// Chance (0..1) of a 500, 502 or 503 with the provider's error body.
    pub fail_5xx_rate: f64,
    /// Chance (0..1) of a random 429 `rate_limit_exceeded` / `rate_limit_error`
    /// with `retry-after` of [`rate_limit_retry_after`](Self::rate_limit_retry_after).
    pub rate_429: f64,
    /// Chance (0..1) of an OpenAI 429 with code `insufficient_quota` (billing:
    /// must not be retried). Ignored on the Anthropic endpoint.
    pub insufficient_quota_rate: f64,
    /// Chance (0..1) of an Anthropic 529 `overloaded_error`. Ignored on the OpenAI
    /// endpoint.
    pub overloaded_rate: f64,
    /// Chance (0..1) of a 200 whose body is truncated JSON or an HTML page.
    pub malformed_rate: f64,
    /// A request whose prompt contains this string always gets a 500.
    pub fail_marker: Option<String>,
    /// A request whose prompt contains this string always gets a 400
    /// `invalid_request_error`.
    pub bad_request_marker: Option<String>,
    /// The first request carrying each distinct prompt that contains this string
    /// gets a 429 rate-limit error (with `retry-after` of
    /// [`rate_limit_retry_after`](Self::rate_limit_retry_after)); later ones are
    /// served. One 429 exactly where a test wants it, e.g. to see the fleet pause.
    pub rate_limit_marker: Option<String>,
    /// The `retry-after` of injected 429 rate-limit errors (`rate_429`,
    /// `rate_limit_marker`): 1 s by default. JSON: milliseconds.
    #[serde(with = "millis")]
    pub rate_limit_retry_after: Duration,
    /// The first this-many requests carrying each distinct prompt get a 500; later
    /// ones are served normally. 0 turns this off. Counted per prompt hash since
    /// the last counters reset.
    pub fail_first_attempts: u32,
    /// The first this-many requests carrying each distinct prompt get a 200
    /// whose text is prose, not the JSON asked for (a model ignoring JSON mode);
    /// later ones are served normally. 0 turns this off. Counted like
    /// `fail_first_attempts`.
    pub prose_first_attempts: u32,
    /// Requests admitted per model per [`rate_window`](Self::rate_window); `None`
    /// is unlimited. Each model has its own window.
    pub rpm_limit: Option<u32>,
    /// Tokens admitted per model per window, counted at admission as the prompt
    /// estimate plus `max_tokens` (as OpenAI does); `None` is unlimited.
    pub tpm_limit: Option<u32>,
    /// Limits for particular models, replacing `rpm_limit`/`tpm_limit` for them.
    pub model_limits: BTreeMap<String, ModelLimits>,
    /// The sliding window the limits are counted over. 60 s makes `rpm_limit`
    /// and `tpm_limit` per minute as named; tests shorten it to see a window free
    /// up in real time. JSON: milliseconds.
    #[serde(with = "millis")]
    pub rate_window: Duration,
    /// Answer 401 when the API key header is missing (`Authorization: Bearer …`
    /// for OpenAI, `x-api-key` for Anthropic). Any non-empty key is accepted.
    pub require_api_key: bool,
    /// Seed for the random draws (failures, jitter), so a sequential run repeats
    /// exactly. `None` seeds from the OS. Takes effect at start only.
    pub seed: Option<u64>,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            latency_jitter: Duration::ZERO,
            fail_5xx_rate: 0.0,
            rate_429: 0.0,
            insufficient_quota_rate: 0.0,
            overloaded_rate: 0.0,
            malformed_rate: 0.0,
            fail_marker: None,
            bad_request_marker: None,
            rate_limit_marker: None,
            rate_limit_retry_after: Duration::from_secs(1),
            fail_first_attempts: 0,
            prose_first_attempts: 0,
            rpm_limit: None,
            tpm_limit: None,
            model_limits: BTreeMap::new(),
            rate_window: Duration::from_secs(60),
            require_api_key: true,
            seed: None,
        }
    }
}

impl MockConfig {
    /// The limits in force for `model`.
    pub fn limits_for(&self, model: &str) -> ModelLimits {
        self.model_limits
            .get(model)
            .copied()
            .unwrap_or(ModelLimits {
                rpm: self.rpm_limit,
                tpm: self.tpm_limit,
            })
    }

    /// This config with every random and marker-driven failure turned off, keeping
    /// latency and limits: "fix the AI" after a failure phase.
    pub fn healthy(self) -> Self {
        Self {
            fail_5xx_rate: 0.0,
            rate_429: 0.0,
            insufficient_quota_rate: 0.0,
            overloaded_rate: 0.0,
            malformed_rate: 0.0,
            fail_marker: None,
            bad_request_marker: None,
            rate_limit_marker: None,
            fail_first_attempts: 0,
            prose_first_attempts: 0,
            ..self
        }
    }
}

/// Rate limits of one model, per [`MockConfig::rate_window`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelLimits {
    /// Requests per window; `None` is unlimited.
    pub rpm: Option<u32>,
    /// Tokens (prompt estimate + `max_tokens`) per window; `None` is unlimited.
    pub tpm: Option<u32>,
}

/// `Duration` as integer milliseconds in JSON, which reads better in `curl` than
/// serde's `{secs, nanos}`.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}
