//! A pipeline's answer to one request: the response cache first (single flight
//! across the fleet), then the fleet-wide limiter, then the provider — for the
//! pipeline's primary provider/model, then for each of its `fallbacks` in turn.
//!
//! The order is the point. A cache hit costs nothing, so it skips the limiter;
//! only a flight's leader books capacity, so N identical concurrent jobs spend
//! one request of the provider's budget, not N.
//!
//! **Fallbacks.** Every candidate goes the same way (its own cache key, since
//! the key includes provider and model; its own limiter bucket; its own metric
//! labels). The next one is tried exactly when `classify` would retry the
//! failure — transient AI errors and limiter refusals
//! ([`Failure::falls_through`]); a permanent one (a 4xx, a billing 429) ends the
//! chain, since the request itself is refused. A candidate with a fallback after
//! it waits at most `fallback_wait` for the limiter, so a model paused by a 429
//! falls through at once; the last one waits the full `max_wait`. When all fail,
//! the job fails with the most informative failure: the last provider error if
//! any candidate was called (so the attempt counts), else the limiter refusal
//! that frees up first (a deferral).
//!
//! **Only checked answers are cached.** The pipeline's output check (JSON when
//! `response_format = "json"`) runs inside the cached computation, so an answer
//! that fails it is never stored: the job's retry asks the provider again
//! instead of reading the same unusable answer back from the cache. A failed
//! check ends the chain (no fallback), as it did when the check ran after it.
//!
//! Redis trouble never fails a job here by itself: the cache is bypassed
//! (`cache_requests_total{result="bypassed"}`) and the provider called directly,
//! and the limiter applies `worker.limits.redis_failure` — `closed` waits for
//! Redis up to `max_wait` and then defers the job to a retry tier; `open` calls
//! without limiting.
//!
//! The limiter's permit is settled by what the provider did with the request:
//! usage reconciled after an answer; the whole reservation given back after a
//! 429 (the provider refused it without counting it, and the fleet is paused for
//! its retry time) or a refused connection (nothing was sent); kept charged
//! otherwise, since the provider may have counted it.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use crate::config::{CacheSettings, ResponseFormat};
use crate::limits::cache::{
    CacheError, CacheKey, CacheOutcome, CachedCompletion, FlightError, Lookup, LookupReply,
    PendingFill,
};
use crate::limits::limiter::{AcquireError, Clock, Reservation, ReserveReply};
use hookfleet_common::redis::chain::{Chain, ChainReply};
use hookfleet_common::telemetry::error_chain;

use crate::delivery::outcome::Failure;
use crate::events::{AiCalled, CacheBypassed, FallingThrough, UsageMissing};
use crate::limits::cache::Cache;
use crate::limits::limiter::{Limiter, Permit};
use crate::limits::markers::Markers;
use crate::metrics::WorkerMetrics;
use crate::pipeline::{Candidate, Pipeline};
use crate::providers::anthropic::DEFAULT_MAX_TOKENS;
use crate::providers::{AiError, AiRequest, AiResponse, Usage};
use hookfleet_common::redis::RedisError;

/// What the AI call path uses of the worker's shared state.
#[derive(Clone, Copy)]
pub struct CallContext<'a> {
    /// The fleet-wide limiter.
    pub limiter: &'a Limiter,
    /// The response cache.
    pub cache: &'a Cache,
    /// The connection a candidate's admission goes through (any of the
    /// worker's Redis components runs its chains; the markers' is used).
    pub markers: &'a Markers,
    /// The worker's metrics.
    pub metrics: &'a WorkerMetrics,
}

/// A pause used when a 429 carries no `retry-after`.
const DEFAULT_PAUSE: Duration = Duration::from_secs(1);

/// An answer and where it came from.
#[derive(Debug)]
pub struct Answer {
    /// The provider's answer (possibly from the cache).
    pub response: AiResponse,
    /// Whether it was served from the cache (a hit, or another job's call).
    pub cached: bool,
    /// How long the provider call took (zero when cached).
    pub latency: Duration,
    /// The configured name of the provider that answered.
    pub provider: String,
    /// The model asked of it.
    pub model: String,
    /// `None` when the primary answered, else the index of the fallback that did.
    pub fallback: Option<usize>,
    /// The answer still to store in the cache, when this job computed it: sent
    /// with the job's other Redis work after the call (`job.rs`).
    pub fill: Option<PendingFill>,
}

