//! Anthropic's wire format: `POST /v1/messages` requests, messages, error bodies
//! and `anthropic-ratelimit-*` headers.
//!
//! The mock keeps one combined token window, so it sends the
//! `anthropic-ratelimit-tokens-*` headers (documented as the most restrictive
//! token limit in force) and not the separate input/output ones.

use std::time::SystemTime;

use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use super::call::{Call, Failure, flatten_content, header_str, insert_header};
use super::fault::Fault;
use super::prompt::{Completion, Message, Prompt};
use super::window::{LimitKind, WindowUsage};

#[derive(Deserialize)]
struct Request {
    model: Option<String>,
    #[serde(default)]
    system: Value,
    messages: Option<Vec<RawMessage>>,
    max_tokens: Option<u32>,
    temperature: Option<f64>,
}

#[derive(Deserialize)]
struct RawMessage {
    role: String,
    #[serde(default)]
    content: Value,
}

/// The call in a request, or why it is refused.
pub(crate) fn parse(headers: &HeaderMap, body: &[u8], require_key: bool) -> Result<Call, Failure> {
    let has_key = header_str(headers, "x-api-key").is_some_and(|k| !k.trim().is_empty());
    if require_key && !has_key {
        return Err(Failure::Unauthorized);
    }
    if header_str(headers, "anthropic-version").is_none() {
        return Err(Failure::Invalid(
            "anthropic-version: header is required".into(),
        ));
    }
    let request: Request = serde_json::from_slice(body)
        .map_err(|e| Failure::Invalid(format!("Invalid request body (mock-ai: {e})")))?;
    let model = request
        .model
        .filter(|m| !m.is_empty())
        .ok_or_else(|| Failure::Invalid("model: Field required".into()))?;
    let max_tokens = request
        .max_tokens
        .ok_or_else(|| Failure::Invalid("max_tokens: Field required".into()))?;
    let raw = request
        .messages
        .filter(|m| !m.is_empty())
        .ok_or_else(|| Failure::Invalid("messages: at least one message is required".into()))?;
    if let Some(bad) = raw
        .iter()
        .find(|m| m.role != "user" && m.role != "assistant")
    {
        return Err(Failure::Invalid(format!(
            "messages: Unexpected role \"{}\". Allowed roles are \"user\" or \"assistant\". \
             For instructions or context, use the top-level `system` parameter.",
            bad.role
        )));
    }
    if let Some(t) = request.temperature
        && !(0.0..=1.0).contains(&t)
    {
        return Err(Failure::Invalid(format!(
            "temperature: range: 0..1 (got {t})"
        )));
    }
    let system = flatten_content(&request.system);
    let messages = (!system.is_empty())
        .then(|| Message {
            role: "system".to_owned(),
            content: system,
        })
        .into_iter()
        .chain(raw.into_iter().map(|m| Message {
            role: m.role,
            content: flatten_content(&m.content),
        }))
        .collect();
    Ok(Call {
        model,
        prompt: Prompt { messages },
        json_requested: false,
        max_tokens: Some(max_tokens),
    })
}

/// A `message` body.
pub(crate) fn completion_body(call: &Call, completion: &Completion, id: u64) -> Value {
    json!({
        "id": format!("msg_mock{id:020}"),
        "type": "message",
        "role": "assistant",
        "model": call.model,
        "content": [{"type": "text", "text": completion.text}],
        "stop_reason": if completion.truncated { "max_tokens" } else { "end_turn" },
        "stop_sequence": null,
        "usage": {
            "input_tokens": call.prompt.estimate_tokens(),
            "output_tokens": completion.tokens,
        },
    })
}

/// Status and body of a refusal.
pub(crate) fn failure_body(failure: &Failure, model: &str) -> (u16, Value) {
    let (status, kind, message) = match failure {
        Failure::Unauthorized => (
            401,
            "authentication_error",
            "x-api-key header is required".to_owned(),
        ),
        Failure::Invalid(message) => (400, "invalid_request_error", message.clone()),
        Failure::Window(limited) => {
            let unit = match limited.kind {
                LimitKind::Requests => "requests",
                LimitKind::Tokens => "tokens",
            };
            let message = if limited.retry_after.is_some() {
                format!(
                    "This request would exceed the rate limit for your organization (org-mock) \
                     of {unit} per minute for {model}. For details, refer to: \
                     https://docs.claude.com/en/api/rate-limits. You can see the response \
                     headers for current usage."
                )
            } else {
                format!(
                    "This request would exceed your organization's (org-mock) {unit} per \
                     minute limit for {model} on its own: reduce the prompt length or \
                     max_tokens."
                )
            };
            (429, "rate_limit_error", message)
        }
        Failure::Fault(fault) => match fault {
            Fault::BadRequestMarker => (
                400,
                "invalid_request_error",
                "mock-ai: the prompt carries the bad-request marker.".to_owned(),
            ),
            Fault::RateLimit | Fault::RateLimitMarker | Fault::InsufficientQuota => (
                429,
                "rate_limit_error",
                format!(
                    "This request would exceed the rate limit for your organization (org-mock) \
                     of requests per minute for {model}. (mock-ai: injected)"
                ),
            ),
            Fault::Overloaded => (529, "overloaded_error", "Overloaded".to_owned()),
            Fault::ServerError(status) => (
                *status,
                "api_error",
                "Internal server error (mock-ai: injected)".to_owned(),
            ),
            Fault::FailMarker | Fault::FirstAttempt | Fault::Malformed => (
                500,
                "api_error",
                format!("Internal server error (mock-ai: {})", fault.name()),
            ),
        },
    };
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    (status, body)
}

/// `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}` for each
/// limited dimension; reset is the RFC 3339 time of a full refill.
pub(crate) fn limit_headers(usage: &WindowUsage, headers: &mut HeaderMap) {
    let reset = humantime::format_rfc3339_millis(SystemTime::now() + usage.full_reset).to_string();
    if let (Some(limit), Some(remaining)) = (usage.limits.rpm, usage.remaining_requests()) {
        insert_header(
            headers,
            "anthropic-ratelimit-requests-limit",
            &limit.to_string(),
        );
        insert_header(
            headers,
            "anthropic-ratelimit-requests-remaining",
            &remaining.to_string(),
        );
        insert_header(headers, "anthropic-ratelimit-requests-reset", &reset);
    }
    if let (Some(limit), Some(remaining)) = (usage.limits.tpm, usage.remaining_tokens()) {
        insert_header(
            headers,
            "anthropic-ratelimit-tokens-limit",
            &limit.to_string(),
        );
        insert_header(
            headers,
            "anthropic-ratelimit-tokens-remaining",
            &remaining.to_string(),
        );
        insert_header(headers, "anthropic-ratelimit-tokens-reset", &reset);
    }
}
