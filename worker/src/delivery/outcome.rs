//! The one place that decides what a failure means: [`classify`].
//!
//! The permanent/transient split of docs/architecture.md, applied to every failure
//! a job can meet:
//!
//! - **poison** (dead-letter now): no message id, not our headers, a body that is
//!   not JSON. Retrying cannot help and a requeue would loop.
//! - **permanent** (dead-letter now): a template error; AI 400/401/403/404/422 and
//!   any other 4xx not listed below; an `insufficient_quota`-style 429 (billing,
//!   not pace); an event no pipeline matches when configured to dead-letter.
//! - **transient** (retry tier, then `exhausted` when attempts run out): AI
//!   408/409/425/429/5xx/529, timeouts, connection errors, unreadable answers, an
//!   answer that should be JSON and is not, an unconfirmed AMQP result.
//! - **outbound HTTP** (enrichment steps, stage `enrich`; HTTP sinks, stage
//!   `sink`): connection errors, timeouts, 408/425/429/5xx and an enrichment
//!   answer that is not JSON are transient (a `Retry-After` is honoured); any
//!   other non-2xx status, a template that does not render for the event, or a
//!   rendered method/URL/header that is invalid are permanent. When several sinks
//!   fail, the job is retried if any failure is transient (sinks already
//!   delivered are skipped then), and dead-lettered only when all are permanent.
//!
//! - **deferred** (retry tier, never exhausted, the attempt not counted): the
//!   fleet-wide limiter had no capacity within its `max_wait`, or Redis was down
//!   in fail-closed mode. The provider was never called, so nothing failed; the
//!   job waits its turn in a retry queue instead of holding a consumer slot.
//!
//! A transient failure waits the longer of the provider's `retry-after` and the
//! backoff for its attempt (the retry tiers, in order). Whether the retry or dead
//! letter then gets published, and the delivery acked, is `consumer.rs`'s job.

use std::time::Duration;

use crate::limits::limiter::AcquireError;
use crate::limits::markers::DeliveryId;
use crate::pipeline::sinks::JobResult;
use hookfleet_common::message::{EventMeta, truncate};
use hookfleet_common::redis::status::Cause;

use crate::pipeline::Pipeline;
use crate::pipeline::enrich::EnrichError;
use crate::pipeline::request_template::RequestError;
use crate::pipeline::sinks::SinkError;
use crate::providers::AiError;

/// Where in the job a failure happened (`hf-stage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reading the message: headers and body.
    Decode,
    /// Choosing pipelines (an unmatched event, when configured to dead-letter).
    Match,
    /// Rendering the prompt templates.
    Render,
    /// Fetching enrichment data (HTTP requests before the prompt).
    Enrich,
    /// Calling the AI provider.
    Ai,
    /// Checking the AI's answer (JSON that does not parse).
    Output,
    /// Delivering the result.
    Sink,
}

impl Stage {
    /// The `hf-stage` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Decode => "decode",
            Self::Match => "match",
            Self::Render => "render",
            Self::Enrich => "enrich",
            Self::Ai => "ai",
            Self::Output => "output",
            Self::Sink => "sink",
        }
    }
}

/// Why a job was dead-lettered (`hf-error-class`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// It can never succeed as it is.
    Permanent,
    /// It kept failing transiently until `max_attempts`.
    Exhausted,
    /// It is not a message we can read at all.
    Poison,
}

impl ErrorClass {
    /// The `hf-error-class` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Permanent => "permanent",
            Self::Exhausted => "exhausted",
            Self::Poison => "poison",
        }
    }
}

/// What to do with a delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done (result delivered, duplicate, or unmatched and ignored): ack.
    Ack,
    /// Publish a copy to the retry tier covering `after`, then ack.
    Retry {
        /// The wait wanted before the next attempt.
        after: Duration,
    },
    /// Publish a copy to the dead-letter exchange, then ack.
    DeadLetter {
        /// A bounded code (`ai_http_401`, `template_error`): the metric label and
        /// the start of `hf-error`.
        reason: String,
        /// The error with its chain, for `hf-error`.
        detail: String,
        /// `hf-error-class`.
        class: ErrorClass,
        /// `hf-stage`.
        stage: Stage,
    },
}