/// A candidate's Redis work before its call — the cache lookup, when the
/// request is cached, then the limiter booking, which the lookup stops unless
/// this job leads the flight — as calls of a chain. A job sends the primary's
/// with its claim (`job.rs`); a fallback sends its own.
#[derive(Debug)]
pub struct Admission {
    lookup: Option<Looked>,
    reserve_at: usize,
}

#[derive(Debug)]
struct Looked {
    key: CacheKey,
    token: String,
    lease: Duration,
    at: usize,
}

/// What a candidate's [`Admission`] found, for [`answer`].
#[derive(Debug, Default)]
pub enum Prefetch {
    /// Nothing asked yet: the candidate asks for itself.
    #[default]
    Nothing,
    /// The chain ran (or stopped before these steps: `None`).
    Fetched {
        /// The cache lookup's answer (boxed: a hit holds the answer).
        lookup: Option<Box<Lookup>>,
        /// The limiter's booking.
        booked: Option<Reservation>,
    },
    /// Redis did not answer: bypass the cache; the limiter applies its fail mode.
    Failed(CacheError),
}

impl Admission {
    /// Pushes the calls of `candidate`'s admission onto `chain`.
    pub fn push(
        ctx: &CallContext<'_>,
        pipeline: &Pipeline,
        candidate: Candidate<'_>,
        request: &AiRequest,
        max_wait: Duration,
        chain: &mut Chain,
    ) -> Self {
        let lookup = cache_key(pipeline, candidate, request)
            .and_then(Result::ok)
            .map(|(key, settings)| {
                let (call, token) = ctx.cache.lookup_call(&key, settings.lease);
                Looked {
                    at: chain.push(call),
                    key,
                    token,
                    lease: settings.lease,
                }
            });
        let reserve = ctx.limiter.reserve_call(
            candidate.provider.name(),
            &request.model,
            reserved_tokens(request),
            max_wait,
            Clock::Redis,
        );
        Self {
            lookup,
            reserve_at: chain.push(reserve),
        }
    }

    /// What the chain's `reply` says of this admission.
    pub async fn read(self, ctx: &CallContext<'_>, reply: &ChainReply) -> Prefetch {
        match self.read_replies(ctx, reply).await {
            Ok(prefetch) => prefetch,
            Err(e) => Prefetch::Failed(e),
        }
    }

    async fn read_replies(
        self,
        ctx: &CallContext<'_>,
        reply: &ChainReply,
    ) -> Result<Prefetch, CacheError> {
        let lookup = match self.lookup {
            None => None,
            Some(looked) => match reply.get::<LookupReply>(looked.at)? {
                None => None,
                Some(found) => ctx
                    .cache
                    .read_lookup(&looked.key, looked.token, looked.lease, found)
                    .await?
                    .map(Box::new),
            },
        };
        let booked = reply
            .get::<ReserveReply>(self.reserve_at)?
            .map(Reservation::from);
        Ok(Prefetch::Fetched { lookup, booked })
    }
}

/// The cache key of `request` for `candidate`, when the pipeline caches it.
fn cache_key<'p>(
    pipeline: &'p Pipeline,
    candidate: Candidate<'_>,
    request: &AiRequest,
) -> Option<Result<(CacheKey, &'p CacheSettings), CacheError>> {
    let settings = pipeline
        .cache
        .as_ref()
        .filter(|s| s.caches(request.temperature))?;
    Some(
        CacheKey::new(
            settings.namespace_for(&pipeline.name),
            candidate.provider.name(),
            &request.model,
            request,
        )
        .map(|key| (key, settings)),
    )
}

/// The answer to `request` for `pipeline`: each candidate in turn (module docs),
/// through the cache and the limiter.
/// `prefetch` is what the primary's [`Admission`] found, when the job sent it.
pub async fn answer(
    ctx: &CallContext<'_>,
    pipeline: &Pipeline,
    request: &AiRequest,
    mut prefetch: Prefetch,
) -> Result<Answer, Failure> {
    let count = pipeline.fallbacks.len() + 1;
    let mut failed: Option<Failure> = None;
    for (i, candidate) in pipeline.candidates().enumerate() {
        let max_wait = max_wait(ctx, pipeline, i);
        let last = i + 1 == count;
        // The primary asks with the request as rendered; only a fallback
        // needs a copy naming its own model.
        let request = if request.model == candidate.model {
            Cow::Borrowed(request)
        } else {
            let mut copy = request.clone();
            copy.model = candidate.model.to_owned();
            Cow::Owned(copy)
        };
        let prefetched = std::mem::take(&mut prefetch);
        let failure = match ask(ctx, pipeline, candidate, &request, max_wait, prefetched).await {
            Ok(answer) => return Ok(answer),
            Err(failure @ Failure::Output(_)) => return Err(failure),
            Err(failure) if !failure.falls_through() => return Err(failure),
            Err(failure) => failure,
        };
        let provider = candidate.provider.name();
        if !last {
            let reason = if failure.is_deferred() {
                "limiter"
            } else {
                "error"
            };
            FallingThrough {
                pipeline: &pipeline.name,
                provider,
                model: candidate.model,
                reason,
                failure: &failure,
            }
            .emit(ctx.metrics);
        }
        failed = Some(match failed {
            Some(earlier) => most_informative(earlier, failure),
            None => failure,
        });
    }
    // `candidates()` is never empty; this is only reached after a failure.
    Err(failed.unwrap_or(Failure::Limiter(AcquireError::Saturated {
        model: pipeline.model.clone(),
        wait: Duration::ZERO,
    })))
}

