//! `GET /events/{id}` and `GET /events/{source}/{event_id}`: what became of an
//! accepted event (`hookfleet_common::redis::status`).
//!
//! `{id}` is the message id the 202 answer gave. The second form finds it
//! through the source's duplicate-check claim, so it works only while that
//! claim lasts (`ingest.dedup_ttl`) and only for sources with event ids.
//! Unknown or expired ids answer 404 with the usual `{"error": …}` body; Redis
//! trouble answers 503 with `Retry-After`.
//!
//! The status holds AI outputs and error texts, and event ids are not secrets, so
//! every request must carry `Authorization: Bearer {ingest.status_token}` (401
//! otherwise, compared in constant time). Without a configured token the routes
//! are not mounted at all (`app`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::error::IngestError;

/// `GET /events/{id}`.
pub async fn by_id(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match status(&state, &id).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

/// `GET /events/{source}/{event_id}`.
pub async fn by_event_id(
    State(state): State<Arc<AppState>>,
    Path((source, event_id)): Path<(String, String)>,
) -> Response {
    let found = async {
        if !state.statuses.enabled() || !state.sources.contains_key(&source) {
            return Err(IngestError::UnknownEvent);
        }
        let id = state
            .dedupe
            .lookup(&source, &event_id)
            .await
            .map_err(|e| unavailable(&state, e))?
            .ok_or(IngestError::UnknownEvent)?;
        status(&state, &id).await
    };
    found.await.unwrap_or_else(IntoResponse::into_response)
}

async fn status(state: &AppState, id: &str) -> Result<Response, IngestError> {
    // A ULID is 26 characters of Crockford base32; anything else is not ours.
    if id.len() != 26 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(IngestError::UnknownEvent);
    }
    let status = state
        .statuses
        .get(id)
        .await
        .map_err(|e| unavailable(state, e))?
        .ok_or(IngestError::UnknownEvent)?;
    Ok(Json(status).into_response())
}

fn unavailable(state: &AppState, e: hookfleet_common::redis::RedisError) -> IngestError {
    IngestError::Unavailable {
        retry_after: state.config.retry_after,
        source: Box::new(e),
    }
}

/// Middleware: passes requests bearing the status token, answers 401 to others.
pub async fn require_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let valid = match (presented, &state.config.status_token) {
        // `ct_eq` takes the same time for every token of the right length.
        (Some(presented), Some(token)) => {
            bool::from(presented.as_bytes().ct_eq(token.expose().as_bytes()))
        }
        _ => false,
    };
    if valid {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(json!({ "error": "missing or wrong bearer token" })),
    )
        .into_response()
}