impl Outcome {
    /// The outcome of a job whose pipelines ended in `self` and `other`: a retry
    /// wins (the pipelines still to do may yet succeed; the done ones are skipped
    /// next time by their markers), then a dead letter, then ack.
    pub fn combine(self, other: Outcome) -> Outcome {
        match (self, other) {
            (Self::Retry { after: a }, Self::Retry { after: b }) => Self::Retry { after: a.max(b) },
            (retry @ Self::Retry { .. }, _) | (_, retry @ Self::Retry { .. }) => retry,
            (dead @ Self::DeadLetter { .. }, _) | (_, dead @ Self::DeadLetter { .. }) => dead,
            (Self::Ack, Self::Ack) => Self::Ack,
        }
    }

    /// The `outcome` label of `jobs_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Ack => "succeeded",
            Self::Retry { .. } => "retried",
            Self::DeadLetter { .. } => "dead_lettered",
        }
    }
}

/// Everything that can go wrong with a job.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The message has no `message_id` property.
    #[error("the message has no message id")]
    NoMessageId,
    /// The message lacks our headers (`hf-source`): not published by ingest.
    #[error("the message has no hf-source header; not a hookfleet event")]
    NotOurs,
    /// The body is not JSON.
    #[error("the body is not JSON")]
    Undecodable(#[source] serde_json::Error),
    /// No pipeline matches the event (dead-lettered only when so configured).
    #[error("no pipeline matches source `{event_source}` and event type `{event_type}`")]
    Unmatched {
        /// The event's source.
        event_source: String,
        /// The event's type.
        event_type: String,
    },
    /// A prompt template failed to render.
    #[error("cannot render the prompt")]
    Render(#[source] minijinja::Error),
    /// The AI request failed.
    #[error("AI request failed")]
    Ai(#[source] AiError),
    /// The pipeline wants JSON and the answer does not parse.
    #[error("the answer is not JSON")]
    Output(#[source] serde_json::Error),
    /// A sink did not confirm the result.
    #[error("cannot deliver the result")]
    Sink(#[source] SinkError),
    /// Several sinks failed in one attempt (the others were delivered).
    #[error("{0}")]
    Sinks(SinkFailures),
    /// An enrichment request failed.
    #[error("cannot enrich the event")]
    Enrich(#[source] EnrichError),
    /// The fleet-wide limiter gave no permit (saturated, or Redis down in
    /// fail-closed mode): the provider was not called.
    #[error("no rate-limit permit")]
    Limiter(#[source] AcquireError),
}

/// The failures of several sinks in one attempt (two or more).
#[derive(Debug)]
pub struct SinkFailures(pub Vec<SinkError>);

impl std::fmt::Display for SinkFailures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} sinks failed", self.0.len())?;
        for (i, error) in self.0.iter().enumerate() {
            let sep = if i == 0 { ": " } else { "; " };
            write!(
                f,
                "{sep}{}",
                hookfleet_common::telemetry::error_chain(error)
            )?;
        }
        Ok(())
    }
}

impl Failure {
    /// The failure of `errors` (at least one) sinks of one attempt.
    pub fn from_sinks(mut errors: Vec<SinkError>) -> Option<Self> {
        match errors.len() {
            0 => None,
            1 => errors.pop().map(Self::Sink),
            _ => Some(Self::Sinks(SinkFailures(errors))),
        }
    }

    /// Whether this failure leaves the job's attempt uncounted (see the module
    /// doc's *deferred*).
    pub fn is_deferred(&self) -> bool {
        matches!(self, Self::Limiter(_))
    }

    /// Whether a pipeline's next fallback may answer instead: exactly the
    /// failures `classify` would retry (transient or deferred), so a request
    /// a provider refused as such (a 4xx, a billing 429) never falls through.
    pub fn falls_through(&self) -> bool {
        matches!(
            describe(self).kind,
            Kind::Transient { .. } | Kind::Deferred { .. }
        )
    }
}

/// How many attempts a job gets and how long it waits between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts, the first included.
    pub max_attempts: u32,
    /// The wait after the n-th failed attempt is `backoff[n-1]` (the last entry
    /// for every later one): the retry tiers, shortest first.
    pub backoff: Vec<Duration>,
    /// The longest `retry-after` hint honoured (`worker.limits.max_retry_after`).
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    /// A policy over the topology's retry tiers.
    pub fn new(max_attempts: u32, tiers: &[Duration]) -> Self {
        let mut backoff = tiers.to_vec();
        backoff.sort();
        Self {
            max_attempts,
            backoff,
            max_retry_after: Duration::from_secs(600),
        }
    }

    /// This policy, honouring `retry-after` hints up to `max` only.
    pub fn with_max_retry_after(self, max: Duration) -> Self {
        Self {
            max_retry_after: max,
            ..self
        }
    }

    /// The wait after failed attempt `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let index = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
        self.backoff
            .get(index)
            .or(self.backoff.last())
            .copied()
            .unwrap_or(Duration::from_secs(1))
    }
}

/// Transient or not, and the metric code, for one failure.
enum Kind {
    Poison,
    Permanent,
    Transient { retry_after: Option<Duration> },
    Deferred { after: Option<Duration> },
}

/// What to do after `failure` on attempt `attempt` (1-based).
pub fn classify(failure: &Failure, attempt: u32, policy: &RetryPolicy) -> Outcome {
    let Diagnosis {
        kind,
        reason,
        stage,
    } = describe(failure);
    let class = match kind {
        Kind::Poison => ErrorClass::Poison,
        Kind::Permanent => ErrorClass::Permanent,
        Kind::Transient { .. } if attempt >= policy.max_attempts => ErrorClass::Exhausted,
        Kind::Transient { retry_after } => {
            let backoff = policy.delay(attempt);
            return Outcome::Retry {
                after: retry_after.map_or(backoff, |hint| {
                    hint.min(policy.max_retry_after).max(backoff)
                }),
            };
        }
        Kind::Deferred { after } => {
            return Outcome::Retry {
                after: after.unwrap_or_else(|| policy.delay(1)),
            };
        }
    };
    Outcome::DeadLetter {
        reason,
        detail: hookfleet_common::telemetry::error_chain(failure),
        class,
        stage,
    }
}

/// The longest error kept in an event's history.
const MAX_CAUSE_ERROR_BYTES: usize = 500;

/// What the event's history records of `failure`: its reason, stage and error
/// (cut short), and the pipeline — with the provider and model it calls
/// first — when one failed.
pub fn cause(failure: &Failure, pipeline: Option<&Pipeline>) -> Cause {
    let Diagnosis { reason, stage, .. } = describe(failure);
    let error = hookfleet_common::telemetry::error_chain(failure);
    Cause {
        pipeline: pipeline.map(|p| p.name.clone()),
        provider: pipeline.map(|p| p.provider.name().to_owned()),
        model: pipeline.map(|p| p.model.clone()),
        reason,
        stage: stage.as_str().to_owned(),
        error: truncate(&error, MAX_CAUSE_ERROR_BYTES).to_owned(),
    }
}

/// How one failure is judged: transient or not, its bounded reason code (the
/// `dead_letters_total` label and `hf-reason`), and the stage it happened at.
struct Diagnosis {
    kind: Kind,
    reason: String,
    stage: Stage,
}

impl Diagnosis {
    fn new(kind: Kind, reason: impl Into<String>, stage: Stage) -> Self {
        Self {
            kind,
            reason: reason.into(),
            stage,
        }
    }

    fn at((kind, reason): (Kind, String), stage: Stage) -> Self {
        Self::new(kind, reason, stage)
    }
}

fn describe(failure: &Failure) -> Diagnosis {
    let transient = Kind::Transient { retry_after: None };
    match failure {
        Failure::NoMessageId => Diagnosis::new(Kind::Poison, "no_message_id", Stage::Decode),
        Failure::NotOurs => Diagnosis::new(Kind::Poison, "not_a_hookfleet_event", Stage::Decode),
        Failure::Undecodable(_) => Diagnosis::new(Kind::Poison, "body_not_json", Stage::Decode),
        Failure::Unmatched { .. } => Diagnosis::new(Kind::Permanent, "unmatched", Stage::Match),
        Failure::Render(_) => Diagnosis::new(Kind::Permanent, "template_error", Stage::Render),
        Failure::Output(_) => Diagnosis::new(transient, "output_not_json", Stage::Output),
        Failure::Sink(error) => Diagnosis::at(describe_sink(error), Stage::Sink),
        Failure::Sinks(SinkFailures(errors)) => Diagnosis::at(describe_sinks(errors), Stage::Sink),
        Failure::Enrich(EnrichError { error, .. }) => {
            Diagnosis::at(describe_request(error, "enrich"), Stage::Enrich)
        }
        Failure::Limiter(AcquireError::Saturated { wait, .. }) => Diagnosis::new(
            Kind::Deferred { after: Some(*wait) },
            "ratelimit_saturated",
            Stage::Ai,
        ),
        Failure::Limiter(AcquireError::Unavailable(_)) => Diagnosis::new(
            Kind::Deferred { after: None },
            "ratelimit_unavailable",
            Stage::Ai,
        ),
        Failure::Ai(error) => Diagnosis::at(describe_ai(error), Stage::Ai),
    }
}

/// Several sinks failed: transient if any is (the longest hint wins), and the
/// reason of the first one that decided it.
fn describe_sinks(errors: &[SinkError]) -> (Kind, String) {
    let described: Vec<_> = errors.iter().map(describe_sink).collect();
    let hint = described
        .iter()
        .filter_map(|(kind, _)| match kind {
            Kind::Transient { retry_after } => Some(*retry_after),
            _ => None,
        })
        .reduce(Option::max);
    let reason = described
        .iter()
        .find(|(kind, _)| hint.is_none() || matches!(kind, Kind::Transient { .. }))
        .map_or_else(|| "sink".to_owned(), |(_, reason)| reason.clone());
    let kind = match hint {
        Some(retry_after) => Kind::Transient { retry_after },
        None => Kind::Permanent,
    };
    (kind, reason)
}

/// An AI call's failure: 408/409/425/429/5xx and transport trouble are
/// transient, a 429 about billing and other statuses are permanent.
fn describe_ai(error: &AiError) -> (Kind, String) {
    let transient = Kind::Transient { retry_after: None };
    let kind = match error {
        AiError::Status {
            status,
            code,
            retry_after,
            ..
        } => match status {
            429 if is_billing(code.as_deref()) => {
                return (Kind::Permanent, "ai_insufficient_quota".into());
            }
            408 | 409 | 425 | 429 | 500..=599 => Kind::Transient {
                retry_after: *retry_after,
            },
            _ => Kind::Permanent,
        },
        AiError::Timeout(_)
        | AiError::Connect(_)
        | AiError::Transport(_)
        | AiError::InvalidResponse(_) => transient,
        AiError::Auth(e) => auth_kind(e),
        AiError::Tls { .. } => Kind::Permanent,
    };
    let reason = match error {
        AiError::Status { status, .. } => format!("ai_http_{status}"),
        AiError::Timeout(_) => "ai_timeout".into(),
        AiError::Connect(_) => "ai_connect".into(),
        AiError::Transport(_) => "ai_transport".into(),
        AiError::InvalidResponse(_) => "ai_invalid_response".into(),
        AiError::Auth(e) => format!("ai_{}", e.reason()),
        AiError::Tls { .. } => "ai_tls".into(),
    };
    (kind, reason)
}

fn describe_sink(error: &SinkError) -> (Kind, String) {
    match error {
        SinkError::Amqp(_) => (Kind::Transient { retry_after: None }, "sink_amqp".into()),
        SinkError::Http { error, .. } => describe_request(error, "sink"),
    }
}

/// An outbound HTTP request's failure; `prefix` starts the reason
/// (`enrich_http_503`, `sink_http_timeout`).
fn describe_request(error: &RequestError, prefix: &str) -> (Kind, String) {
    let transient = Kind::Transient { retry_after: None };
    match error {
        RequestError::Render { .. } => (Kind::Permanent, format!("{prefix}_template_error")),
        RequestError::Invalid { .. } => (Kind::Permanent, format!("{prefix}_invalid_request")),
        RequestError::Timeout(_) => (transient, format!("{prefix}_timeout")),
        RequestError::Connect(_) => (transient, format!("{prefix}_connect")),
        RequestError::Transport(_) => (transient, format!("{prefix}_transport")),
        RequestError::NotJson(_) => (transient, format!("{prefix}_not_json")),
        RequestError::Declined { .. } => (transient, format!("{prefix}_declined")),
        // A redirect not followed is refused like any other non-2xx answer.
        RequestError::Redirect { status, .. } => {
            (Kind::Permanent, format!("{prefix}_http_{status}"))
        }
        RequestError::Refused(_) => (Kind::Permanent, format!("{prefix}_destination_refused")),
        RequestError::Auth(e) => (auth_kind(e), format!("{prefix}_{}", e.reason())),
        RequestError::Tls { .. } => (Kind::Permanent, format!("{prefix}_tls")),
        RequestError::Status {
            status,
            retry_after,
            ..
        } => {
            let kind = match status {
                408 | 425 | 429 | 500..=599 => Kind::Transient {
                    retry_after: *retry_after,
                },
                _ => Kind::Permanent,
            };
            (kind, format!("{prefix}_http_{status}"))
        }
    }
}

/// A credential that could not be had: transient when its token endpoint is
/// busy or down, permanent when it refused us or the key is unusable.
fn auth_kind(error: &crate::auth::AuthError) -> Kind {
    match error.transient() {
        Some(retry_after) => Kind::Transient { retry_after },
        None => Kind::Permanent,
    }
}

/// A 429 that is about money, not pace: never retried (docs/broker-notes.md).
fn is_billing(code: Option<&str>) -> bool {
    matches!(
        code,
        Some("insufficient_quota" | "billing_hard_limit_reached" | "billing_not_active")
    )
}

/// What processing decided, with what settling it needs.
#[derive(Debug)]
pub struct Decision {
    /// Ack, retry or dead-letter.
    pub outcome: Outcome,
    /// The event's metadata, when the message had it.
    pub meta: Option<EventMeta>,
    /// This attempt, 1-based (what a retry records in `hf-attempt`).
    pub attempt: u32,
    /// The pipeline a dead letter belongs to, if one failed.
    pub pipeline: Option<String>,
    /// The results this run published (for the event's status).
    pub results: Vec<JobResult>,
    /// One dead letter per pipeline that failed for good, each tagged with its
    /// pipeline: published before the delivery is settled, and the pipeline
    /// skipped on the event's retries (`{ns}:failed:…`).
    pub letters: Vec<PipelineLetter>,
    /// Pipelines whose lease this run still holds (the failed ones): kept until
    /// the delivery is settled, so a redelivered copy waiting for them sees the
    /// settlement instead of running again.
    pub held: Vec<String>,
    /// The delivery's `hf-copy` (see `reroute`).
    pub copy: String,
    /// The event's final status was written with the last pipeline's done
    /// marker (`status::done_call`); settling need not write it again.
    pub status_recorded: bool,
    /// Why the outcome is a retry or a dead letter, for the event's history:
    /// the first failure of the kind that decided it.
    pub cause: Option<Cause>,
}

/// A pipeline's own dead letter.
#[derive(Debug)]
pub struct PipelineLetter {
    /// The pipeline (`hf-pipeline`).
    pub pipeline: String,
    /// Its failure: an [`Outcome::DeadLetter`].
    pub outcome: Outcome,
}

impl Decision {
    /// Which delivered copy the decision is about, if the message is ours.
    pub fn delivery(&self) -> Option<DeliveryId<'_>> {
        self.meta.as_ref().map(|meta| DeliveryId {
            message_id: &meta.message_id,
            replays: meta.replays,
            copy: &self.copy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy::new(3, &[Duration::from_secs(10), Duration::from_secs(1)])
    }

    fn status(status: u16, code: Option<&str>, retry_after: Option<Duration>) -> Failure {
        Failure::Ai(AiError::Status {
            status,
            code: code.map(Into::into),
            message: "m".into(),
            retry_after,
        })
    }

    fn json_error() -> serde_json::Error {
        serde_json::from_str::<serde_json::Value>("{").unwrap_err()
    }

    fn template_error() -> minijinja::Error {
        minijinja::Error::new(minijinja::ErrorKind::UndefinedError, "payload.x")
    }

    fn sink_error() -> Failure {
        Failure::Sink(SinkError::Amqp(
            hookfleet_common::publisher::PublishError::Nacked,
        ))
    }

    fn dead(reason: &str, class: ErrorClass, stage: Stage) -> (String, ErrorClass, Stage) {
        (reason.to_owned(), class, stage)
    }

    /// A retry's wait, or a dead letter's reason, class and stage.
    type Summary = Result<Duration, (String, ErrorClass, Stage)>;

    /// The outcome without the free-text detail, for comparing.
    fn summary(outcome: Outcome) -> Summary {
        match outcome {
            Outcome::Retry { after } => Ok(after),
            Outcome::DeadLetter {
                reason,
                class,
                stage,
                ..
            } => Err((reason, class, stage)),
            Outcome::Ack => panic!("a failure is never acked as is"),
        }
    }

    #[test]
    fn every_failure_is_classified_as_the_design_says() {
        use ErrorClass::*;
        let s1 = Duration::from_secs(1);
        let s10 = Duration::from_secs(10);
        let table: Vec<(Failure, u32, Summary)> = vec![
            // Poison: never retried, whatever the attempt.
            (
                Failure::NoMessageId,
                1,
                Err(dead("no_message_id", Poison, Stage::Decode)),
            ),
            (
                Failure::NotOurs,
                1,
                Err(dead("not_a_hookfleet_event", Poison, Stage::Decode)),
            ),
            (
                Failure::Undecodable(json_error()),
                1,
                Err(dead("body_not_json", Poison, Stage::Decode)),
            ),
            // Permanent.
            (
                Failure::Unmatched {
                    event_source: "s".into(),
                    event_type: "t".into(),
                },
                1,
                Err(dead("unmatched", Permanent, Stage::Match)),
            ),
            (
                Failure::Render(template_error()),
                1,
                Err(dead("template_error", Permanent, Stage::Render)),
            ),
            (
                status(400, None, None),
                1,
                Err(dead("ai_http_400", Permanent, Stage::Ai)),
            ),
            (
                status(401, None, None),
                1,
                Err(dead("ai_http_401", Permanent, Stage::Ai)),
            ),
            (
                status(403, None, None),
                1,
                Err(dead("ai_http_403", Permanent, Stage::Ai)),
            ),
            (
                status(404, None, None),
                1,
                Err(dead("ai_http_404", Permanent, Stage::Ai)),
            ),
            (
                status(422, None, None),
                1,
                Err(dead("ai_http_422", Permanent, Stage::Ai)),
            ),
            (
                status(413, None, None),
                1,
                Err(dead("ai_http_413", Permanent, Stage::Ai)),
            ),
            (
                status(429, Some("insufficient_quota"), Some(s1)),
                1,
                Err(dead("ai_insufficient_quota", Permanent, Stage::Ai)),
            ),
            // Transient: the backoff of the attempt (tiers sorted: 1s, then 10s)…
            (status(408, None, None), 1, Ok(s1)),
            (status(409, None, None), 2, Ok(s10)),
            (status(429, Some("rate_limit_exceeded"), None), 1, Ok(s1)),
            (status(500, None, None), 1, Ok(s1)),
            (status(502, None, None), 1, Ok(s1)),
            (status(503, None, None), 1, Ok(s1)),
            (status(529, Some("overloaded_error"), None), 1, Ok(s1)),
            (Failure::Ai(AiError::Timeout(s1)), 1, Ok(s1)),
            (Failure::Ai(AiError::InvalidResponse("x".into())), 1, Ok(s1)),
            (Failure::Output(json_error()), 1, Ok(s1)),
            (sink_error(), 2, Ok(s10)),
            // …or the provider's retry-after when longer, never shorter.
            (
                status(429, None, Some(Duration::from_secs(30))),
                1,
                Ok(Duration::from_secs(30)),
            ),
            (
                status(429, None, Some(Duration::from_millis(100))),
                2,
                Ok(s10),
            ),
            (
                status(503, None, Some(Duration::from_millis(1500))),
                1,
                Ok(Duration::from_millis(1500)),
            ),
            // …until the attempts run out.
            (
                status(500, None, None),
                3,
                Err(dead("ai_http_500", Exhausted, Stage::Ai)),
            ),
            (
                status(429, None, Some(s1)),
                4,
                Err(dead("ai_http_429", Exhausted, Stage::Ai)),
            ),
            (
                Failure::Ai(AiError::Timeout(s1)),
                3,
                Err(dead("ai_timeout", Exhausted, Stage::Ai)),
            ),
            // Deferred by the limiter: retried whatever the attempt, after its wait.
            (
                Failure::Limiter(AcquireError::Saturated {
                    model: "mock/m".into(),
                    wait: Duration::from_secs(7),
                }),
                9,
                Ok(Duration::from_secs(7)),
            ),
            (
                Failure::Limiter(AcquireError::Unavailable(
                    hookfleet_common::redis::RedisError::Timeout,
                )),
                9,
                Ok(s1),
            ),
            (
                Failure::Output(json_error()),
                3,
                Err(dead("output_not_json", Exhausted, Stage::Output)),
            ),
            (
                sink_error(),
                3,
                Err(dead("sink_amqp", Exhausted, Stage::Sink)),
            ),
            // Permanent stays permanent on the last attempt.
            (
                status(401, None, None),
                3,
                Err(dead("ai_http_401", Permanent, Stage::Ai)),
            ),
        ];
        for (failure, attempt, expected) in table {
            let got = summary(classify(&failure, attempt, &policy()));
            assert_eq!(got, expected, "{failure:?} on attempt {attempt}");
        }
    }

    fn http(status: u16, retry_after: Option<Duration>) -> RequestError {
        RequestError::Status {
            status,
            retry_after,
            body: "b".into(),
        }
    }

    fn sink(error: RequestError) -> SinkError {
        SinkError::Http {
            sink: "crm".into(),
            error,
        }
    }

    fn enrich(error: RequestError) -> Failure {
        Failure::Enrich(EnrichError {
            step: "crm".into(),
            error,
        })
    }

    #[test]
    fn outbound_http_failures_are_classified_by_status_and_stage() {
        use ErrorClass::*;
        let s1 = Duration::from_secs(1);
        let s30 = Duration::from_secs(30);
        let render = || RequestError::Render {
            template: "url".into(),
            source: template_error(),
        };
        let table: Vec<(Failure, u32, Summary)> = vec![
            // Enrichment: transient…
            (enrich(http(503, None)), 1, Ok(s1)),
            (enrich(http(429, Some(s30))), 1, Ok(s30)),
            (enrich(http(408, None)), 1, Ok(s1)),
            (enrich(http(425, None)), 1, Ok(s1)),
            (enrich(RequestError::Timeout(s1)), 1, Ok(s1)),
            (enrich(RequestError::NotJson(json_error())), 1, Ok(s1)),
            (
                enrich(http(502, None)),
                3,
                Err(dead("enrich_http_502", Exhausted, Stage::Enrich)),
            ),
            (
                enrich(RequestError::NotJson(json_error())),
                3,
                Err(dead("enrich_not_json", Exhausted, Stage::Enrich)),
            ),
            // …and permanent.
            (
                enrich(http(404, None)),
                1,
                Err(dead("enrich_http_404", Permanent, Stage::Enrich)),
            ),
            (
                enrich(http(409, None)),
                1,
                Err(dead("enrich_http_409", Permanent, Stage::Enrich)),
            ),
            (
                enrich(render()),
                1,
                Err(dead("enrich_template_error", Permanent, Stage::Enrich)),
            ),
            // Sinks, alone.
            (Failure::Sink(sink(http(503, None))), 1, Ok(s1)),
            (
                Failure::Sink(sink(RequestError::Timeout(s1))),
                2,
                Ok(Duration::from_secs(10)),
            ),
            (
                Failure::Sink(sink(http(400, None))),
                1,
                Err(dead("sink_http_400", Permanent, Stage::Sink)),
            ),
            (
                Failure::Sink(sink(render())),
                1,
                Err(dead("sink_template_error", Permanent, Stage::Sink)),
            ),
            (
                Failure::Sink(sink(http(500, None))),
                3,
                Err(dead("sink_http_500", Exhausted, Stage::Sink)),
            ),
            // Several sinks: any transient failure retries (with the longest hint)…
            (
                Failure::from_sinks(vec![sink(http(400, None)), sink(http(503, Some(s30)))])
                    .unwrap(),
                1,
                Ok(s30),
            ),
            (
                Failure::from_sinks(vec![sink(http(400, None)), sink(http(503, None))]).unwrap(),
                3,
                Err(dead("sink_http_503", Exhausted, Stage::Sink)),
            ),
            // …and only permanent ones dead-letter now.
            (
                Failure::from_sinks(vec![sink(http(401, None)), sink(http(404, None))]).unwrap(),
                1,
                Err(dead("sink_http_401", Permanent, Stage::Sink)),
            ),
        ];
        for (failure, attempt, expected) in table {
            let got = summary(classify(&failure, attempt, &policy()));
            assert_eq!(got, expected, "{failure:?} on attempt {attempt}");
        }
        let several = Failure::from_sinks(vec![sink(http(401, None)), sink(http(503, None))]);
        let text = hookfleet_common::telemetry::error_chain(&several.unwrap());
        assert!(
            text.starts_with("2 sinks failed: sink `crm` failed: answered HTTP 401"),
            "{text}"
        );
        assert!(Failure::from_sinks(vec![]).is_none());
    }

    #[test]
    fn only_what_would_be_retried_falls_through_to_a_fallback() {
        assert!(status(500, None, None).falls_through());
        assert!(status(529, None, None).falls_through());
        assert!(status(429, None, None).falls_through());
        assert!(status(408, None, None).falls_through());
        assert!(Failure::Ai(AiError::Timeout(Duration::from_secs(1))).falls_through());
        assert!(Failure::Ai(AiError::InvalidResponse("x".into())).falls_through());
        assert!(
            Failure::Limiter(AcquireError::Saturated {
                model: "m".into(),
                wait: Duration::from_secs(1)
            })
            .falls_through()
        );
        assert!(!status(400, None, None).falls_through());
        assert!(!status(401, None, None).falls_through());
        assert!(!status(429, Some("insufficient_quota"), None).falls_through());
        assert!(!Failure::Render(template_error()).falls_through());
    }

    #[test]
    fn a_dead_letter_carries_the_error_chain() {
        let Outcome::DeadLetter { detail, .. } =
            classify(&Failure::Render(template_error()), 1, &policy())
        else {
            panic!("dead letter")
        };
        assert!(detail.starts_with("cannot render the prompt: "), "{detail}");
        assert!(detail.contains("payload.x"), "{detail}");
    }

    #[test]
    fn retries_win_over_dead_letters_when_pipelines_disagree() {
        let retry = |s| Outcome::Retry {
            after: Duration::from_secs(s),
        };
        let dead = classify(&Failure::NotOurs, 1, &policy());
        assert_eq!(retry(1).combine(retry(5)), retry(5));
        assert_eq!(dead.clone().combine(retry(1)), retry(1));
        assert_eq!(Outcome::Ack.combine(dead.clone()), dead);
        assert_eq!(Outcome::Ack.combine(Outcome::Ack), Outcome::Ack);
    }
}