/// How long candidate `index` waits for the limiter: `fallback_wait` when a
/// fallback follows it, the full `max_wait` for the last.
pub fn max_wait(ctx: &CallContext<'_>, pipeline: &Pipeline, index: usize) -> Duration {
    if index == pipeline.fallbacks.len() {
        ctx.limiter.max_wait()
    } else {
        pipeline.fallback_wait.min(ctx.limiter.max_wait())
    }
}

/// Which of two candidates' failures the job fails with: a provider error over
/// a limiter refusal (a call was made: the attempt counts), the later of two
/// provider errors, the refusal that frees up first of two refusals.
fn most_informative(earlier: Failure, later: Failure) -> Failure {
    match (&earlier, &later) {
        (Failure::Limiter(a), Failure::Limiter(b)) => match (a, b) {
            (
                AcquireError::Saturated { wait: wa, .. },
                AcquireError::Saturated { wait: wb, .. },
            ) if wa <= wb => earlier,
            (AcquireError::Saturated { .. }, AcquireError::Unavailable(_)) => earlier,
            _ => later,
        },
        (_, Failure::Limiter(_)) => earlier,
        _ => later,
    }
}

/// One candidate's answer, through the cache and the limiter: its
/// admission (`prefetch`, or one round trip now), then the call.
async fn ask(
    ctx: &CallContext<'_>,
    pipeline: &Pipeline,
    candidate: Candidate<'_>,
    request: &AiRequest,
    max_wait: Duration,
    prefetch: Prefetch,
) -> Result<Answer, Failure> {
    let prefetch = match prefetch {
        Prefetch::Nothing => admit(ctx, pipeline, candidate, request, max_wait).await,
        done => done,
    };
    let (lookup, booked) = match prefetch {
        Prefetch::Fetched { lookup, booked } => (lookup, booked),
        Prefetch::Failed(e) => {
            return bypass(ctx, pipeline, candidate, request, max_wait, &e).await;
        }
        Prefetch::Nothing => (None, None),
    };
    let (key, settings) = match cache_key(pipeline, candidate, request) {
        None => return call(ctx, candidate, request, max_wait, booked).await,
        Some(Ok(keyed)) => keyed,
        Some(Err(e)) => return bypass(ctx, pipeline, candidate, request, max_wait, &e).await,
    };
    let mut latency = Duration::ZERO;
    let computed = ctx
        .cache
        .get_or_compute_from(lookup.map(|l| *l), &key, settings, || async {
            let answer = call(ctx, candidate, request, max_wait, booked).await?;
            latency = answer.latency;
            // Checked before it is stored: a cached answer is one that passed.
            check_output(pipeline, &answer.response.text)?;
            Ok::<_, Failure>(to_cached(&answer.response))
        })
        .await;
    match computed {
        Ok(computed) => {
            count(ctx, computed.outcome.as_str());
            Ok(Answer {
                response: from_cached(computed.value),
                cached: computed.outcome != CacheOutcome::Miss,
                latency,
                fill: computed.fill,
                ..answered_by(candidate)
            })
        }
        Err(FlightError::Compute(failure)) => {
            count(ctx, CacheOutcome::Miss.as_str());
            Err(failure)
        }
        Err(FlightError::Cache(e)) => bypass(ctx, pipeline, candidate, request, max_wait, &e).await,
    }
}

/// A candidate's [`Admission`] on its own: one round trip.
async fn admit(
    ctx: &CallContext<'_>,
    pipeline: &Pipeline,
    candidate: Candidate<'_>,
    request: &AiRequest,
    max_wait: Duration,
) -> Prefetch {
    let mut chain = Chain::new();
    let admission = Admission::push(ctx, pipeline, candidate, request, max_wait, &mut chain);
    match ctx.markers.run_chain(&chain).await {
        Ok(reply) => admission.read(ctx, &reply).await,
        Err(e) => Prefetch::Failed(CacheError::Redis(e)),
    }
}

