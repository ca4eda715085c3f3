//! `POST /hooks/{source}`: verify, deduplicate, publish, record the `accepted`
//! status, answer.
//!
//! The order is the cheapest rejection first: unknown source, IP, rate limit, body
//! size, signature, JSON — so bad input costs nothing and touches neither Redis nor
//! the broker. Only a verified event claims its id in Redis and is published.
//!
//! Everything that can refuse the request — the event id, the headers carried onto
//! the message — is checked before the claim, so a 4xx never leaves a claim behind.
//! The claim (`crate::dedupe`) is pending until the broker
//! confirms: a copy arriving meanwhile gets 409, never a 2xx the first copy might
//! not earn. Only the confirm turns it into the record that makes later copies
//! `200 duplicate`; any other end — error, timeout, panic — releases it (the guard's
//! drop), and a crashed process's pending claim expires within seconds.
//!
//! The claim-publish-confirm sequence runs in its own task: if the sender hangs up
//! mid-request, axum drops this handler, and the publish still settles the claim
//! one way or the other.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::dedupe::{Claim, ClaimGuard, ClaimKeys};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hookfleet_common::config::FailMode;
use hookfleet_common::message::{EventMeta, now_rfc3339};
use hookfleet_common::redis::status::Update;
use hookfleet_common::signature::SchemeKind;
use hookfleet_common::telemetry::error_chain;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{Value, json};
use tracing::Instrument;

use crate::app::AppState;
use crate::client::ClientAddr;
use crate::error::IngestError;
use crate::events::{DedupBypassed, RequestAnswered, StatusWriteFailed};
use crate::source::Source;

/// The longest value of a header copied onto the message (`Content-Type`,
/// `traceparent`, `forward_headers`): with at most 16 forwarded headers, the
/// message's headers stay far below RabbitMQ's 128 KiB frame.
pub const MAX_CARRIED_HEADER_BYTES: usize = 4096;

/// `Retry-After` of a 409 for a copy whose first copy is still being published:
/// the publish ends within the confirm timeout.
const IN_PROGRESS_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// The handler. Records the request's outcome and duration whatever happens.
pub async fn receive(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let source = state.sources.get(&name).cloned();
    // Unknown names share one label so a scanner cannot grow our metrics.
    let label = source
        .as_ref()
        .map_or("unknown", |s| s.name.as_str())
        .to_owned();
    // Every log line of this request names the client (behind trusted proxies,
    // the address they forwarded).
    let span = tracing::info_span!("hook", source = %label, %client);
    let answered = async {
        match handle(&state, source, client, &headers, body).await {
            Ok(accepted) => (accepted.outcome(), accepted.into_response()),
            Err(e) => (e.outcome(), e.into_response()),
        }
    };
    let (outcome, response) = answered.instrument(span).await;
    RequestAnswered {
        source: &label,
        outcome,
        elapsed: Some(started.elapsed()),
    }
    .emit(&state.metrics);
    response
}

/// A successful answer.
enum Accepted {
    /// Published and confirmed: 202.
    New(String),
    /// Seen before: 200 with the first message id.
    Duplicate(String),
    /// Slack's `url_verification`: 200 echoing the challenge; nothing published.
    Challenge(String),
}

impl Accepted {
    fn outcome(&self) -> &'static str {
        match self {
            Self::New(_) => "accepted",
            Self::Duplicate(_) => "duplicate",
            Self::Challenge(_) => "challenge",
        }
    }
}

impl IntoResponse for Accepted {
    fn into_response(self) -> Response {
        match self {
            Self::New(id) => (
                StatusCode::ACCEPTED,
                Json(json!({ "status": "accepted", "id": id })),
            )
                .into_response(),
            Self::Duplicate(id) => (
                StatusCode::OK,
                Json(json!({ "status": "duplicate", "id": id })),
            )
                .into_response(),
            Self::Challenge(challenge) => {
                (StatusCode::OK, Json(json!({ "challenge": challenge }))).into_response()
            }
        }
    }
}

