//! AI providers: one request in, one response (text and token usage) or one
//! [`AiError`] out.
//!
//! Providers do not retry and do not decide what a failure means: they report
//! the HTTP status, the provider's error code, and any `retry-after` hint, and
//! `outcome::classify` decides. A retry is a trip through a retry queue, never a
//! loop here, so a slow provider never holds a delivery longer than one timeout.

pub mod anthropic;
pub mod openai;

use std::time::{Duration, SystemTime};

use crate::config::{ProviderConfig, ProviderKind};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::auth::{Authenticator, Credential, SetupError, TokenStore};
use serde::{Deserialize, Serialize};

/// What to ask the model: the rendered prompts and the pipeline's parameters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AiRequest {
    /// The model name, as the provider knows it.
    pub model: String,
    /// The rendered system prompt, if the pipeline has one.
    pub system: Option<String>,
    /// The rendered user prompt.
    pub user: String,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Output token limit.
    pub max_tokens: Option<u32>,
    /// Whether a JSON object is asked for.
    pub json: bool,
}

/// Tokens the provider reports for one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
}

/// A successful completion.
#[derive(Debug, Clone, PartialEq)]
pub struct AiResponse {
    /// The model's answer (all text parts joined).
    pub text: String,
    /// Token usage, zero when the provider reported none.
    pub usage: Usage,
    /// Whether the provider reported a readable usage: without it, the
    /// limiter's reservation stands as the charge.
    pub usage_reported: bool,
    /// The model that answered, as the provider reports it.
    pub model: Option<String>,
}

/// Why a request produced no completion.
#[derive(Debug, thiserror::Error)]
pub enum AiError {
    /// The provider answered with an error status.
    #[error("provider answered {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The provider's error code or type (`insufficient_quota`, `overloaded_error`).
        code: Option<String>,
        /// The provider's error message (or the start of the body).
        message: String,
        /// How long the provider asked us to wait (`retry-after-ms`, `retry-after`).
        retry_after: Option<Duration>,
    },
    /// No complete answer within the provider's `timeout`.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection could not be made.
    #[error("cannot connect to the provider")]
    Connect(#[source] reqwest::Error),
    /// The connection broke while sending or receiving.
    #[error("request to the provider failed")]
    Transport(#[source] reqwest::Error),
    /// A 2xx answer we cannot read (not the documented shape).
    #[error("unreadable answer from the provider: {0}")]
    InvalidResponse(String),
    /// No credential could be had (the token endpoint failed).
    #[error("cannot authenticate to the provider")]
    Auth(#[source] crate::auth::AuthError),
    /// The TLS handshake failed (client certificate refused, unknown CA).
    #[error("TLS with `{origin}` failed: {reason}")]
    Tls {
        /// The provider's origin.
        origin: String,
        /// rustls's words.
        reason: String,
    },
}

impl AiError {
    /// The `status` label of `ai_requests_total`.
    pub fn status_label(&self) -> String {
        match self {
            Self::Status { status, .. } => status.to_string(),
            Self::Timeout(_) => "timeout".into(),
            Self::Connect(_) => "connect".into(),
            Self::Transport(_) => "transport".into(),
            Self::InvalidResponse(_) => "200".into(),
            Self::Auth(_) => "auth".into(),
            Self::Tls { .. } => "tls".into(),
        }
    }
}

/// A configured provider, ready to send requests.
#[derive(Debug)]
pub enum Provider {
    /// An OpenAI-compatible chat-completions endpoint.
    OpenAi(openai::OpenAi),
    /// Anthropic's messages API.
    Anthropic(anthropic::Anthropic),
}

impl Provider {
    /// Builds the HTTP client for `config`, with its TLS settings and
    /// credentials (`worker.providers.{name}`). Does no I/O.
    pub fn build(
        name: &str,
        config: &ProviderConfig,
        tokens: &TokenStore,
    ) -> Result<Self, ProviderBuildError> {
        let field = format!("worker.providers.{name}");
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("hookfleet-worker/", env!("CARGO_PKG_VERSION")))
            // A provider's redirect is an error (its `Location` named), never
            // followed: it would carry the API key to wherever it points.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(tls) = &config.tls {
            builder = crate::auth::tls::apply(builder, &field, tls)?;
        }
        let client = builder.build().map_err(ProviderBuildError::Client)?;
        let auth = config
            .auth
            .as_ref()
            .map(|a| Authenticator::build(&format!("{field}.auth"), a, &client, None, tokens))
            .transpose()?;
        let key_header = key_header(&field, config)?;
        let http = Http {
            name: name.to_owned(),
            client,
            base_url: config.base_url(),
            // A key sent in a header of its own is not the dialect's key.
            api_key: config.api_key.clone().filter(|_| key_header.is_none()),
            timeout: config.timeout,
            auth,
            key_header,
        };
        Ok(match config.kind {
            ProviderKind::Openai => Self::OpenAi(openai::OpenAi::new(http)),
            ProviderKind::Anthropic => Self::Anthropic(anthropic::Anthropic::new(
                http,
                config.anthropic_version.clone(),
            )),
        })
    }

    /// The provider's configured name (the `provider` metric label).
    pub fn name(&self) -> &str {
        match self {
            Self::OpenAi(p) => &p.http.name,
            Self::Anthropic(p) => &p.http.name,
        }
    }

    /// `openai` or `anthropic`.
    pub fn kind(&self) -> ProviderKind {
        match self {
            Self::OpenAi(_) => ProviderKind::Openai,
            Self::Anthropic(_) => ProviderKind::Anthropic,
        }
    }

    /// Sends one request.
    pub async fn complete(&self, request: &AiRequest) -> Result<AiResponse, AiError> {
        match self {
            Self::OpenAi(p) => p.complete(request).await,
            Self::Anthropic(p) => p.complete(request).await,
        }
    }
}

