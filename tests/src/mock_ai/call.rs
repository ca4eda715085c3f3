//! One model call, from request bytes to response, the same for both providers:
//! parse → count the prompt → injected fault? → rate window → latency →
//! completion. Every answer goes through [`respond`], the one place that records
//! counters, so no answer goes uncounted.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use rand::Rng;
use serde_json::Value;

use super::counters::Answer;
use super::fault::{self, Fault};
use super::prompt::{self, Prompt};
use super::window::{Admission, Limited, WindowUsage};
use super::{Provider, Shared, anthropic, lock, openai};

/// A request both providers reduce to.
#[derive(Debug)]
pub(crate) struct Call {
    /// The request's `model`.
    pub(crate) model: String,
    /// The conversation.
    pub(crate) prompt: Prompt,
    /// OpenAI `response_format` asked for JSON.
    pub(crate) json_requested: bool,
    /// The completion budget, if the request gave one.
    pub(crate) max_tokens: Option<u32>,
}

/// Why a call is refused, before the provider renders it.
#[derive(Debug)]
pub(crate) enum Failure {
    /// 401: no API key.
    Unauthorized,
    /// 400: the request is wrong, with the provider-style message.
    Invalid(String),
    /// 429 from the rate window.
    Window(Limited),
    /// An injected failure (not `Malformed`, which is a 200).
    Fault(Fault),
}

/// Serves one model call.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    provider: Provider,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let config = shared.config();
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let parsed = match provider {
        Provider::OpenAi => openai::parse(&headers, &body, config.require_api_key),
        Provider::Anthropic => anthropic::parse(&headers, &body, config.require_api_key),
    };
    let call = match parsed {
        Ok(call) => call,
        Err(failure) => return refuse(&shared, provider, id, None, &failure, Answer::Invalid),
    };

    let attempt = lock(&shared.counters).note_prompt(&call.prompt);
    let (fault, delay) = {
        let mut rng = lock(&shared.rng);
        let fault = fault::choose(&config, provider, &call.prompt.text(), attempt, &mut *rng);
        let jitter = u64::try_from(config.latency_jitter.as_micros()).unwrap_or(u64::MAX);
        let delay = config.latency + Duration::from_micros(rng.random_range(0..=jitter));
        (fault, delay)
    };

    if let Some(fault) = fault {
        if fault != Fault::BadRequestMarker {
            tokio::time::sleep(delay).await;
        }
        let answer = Answer::Injected(fault.name());
        if fault == Fault::Malformed {
            let completion = prompt::complete(&call.prompt, call.json_requested, call.max_tokens);
            let body = success_body(provider, &call, &completion, id);
            return respond(
                &shared,
                provider,
                id,
                Some(&call.model),
                malformed(body, id),
                answer,
            );
        }
        return refuse(
            &shared,
            provider,
            id,
            Some(&call.model),
            &Failure::Fault(fault),
            answer,
        );
    }

    let tokens = call
        .prompt
        .estimate_tokens()
        .saturating_add(call.max_tokens.unwrap_or(0));
    let now = Instant::now();
    let admission = lock(&shared.windows)
        .entry(call.model.clone())
        .or_default()
        .try_admit(
            now,
            config.rate_window,
            config.limits_for(&call.model),
            tokens,
        );
    let usage = match admission {
        Admission::Admitted(usage) => usage,
        Admission::Limited(limited) => {
            let failure = Failure::Window(limited);
            return refuse(
                &shared,
                provider,
                id,
                Some(&call.model),
                &failure,
                Answer::WindowLimited,
            );
        }
    };
    lock(&shared.counters).note_admitted(now);
    tokio::time::sleep(delay).await;

    let mut completion = prompt::complete(&call.prompt, call.json_requested, call.max_tokens);
    if attempt <= u64::from(config.prose_first_attempts) {
        completion = prompt::prose(&call.prompt);
    }
    let mut response = json_response(200, success_body(provider, &call, &completion, id));
    add_limit_headers(provider, &usage, response.headers_mut());
    let answer = Answer::Completed {
        admitted_tokens: tokens,
        completion_tokens: completion.tokens,
    };
    respond(&shared, provider, id, Some(&call.model), response, answer)
}

