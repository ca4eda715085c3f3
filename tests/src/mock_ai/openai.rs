//! OpenAI's wire format: `POST /v1/chat/completions` requests, completions,
//! error bodies and `x-ratelimit-*` headers, as documented and as the official
//! SDKs read them.

use std::time::Duration;

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
    messages: Option<Vec<RawMessage>>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    temperature: Option<f64>,
    response_format: Option<ResponseFormat>,
}

#[derive(Deserialize)]
struct RawMessage {
    role: String,
    #[serde(default)]
    content: Value,
}

#[derive(Deserialize)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: String,
}

/// The call in a request, or why it is refused.
pub(crate) fn parse(headers: &HeaderMap, body: &[u8], require_key: bool) -> Result<Call, Failure> {
    let has_key = header_str(headers, "authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|key| !key.trim().is_empty());
    if require_key && !has_key {
        return Err(Failure::Unauthorized);
    }
    let request: Request = serde_json::from_slice(body).map_err(|e| {
        Failure::Invalid(format!(
            "We could not parse the JSON body of your request. (mock-ai: {e})"
        ))
    })?;
    let model = request
        .model
        .filter(|m| !m.is_empty())
        .ok_or_else(|| Failure::Invalid("you must provide a model parameter".into()))?;
    let messages = request
        .messages
        .filter(|m| !m.is_empty())
        .ok_or_else(|| Failure::Invalid("'messages' is a required property".into()))?;
    if let Some(t) = request.temperature
        && !(0.0..=2.0).contains(&t)
    {
        let bound = if t < 0.0 {
            "less than the minimum of 0"
        } else {
            "greater than the maximum of 2"
        };
        return Err(Failure::Invalid(format!("{t} is {bound} - 'temperature'")));
    }
    Ok(Call {
        model,
        prompt: Prompt {
            messages: messages
                .into_iter()
                .map(|m| Message {
                    role: m.role,
                    content: flatten_content(&m.content),
                })
                .collect(),
        },
        json_requested: request
            .response_format
            .is_some_and(|f| f.kind == "json_object" || f.kind == "json_schema"),
        max_tokens: request.max_completion_tokens.or(request.max_tokens),
    })
}

/// A `chat.completion` body.
pub(crate) fn completion_body(
    call: &Call,
    completion: &Completion,
    id: u64,
    created: u64,
) -> Value {
    let prompt_tokens = call.prompt.estimate_tokens();
    json!({
        "id": format!("chatcmpl-mock{id}"),
        "object": "chat.completion",
        "created": created,
        "model": call.model,
        "system_fingerprint": "fp_mock",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": completion.text, "refusal": null},
            "logprobs": null,
            "finish_reason": if completion.truncated { "length" } else { "stop" },
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion.tokens,
            "total_tokens": prompt_tokens.saturating_add(completion.tokens),
        },
    })
}

/// Status and body of a refusal.
pub(crate) fn failure_body(failure: &Failure, model: &str) -> (u16, Value) {
    let (status, kind, code, message) = match failure {
        Failure::Unauthorized => (
            401,
            "invalid_request_error",
            Some("invalid_api_key"),
            "You didn't provide an API key. You need to provide your API key in an \
             Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
                .to_owned(),
        ),
        Failure::Invalid(message) => (400, "invalid_request_error", None, message.clone()),
        Failure::Window(limited) => {
            let (kind, unit) = match limited.kind {
                LimitKind::Requests => ("requests", "requests per min (RPM)"),
                LimitKind::Tokens => ("tokens", "tokens per min (TPM)"),
            };
            let limit = match limited.kind {
                LimitKind::Requests => limited.usage.limits.rpm,
                LimitKind::Tokens => limited.usage.limits.tpm,
            }
            .unwrap_or(0);
            let used = match limited.kind {
                LimitKind::Requests => u64::from(limited.usage.requests),
                LimitKind::Tokens => limited.usage.tokens,
            };
            let message = match limited.retry_after {
                Some(after) => format!(
                    "Rate limit reached for {model} in organization org-mock on {unit}: \
                     Limit {limit}, Used {used}, Requested {}. Please try again in {}. \
                     Visit https://platform.openai.com/account/rate-limits to learn more.",
                    limited.requested,
                    go_duration(after)
                ),
                None => format!(
                    "Request too large for {model} in organization org-mock on {unit}: \
                     Limit {limit}, Requested {}. The input or output tokens must be \
                     reduced in order to run successfully.",
                    limited.requested
                ),
            };
            (429, kind, Some("rate_limit_exceeded"), message)
        }
        Failure::Fault(fault) => match fault {
            Fault::BadRequestMarker => (
                400,
                "invalid_request_error",
                None,
                "mock-ai: the prompt carries the bad-request marker.".to_owned(),
            ),
            Fault::RateLimit | Fault::RateLimitMarker => (
                429,
                "requests",
                Some("rate_limit_exceeded"),
                format!(
                    "Rate limit reached for {model} in organization org-mock on requests \
                     per min (RPM): Limit 1, Used 1, Requested 1. Please try again in 1s. \
                     (mock-ai: injected)"
                ),
            ),
            Fault::InsufficientQuota => (
                429,
                "insufficient_quota",
                Some("insufficient_quota"),
                "You exceeded your current quota, please check your plan and billing \
                 details. (mock-ai: injected)"
                    .to_owned(),
            ),
            Fault::ServerError(status) => (
                *status,
                "server_error",
                None,
                "The server had an error while processing your request. Sorry about that! \
                 (mock-ai: injected)"
                    .to_owned(),
            ),
            Fault::FailMarker | Fault::FirstAttempt | Fault::Overloaded | Fault::Malformed => (
                500,
                "server_error",
                None,
                format!(
                    "The server had an error while processing your request. Sorry about \
                     that! (mock-ai: {})",
                    fault.name()
                ),
            ),
        },
    };
    let body = json!({
        "error": {"message": message, "type": kind, "param": null, "code": code},
    });
    (status, body)
}

/// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` for each limited
/// dimension (an unlimited one has no headers).
pub(crate) fn limit_headers(usage: &WindowUsage, headers: &mut HeaderMap) {
    let reset = go_duration(usage.full_reset);
    if let (Some(limit), Some(remaining)) = (usage.limits.rpm, usage.remaining_requests()) {
        insert_header(headers, "x-ratelimit-limit-requests", &limit.to_string());
        insert_header(
            headers,
            "x-ratelimit-remaining-requests",
            &remaining.to_string(),
        );
        insert_header(headers, "x-ratelimit-reset-requests", &reset);
    }
    if let (Some(limit), Some(remaining)) = (usage.limits.tpm, usage.remaining_tokens()) {
        insert_header(headers, "x-ratelimit-limit-tokens", &limit.to_string());
        insert_header(
            headers,
            "x-ratelimit-remaining-tokens",
            &remaining.to_string(),
        );
        insert_header(headers, "x-ratelimit-reset-tokens", &reset);
    }
}

/// A duration the way OpenAI's reset headers write it (Go's format, to the
/// millisecond, rounded up): `12ms`, `1.5s`, `6m0s`, `1h0m0s`.
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_nanos().div_ceil(1_000_000);
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (hours, minutes) = (ms / 3_600_000, ms / 60_000 % 60);
    let (secs, frac) = (ms / 1000 % 60, ms % 1000);
    let secs = if frac == 0 {
        format!("{secs}s")
    } else {
        let frac = format!("{frac:03}");
        format!("{secs}.{}s", frac.trim_end_matches('0'))
    };
    match (hours, minutes) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}