/// What both dialects share: the client, the endpoint and the key.
#[derive(Debug)]
pub struct Http {
    name: String,
    client: reqwest::Client,
    base_url: String,
    api_key: Option<hookfleet_common::config::Secret>,
    timeout: Duration,
    /// `auth`: a credential taken per request (OAuth 2.0, JWT, a header).
    auth: Option<Authenticator>,
    /// `api_key` in the header `api_key_header` names (Azure's `api-key`).
    key_header: Option<Credential>,
}

impl Http {
    /// POSTs `body` as JSON to `{base_url}{path}` with `headers` and the
    /// provider's credentials, returning the body of a 2xx answer or the error
    /// the answer means. A 401 to an OAuth 2.0 token is retried once with a
    /// fresh token (`crate::auth`).
    async fn post(
        &self,
        path: &str,
        headers: HeaderMap,
        body: &serde_json::Value,
    ) -> Result<bytes::Bytes, AiError> {
        let credential = self.credential().await?;
        let answer = self
            .post_once(path, headers.clone(), body, credential.as_ref())
            .await;
        if let (Err(AiError::Status { status: 401, .. }), Some(auth), Some(used)) =
            (&answer, &self.auth, &credential)
            && auth.rejected(used).await
        {
            let fresh = self.credential().await?;
            return self.post_once(path, headers, body, fresh.as_ref()).await;
        }
        answer
    }

    async fn credential(&self) -> Result<Option<Credential>, AiError> {
        match &self.auth {
            Some(auth) => auth.credential().await.map(Some).map_err(AiError::Auth),
            None => Ok(None),
        }
    }