/// The provider's success body.
fn success_body(
    provider: Provider,
    call: &Call,
    completion: &prompt::Completion,
    id: u64,
) -> Value {
    match provider {
        Provider::OpenAi => {
            let created = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            openai::completion_body(call, completion, id, created)
        }
        Provider::Anthropic => anthropic::completion_body(call, completion, id),
    }
}

/// A 200 that breaks its promise: even ids get the JSON cut in half, odd ids an
/// HTML error page, as a proxy in front of a provider might send.
fn malformed(body: Value, id: u64) -> Response {
    let (content_type, text) = if id.is_multiple_of(2) {
        let full = body.to_string();
        let mut cut = full.len() / 2;
        while !full.is_char_boundary(cut) {
            cut -= 1;
        }
        ("application/json", full[..cut].to_owned())
    } else {
        (
            "text/html",
            "<html><body><h1>502 Bad Gateway</h1></body></html>".to_owned(),
        )
    };
    let mut response = Response::new(Body::from(text));
    insert_header(
        response.headers_mut(),
        header::CONTENT_TYPE.as_str(),
        content_type,
    );
    response
}

/// Renders and records a refusal.
fn refuse(
    shared: &Shared,
    provider: Provider,
    id: u64,
    model: Option<&str>,
    failure: &Failure,
    answer: Answer,
) -> Response {
    let model_name = model.unwrap_or("unknown");
    let (status, body) = match provider {
        Provider::OpenAi => openai::failure_body(failure, model_name),
        Provider::Anthropic => anthropic::failure_body(failure, model_name),
    };
    let mut response = json_response(status, body);
    let headers = response.headers_mut();
    let retry_after = match failure {
        Failure::Window(limited) => {
            add_limit_headers(provider, &limited.usage, headers);
            limited.retry_after
        }
        Failure::Fault(Fault::RateLimit | Fault::RateLimitMarker) => {
            Some(shared.config().rate_limit_retry_after)
        }
        _ => None,
    };
    if let Some(after) = retry_after {
        // Whole seconds rounded up for clients that only parse integers (RFC 9110
        // delay-seconds); the exact value in ms for the SDKs that read it first.
        let ms = after.as_nanos().div_ceil(1_000_000);
        insert_header(headers, "retry-after", &ms.div_ceil(1000).to_string());
        insert_header(headers, "retry-after-ms", &ms.to_string());
    }
    respond(shared, provider, id, model, response, answer)
}

/// Adds the request id header, records the answer, and returns it.
fn respond(
    shared: &Shared,
    provider: Provider,
    id: u64,
    model: Option<&str>,
    mut response: Response,
    answer: Answer,
) -> Response {
    let id_header = match provider {
        Provider::OpenAi => "x-request-id",
        Provider::Anthropic => "request-id",
    };
    insert_header(response.headers_mut(), id_header, &format!("req_mock{id}"));
    lock(&shared.counters).record(provider.name(), model, response.status().as_u16(), answer);
    response
}

fn add_limit_headers(provider: Provider, usage: &WindowUsage, headers: &mut HeaderMap) {
    match provider {
        Provider::OpenAi => openai::limit_headers(usage, headers),
        Provider::Anthropic => anthropic::limit_headers(usage, headers),
    }
}

fn json_response(status: u16, body: Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    // Statuses come from a fixed set (200, 400, 401, 429, 5xx, 529), all valid.
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    insert_header(
        response.headers_mut(),
        header::CONTENT_TYPE.as_str(),
        "application/json",
    );
    response
}

/// Text of a message `content` or `system` value: a string as is; an array of
/// strings or `{type: "text", text}` parts joined with `\n`; anything else "".
pub(crate) fn flatten_content(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| match p {
                Value::String(s) => Some(s.as_str()),
                other => other.get("text").and_then(Value::as_str),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// A header's value as text, if present and readable.
pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Sets a header; names are our own constants and values digits, times or ids,
/// so an invalid one is a bug we skip rather than crash a test server over.
pub(crate) fn insert_header(headers: &mut HeaderMap, name: &str, value: &str) {
    if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
        headers.insert(name, value);
    }
}
