//! `/healthz` (the process answers), `/readyz` (the broker and Redis answer and we
//! are not shutting down) and `/metrics`.
//!
//! Readiness turns 503 the moment shutdown starts, before the listener closes, so
//! the load balancer stops sending while in-flight requests finish.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use hookfleet_common::config::FailMode;

use crate::app::AppState;

/// Always 200 while the process serves requests.
pub async fn healthz() -> Response {
    (StatusCode::OK, Json(json!({ "status": "ok" }))).into_response()
}

/// 200 when ready to accept events, 503 (with what is missing) otherwise.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    // An idle publisher may not have connected yet; try once so a fresh pod can
    // become ready without traffic.
    if !state.publisher.is_connected().await {
        let _ = state.publisher.connect().await;
    }
    let broker = state.publisher.is_connected().await;
    let redis = hookfleet_common::redis::ping(&state.redis, state.redis_timeout).await;
    let shutting_down = state.is_shutting_down();
    // With `redis_failure = "open"` ingest accepts events while Redis is away, so
    // Redis being down must not pull every replica out of the load balancer.
    let redis_required = state.config.redis_failure == FailMode::Closed;
    let ready = broker && (redis || !redis_required) && !shutting_down;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": ready,
        "broker": broker,
        "redis": redis,
        "shutting_down": shutting_down,
    });
    (status, Json(body)).into_response()
}

/// The Prometheus text format.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        hookfleet_common::metrics::render(&state.metrics.registry),
    )
        .into_response()
}
