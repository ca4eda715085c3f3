//! `POST /hooks/{source}`: verify, deduplicate, publish, record the `accepted`
//! status, answer.
//!
//! The order is the cheapest rejection first: unknown source, IP, rate limit, body
//! size, signature, JSON — so bad input costs nothing and touches neither Redis nor
//! the broker. Only a verified event claims its id in Redis and is published.
//!
//! The claim-publish-release sequence runs in its own task: if the sender hangs up
//! mid-request, axum drops this handler, and a claim left without its publish would
//! make the sender's retry look like a duplicate — an event lost. The task always
//! finishes: published (a retry is then rightly a duplicate) or released.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::dedupe::Claim;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hookfleet_common::config::{FailMode, SchemeKind};
use hookfleet_common::message::{EventMeta, now_rfc3339};
use hookfleet_common::redis::status::{EventState, Update};
use hookfleet_common::telemetry::error_chain;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{Value, json};

use crate::app::AppState;
use crate::error::IngestError;
use crate::source::Source;

/// The handler. Records the request's outcome and duration whatever happens.
pub async fn receive(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
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
    let (outcome, response) = match handle(&state, source, peer, &headers, body).await {
        Ok(accepted) => (accepted.outcome(), accepted.into_response()),
        Err(e) => (e.outcome(), e.into_response()),
    };
    state
        .metrics
        .requests
        .with_label_values(&[&label, outcome])
        .inc();
    state
        .metrics
        .request_duration
        .with_label_values(&[&label])
        .observe(started.elapsed().as_secs_f64());
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
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Body,
) -> Result<Accepted, IngestError> {
    let source = source.ok_or(IngestError::UnknownSource)?;
    if !source.allows(peer.ip()) {
        return Err(IngestError::IpNotAllowed);
    }
    source
        .check_rate()
        .map_err(|retry_after| IngestError::RateLimited { retry_after })?;
    let body = read_body(&source, headers, body).await?;
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
    let event_id = source
        .event_id(headers, json.as_ref())
        .map_err(IngestError::MissingEventId)?;
    let meta = EventMeta {
        message_id: ulid::Ulid::new().to_string(),
        source: source.name.clone(),
        event_type: source.event_type(headers, json.as_ref()),
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
    };
    // Detached so that a client hanging up cannot strand a claim (module docs).
    let detached = state.clone();
    let task = state
        .tasks
        .spawn(async move { claim_and_publish(&detached, meta, body).await });
    task.await.unwrap_or_else(|e| {
        Err(IngestError::Unavailable {
            retry_after: state.config.retry_after,
            source: Box::new(e),
        })
    })
}

async fn claim_and_publish(
    state: &AppState,
    meta: EventMeta,
    body: Bytes,
) -> Result<Accepted, IngestError> {
    let retry_after = state.config.retry_after;
    let mut claimed = false;
    if let Some(event_id) = &meta.event_id {
        match state
            .dedupe
            .claim(&meta.source, event_id, &meta.message_id)
            .await
        {
            Ok(Claim::New) => claimed = true,
            Ok(Claim::Duplicate(first)) => return Ok(Accepted::Duplicate(first)),
            Err(e) => match state.config.redis_failure {
                FailMode::Open => {
                    tracing::warn!(source = %meta.source, error = %error_chain(&e), "Redis unavailable; accepting without a duplicate check.");
                    state
                        .metrics
                        .dedup_unavailable
                        .with_label_values(&[&meta.source])
                        .inc();
                }
                FailMode::Closed => {
                    return Err(IngestError::Unavailable {
                        retry_after,
                        source: Box::new(e),
                    });
                }
            },
        }
    }
    let started = Instant::now();
    let published = state
        .publisher
        .publish(
            &state.topology.events_exchange(),
            &meta.routing_key(),
            &body,
            meta.to_properties(),
        )
        .await;
    state
        .metrics
        .publish_duration
        .observe(started.elapsed().as_secs_f64());
    match published {
        Ok(()) => {
            tracing::debug!(message_id = %meta.message_id, source = %meta.source, event_type = %meta.event_type, "Event accepted.");
            record_accepted(state, &meta).await;
            Ok(Accepted::New(meta.message_id))
        }
        Err(e) => {
            if claimed && let Some(event_id) = &meta.event_id {
                // The sender will retry; it must not be taken for a duplicate.
                if let Err(release) = state
                    .dedupe
                    .release(&meta.source, event_id, &meta.message_id)
                    .await
                {
                    tracing::error!(source = %meta.source, event_id, error = %error_chain(&release), "Cannot release the dedup claim of an unpublished event; the sender's retry will be called a duplicate until the claim expires.");
                }
            }
            Err(IngestError::Unavailable {
                retry_after,
                source: Box::new(e),
            })
        }
    }
}

/// Records the `accepted` status. The event is durable already: a failure is
/// logged and counted, never turned into an error for the sender. A worker that
/// got there first keeps its later state (the status never goes backwards).
async fn record_accepted(state: &AppState, meta: &EventMeta) {
    let update = Update {
        event: meta,
        attempt: 0,
        state: EventState::Accepted {
            accepted_at: now_rfc3339(),
        },
        pipelines: Vec::new(),
    };
    if let Err(e) = state.statuses.record(&update).await {
        state.metrics.status_write_failures.inc();
        tracing::warn!(message_id = %meta.message_id, error = %error_chain(&e), "Cannot record the accepted event's status.");
    }
}

/// Reads the body, never more than the source's limit: a declared
/// `Content-Length` over it is refused before reading, and a chunked body is cut
/// off as soon as it passes the limit.
async fn read_body(source: &Source, headers: &HeaderMap, body: Body) -> Result<Bytes, IngestError> {
    let limit = source.config.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(IngestError::TooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
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