/// An empty answer naming `candidate`, to fill in.
fn answered_by(candidate: Candidate<'_>) -> Answer {
    Answer {
        response: AiResponse {
            text: String::new(),
            usage: Usage::default(),
            usage_reported: false,
            model: None,
        },
        cached: false,
        latency: Duration::ZERO,
        provider: candidate.provider.name().to_owned(),
        model: candidate.model.to_owned(),
        fallback: candidate.fallback,
        fill: None,
    }
}

async fn bypass(
    ctx: &CallContext<'_>,
    pipeline: &Pipeline,
    candidate: Candidate<'_>,
    request: &AiRequest,
    max_wait: Duration,
    error: &CacheError,
) -> Result<Answer, Failure> {
    CacheBypassed {
        pipeline: &pipeline.name,
        error,
    }
    .emit(ctx.metrics);
    call(ctx, candidate, request, max_wait, None).await
}

fn count(ctx: &CallContext<'_>, result: &str) {
    ctx.metrics
        .cache_requests
        .with_label_values(&[result])
        .inc();
}

/// The provider call, inside a limiter permit (from `booked`, when the
/// booking was made in the admission's chain).
async fn call(
    ctx: &CallContext<'_>,
    candidate: Candidate<'_>,
    request: &AiRequest,
    max_wait: Duration,
    booked: Option<Reservation>,
) -> Result<Answer, Failure> {
    let provider = candidate.provider.name();
    let model = request.model.as_str();
    let tokens = reserved_tokens(request);
    let permit = ctx
        .limiter
        .acquire_with_policy_booked(provider, model, tokens, max_wait, booked)
        .await
        .map_err(Failure::Limiter)?;
    ctx.metrics
        .ratelimit_wait
        .with_label_values(&[provider, model])
        .observe(permit.waited().as_secs_f64());
    let started = Instant::now();
    let response = candidate.provider.complete(request).await;
    let latency = started.elapsed();
    let status = match &response {
        Ok(_) => "200".to_owned(),
        Err(e) => e.status_label(),
    };
    AiCalled {
        provider,
        model,
        status: &status,
        latency,
        tokens: response
            .as_ref()
            .ok()
            .map(|r| (r.usage.input_tokens, r.usage.output_tokens)),
    }
    .emit(ctx.metrics);
    if let Err(e) = settle_permit(ctx, provider, model, permit, &response).await {
        tracing::warn!(%provider, %model, error = %error_chain(&e),
            "Cannot settle the rate-limit reservation; it is paid off with time.");
    }
    Ok(Answer {
        response: response.map_err(Failure::Ai)?,
        latency,
        ..answered_by(candidate)
    })
}

/// Settles the limiter's permit by what the provider did with the request
/// (module docs).
async fn settle_permit(
    ctx: &CallContext<'_>,
    provider: &str,
    model: &str,
    permit: Permit,
    response: &Result<AiResponse, AiError>,
) -> Result<(), RedisError> {
    match response {
        Ok(answer) if !answer.usage_reported => {
            // Nothing to reconcile with: the reservation stands as the charge
            // (a refund would let the fleet overshoot on unmetered answers).
            UsageMissing { provider, model }.emit(ctx.metrics);
            drop(permit);
            Ok(())
        }
        Ok(answer) => {
            let used = answer
                .usage
                .input_tokens
                .saturating_add(answer.usage.output_tokens);
            permit.reconcile(used).await
        }
        Err(AiError::Status {
            status: 429,
            retry_after,
            ..
        }) => {
            let pause = retry_after.unwrap_or(DEFAULT_PAUSE);
            match ctx.limiter.pause(provider, model, pause).await {
                Ok(paused) => tracing::warn!(%provider, %model, ?paused,
                    "Provider answered 429; the fleet is paused for this model."),
                Err(e) => tracing::warn!(%provider, %model, error = %error_chain(&e),
                    "Provider answered 429 and the fleet pause cannot be set."),
            }
            permit.release().await
        }
        Err(AiError::Connect(_)) => permit.release().await,
        Err(_) => {
            // The provider may have counted it: the reservation stays charged.
            drop(permit);
            Ok(())
        }
    }
}

