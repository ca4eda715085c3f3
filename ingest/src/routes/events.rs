//! `GET /events/{id}` and `GET /events/{source}/{event_id}`: what became of an
//! accepted event (`hookfleet_common::redis::status`).
//!
//! `{id}` is the message id the 202 answer gave. The second form finds it
//! through the source's duplicate-check claim, so it works only while that
//! claim lasts (`ingest.dedup_ttl`) and only for sources with event ids.
//! Unknown or expired ids answer 404 with the usual `{"error": …}` body; Redis
//! trouble answers 503 with `Retry-After`. Nothing here needs a signature: the
//! status holds no payload or secret, only names, ids, error codes and the
//! outputs cut short — put ingest behind your own access control if even that
//! must stay private.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};

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
