//! The one error type of ingest's request path, and how each maps to a response.
//!
//! 4xx answers explain what is wrong with the request (never echoing a secret or
//! the expected signature); 5xx answers are opaque, and their cause chain is logged
//! once, here. Every variant also names the `outcome` label of
//! `hookfleet_ingest_requests_total`.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hookfleet_common::signature::SignatureError;
use hookfleet_common::telemetry::error_chain;

use crate::source::EventIdError;

/// Why a webhook request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// No source of that name is configured.
    #[error("unknown source")]
    UnknownSource,
    /// The client address is outside the source's `allow_ips`.
    #[error("client address not allowed for this source")]
    IpNotAllowed,
    /// The source's request rate limit is exceeded.
    #[error("rate limit exceeded for this source")]
    RateLimited {
        /// When to try again.
        retry_after: Duration,
    },
    /// The body is larger than the source's `max_body_bytes`.
    #[error("body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The body did not arrive within `ingest.body_read_timeout`.
    #[error("request body not received within {}s", .timeout.as_secs_f64())]
    BodyTimeout {
        /// The timeout.
        timeout: Duration,
    },
    /// More `/hooks/*` requests are in flight than `ingest.max_in_flight`.
    #[error("too many requests in flight; retry later")]
    Overloaded {
        /// Sent as `Retry-After`.
        retry_after: Duration,
    },
    /// The body could not be read (client went away, broken chunking).
    #[error("cannot read request body")]
    BodyRead(#[source] axum::Error),
    /// The signature did not verify, or its headers are missing or malformed.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The source requires JSON and the body is not JSON.
    #[error("body is not valid JSON")]
    NotJson(#[source] serde_json::Error),
    /// The event id the source's config points at is missing, too long or not text.
    #[error(transparent)]
    EventId(#[from] EventIdError),
    /// Another copy of this event is being published and its outcome is not known
    /// yet: 409 with `Retry-After`, never a 2xx the first copy might not earn.
    #[error("this event is being accepted by another request; retry shortly")]
    InProgress {
        /// Sent as `Retry-After`.
        retry_after: Duration,
    },
    /// A header copied onto the message (`Content-Type`, `traceparent`, a
    /// `forward_headers` one) is longer than the limit.
    #[error("header {name} is longer than the limit of {limit} bytes")]
    CarriedHeaderTooLong {
        /// The header, in lower case.
        name: String,
        /// The limit.
        limit: usize,
    },
    /// `GET /events/…`: no status for that id (never accepted, or expired).
    #[error("unknown event (never accepted, or its status expired)")]
    UnknownEvent,
    /// The broker did not confirm the message (down, nack, return, timeout) or,
    /// with `redis_failure = "closed"`, Redis could not be asked.
    #[error("temporarily unable to accept events")]
    Unavailable {
        /// Sent as `Retry-After`.
        retry_after: Duration,
        /// What failed, logged here and never sent.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl IngestError {
    /// The `outcome` label for metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::UnknownSource => "unknown_source",
            Self::IpNotAllowed => "ip_not_allowed",
            Self::RateLimited { .. } => "rate_limited",
            Self::TooLarge { .. } => "too_large",
            Self::BodyTimeout { .. } => "body_timeout",
            Self::Overloaded { .. } => "overloaded",
            Self::BodyRead(_) => "bad_body",
            Self::Signature(e) if e.is_malformed() => "malformed_signature",
            Self::Signature(_) => "bad_signature",
            Self::NotJson(_) => "not_json",
            Self::EventId(EventIdError::Missing(_)) => "missing_event_id",
            Self::EventId(EventIdError::TooLong(_)) => "event_id_too_long",
            Self::EventId(EventIdError::Invalid(_)) => "bad_event_id",
            Self::InProgress { .. } => "in_progress",
            Self::CarriedHeaderTooLong { .. } => "header_too_long",
            Self::UnknownEvent => "unknown_event",
            Self::Unavailable { .. } => "unavailable",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::UnknownSource | Self::UnknownEvent => StatusCode::NOT_FOUND,
            Self::IpNotAllowed => StatusCode::FORBIDDEN,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Signature(e) if e.is_malformed() => StatusCode::BAD_REQUEST,
            Self::Signature(_) => StatusCode::UNAUTHORIZED,
            Self::BodyRead(_) | Self::NotJson(_) | Self::EventId(_) => StatusCode::BAD_REQUEST,
            Self::InProgress { .. } => StatusCode::CONFLICT,
            Self::CarriedHeaderTooLong { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after }
            | Self::InProgress { retry_after }
            | Self::Overloaded { retry_after }
            | Self::Unavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            Self::Unavailable { source, .. } => {
                tracing::warn!(error = %error_chain(source.as_ref()), "Event not accepted: 503.");
                self.to_string()
            }
            Self::NotJson(e) => format!("{self}: {e}"),
            other => other.to_string(),
        };
        let mut response = (status, Json(serde_json::json!({ "error": message }))).into_response();
        if let Some(after) = self.retry_after() {
            // Whole seconds, rounded up: `Retry-After: 0` would invite a hot loop.
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            if let Ok(value) = HeaderValue::from_str(&secs.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}