/// What a request may cost in tokens, reserved up front: the prompt estimated
/// at one token per four characters (what tokenizers average on English) plus
/// the most the answer may use. Usage reported afterwards corrects it.
pub fn reserved_tokens(request: &AiRequest) -> u64 {
    let chars =
        request.system.as_deref().map_or(0, |s| s.chars().count()) + request.user.chars().count();
    let prompt = u64::try_from(chars.div_ceil(4)).unwrap_or(u64::MAX);
    prompt.saturating_add(u64::from(request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)))
}

fn to_cached(response: &AiResponse) -> CachedCompletion {
    CachedCompletion {
        text: response.text.clone(),
        input_tokens: response.usage.input_tokens,
        output_tokens: response.usage.output_tokens,
        model: response.model.clone(),
    }
}

fn from_cached(value: CachedCompletion) -> AiResponse {
    AiResponse {
        text: value.text,
        usage: Usage {
            input_tokens: value.input_tokens,
            output_tokens: value.output_tokens,
        },
        // Served from the cache: no provider call, nothing to reconcile.
        usage_reported: true,
        model: value.model,
    }
}

/// The pipeline's output check: the answer's JSON when the pipeline asks for
/// JSON, `None` for text. Run before an answer is cached (see `completion`).
pub fn check_output(pipeline: &Pipeline, text: &str) -> Result<Option<serde_json::Value>, Failure> {
    match pipeline.response_format {
        ResponseFormat::Json => parse_json_output(text).map(Some).map_err(Failure::Output),
        ResponseFormat::Text => Ok(None),
    }
}

/// The answer as JSON, also when the model wrapped it in a Markdown code fence
/// (```json … ```), which models without a JSON mode often do.
pub fn parse_json_output(text: &str) -> Result<serde_json::Value, serde_json::Error> {
    let first = match serde_json::from_str(text) {
        Ok(value) => return Ok(value),
        Err(e) => e,
    };
    let trimmed = text.trim();
    let fenced = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|rest| rest.strip_suffix("```"));
    match fenced {
        Some(inner) => serde_json::from_str(inner.trim()).map_err(|_| first),
        None => Err(first),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn saturated(secs: u64) -> Failure {
        Failure::Limiter(AcquireError::Saturated {
            model: "p/m".into(),
            wait: Duration::from_secs(secs),
        })
    }

    fn server_error(status: u16) -> Failure {
        Failure::Ai(AiError::Status {
            status,
            code: None,
            message: "m".into(),
            retry_after: None,
        })
    }

    fn status_of(failure: &Failure) -> Option<u16> {
        match failure {
            Failure::Ai(AiError::Status { status, .. }) => Some(*status),
            _ => None,
        }
    }

    fn wait_of(failure: &Failure) -> Option<Duration> {
        match failure {
            Failure::Limiter(AcquireError::Saturated { wait, .. }) => Some(*wait),
            _ => None,
        }
    }

    #[test]
    fn a_provider_error_outweighs_a_limiter_refusal_whatever_the_order() {
        let f = most_informative(server_error(503), saturated(5));
        assert_eq!(status_of(&f), Some(503));
        let f = most_informative(saturated(5), server_error(502));
        assert_eq!(status_of(&f), Some(502));
        let f = most_informative(server_error(500), server_error(529));
        assert_eq!(status_of(&f), Some(529), "the later provider error");
        let f = most_informative(saturated(5), saturated(2));
        assert_eq!(
            wait_of(&f),
            Some(Duration::from_secs(2)),
            "the sooner refusal"
        );
        let f = most_informative(saturated(1), saturated(2));
        assert_eq!(wait_of(&f), Some(Duration::from_secs(1)));
    }

    #[test]
    fn the_reservation_is_the_prompt_estimate_plus_the_answer_limit() {
        let mut request = AiRequest {
            model: "m".into(),
            system: Some("abcd".into()),
            user: "abcde".into(),
            temperature: Some(0.0),
            max_tokens: Some(100),
            json: false,
        };
        // 9 characters → 3 tokens.
        assert_eq!(reserved_tokens(&request), 103);
        request.max_tokens = None;
        assert_eq!(reserved_tokens(&request), 3 + u64::from(DEFAULT_MAX_TOKENS));
    }

    #[test]
    fn json_output_parses_bare_or_fenced() {
        assert_eq!(parse_json_output(r#"{"a":1}"#).unwrap(), json!({"a": 1}));
        assert_eq!(
            parse_json_output("```json\n{\"a\":1}\n```").unwrap(),
            json!({"a": 1})
        );
        assert_eq!(parse_json_output("```\n[1]\n```").unwrap(), json!([1]));
        assert!(parse_json_output("Sure! Here is the JSON: {").is_err());
        assert!(parse_json_output("```json\nnope\n```").is_err());
    }
}