    async fn post_once(
        &self,
        path: &str,
        mut headers: HeaderMap,
        body: &serde_json::Value,
        credential: Option<&Credential>,
    ) -> Result<bytes::Bytes, AiError> {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.base_url))
            .map_err(|e| AiError::InvalidResponse(format!("base_url is not a URL: {e}")))?;
        for credential in [self.key_header.as_ref(), credential].into_iter().flatten() {
            credential.apply(&mut headers, &mut url);
        }
        let response = self
            .client
            .post(url)
            .headers(headers)
            .json(body)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let redirect = status.is_redirection().then(|| redirect_message(&response));
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(e))?;
        if status.is_success() {
            return Ok(body);
        }
        if let Some(message) = redirect {
            return Err(AiError::Status {
                status: status.as_u16(),
                code: None,
                message,
                retry_after: None,
            });
        }
        Err(status_error(
            status.as_u16(),
            &headers,
            &body,
            SystemTime::now(),
        ))
    }

    /// The error, its URL cut to the origin (a proxy's query may hold a key).
    fn transport_error(&self, e: reqwest::Error) -> AiError {
        if let Some(reason) = crate::auth::tls::handshake_failure(&e) {
            let origin = reqwest::Url::parse(&self.base_url)
                .map_or_else(|_| "the provider".into(), |u| crate::outbound::origin(&u));
            return AiError::Tls { origin, reason };
        }
        let e = match reqwest::Url::parse(&self.base_url) {
            Ok(url) => crate::outbound::redact(e, &url),
            Err(_) => e.without_url(),
        };
        if e.is_timeout() {
            AiError::Timeout(self.timeout)
        } else if e.is_connect() {
            AiError::Connect(e)
        } else {
            AiError::Transport(e)
        }
    }
}

/// A provider's client or credentials could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ProviderBuildError {
    /// The HTTP client could not be built (TLS initialisation).
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    /// A TLS file, key or credential is unusable.
    #[error(transparent)]
    Setup(#[from] SetupError),
}

/// `api_key` as a sensitive `api_key_header: {key}`, when configured so.
fn key_header(field: &str, config: &ProviderConfig) -> Result<Option<Credential>, SetupError> {
    let (Some(name), Some(key)) = (&config.api_key_header, &config.api_key) else {
        return Ok(None);
    };
    let invalid = |name: &str, reason: String| SetupError {
        field: format!("{field}.{name}"),
        reason,
    };
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|e| invalid("api_key_header", e.to_string()))?;
    let mut value = HeaderValue::from_str(key.expose())
        .map_err(|_| invalid("api_key", "not a valid header value".into()))?;
    value.set_sensitive(true);
    Ok(Some(Credential::Header(name, value)))
}

/// What a redirect's error says: where it pointed (the origin only).
fn redirect_message(response: &reqwest::Response) -> String {
    let target = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|location| response.url().join(location).ok())
        .map_or_else(|| "none".to_owned(), |u| crate::outbound::origin(&u));
    format!("a redirect to `{target}`, which is not followed")
}

