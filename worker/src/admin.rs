//! The admin server: `/healthz` (the process answers), `/readyz` (connected and
//! consuming, not shutting down) and `/metrics`.
//!
//! Readiness follows the consumer, not the publisher: a worker that consumes can
//! make progress, and one that does not is useless to route traffic to (KEDA and
//! rollouts read it). It turns 503 the moment shutdown begins.

use std::sync::Arc;

use crate::metrics::WorkerMetrics;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::delivery::consumer::Readiness;

/// What the admin handlers read.
pub struct AdminState {
    /// The worker's metrics.
    pub metrics: WorkerMetrics,
    /// Whether the consumer is live.
    pub readiness: Readiness,
    /// Cancelled when shutdown begins.
    pub stopping: CancellationToken,
}

/// The admin router.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz() -> Response {
    (StatusCode::OK, Json(json!({ "status": "ok" }))).into_response()
}

async fn readyz(State(state): State<Arc<AdminState>>) -> Response {
    let consuming = state.readiness.is_consuming();
    let shutting_down = state.stopping.is_cancelled();
    let ready = consuming && !shutting_down;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({ "ready": ready, "consuming": consuming, "shutting_down": shutting_down });
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        hookfleet_common::metrics::render(&state.metrics.registry),
    )
        .into_response()
}