async fn handle(
    state: &Arc<AppState>,
    source: Option<Arc<Source>>,
    client: IpAddr,
    headers: &HeaderMap,
    body: Body,
) -> Result<Accepted, IngestError> {
    let source = source.ok_or(IngestError::UnknownSource)?;
    if !source.allows(client) {
        tracing::debug!(source = %source.name, %client, "Client address not allowed.");
        return Err(IngestError::IpNotAllowed);
    }
    source
        .check_rate()
        .map_err(|retry_after| IngestError::RateLimited { retry_after })?;
    let body = read_body(&source, headers, body, state.config.body_read_timeout).await?;
    source.verifier.verify(headers, &body, SystemTime::now())?;

    let json = if source.needs_json() {
        match serde_json::from_slice::<Value>(&body) {
            Ok(value) => Some(value),
            Err(_) if !source.config.require_json => None,
            Err(e) => return Err(IngestError::NotJson(e)),
        }
    } else {
        None
    };
    if source.config.scheme == SchemeKind::Slack
        && let Some(challenge) = slack_challenge(json.as_ref())
    {
        return Ok(Accepted::Challenge(challenge));
    }
    let event_id = source.event_id(headers, json.as_ref())?;
    check_carried_headers(&source, headers)?;
    let meta = event_meta(&source, headers, json.as_ref(), event_id);
    let keys = state.dedupe.keys(
        &meta.source,
        meta.event_id.as_deref(),
        source.config.dedups_body().then_some(&body[..]),
    );
    // Detached so that a client hanging up cannot strand a claim (module docs).
    // Boxed: the future holds the Redis and broker calls (about 15 KB), and tokio
    // moves a task's future and output through its cell several times (spawn,
    // poll, reading the output); a box makes each move a pointer's. Counted with
    // `bench/callgrind.sh ingest`: memcpy was 42% of the instructions per request.
    let detached = state.clone();
    let task = state.tasks.spawn(Box::pin(async move {
        claim_and_publish(&detached, meta, body, keys).await
    }));
    task.await.unwrap_or_else(|e| {
        Err(IngestError::Unavailable {
            retry_after: state.config.retry_after,
            source: Box::new(e),
        })
    })
}

/// The message's metadata: a fresh message id, the event's names and ids, and
/// the headers carried onto it.
fn event_meta(
    source: &Source,
    headers: &HeaderMap,
    json: Option<&Value>,
    event_id: Option<String>,
) -> EventMeta {
    EventMeta {
        message_id: ulid::Ulid::new().to_string(),
        source: source.name.clone(),
        event_type: source.event_type(headers, json),
        event_id,
        received_at: now_rfc3339(),
        content_type: header_string(headers, header::CONTENT_TYPE.as_str()),
        traceparent: header_string(headers, "traceparent"),
        forwarded: source
            .config
            .forward_headers
            .iter()
            .filter_map(|name| Some((name.to_ascii_lowercase(), header_string(headers, name)?)))
            .collect(),
        attempt: 0,
        replays: 0,
    }
}

async fn claim_and_publish(
    state: &AppState,
    meta: EventMeta,
    body: Bytes,
    keys: ClaimKeys,
) -> Result<Accepted, IngestError> {
    let guard = match claim(state, &meta.source, &keys, &meta.message_id).await? {
        Checked::Proceed(guard) => guard,
        Checked::Duplicate(first) => return Ok(Accepted::Duplicate(first)),
    };
    #[cfg(feature = "test-hooks")]
    if let Some(hook) = &state.before_publish {
        hook(&meta);
    }
    if let Err(e) = publish(state, &meta, &body).await {
        if let Some(guard) = guard
            && let Err(release) = guard.release().await
        {
            // Released before answering so the sender's retry is not told 409.
            tracing::error!(source = %meta.source, message_id = %meta.message_id, error = %error_chain(&release), "Cannot release the dedup claim of an unpublished event; the sender's retry gets 409 until the pending claim expires.");
        }
        return Err(e);
    }
    tracing::debug!(message_id = %meta.message_id, source = %meta.source, event_type = %meta.event_type, "Event accepted.");
    record_accepted(state, guard, &meta).await;
    Ok(Accepted::New(meta.message_id))
}

/// What the duplicate check decided.
enum Checked {
    /// Publish; settle the claim through the guard (none when there is nothing to
    /// deduplicate on, or Redis is away and ingest fails open).
    Proceed(Option<Box<ClaimGuard>>),
    /// Accepted and confirmed before, under this message id.
    Duplicate(String),
}