/// The error an error status means, with the provider's code and retry hint.
///
/// Both dialects nest the details under `error`: OpenAI
/// `{"error":{"message","type","code"}}`, Anthropic
/// `{"type":"error","error":{"type","message"}}`. The code is OpenAI's `code`,
/// else the `type`, so `insufficient_quota` is found in either place.
pub fn status_error(status: u16, headers: &HeaderMap, body: &[u8], now: SystemTime) -> AiError {
    #[derive(Deserialize)]
    struct Envelope {
        error: Option<Detail>,
    }
    #[derive(Deserialize)]
    struct Detail {
        message: Option<String>,
        #[serde(rename = "type")]
        kind: Option<String>,
        code: Option<serde_json::Value>,
    }
    let detail = serde_json::from_slice::<Envelope>(body)
        .ok()
        .and_then(|e| e.error);
    let (message, code) = match detail {
        Some(d) => {
            let code = d
                .code
                .and_then(|c| match c {
                    serde_json::Value::String(s) => Some(s),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .or(d.kind);
            (d.message.unwrap_or_default(), code)
        }
        None => (truncate(&String::from_utf8_lossy(body), 200), None),
    };
    AiError::Status {
        status,
        code,
        message,
        retry_after: retry_after(headers, now),
    }
}

/// The wait a response asks for: `retry-after-ms` (milliseconds, as OpenAI's SDKs
/// read it), else `retry-after` as seconds (possibly fractional) or an HTTP date.
/// A date in the past means "now"; a missing or unreadable value (negative, NaN)
/// means no hint; one too large for a `Duration` (`1e20`) saturates. Callers cap
/// it by `worker.limits.max_retry_after`.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(wait) = header("retry-after-ms")
        .and_then(|v| v.parse::<f64>().ok())
        .and_then(|ms| seconds(ms / 1000.0))
    {
        return Some(wait);
    }
    let value = header("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return seconds(secs);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The `input`/`output` counts of a provider's `usage` object, when both are
/// unsigned integers; anything else (absent, negative, beyond `u64`, not a
/// number) is no usage, so it is never half-trusted.
pub fn read_usage(usage: Option<&serde_json::Value>, input: &str, output: &str) -> Option<Usage> {
    let usage = usage?;
    Some(Usage {
        input_tokens: usage.get(input)?.as_u64()?,
        output_tokens: usage.get(output)?.as_u64()?,
    })
}

/// `secs` as a wait: none when negative or not a number, saturated when too
/// large (`Duration::from_secs_f64` would panic on either).
fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0)
        .then(|| Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
}

/// The start of `text`, at most `max` bytes, cut on a char boundary.
pub fn truncate(text: &str, max: usize) -> String {
    let cut = hookfleet_common::message::truncate(text, max);
    if cut.len() == text.len() {
        return text.to_owned();
    }
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn retry_after_reads_milliseconds_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        type Headers<'a> = &'a [(&'static str, &'a str)];
        let cases: &[(Headers, Option<Duration>)] = &[
            (
                &[("retry-after-ms", "1500")],
                Some(Duration::from_millis(1500)),
            ),
            (
                &[("retry-after-ms", "12.5")],
                Some(Duration::from_micros(12_500)),
            ),
            (&[("retry-after", "2")], Some(Duration::from_secs(2))),
            (&[("retry-after", "0.25")], Some(Duration::from_millis(250))),
            // retry-after-ms wins over retry-after.
            (
                &[("retry-after-ms", "100"), ("retry-after", "9")],
                Some(Duration::from_millis(100)),
            ),
            // An unreadable retry-after-ms falls back to retry-after.
            (
                &[("retry-after-ms", "soon"), ("retry-after", "3")],
                Some(Duration::from_secs(3)),
            ),
            (
                &[(
                    "retry-after",
                    &httpdate::fmt_http_date(now + Duration::from_secs(30)),
                )],
                Some(Duration::from_secs(30)),
            ),
            (
                &[(
                    "retry-after",
                    &httpdate::fmt_http_date(now - Duration::from_secs(30)),
                )],
                Some(Duration::ZERO),
            ),
            (&[("retry-after", "-1")], None),
            (&[("retry-after", "1e20")], Some(Duration::MAX)),
            (&[("retry-after", "NaN")], None),
            (&[("retry-after", "inf")], None),
            (&[("retry-after", "-0.5")], None),
            (&[("retry-after-ms", "1e30")], Some(Duration::MAX)),
            (
                &[("retry-after-ms", "-5"), ("retry-after", "21600")],
                Some(Duration::from_secs(21600)),
            ),
            (
                &[("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")],
                Some(SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_799))
                    .and_then(|t| t.duration_since(now).ok()),
            ),
            (&[("retry-after", "tomorrow")], None),
            (&[], None),
        ];
        for (pairs, expected) in cases {
            assert_eq!(retry_after(&headers(pairs), now), *expected, "{pairs:?}");
        }
    }

    #[test]
    fn error_bodies_of_both_dialects_yield_their_code() {
        let now = SystemTime::now();
        let openai = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
        let AiError::Status {
            status,
            code,
            message,
            retry_after,
        } = status_error(429, &headers(&[("retry-after", "1")]), openai, now)
        else {
            panic!("a status error")
        };
        assert_eq!((status, code.as_deref()), (429, Some("insufficient_quota")));
        assert!(message.contains("quota"));
        assert_eq!(retry_after, Some(Duration::from_secs(1)));

        let anthropic =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let AiError::Status { code, .. } = status_error(529, &HeaderMap::new(), anthropic, now)
        else {
            panic!("a status error")
        };
        assert_eq!(code.as_deref(), Some("overloaded_error"));

        let html = b"<html>Bad Gateway</html>";
        let AiError::Status { code, message, .. } = status_error(502, &HeaderMap::new(), html, now)
        else {
            panic!("a status error")
        };
        assert_eq!(code, None);
        assert!(message.contains("Bad Gateway"));
    }
}
