//! Which failure, if any, a request gets before it reaches the rate window.
//!
//! Deterministic faults come first, in this order: `bad_request_marker` (400),
//! `fail_marker` (500), `rate_limit_marker` on a prompt's first request (429),
//! `fail_first_attempts` (500). Then one uniform draw picks
//! at most one random fault from consecutive bands of width `fail_5xx_rate`,
//! `rate_429`, `insufficient_quota_rate` (OpenAI only), `overloaded_rate`
//! (Anthropic only), `malformed_rate`. A faulted request is not admitted to the
//! rate window and uses none of its capacity.

use rand::Rng;

use super::Provider;
use super::config::MockConfig;

/// An injected failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 400 `invalid_request_error`: the prompt carries `bad_request_marker`.
    BadRequestMarker,
    /// 500: the prompt carries `fail_marker`.
    FailMarker,
    /// 500: one of the first `fail_first_attempts` requests with this prompt.
    FirstAttempt,
    /// A random 500, 502 or 503 (the status).
    ServerError(u16),
    /// A random 429 rate-limit error.
    RateLimit,
    /// A 429 rate-limit error: the prompt's first request carries
    /// `rate_limit_marker`.
    RateLimitMarker,
    /// A random OpenAI 429 `insufficient_quota`.
    InsufficientQuota,
    /// A random Anthropic 529 `overloaded_error`.
    Overloaded,
    /// A random 200 with a body that is not the JSON promised.
    Malformed,
}

impl Fault {
    /// The key in `CountersSnapshot::injected`.
    pub fn name(self) -> &'static str {
        match self {
            Self::BadRequestMarker => "bad_request_marker",
            Self::FailMarker => "fail_marker",
            Self::FirstAttempt => "first_attempt",
            Self::ServerError(_) => "server_error",
            Self::RateLimit => "rate_limit",
            Self::RateLimitMarker => "rate_limit_marker",
            Self::InsufficientQuota => "insufficient_quota",
            Self::Overloaded => "overloaded",
            Self::Malformed => "malformed",
        }
    }
}

/// The fault for a request to `provider` whose prompt text is `prompt_text` and
/// which is the `attempt`-th (from 1) request carrying that prompt.
pub fn choose(
    config: &MockConfig,
    provider: Provider,
    prompt_text: &str,
    attempt: u64,
    rng: &mut impl Rng,
) -> Option<Fault> {
    let carries = |marker: &Option<String>| {
        marker
            .as_deref()
            .is_some_and(|m| !m.is_empty() && prompt_text.contains(m))
    };
    if carries(&config.bad_request_marker) {
        return Some(Fault::BadRequestMarker);
    }
    if carries(&config.fail_marker) {
        return Some(Fault::FailMarker);
    }
    if attempt == 1 && carries(&config.rate_limit_marker) {
        return Some(Fault::RateLimitMarker);
    }
    if attempt <= u64::from(config.fail_first_attempts) {
        return Some(Fault::FirstAttempt);
    }

    let bands = [
        (config.fail_5xx_rate, Fault::ServerError(500)),
        (config.rate_429, Fault::RateLimit),
        (
            if provider == Provider::OpenAi {
                config.insufficient_quota_rate
            } else {
                0.0
            },
            Fault::InsufficientQuota,
        ),
        (
            if provider == Provider::Anthropic {
                config.overloaded_rate
            } else {
                0.0
            },
            Fault::Overloaded,
        ),
        (config.malformed_rate, Fault::Malformed),
    ];
    if bands.iter().all(|&(rate, _)| rate <= 0.0) {
        return None;
    }
    let draw: f64 = rng.random();
    let mut edge = 0.0;
    let fault = bands.into_iter().find_map(|(rate, fault)| {
        edge += rate.max(0.0);
        (draw < edge).then_some(fault)
    })?;
    Some(match fault {
        Fault::ServerError(_) => Fault::ServerError([500, 502, 503][rng.random_range(0..3)]),
        other => other,
    })
}