/// Claims the event's keys; 409 while another copy is pending.
async fn claim(
    state: &AppState,
    source: &str,
    keys: &ClaimKeys,
    message_id: &str,
) -> Result<Checked, IngestError> {
    if keys.is_empty() {
        return Ok(Checked::Proceed(None));
    }
    match state.dedupe.claim(keys, message_id).await {
        Ok(Claim::New(guard)) => Ok(Checked::Proceed(Some(guard))),
        Ok(Claim::Duplicate(first)) => Ok(Checked::Duplicate(first)),
        Ok(Claim::Pending) => Err(IngestError::InProgress {
            retry_after: IN_PROGRESS_RETRY_AFTER,
        }),
        Err(e) => match state.config.redis_failure {
            FailMode::Open => {
                DedupBypassed { source, error: &e }.emit(&state.metrics);
                Ok(Checked::Proceed(None))
            }
            FailMode::Closed => Err(IngestError::Unavailable {
                retry_after: state.config.retry_after,
                source: Box::new(e),
            }),
        },
    }
}

/// Publishes and waits for the confirm, never longer than the publish deadline
/// (which the pending claim outlives).
async fn publish(state: &AppState, meta: &EventMeta, body: &[u8]) -> Result<(), IngestError> {
    let started = Instant::now();
    let published = tokio::time::timeout(
        state.publish_deadline,
        state.publisher.publish(
            &state.topology.events_exchange(),
            &meta.routing_key(),
            body,
            meta.to_properties(),
        ),
    )
    .await;
    state
        .metrics
        .publish_duration
        .observe(started.elapsed().as_secs_f64());
    let error: Box<dyn std::error::Error + Send + Sync> = match published {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) => Box::new(e),
        Err(elapsed) => Box::new(elapsed),
    };
    Err(IngestError::Unavailable {
        retry_after: state.config.retry_after,
        source: error,
    })
}

/// Headers copied onto the message must fit one AMQP header frame: each is
/// bounded, and a longer one is refused before the claim, naming the header.
fn check_carried_headers(source: &Source, headers: &HeaderMap) -> Result<(), IngestError> {
    let carried = [header::CONTENT_TYPE.as_str(), "traceparent"]
        .into_iter()
        .chain(source.config.forward_headers.iter().map(String::as_str));
    for name in carried {
        if headers
            .get(name)
            .is_some_and(|value| value.len() > MAX_CARRIED_HEADER_BYTES)
        {
            return Err(IngestError::CarriedHeaderTooLong {
                name: name.to_ascii_lowercase(),
                limit: MAX_CARRIED_HEADER_BYTES,
            });
        }
    }
    Ok(())
}

/// Confirms the dedup claim (when there is one) and records the `accepted`
/// status, in one round trip. The event is durable already: a failure is
/// logged and counted, never turned into an error for the sender. A worker that
/// got there first keeps its later state (the status never goes backwards).
async fn record_accepted(state: &AppState, guard: Option<Box<ClaimGuard>>, meta: &EventMeta) {
    let update = Update::accepted(meta);
    let claimed = guard.is_some();
    let recording = state.statuses.enabled();
    if let Err(e) = state.dedupe.accept(guard, &state.statuses, &update).await {
        let error = error_chain(&e);
        if claimed {
            tracing::warn!(source = %meta.source, message_id = %meta.message_id, %error, "Cannot record the dedup claim of a published event; a copy sent after its pending claim expires is published again.");
        }
        if recording {
            StatusWriteFailed {
                message_id: &meta.message_id,
                error: &error,
            }
            .emit(&state.metrics);
        }
    }
}

/// Reads the body, never more than the source's limit: a declared
/// `Content-Length` over it is refused before reading, and a chunked body is cut
/// off as soon as it passes the limit. The whole body must arrive within
/// `timeout` (408 otherwise), however steadily it trickles.
async fn read_body(
    source: &Source,
    headers: &HeaderMap,
    body: Body,
    timeout: Duration,
) -> Result<Bytes, IngestError> {
    let limit = source.config.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(IngestError::TooLarge { limit });
    }
    let read = tokio::time::timeout(timeout, Limited::new(body, limit).collect());
    match read
        .await
        .map_err(|_| IngestError::BodyTimeout { timeout })?
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(IngestError::TooLarge { limit }),
        Err(e) => Err(IngestError::BodyRead(axum::Error::new(e))),
    }
}

fn slack_challenge(json: Option<&Value>) -> Option<String> {
    let json = json?;
    (json.get("type")?.as_str()? == "url_verification")
        .then(|| json.get("challenge")?.as_str().map(str::to_owned))
        .flatten()
}

fn header_string(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
